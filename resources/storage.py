import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from tpt.config import Experiment
from tpt.plan import ExperimentPlan


class ArtifactStorage(dg.ConfigurableResource):
    """Where stage outputs live. Paths are derived from config versions, so storage needs no index of its own."""

    root: str = Field(
        default_factory=lambda: os.environ.get("TPT_ARTIFACT_ROOT", str(Path.cwd() / "artifacts")),
        description="folder for artifacts (defaults to $TPT_ARTIFACT_ROOT or ./artifacts)",
    )

    def plan(self, experiment: Experiment) -> ExperimentPlan:
        return ExperimentPlan(experiment, Path(self.root).expanduser().resolve())
