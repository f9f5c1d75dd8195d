import os

import dagster as dg
from pydantic import Field

from tpt.catalog import Catalog, CatalogLayoutError


def _default_path() -> str:
    """$TPT_CATALOG, else ``catalog/`` in the artifact root, so every run worker of a deployment shares one."""
    root = os.environ.get("TPT_ARTIFACT_ROOT", "artifacts")
    return os.environ.get("TPT_CATALOG", f"{root.rstrip('/')}/catalog")


def _resolved(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


class DuckDBCatalog(dg.ConfigurableResource):
    """The catalog (Parquet tables that DuckDB queries) that records every stage's figures and the lineage from
    scores back to documents."""

    path: str = Field(
        default_factory=_default_path,
        description="catalog folder or fsspec URL (defaults to $TPT_CATALOG, else <$TPT_ARTIFACT_ROOT or "
        "./artifacts>/catalog)",
    )

    def open(self) -> Catalog:
        path = _resolved(self.path)
        legacy = f"{path}.duckdb"
        if "://" not in path and not os.path.exists(path) and os.path.isfile(legacy):
            raise CatalogLayoutError(
                f"found the single-file catalog {legacy} of schema 1 beside the new catalog {path}; convert it once "
                f"with `python -m tpt.catalog migrate {legacy}` and set TPT_CATALOG={legacy}, or move it away"
            )
        return Catalog(path)
