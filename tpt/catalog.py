"""The DuckDB metadata and lineage catalog: every stage's figures, and the rows that tie a score to its inputs.

Rows are keyed by (experiment, stage version), so a score joins to the checkpoint it measured, the checkpoint to its
token shards, the shards to the trajectories and the trajectories to the documents; ``lineage`` answers the question
"what stands behind this score". One short connection per write, retried while another process holds the file.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

SCHEMA = """
CREATE TABLE IF NOT EXISTS stage_runs (
    experiment VARCHAR, stage VARCHAR, variant VARCHAR, version VARCHAR, run_id VARCHAR,
    recorded_at TIMESTAMP, wall_s DOUBLE, reused BOOLEAN, metrics JSON);
CREATE TABLE IF NOT EXISTS lineage (
    experiment VARCHAR, stage VARCHAR, version VARCHAR, parent_stage VARCHAR, parent_version VARCHAR,
    PRIMARY KEY (experiment, stage, version, parent_stage, parent_version));
CREATE TABLE IF NOT EXISTS documents (
    experiment VARCHAR, corpus_version VARCHAR, doc_id VARCHAR, source VARCHAR, shard VARCHAR, n_chars BIGINT,
    PRIMARY KEY (experiment, corpus_version, doc_id));
CREATE TABLE IF NOT EXISTS trajectories (
    experiment VARCHAR, thinking_trajectories_version VARCHAR, doc_id VARCHAR, shard VARCHAR, finish_reason VARCHAR,
    prompt_tokens BIGINT, output_tokens BIGINT, document_cut BOOLEAN, engine VARCHAR, prompt_version VARCHAR,
    model VARCHAR, error VARCHAR, PRIMARY KEY (experiment, thinking_trajectories_version, doc_id));
CREATE TABLE IF NOT EXISTS generation_shards (
    experiment VARCHAR, thinking_trajectories_version VARCHAR, shard VARCHAR, documents BIGINT,
    generated_this_run BIGINT, cache_hits BIGINT, errors BIGINT, prompt_tokens BIGINT, output_tokens BIGINT,
    output_tokens_per_s DOUBLE,
    gpus BIGINT, wall_s DOUBLE, finish_reasons VARCHAR, PRIMARY KEY (experiment, thinking_trajectories_version, shard));
CREATE TABLE IF NOT EXISTS contamination (
    experiment VARCHAR, corpus_version VARCHAR, doc_id VARCHAR, source VARCHAR, benchmark VARCHAR, item BIGINT,
    ngram VARCHAR, PRIMARY KEY (experiment, corpus_version, doc_id));
CREATE TABLE IF NOT EXISTS token_sources (
    experiment VARCHAR, variant VARCHAR, token_shards_version VARCHAR, shard VARCHAR, source VARCHAR, documents BIGINT,
    sequences BIGINT, real_tokens BIGINT, PRIMARY KEY (experiment, variant, token_shards_version, shard, source));
CREATE TABLE IF NOT EXISTS mixture (
    experiment VARCHAR, variant VARCHAR, data_mixture_version VARCHAR, source VARCHAR, weight DOUBLE,
    available_sequences BIGINT, available_tokens BIGINT, selected_sequences BIGINT, selected_tokens BIGINT,
    epochs DOUBLE, PRIMARY KEY (experiment, variant, data_mixture_version, source));
CREATE TABLE IF NOT EXISTS token_shards (
    experiment VARCHAR, variant VARCHAR, token_shards_version VARCHAR, shard VARCHAR, documents BIGINT,
    sequences BIGINT, real_tokens BIGINT, padding_tokens BIGINT, packing_efficiency DOUBLE,
    PRIMARY KEY (experiment, variant, token_shards_version, shard));
CREATE TABLE IF NOT EXISTS checkpoints (
    experiment VARCHAR, variant VARCHAR, checkpoint_version VARCHAR, path VARCHAR, tokens_seen BIGINT,
    steps BIGINT, epochs DOUBLE, parameters BIGINT, final_loss DOUBLE, tokens_per_s DOUBLE,
    PRIMARY KEY (experiment, variant, checkpoint_version));
CREATE TABLE IF NOT EXISTS loss_curve (
    experiment VARCHAR, variant VARCHAR, checkpoint_version VARCHAR, step BIGINT, loss DOUBLE, lr DOUBLE,
    tokens_seen BIGINT, PRIMARY KEY (experiment, variant, checkpoint_version, step));
CREATE TABLE IF NOT EXISTS scores (
    experiment VARCHAR, variant VARCHAR, benchmark_scores_version VARCHAR, benchmark VARCHAR, metric VARCHAR,
    value DOUBLE, stderr DOUBLE, n_samples BIGINT, primary_metric BOOLEAN, task_version VARCHAR,
    PRIMARY KEY (experiment, variant, benchmark_scores_version, benchmark, metric));
CREATE TABLE IF NOT EXISTS eval_samples (
    experiment VARCHAR, variant VARCHAR, benchmark_scores_version VARCHAR, benchmark VARCHAR, doc_index BIGINT,
    prompt VARCHAR, generation VARCHAR, extracted VARCHAR, target VARCHAR, correct BOOLEAN,
    PRIMARY KEY (experiment, variant, benchmark_scores_version, benchmark, doc_index));
ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS scale VARCHAR;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS scale VARCHAR;
"""

LOCK_RETRY_S = 60.0

# What each upstream stage version stands for, as rows: (stage -> query over (experiment, version)).
STAGE_ROWS = {
    "checkpoint": "SELECT variant, scale, path, tokens_seen, steps, final_loss FROM checkpoints "
    "WHERE experiment = ? AND checkpoint_version = ?",
    "data_mixture": "SELECT variant, source, weight, selected_sequences, selected_tokens, epochs FROM mixture "
    "WHERE experiment = ? AND data_mixture_version = ? ORDER BY source",
    "token_shards": "SELECT variant, shard, documents, sequences, real_tokens FROM token_shards "
    "WHERE experiment = ? AND token_shards_version = ? ORDER BY shard",
    "thinking_trajectories": "SELECT shard, documents, output_tokens, errors FROM generation_shards "
    "WHERE experiment = ? AND thinking_trajectories_version = ? ORDER BY shard",
    "corpus": "SELECT shard, source, count(*) AS documents, sum(n_chars) AS chars FROM documents "
    "WHERE experiment = ? AND corpus_version = ? GROUP BY shard, source ORDER BY shard, source",
}


class Catalog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute(SCHEMA)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + LOCK_RETRY_S
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:  # another process holds the write lock
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            yield con
        finally:
            con.close()

    def record_stage(
        self,
        experiment: str,
        stage: str,
        version: str,
        *,
        variant: str | None = None,
        run_id: str = "",
        wall_s: float = 0.0,
        reused: bool = False,
        metrics: dict[str, Any] | None = None,
        parents: Sequence[tuple[str, str]] = (),
    ) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.connect() as con:
            con.execute(
                "INSERT INTO stage_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [experiment, stage, variant, version, run_id, now, wall_s, reused, json.dumps(metrics or {})],
            )
            for parent_stage, parent_version in parents:
                con.execute(
                    "INSERT OR IGNORE INTO lineage VALUES (?, ?, ?, ?, ?)",
                    [experiment, stage, version, parent_stage, parent_version],
                )

    def upsert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows, replacing those with the same primary key (a rerun rewrites, never duplicates)."""
        if not rows:
            return 0
        columns = list(rows[0])
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
        with self.connect() as con:
            con.executemany(sql, [[row[c] for c in columns] for row in rows])
        return len(rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            cursor = con.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def lineage(self, experiment: str, stage: str, version: str) -> list[dict[str, Any]]:
        """Every stage version upstream of (stage, version), nearest first: the inputs behind a result."""
        return self.query(
            """
            WITH RECURSIVE up(stage, version, parent_stage, parent_version, depth) AS (
                SELECT stage, version, parent_stage, parent_version, 1 FROM lineage
                WHERE experiment = ? AND stage = ? AND version = ?
                UNION ALL
                SELECT l.stage, l.version, l.parent_stage, l.parent_version, up.depth + 1
                FROM lineage l JOIN up ON l.stage = up.parent_stage AND l.version = up.parent_version
                WHERE l.experiment = ?
            )
            SELECT DISTINCT parent_stage AS stage, parent_version AS version, depth FROM up ORDER BY depth, stage
            """,
            [experiment, stage, version, experiment],
        )

    def document_uses(self, experiment: str, doc_id: str) -> dict[str, Any]:
        """Everything one document stands behind: its trajectories, then every stage version downstream of its
        corpus through the lineage, except mixtures that took nothing of its source (and what they fed), down to
        the scores. A mixture that took some of its source may still have left this document's sequences out, so
        a listed score used the document's source, not provably the document itself."""
        documents = self.query(
            "SELECT corpus_version, source, shard, n_chars FROM documents WHERE experiment = ? AND doc_id = ?",
            [experiment, doc_id],
        )
        edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in self.query("SELECT * FROM lineage WHERE experiment = ?", [experiment]):
            edges.setdefault((row["parent_stage"], row["parent_version"]), []).append((row["stage"], row["version"]))
        reached: dict[tuple[str, str], None] = {}  # insertion-ordered: nearest stages first
        queue = deque(("corpus", d["corpus_version"]) for d in documents)
        sources = {d["source"] for d in documents}
        while queue:
            node = queue.popleft()
            if node in reached or (node[0] == "data_mixture" and not self._mixture_takes(experiment, node[1], sources)):
                continue
            reached[node] = None
            queue.extend(edges.get(node, []))
        versions: dict[str, list[str]] = {}
        for stage, version in reached:
            versions.setdefault(stage, []).append(version)
        return {
            "documents": documents,
            "trajectories": self.query(
                "SELECT thinking_trajectories_version, shard, finish_reason, output_tokens, prompt_version, model "
                "FROM trajectories WHERE experiment = ? AND doc_id = ?",
                [experiment, doc_id],
            ),
            "stages": [{"stage": s, "version": v} for s, v in reached],
            "checkpoints": self._rows_at("checkpoints", "checkpoint_version", experiment, versions.get("checkpoint")),
            "scores": self._rows_at("scores", "benchmark_scores_version", experiment, versions.get("benchmark_scores")),
        }

    def _mixture_takes(self, experiment: str, version: str, sources: set[str]) -> bool:
        rows = self.query(
            "SELECT source, selected_sequences FROM mixture WHERE experiment = ? AND data_mixture_version = ?",
            [experiment, version],
        )
        return any(r["selected_sequences"] > 0 for r in rows if r["source"] in sources)

    def _rows_at(self, table: str, column: str, experiment: str, versions: list[str] | None) -> list[dict[str, Any]]:
        if not versions:
            return []
        marks = ", ".join("?" for _ in versions)
        return self.query(
            f"SELECT * FROM {table} WHERE experiment = ? AND {column} IN ({marks})", [experiment, *versions]
        )

    def tokens_seen(self, experiment: str, checkpoint_version: str) -> list[dict[str, Any]]:
        """Real tokens a checkpoint trained on, per source: its mixture's selection, found through lineage."""
        return self.query(
            """
            SELECT m.source, m.selected_sequences AS sequences, m.selected_tokens AS real_tokens, m.epochs
            FROM lineage l JOIN mixture m ON m.experiment = l.experiment AND m.data_mixture_version = l.parent_version
            WHERE l.experiment = ? AND l.stage = 'checkpoint' AND l.version = ? AND l.parent_stage = 'data_mixture'
            ORDER BY m.source
            """,
            [experiment, checkpoint_version],
        )

    def score_inputs(self, experiment: str, variant: str, benchmark: str, version: str) -> dict[str, Any]:
        """For one benchmark cell (variant x benchmark at a benchmarks version): its scores, its per-sample records,
        and every stage version behind it with that stage's rows (checkpoint, token shards, generation shards,
        corpus documents by shard): the inputs behind the score."""
        cell = [experiment, variant, version, benchmark]
        where = "WHERE experiment = ? AND variant = ? AND benchmark_scores_version = ? AND benchmark = ?"
        upstream, seen = [], set()
        for found in self.lineage(experiment, "benchmark_scores", version):  # nearest first; a stage reached twice once
            if (found["stage"], found["version"]) in seen:
                continue
            seen.add((found["stage"], found["version"]))
            sql = STAGE_ROWS.get(found["stage"])
            upstream.append(found | {"rows": self.query(sql, [experiment, found["version"]]) if sql else []})
        return {
            "scores": self.query(f"SELECT metric, value, stderr, n_samples, primary_metric FROM scores {where}", cell),
            "samples": self.query(
                f"SELECT doc_index, prompt, generation, extracted, target, correct FROM eval_samples {where} "
                "ORDER BY doc_index",
                cell,
            ),
            "upstream": upstream,
        }
