"""What tests share to build a stage's asset and find its outputs the way the code location does."""

from pathlib import Path
from typing import Any

import dagster as dg

from assets.stage import asset_key, outputs_in
from pipelines.definitions import default_resources
from pipelines.graph import experiment_assets
from resources import ArtifactStorage, DuckDBCatalog
from tpt.config import Experiment
from tpt.stages import Outputs


def resources_at(root: Path, **overrides: Any) -> dict[str, Any]:
    """The location's default resources with artifacts and catalog under ``root``."""
    return (
        default_resources()
        | {
            "storage": ArtifactStorage(root=str(root / "art")),
            "catalog": DuckDBCatalog(path=str(root / "catalog")),
        }
        | overrides
    )


def stage_asset(experiment: Experiment, stage: str, resources: dict, variant: str | None = None) -> dg.AssetsDefinition:
    key = asset_key(experiment, stage, variant)
    [found] = [a for a in experiment_assets(experiment, resources) if key in a.keys]
    return found


def outputs(experiment: Experiment, resources: dict) -> Outputs:
    return outputs_in(experiment, resources)
