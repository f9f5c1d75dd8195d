"""The catalog's tables, declared once: columns and types, the primary key, and which column names the stage version.

Everything else (the files' schema, the views, deduplication, the lineage queries' version columns, the migration
from older layouts) is derived from ``TABLES``. To rename a column: change it here, bump ``SCHEMA_VERSION``, and add
``old -> new`` to ``RENAMES``; ``python -m tpt.catalog migrate`` then rewrites an older catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

# 1: the single-file DuckDB catalog (``catalog.duckdb``); 2: Parquet files per table (see tpt.catalog.store).
SCHEMA_VERSION = 3  # 3: version columns named after their stages (one vocabulary with assets and artifacts)

# Column renames across schema versions, per table: {table: {old name: new name}}; applied by the migration.
RENAMES: dict[str, dict[str, str]] = {
    "trajectories": {"trajectories_version": "thinking_trajectories_version"},
    "generation_shards": {"trajectories_version": "thinking_trajectories_version"},
    "token_sources": {"tokens_version": "token_shards_version"},
    "token_shards": {"tokens_version": "token_shards_version"},
    "mixture": {"mixture_version": "data_mixture_version"},
    "scores": {"benchmarks_version": "benchmark_scores_version"},
    "eval_samples": {"benchmarks_version": "benchmark_scores_version"},
}

S, N, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()  # text, integer, float, boolean


@dataclass(frozen=True)
class Table:
    columns: dict[str, pa.DataType]
    key: tuple[str, ...]  # a write replaces the rows of the keys it holds
    version: str | None = None  # the column that holds the version of the stage that wrote the row

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(self.columns.items()))


TABLES: dict[str, Table] = {
    "stage_runs": Table(
        {
            "experiment": S,
            "stage": S,
            "variant": S,
            "version": S,
            "run_id": S,
            "recorded_at": pa.timestamp("us"),
            "wall_s": F,
            "reused": B,
            "metrics": S,  # JSON text
        },
        key=("experiment", "stage", "version", "run_id", "recorded_at"),  # one record per run and moment
    ),
    "lineage": Table(
        {"experiment": S, "stage": S, "version": S, "parent_stage": S, "parent_version": S},
        key=("experiment", "stage", "version", "parent_stage", "parent_version"),
    ),
    "documents": Table(
        {"experiment": S, "corpus_version": S, "doc_id": S, "source": S, "shard": S, "n_chars": N},
        key=("experiment", "corpus_version", "doc_id"),
        version="corpus_version",
    ),
    "trajectories": Table(
        {
            "experiment": S,
            "thinking_trajectories_version": S,
            "doc_id": S,
            "shard": S,
            "finish_reason": S,
            "prompt_tokens": N,
            "output_tokens": N,
            "document_cut": B,
            "engine": S,
            "prompt_version": S,
            "model": S,
            "error": S,
        },
        key=("experiment", "thinking_trajectories_version", "doc_id"),
        version="thinking_trajectories_version",
    ),
    "generation_shards": Table(
        {
            "experiment": S,
            "thinking_trajectories_version": S,
            "shard": S,
            "documents": N,
            "generated_this_run": N,
            "cache_hits": N,
            "errors": N,
            "prompt_tokens": N,
            "output_tokens": N,
            "output_tokens_per_s": F,
            "gpus": N,
            "wall_s": F,
            "finish_reasons": S,
        },
        key=("experiment", "thinking_trajectories_version", "shard"),
        version="thinking_trajectories_version",
    ),
    "contamination": Table(
        {
            "experiment": S,
            "corpus_version": S,
            "doc_id": S,
            "source": S,
            "benchmark": S,
            "item": N,
            "ngram": S,
        },
        key=("experiment", "corpus_version", "doc_id"),
        version="corpus_version",
    ),
    "token_sources": Table(
        {
            "experiment": S,
            "variant": S,
            "token_shards_version": S,
            "shard": S,
            "source": S,
            "documents": N,
            "sequences": N,
            "real_tokens": N,
        },
        key=("experiment", "variant", "token_shards_version", "shard", "source"),
        version="token_shards_version",
    ),
    "mixture": Table(
        {
            "experiment": S,
            "variant": S,
            "data_mixture_version": S,
            "source": S,
            "weight": F,
            "available_sequences": N,
            "available_tokens": N,
            "selected_sequences": N,
            "selected_tokens": N,
            "epochs": F,
        },
        key=("experiment", "variant", "data_mixture_version", "source"),
        version="data_mixture_version",
    ),
    "token_shards": Table(
        {
            "experiment": S,
            "variant": S,
            "token_shards_version": S,
            "shard": S,
            "documents": N,
            "sequences": N,
            "real_tokens": N,
            "padding_tokens": N,
            "packing_efficiency": F,
        },
        key=("experiment", "variant", "token_shards_version", "shard"),
        version="token_shards_version",
    ),
    "checkpoints": Table(
        {
            "experiment": S,
            "variant": S,
            "checkpoint_version": S,
            "path": S,
            "tokens_seen": N,
            "steps": N,
            "epochs": F,
            "parameters": N,
            "final_loss": F,
            "tokens_per_s": F,
            "scale": S,
        },
        key=("experiment", "variant", "checkpoint_version"),
        version="checkpoint_version",
    ),
    "loss_curve": Table(
        {
            "experiment": S,
            "variant": S,
            "checkpoint_version": S,
            "step": N,
            "loss": F,
            "lr": F,
            "tokens_seen": N,
        },
        key=("experiment", "variant", "checkpoint_version", "step"),
        version="checkpoint_version",
    ),
    "scores": Table(
        {
            "experiment": S,
            "variant": S,
            "benchmark_scores_version": S,
            "benchmark": S,
            "metric": S,
            "value": F,
            "stderr": F,
            "n_samples": N,
            "primary_metric": B,
            "task_version": S,
            "scale": S,
        },
        key=("experiment", "variant", "benchmark_scores_version", "benchmark", "metric"),
        version="benchmark_scores_version",
    ),
    "eval_samples": Table(
        {
            "experiment": S,
            "variant": S,
            "benchmark_scores_version": S,
            "benchmark": S,
            "doc_index": N,
            "prompt": S,
            "generation": S,
            "extracted": S,
            "target": S,
            "correct": B,
        },
        key=("experiment", "variant", "benchmark_scores_version", "benchmark", "doc_index"),
        version="benchmark_scores_version",
    ),
}


def _written_by(table: Table, stage: str) -> Table:
    """The same rows written by another stage: its version column named after that stage."""
    rename = {table.version: f"{stage}_version"}
    columns = {rename.get(c, c): t for c, t in table.columns.items()}
    return Table(columns, tuple(rename.get(c, c) for c in table.key), rename[table.version])


# SFT's checkpoints and scores: the pretraining tables' rows, under the SFT stages' versions.
TABLES |= {
    f"sft_{name}": _written_by(TABLES[name], stage)
    for name, stage in [
        ("checkpoints", "sft_checkpoint"),
        ("loss_curve", "sft_checkpoint"),
        ("scores", "sft_benchmark_scores"),
        ("eval_samples", "sft_benchmark_scores"),
    ]
}


def table(name: str) -> Table:
    if name not in TABLES:
        raise ValueError(f"unknown catalog table {name!r}; tables: {', '.join(TABLES)}")
    return TABLES[name]


def conform(name: str, rows: Sequence[dict[str, Any]] | pa.Table) -> pa.Table:
    """The rows in the table's declared schema: columns not given are NULL, unknown ones an error."""
    schema = TABLES[name].schema
    given = rows.column_names if isinstance(rows, pa.Table) else (list(rows[0]) if rows else [])
    if unknown := [c for c in given if c not in schema.names]:
        raise ValueError(f"catalog table {name} has no column(s) {unknown}; columns: {schema.names}")
    try:
        if not isinstance(rows, pa.Table):  # through one struct array: several times faster than from_pylist
            return pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema))))
        n = rows.num_rows
        return pa.table(
            [rows.column(f.name).cast(f.type) if f.name in given else pa.nulls(n, f.type) for f in schema],
            schema=schema,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"catalog rows for {name}: {exc}") from exc


def last_per_key(data: pa.Table, key: Sequence[str]) -> pa.Table:
    """One row per key, the last given (as INSERT OR REPLACE row by row would leave it)."""
    keyed = data.select(list(key)).append_column("_i", pa.array(np.arange(data.num_rows)))
    last = keyed.group_by(list(key), use_threads=False).aggregate([("_i", "max")])
    if last.num_rows == data.num_rows:
        return data
    return data.take(np.sort(last["_i_max"].to_numpy()))  # in the order given
