"""Asset keys of one experiment's graph: ``<experiment>/<stage>`` (``_<variant>`` where variants split)."""

import dagster as dg

from tpt.config import Experiment


def key(experiment: Experiment, name: str, variant: str | None = None) -> dg.AssetKey:
    return dg.AssetKey([experiment.name, f"{name}_{variant}" if variant else name])


THINKING_MODEL = "thinking_model"
CORPUS = "corpus"
TRAJECTORIES = "thinking_trajectories"
AUGMENTED = "augmented_documents"
TOKEN_SHARDS = "token_shards"
MIXTURE = "data_mixture"
CHECKPOINT = "checkpoint"
BENCHMARKS = "benchmark_scores"
REPORT = "report"
COST_ESTIMATE = "generation_cost_estimate"


# The catalog's stage names, as the assets that write them (variant-split stages take the variant).
STAGE_ASSETS = {
    "corpus": (CORPUS, False),
    "trajectories": (TRAJECTORIES, False),
    "augmented": (AUGMENTED, False),
    "token_shards": (TOKEN_SHARDS, True),
    "mixture": (MIXTURE, True),
    "checkpoint": (CHECKPOINT, True),
    "benchmarks": (BENCHMARKS, True),
}


def ui_link(experiment: Experiment, stage: str, variant: str) -> str:
    """The asset's page in the Dagster UI, relative to the server, for links in metadata."""
    name, split = STAGE_ASSETS[stage]
    return "/assets/" + "/".join(key(experiment, name, variant if split else None).path)
