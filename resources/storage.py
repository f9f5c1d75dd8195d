import os
from pathlib import Path

import dagster as dg
from pydantic import Field


class ArtifactStorage(dg.ConfigurableResource):
    """Where stage outputs live. Paths are derived from stage versions (``assets.registry.outputs_for``), so storage
    needs no index of its own; the root is a location only and never part of a version."""

    root: str = Field(
        default_factory=lambda: os.environ.get("TPT_ARTIFACT_ROOT", str(Path.cwd() / "artifacts")),
        description="folder for artifacts (defaults to $TPT_ARTIFACT_ROOT or ./artifacts)",
    )
