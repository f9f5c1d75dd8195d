from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # Dagster does not export the type that define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets import keys
from tpt.config import Experiment


def full_graph_job(experiment: Experiment) -> "UnresolvedAssetJobDefinition":
    """Everything from corpus to report; finished stages find their output and return at once."""
    return dg.define_asset_job(
        f"{experiment.name}_full_graph",
        selection=dg.AssetSelection.groups(experiment.name),
        tags={"experiment": experiment.name},
        description=f"Materialize the whole TPT graph of experiment '{experiment.name}'.",
    )


def benchmarks_job(experiment: Experiment) -> "UnresolvedAssetJobDefinition":
    """Re-evaluate every variant's checkpoint and rebuild the report (the nightly rerun)."""
    selected = [keys.key(experiment, keys.BENCHMARKS, v) for v in experiment.variants]
    return dg.define_asset_job(
        f"{experiment.name}_benchmarks",
        selection=dg.AssetSelection.assets(*selected, keys.key(experiment, keys.REPORT)),
        tags={"experiment": experiment.name},
        description=f"Evaluate the checkpoints of '{experiment.name}' and rebuild its report.",
    )
