import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from tpt.paths import check_writable


class ArtifactStorage(dg.ConfigurableResource):
    """Where stage outputs live. Paths are derived from stage versions (``assets.registry.outputs_for``), so storage
    needs no index of its own; the root is a location only and never part of a version. The root may be an fsspec
    URL (``s3://bucket/tpt``): the data stages read and write it from the Dagster process and the Ray workers alike,
    configured as the store's own client is (for S3 the ``AWS_*`` environment or an instance role)."""

    root: str = Field(
        default_factory=lambda: os.environ.get("TPT_ARTIFACT_ROOT", str(Path.cwd() / "artifacts")),
        description="folder or fsspec URL for artifacts (defaults to $TPT_ARTIFACT_ROOT or ./artifacts)",
    )
    posix_root: str | None = Field(
        default_factory=lambda: os.environ.get("TPT_POSIX_ROOT"),
        description="shared POSIX folder for checkpoints, SFT and benchmark cells where root is an object store "
        "(defaults to $TPT_POSIX_ROOT; unused where root is a folder)",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_writable(self.root)  # an unreachable store or a refused key: one line, before any work
