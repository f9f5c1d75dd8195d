import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from tpt.catalog import Catalog


class DuckDBCatalog(dg.ConfigurableResource):
    """The DuckDB file that records every stage's figures and the lineage from scores back to documents."""

    path: str = Field(
        default_factory=lambda: os.environ.get("TPT_CATALOG", str(Path.cwd() / "artifacts" / "catalog.duckdb")),
        description="DuckDB file (defaults to $TPT_CATALOG or ./artifacts/catalog.duckdb)",
    )

    def open(self) -> Catalog:
        return Catalog(Path(self.path).expanduser().resolve())
