"""Request keys: what a trajectory is a function of. Same key, same trajectory: it is taken from the cache.

A key hashes the document (its content-hash id), every versioned generation field (model, prompt template and
version, sampling, document cut, engine) and the engine's installed version, so changing any of them regenerates
exactly the documents it affects, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from tpt.config import GenerationConfig
from tpt.versioning import content_hash, versioned_fields

PART_GLOB = "*/trajectories/*/shard-*/part-*.parquet"


def request_keys(doc_ids: list[str], generation: GenerationConfig, engine_version: str) -> list[str]:
    settings = content_hash(versioned_fields(generation), engine_version, length=32)
    return [content_hash(settings, doc_id, length=32) for doc_id in doc_ids]


def cached_rows(artifact_root: Path, keys: list[str], exclude_dir: Path | None = None) -> pa.Table | None:
    """Finished (non-error) rows for ``keys`` from any experiment's trajectories under ``artifact_root``."""
    parts = [p for p in sorted(artifact_root.glob(PART_GLOB)) if exclude_dir is None or exclude_dir not in p.parents]
    if not parts or not keys:
        return None
    con = duckdb.connect()
    try:
        con.register("wanted", pa.table({"request_key": keys}))
        table = con.sql(
            "SELECT DISTINCT ON (request_key) * FROM read_parquet($parts, union_by_name = true) "
            "WHERE request_key IN (SELECT request_key FROM wanted) AND finish_reason <> 'error'",
            params={"parts": [str(p) for p in parts]},
        ).to_arrow_table()
    except duckdb.BinderException:  # parts written before request keys existed cannot answer
        return None
    finally:
        con.close()
    return table if table.num_rows else None
