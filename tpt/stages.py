"""The graph's shape as data: each stage is declared once (what it reads, which config fields name its output, how
it is partitioned), and from those declarations come every stage's version, output location, catalog lineage and
Dagster code version. Dagster-free, so assets, checks, sensors, ``tpt lineage`` and tests resolve the very versions
the stages write under.

A stage's *version* names its output directory: its code revision, its own versioned config, the output-changing
settings of the resources it runs on, the versions of what it reads, and, for stages whose version is derived from
content (the corpus's shard set), that content read at run time. A stage's *code version* is what Dagster compares
to mark an asset stale: the same chain without the run-time content, so it can be computed when definitions load.
Content changes reach Dagster as data versions instead: every stage with a content-derived ancestor depends on that
ancestor directly (Dagster marks an asset stale only for a direct dependency's new data version).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tpt.config import Experiment
from tpt.paths import Location, StorageError, as_path, is_remote
from tpt.versioning import content_hash

Partitioning = Literal["shards", "scales", "cells"]
"""``shards``: one partition per corpus shard (the version names the directory of all shards); ``scales``: one per
training run of the experiment matrix; ``cells``: one per (scale, benchmark)."""


@dataclass(frozen=True)
class Read:
    """One input of a stage. ``every_partition``: the reader takes all of the upstream's partitions (a mixture reads
    every shard); otherwise the matching one (the same shard, the same scale, a cell's scale). ``variants``: only
    variants of these kinds ('vanilla', 'tpt') of a per-variant reader read it (vanilla tokens read the corpus, each
    TPT variant's tokens its own augmented text)."""

    stage: str
    every_partition: bool = False
    variants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Instance:
    """One output of a stage: its variant, scale and benchmark where the stage is split by them."""

    variant: str | None = None
    scale: str | None = None
    benchmark: str | None = None

    @property
    def label(self) -> str:
        return "-".join(p for p in (self.variant, self.scale, self.benchmark) if p)

    @property
    def folder_label(self) -> str:
        """The readable part of an output's folder name; the scale is left out, so two scales whose outputs have
        the same version (a mixture of the same budget) share one folder and the work is done once."""
        return "-".join(p for p in (self.variant, self.benchmark) if p)


Own = Callable[[Experiment, Instance], Any]


@dataclass(frozen=True)
class Stage:
    """The one declaration of a stage. ``own`` returns its versioned config for one instance (called with
    ``benchmark=None`` for the code version, so adding a benchmark leaves finished cells fresh); ``content``, for a
    stage whose version names content, returns that content's fingerprint at run time. The rest is presentation and
    placement, turned into a Dagster asset by ``assets/stage.py``; ``compute`` is the asset's body."""

    name: str
    revision: int
    own: Own
    description: str
    reads: tuple[Read, ...] = ()
    partitioning: Partitioning | None = None
    per_variant: bool | Literal["tpt"] = False  # True: one asset per variant; "tpt": one per TPT variant
    settings: tuple[str, ...] = ()  # resources whose output-changing fields are part of the version
    resources: tuple[str, ...] = ()  # resources the compute uses
    content: Callable[[Outputs], Any] | None = None
    job: str = ""
    kinds: frozenset[str] | Callable[[Experiment], set[str]] = frozenset()  # the UI's badges
    accelerator: bool = False  # holds a GPU: runs in the accelerator pool
    retried: bool = False  # runs on Ray: a lost worker or node is retried
    eager: bool = False  # rebuilt by declarative automation once its inputs changed
    enabled: Callable[[Experiment], bool] | None = None  # a stage only some experiments have (SFT): no assets else
    posix: bool = False  # writes through libraries that need a POSIX folder (torch.distributed.checkpoint,
    # save_pretrained, lm-eval): under the POSIX root where the artifact root is an object store
    compute: Callable[..., Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Output:
    stage: str
    instance: Instance
    version: str
    path: Location

    @property
    def variant(self) -> str | None:
        return self.instance.variant


def variants_of(experiment: Experiment, spec: Stage) -> list[str | None]:
    """The variants a stage has an asset for: every variant, the TPT variants (thinking is theirs alone), or none;
    no asset at all when the experiment does not have the stage (``enabled``: SFT only where it is configured)."""
    if spec.enabled is not None and not spec.enabled(experiment):
        return []
    if spec.per_variant == "tpt":
        return list(experiment.tpt_variants)
    return list(experiment.variants) if spec.per_variant else [None]


def no_config(experiment: Experiment, instance: Instance) -> dict:
    return {}


class Outputs:
    """Versions and locations of one experiment's stage outputs under an artifact root, given the output-changing
    settings of the resources (``{"generator": {...}, "trainer": {...}, "evaluator": {...}}``). ``posix_root``
    holds the outputs of ``posix`` stages (checkpoints, scores) where the root is an object store; by default the
    root itself, which must then be a folder."""

    def __init__(
        self,
        experiment: Experiment,
        root: str | Location,
        stages: Sequence[Stage],
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        posix_root: str | Location | None = None,
    ):
        self.experiment = experiment
        self.root = as_path(root) / experiment.name
        self.posix_root = as_path(posix_root) / experiment.name if posix_root is not None else None
        self.stages = {s.name: s for s in stages}
        self.settings = {k: dict(v) for k, v in (settings or {}).items()}
        self._versions: dict[tuple[str, Instance], str] = {}  # the chain is walked many times per run
        self._code_versions: dict[tuple[str, str | None], str] = {}

    # ------------------------------------------------------------------ instances and reads

    def variants_of(self, stage: str) -> list[str | None]:
        return variants_of(self.experiment, self.stages[stage])

    def instances(self, stage: str, variant: str | None = None, *, with_benchmarks: bool = True) -> list[Instance]:
        """Every output of one asset (one variant of a stage): one per scale or cell, else one."""
        partitioning = self.stages[stage].partitioning
        scales = self.experiment.scale_names
        if partitioning == "scales":
            return [Instance(variant, s) for s in scales]
        if partitioning == "cells":
            benchmarks = self.experiment.evaluation.benchmarks if with_benchmarks else (None,)
            return [Instance(variant, s, b) for s, b in itertools.product(scales, benchmarks)]
        return [Instance(variant)]

    def reads(self, stage: str, variant: str | None = None) -> list[Read]:
        kind = self.experiment.variant_kind(variant) if variant else None
        return [r for r in self.stages[stage].reads if r.variants is None or kind in r.variants]

    def upstream(self, stage: str, instance: Instance) -> Iterator[tuple[Read, Instance]]:
        """The upstream instances one instance reads, read by read."""
        for read in self.reads(stage, instance.variant):
            parent = self.stages[read.stage]
            variants = [instance.variant] if parent.per_variant and instance.variant else self.variants_of(read.stage)
            for variant in variants:
                if parent.partitioning in ("scales", "cells") and not read.every_partition:
                    benchmark = instance.benchmark if parent.partitioning == "cells" else None
                    yield read, Instance(variant, instance.scale, benchmark)
                else:
                    for found in self.instances(read.stage, variant):
                        yield read, found

    # ------------------------------------------------------------------ versions

    def of(self, stage: str, variant: str | None = None, scale: str | None = None, benchmark: str | None = None):
        """The output of one instance: its version and directory."""
        return self.output(stage, Instance(variant, scale, benchmark))

    def output(self, stage: str, instance: Instance) -> Output:
        version = self.version(stage, instance)
        name = f"{instance.folder_label}-{version}" if instance.folder_label else version
        return Output(stage, instance, version, self._root_of(stage) / stage / name)

    def _root_of(self, stage: str) -> Location:
        if not self.stages[stage].posix or not is_remote(self.root):
            return self.root
        if self.posix_root is None or is_remote(self.posix_root):
            raise StorageError(
                f"{stage} writes through libraries that need a shared POSIX folder and the artifact root "
                f"{self.root.parent} is an object store: set the storage resource's posix_root"
            )
        return self.posix_root

    def version(self, stage: str, instance: Instance) -> str:
        if (stage, instance) not in self._versions:
            spec = self.stages[stage]
            upstream = [self.version(read.stage, parent) for read, parent in self.upstream(stage, instance)]
            own = spec.own(self.experiment, instance)
            content = spec.content(self) if spec.content else None
            self._versions[stage, instance] = content_hash(
                stage, spec.revision, own, self._settings(spec), upstream, content
            )
        return self._versions[stage, instance]

    def parents(self, stage: str, instance: Instance) -> list[Output]:
        """What the catalog records as this output's lineage: the outputs it read, nearest first."""
        return [self.output(read.stage, parent) for read, parent in self.upstream(stage, instance)]

    def code_version(self, stage: str, variant: str | None = None) -> str:
        """One asset's Dagster code version: its own config over every scale (never the list of benchmarks), its
        settings and its inputs' code versions, without run-time content."""
        if (stage, variant) not in self._code_versions:
            spec = self.stages[stage]
            own = [spec.own(self.experiment, i) for i in self.instances(stage, variant, with_benchmarks=False)]
            upstream = sorted({(read.stage, parent.variant or "") for read, parent in self._code_reads(stage, variant)})
            chained = [self.code_version(s, v or None) for s, v in upstream]
            self._code_versions[stage, variant] = content_hash(stage, spec.revision, own, self._settings(spec), chained)
        return self._code_versions[stage, variant]

    def _code_reads(self, stage: str, variant: str | None) -> Iterator[tuple[Read, Instance]]:
        for instance in self.instances(stage, variant, with_benchmarks=False)[:1]:
            yield from self.upstream(stage, instance)

    def _settings(self, spec: Stage) -> dict:
        return {name: self.settings.get(name, {}) for name in spec.settings}

    # ------------------------------------------------------------------ graph questions

    def content_ancestors(self, stage: str) -> list[str]:
        """Stages upstream whose version names run-time content: the reader depends on each directly in Dagster."""
        found: dict[str, None] = {}
        stack = [r.stage for r in self.stages[stage].reads]
        while stack:
            name = stack.pop()
            if self.stages[name].content is not None:
                found[name] = None
            stack.extend(r.stage for r in self.stages[name].reads)
        return list(found)
