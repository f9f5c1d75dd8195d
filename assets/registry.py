"""Every stage of the graph, in dependency order: its one declaration lives in its module beside its body, and this
list is the only other place a new stage is named."""

from typing import Any

from assets import (
    augmented,
    benchmarks,
    corpus,
    cost_estimate,
    mixture,
    models,
    pretraining,
    report,
    sft,
    token_shards,
    trajectories,
)
from tpt.config import Experiment
from tpt.paths import Location, resolved
from tpt.stages import Outputs, Stage

STAGES: tuple[Stage, ...] = (
    models.STAGE,
    corpus.STAGE,
    corpus.MANIFEST_STAGE,
    cost_estimate.STAGE,
    trajectories.STAGE,
    augmented.STAGE,
    token_shards.STAGE,
    mixture.STAGE,
    pretraining.STAGE,
    sft.STAGE,
    sft.SCORES_STAGE,
    benchmarks.STAGE,
    report.STAGE,
)


def outputs_for(
    experiment: Experiment,
    root: str | Location,
    settings: dict[str, Any] | None = None,
    posix_root: str | Location | None = None,
) -> Outputs:
    """Versions and locations of the experiment's outputs under an artifact root (see ``tpt.stages.Outputs``)."""
    return Outputs(experiment, resolved(root), STAGES, settings, resolved(posix_root) if posix_root else None)
