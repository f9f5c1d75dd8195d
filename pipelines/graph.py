"""One experiment's asset graph and checks, built from its config by the stage modules in ``assets/``."""

import dagster as dg

from assets.augmented import augmented_asset
from assets.benchmarks import benchmark_assets
from assets.checks import experiment_checks
from assets.corpus import corpus_asset
from assets.cost_estimate import cost_estimate_asset
from assets.mixture import mixture_assets
from assets.models import thinking_model_asset
from assets.pretraining import checkpoint_assets
from assets.report import report_asset
from assets.token_shards import token_shard_assets
from assets.trajectories import trajectories_asset
from tpt.config import Experiment


def experiment_assets(experiment: Experiment) -> list[dg.AssetsDefinition]:
    return [
        thinking_model_asset(experiment),
        corpus_asset(experiment),
        cost_estimate_asset(experiment),
        trajectories_asset(experiment),
        augmented_asset(experiment),
        *token_shard_assets(experiment),
        *mixture_assets(experiment),
        *checkpoint_assets(experiment),
        *benchmark_assets(experiment),
        report_asset(experiment),
    ]


__all__ = ["experiment_assets", "experiment_checks"]
