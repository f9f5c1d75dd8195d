"""Where every stage of an experiment writes, and under which version.

A stage's directory is named by its chained version, so a changed prompt writes new trajectories beside the old
ones (nothing finished is overwritten) and an unchanged config finds its finished output and skips the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpt.config import Experiment
from tpt.versioning import STAGE_CODE_REVISIONS, content_hash, stage_version, versioned_fields


@dataclass(frozen=True)
class StagePlan:
    stage: str
    version: str  # own config + upstream versions: names the output directory
    path: Path


class ExperimentPlan:
    def __init__(self, experiment: Experiment, artifact_root: str | Path):
        self.experiment = experiment
        self.root = Path(artifact_root) / experiment.name

    def _plan(self, stage: str, own: object, *upstream: StagePlan, label: str = "") -> StagePlan:
        version = stage_version(stage, own, *(u.version for u in upstream))
        name = f"{label}-{version}" if label else version
        return StagePlan(stage, version, self.root / stage / name)

    @property
    def corpus(self) -> StagePlan:
        own = {"corpus": versioned_fields(self.experiment.corpus)}
        if self.experiment.corpus.decontamination is not None:  # the test sets it checks against are an input
            own["test_sets"] = [self.experiment.evaluation.data_folder, self.experiment.evaluation.test_sets]
        return self._plan("corpus", own)

    @property
    def trajectories(self) -> StagePlan:
        return self._plan("trajectories", versioned_fields(self.experiment.generation), self.corpus)

    @property
    def augmented(self) -> StagePlan:
        return self._plan("augmented", {"join_separator": self.experiment.join_separator}, self.trajectories)

    def token_shards(self, variant: str) -> StagePlan:
        source = self.augmented if variant == "tpt" else self.corpus
        own = {
            "variant": variant,
            "tokenizer": versioned_fields(self.experiment.tokenizer),
            "seq_len": self.experiment.training.seq_len,
        }
        return self._plan("token_shards", own, source, label=variant)

    def mixture(self, variant: str, scale: str) -> StagePlan:
        """Scales with the same budget share one mixture (same version, same directory)."""
        own = {
            "variant": variant,
            "mixture": versioned_fields(self.experiment.mixture),
            "sequences": self.training_sequences(scale),
        }
        return self._plan("mixture", own, self.token_shards(variant), label=variant)

    def training_sequences(self, scale: str) -> int:
        """Sequences one pretraining run reads: whole steps of the scale's token budget."""
        training = self.experiment.training_for(scale)
        return training.token_budget // training.batch_tokens * (training.batch_tokens // training.seq_len)

    def checkpoint(self, variant: str, scale: str) -> StagePlan:
        own = {"variant": variant, "training": versioned_fields(self.experiment.training_for(scale))}
        return self._plan("checkpoint", own, self.mixture(variant, scale), label=f"{variant}-{scale}")

    def _evaluation(self) -> dict:
        """The evaluation settings every benchmark shares; the list of benchmarks is not one of them, so adding a
        benchmark leaves the finished cells of the others as they are."""
        fields = versioned_fields(self.experiment.evaluation)
        del fields["benchmarks"]
        return fields

    def benchmarks(self, variant: str, scale: str, benchmark: str) -> StagePlan:
        """One cell of the (scale x benchmark) matrix of a variant: one checkpoint on one benchmark."""
        own = {"variant": variant, "benchmark": benchmark, "evaluation": self._evaluation()}
        return self._plan("benchmarks", own, self.checkpoint(variant, scale), label=f"{variant}-{scale}-{benchmark}")

    def asset_code_version(self, stage: str, variant: str | None = None) -> str:
        """What Dagster compares to mark an asset stale: the chained version of what it writes, so a change anywhere
        upstream marks every asset below it stale at once, before anything reruns (Dagster alone would mark only
        the changed asset until it has rerun). Dagster keeps one code version per asset, not per partition, so a
        scale-partitioned asset's covers every scale, and a benchmark asset's leaves out the list of benchmarks:
        adding one adds cells without marking the finished ones stale."""
        scales = self.experiment.scale_names
        if stage in ("corpus", "trajectories", "augmented"):
            return getattr(self, stage).version
        if stage == "token_shards":
            return self.token_shards(variant).version
        if stage in ("mixture", "checkpoint"):
            return content_hash(stage, [getattr(self, stage)(variant, s).version for s in scales])
        if stage == "benchmarks":
            checkpoints = [self.checkpoint(variant, s).version for s in scales]
            return content_hash(stage, STAGE_CODE_REVISIONS[stage], self._evaluation(), checkpoints)
        if stage == "report":
            return content_hash(stage, [self.asset_code_version("benchmarks", v) for v in self.experiment.variants])
        raise ValueError(f"no asset for stage {stage!r}")

    @property
    def models_dir(self) -> Path:
        return self.root.parent / "_models"
