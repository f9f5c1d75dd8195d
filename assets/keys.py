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
