"""Catalog writes and lineage queries, measured in one run.

Writes: the same document, trajectory and sample rows (lists of dicts, as the assets pass them) through (1) the old
path, row by row ``executemany`` into one DuckDB file (on the first ``--old-rows`` of them: it does ~150 rows/s),
(2) Arrow bulk ``INSERT OR REPLACE`` into one DuckDB file, (3) the catalog's ``upsert`` (Parquet deltas), and (4) the
bare library ceiling, ``pyarrow.parquet.write_table`` of the already built Arrow table.

Queries: a synthetic catalog of N documents and N trajectories (random content-hash ids, written in ten bulk upserts
each, as ten shards would be) with a lineage chain down to a score and its samples; the time of ``lineage``,
``document_uses`` and ``score_inputs`` at each N (best of three).

    python benchmarks/bench_catalog.py                     # 200k rows per kind; N = 1M and 10M
    python benchmarks/bench_catalog.py --rows 20000 --scales 100000   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tpt.catalog import Catalog
from tpt.catalog.schema import TABLES, conform

DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}


def rows_of(kind: str, n: int) -> list[dict]:
    if kind == "documents":
        return [
            {"experiment": "e", "corpus_version": "c1", "doc_id": f"{i:016x}", "source": "web", "shard": f"s{i % 64}",
             "n_chars": 1000 + i % 5000}
            for i in range(n)
        ]  # fmt: skip
    if kind == "trajectories":
        return [
            {"experiment": "e", "thinking_trajectories_version": "t1", "doc_id": f"{i:016x}", "shard": f"s{i % 64}",
             "finish_reason": "stop", "prompt_tokens": 900, "output_tokens": 4000 + i % 4000, "document_cut": False,
             "engine": "vllm", "prompt_version": "p1", "model": "Qwen/Qwen3-8B", "error": None}
            for i in range(n)
        ]  # fmt: skip
    return [
        {"experiment": "e", "variant": "tpt", "benchmark_scores_version": "b1", "benchmark": "gsm8k", "doc_index": i,
         "prompt": f"Question {i}: what is {i} + {i}? Answer:", "generation": f"{2 * i}", "extracted": f"{2 * i}",
         "target": f"{2 * i}", "correct": True}
        for i in range(n)
    ]  # fmt: skip


def ddl(name: str) -> str:
    spec = TABLES[name]
    columns = ", ".join(f"{c} {DUCKDB_TYPES.get(t, 'TIMESTAMP')}" for c, t in spec.columns.items())
    return f"CREATE TABLE {name} ({columns}, PRIMARY KEY ({', '.join(spec.key)}))"


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def row_by_row(db: duckdb.DuckDBPyConnection, kind: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    sql = f"INSERT OR REPLACE INTO {kind} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    db.executemany(sql, [[r[c] for c in columns] for r in rows])


def arrow_bulk(db: duckdb.DuckDBPyConnection, kind: str, rows: list[dict]) -> None:
    db.register("batch", conform(kind, rows))
    db.execute(f"INSERT OR REPLACE INTO {kind} SELECT * FROM batch")
    db.unregister("batch")


def catalog_upsert(root: Path, kind: str, rows: list[dict]) -> None:
    Catalog(root).upsert(kind, rows)


def write_rates(tmp: Path, kind: str, n: int, n_old: int) -> dict[str, tuple[int, float]]:
    rows = rows_of(kind, n)
    dbs = [duckdb.connect(str(tmp / f"{path}-{kind}.duckdb")) for path in ("old", "bulk")]
    for db in dbs:
        db.execute(ddl(kind))
    table = conform(kind, rows)
    rates = {
        "old: executemany, one DuckDB file": (n_old, timed(row_by_row, dbs[0], kind, rows[:n_old])),
        "Arrow bulk insert, one DuckDB file": (n, timed(arrow_bulk, dbs[1], kind, rows)),
        "catalog upsert, Parquet delta (new)": (n, timed(catalog_upsert, tmp / f"cat-{kind}", kind, rows)),
        "ceiling: pq.write_table of the Arrow table": (n, timed(pq.write_table, table, tmp / "x.parquet")),
    }
    for db in dbs:
        db.close()
    return rates


def writes(tmp: Path, n: int, n_old: int) -> None:
    print("| rows | path | rows written | s | rows/s | vs old |\n| --- | --- | --- | --- | --- | --- |")
    for kind in ("documents", "trajectories", "eval_samples"):
        rates = write_rates(tmp, kind, n, n_old)
        old_rate = n_old / rates["old: executemany, one DuckDB file"][1]
        for path, (count, seconds) in rates.items():
            rate = count / seconds
            print(f"| {kind} | {path} | {count:,} | {seconds:.2f} | {rate:,.0f} | {rate / old_rate:,.0f}x |")


def synthetic(root: Path, n: int) -> Catalog:
    catalog = Catalog(root)
    chain = [("corpus", "c1"), ("thinking_trajectories", "t1"), ("augmented_documents", "a1"), ("token_shards", "k1"),
             ("data_mixture", "m1"), ("checkpoint", "ck1"), ("benchmark_scores", "b1")]  # fmt: skip
    for (parent, parent_v), (child, child_v) in zip(chain, chain[1:], strict=False):
        catalog.record_stage("e", child, child_v, parents=[(parent, parent_v)])
    catalog.record_stage("e", "augmented_documents", "a1", parents=[("corpus", "c1")])
    con = duckdb.connect()
    part = n // 10
    for shard in range(10):
        ids = f"md5((i * 10 + {shard})::VARCHAR) AS doc_id, 's{shard}' AS shard"
        catalog.upsert("documents", con.sql(
            f"SELECT 'e' AS experiment, 'c1' AS corpus_version, {ids}, CASE WHEN i % 3 = 0 THEN 'web' ELSE 'math' END "
            f"AS source, 1000 + i % 5000 AS n_chars FROM range({part}) t(i)").to_arrow_table())  # fmt: skip
        catalog.upsert("trajectories", con.sql(
            f"SELECT 'e' AS experiment, 't1' AS thinking_trajectories_version, {ids}, 'stop' AS finish_reason, "
            f"4000 + i % 4000 AS output_tokens, 'p1' AS prompt_version, 'Qwen/Qwen3-8B' AS model "
            f"FROM range({part}) t(i)").to_arrow_table())  # fmt: skip
        shard_row = {"experiment": "e", "thinking_trajectories_version": "t1", "shard": f"s{shard}", "documents": part}
        catalog.upsert("generation_shards", [shard_row | {"output_tokens": part * 6000, "errors": 0}])
    mix = {"experiment": "e", "variant": "tpt", "data_mixture_version": "m1", "selected_sequences": 10}
    catalog.upsert("mixture", [mix | {"source": s, "selected_tokens": 80_000} for s in ("web", "math")])
    catalog.upsert("checkpoints", [{"experiment": "e", "variant": "tpt", "checkpoint_version": "ck1", "path": "/m"}])
    cell = {"experiment": "e", "variant": "tpt", "benchmark_scores_version": "b1", "benchmark": "gsm8k"}
    catalog.upsert("scores", [cell | {"metric": "exact_match", "value": 0.5, "primary_metric": True}])
    catalog.upsert("eval_samples", [cell | {"doc_index": i, "prompt": "q", "correct": i % 2 == 0} for i in range(1319)])
    return catalog


def queries(tmp: Path, scales: list[int]) -> None:
    print("\n| rows (documents + trajectories) | build s | files | lineage s | document_uses s | score_inputs s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in scales:
        built = time.perf_counter()
        catalog = synthetic(tmp / f"scale-{n}", n)
        built = time.perf_counter() - built
        doc = hashlib.md5(b"12345").hexdigest()  # shard 5, row 1234
        found = catalog.document_uses("e", doc)
        assert found["documents"] and found["trajectories"] and found["scores"], found
        upstream = {u["stage"]: u["rows"] for u in catalog.score_inputs("e", "tpt", "gsm8k", "b1")["upstream"]}
        assert sum(r["documents"] for r in upstream["corpus"]) == n, upstream["corpus"]
        files = sum(len(catalog.store.files(t)) for t in ("documents", "trajectories"))
        best = [
            min(timed(fn, *args) for _ in range(3))
            for fn, args in (
                (catalog.lineage, ("e", "benchmark_scores", "b1")),
                (catalog.document_uses, ("e", doc)),
                (catalog.score_inputs, ("e", "tpt", "gsm8k", "b1")),
            )
        ]
        print(f"| {n:,} + {n:,} | {built:.1f} | {files} | " + " | ".join(f"{s:.3f}" for s in best) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--old-rows", type=int, default=2_000)
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        writes(Path(tmp), args.rows, args.old_rows)
        queries(Path(tmp), args.scales)


if __name__ == "__main__":
    main()
