"""One experiment's asset graph and checks, built from the stage declarations in ``assets/registry.py``."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets import registry
from assets.checks import experiment_checks
from assets.stage import outputs_in, stage_assets
from tpt.config import Experiment


def experiment_assets(experiment: Experiment, resources: Mapping[str, Any]) -> list[dg.AssetsDefinition]:
    """Code versions are resolved with the output-changing settings of ``resources`` (those the location loads)."""
    outputs = outputs_in(experiment, resources)
    return [asset for spec in registry.STAGES for asset in stage_assets(experiment, spec, outputs)]


__all__ = ["experiment_assets", "experiment_checks"]
