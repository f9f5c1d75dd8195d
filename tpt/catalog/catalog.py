"""The catalog's interface: bulk upserts, SQL over the tables, stage records, and the lineage queries.

Rows are keyed by (experiment, stage version), so a score joins to the checkpoint it measured, the checkpoint to its
token shards, the shards to the trajectories and the trajectories to the documents; ``lineage`` answers the question
"what stands behind this score".
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from tpt.catalog.schema import SCHEMA_VERSION, TABLES, conform, last_per_key, table
from tpt.catalog.store import Store

MARKER = "catalog.json"
QUERY_TRIES = 20  # each retry follows a merge that finished meanwhile; merges come every few writes


class CatalogLayoutError(RuntimeError):
    """The catalog at a path was written in an older (or newer) layout than this code reads."""


def _v(name: str) -> str:
    """The column that holds the stage version in table ``name``."""
    return TABLES[name].version


def _stage(name: str) -> str:
    """The stage that writes table ``name``: its version column is ``<stage>_version``, one vocabulary with the
    assets and the artifact folders."""
    return _v(name).removesuffix("_version")


# What each upstream stage version stands for, as rows: (stage -> query over (experiment, version)).
STAGE_ROWS = {
    _stage(name): f"SELECT variant, scale, path, tokens_seen, steps, final_loss FROM {name} "
    f"WHERE experiment = ? AND {_v(name)} = ?"
    for name in ("checkpoints", "sft_checkpoints")
} | {
    _stage("mixture"): "SELECT variant, source, weight, selected_sequences, selected_tokens, epochs FROM mixture "
    f"WHERE experiment = ? AND {_v('mixture')} = ? ORDER BY source",
    _stage("token_shards"): "SELECT variant, shard, documents, sequences, real_tokens FROM token_shards "
    f"WHERE experiment = ? AND {_v('token_shards')} = ? ORDER BY shard",
    _stage("generation_shards"): "SELECT shard, documents, output_tokens, errors FROM generation_shards "
    f"WHERE experiment = ? AND {_v('generation_shards')} = ? ORDER BY shard",
    _stage("documents"): "SELECT shard, source, count(*) AS documents, sum(n_chars) AS chars FROM documents "
    f"WHERE experiment = ? AND {_v('documents')} = ? GROUP BY shard, source ORDER BY shard, source",
}


class Catalog:
    """One catalog folder (a local path or an fsspec URL) shared by every process of a deployment."""

    def __init__(self, path: Any):
        self.path = path
        self.store = Store(str(path))
        fs, root = self.store.fs, self.store.root
        if fs.isfile(root):
            raise CatalogLayoutError(
                f"{path} is a single-file DuckDB catalog (schema 1); convert it once with "
                f"`python -m tpt.catalog migrate {path}` (the old file is kept as {path}.v1)"
            )
        marker = f"{root}/{MARKER}"
        if fs.exists(marker):
            found = json.loads(fs.cat_file(marker))["schema_version"]
            if found != SCHEMA_VERSION:
                raise CatalogLayoutError(
                    f"catalog {path} has schema {found}, this code reads schema {SCHEMA_VERSION}; "
                    + (
                        f"convert it once with `python -m tpt.catalog migrate {path}`"
                        if found < SCHEMA_VERSION
                        else "update the code"
                    )
                )
        else:
            fs.makedirs(root, exist_ok=True)
            fs.pipe_file(marker, json.dumps({"schema_version": SCHEMA_VERSION}).encode())

    def upsert(self, name: str, rows: Sequence[dict[str, Any]] | pa.Table) -> int:
        """Write rows in bulk, replacing those with the same primary key (a rerun rewrites, never duplicates)."""
        spec = table(name)
        data = conform(name, rows)
        if data.num_rows == 0:
            return 0
        for column in spec.key:
            if missing := data.column(column).null_count:
                raise ValueError(f"catalog rows for {name}: {missing} rows lack key column {column!r}")
        data = last_per_key(data, spec.key)
        self.store.write(name, data)
        self.store.merge(name, spec)
        return data.num_rows

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run ``sql`` over views of the tables it names; a file merged away meanwhile means listing again."""
        names = [n for n in TABLES if re.search(rf"\b{n}\b", sql)]
        for attempt in range(QUERY_TRIES):
            listed = {n: self.store.files(n) for n in names}
            with self.store.connect() as con:
                try:
                    for n, files in listed.items():
                        if files:
                            con.execute(f"CREATE VIEW {n} AS {self.store.view_sql(TABLES[n], files)}")
                        else:
                            con.register(n, TABLES[n].schema.empty_table())
                    cursor = con.execute(sql, list(params))
                    names_out = [d[0] for d in cursor.description]
                    return [dict(zip(names_out, row, strict=True)) for row in cursor.fetchall()]
                except duckdb.IOException:
                    now = {n: set(self.store.files(n)) for n in names}
                    if attempt + 1 == QUERY_TRIES or all(set(f) <= now[n] for n, f in listed.items()):
                        raise
        raise AssertionError("unreachable")

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
        run = {"experiment": experiment, "stage": stage, "variant": variant, "version": version, "run_id": run_id}
        self.upsert(
            "stage_runs",
            [run | {"recorded_at": now, "wall_s": wall_s, "reused": reused, "metrics": json.dumps(metrics or {})}],
        )
        edges = [
            {"experiment": experiment, "stage": stage, "version": version, "parent_stage": s, "parent_version": v}
            for s, v in parents
        ]
        self.upsert("lineage", edges)

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
            f"SELECT {_v('documents')}, source, shard, n_chars FROM documents WHERE experiment = ? AND doc_id = ?",
            [experiment, doc_id],
        )
        edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in self.query("SELECT * FROM lineage WHERE experiment = ?", [experiment]):
            edges.setdefault((row["parent_stage"], row["parent_version"]), []).append((row["stage"], row["version"]))
        reached: dict[tuple[str, str], None] = {}  # insertion-ordered: nearest stages first
        queue = deque((_stage("documents"), d[_v("documents")]) for d in documents)
        sources = {d["source"] for d in documents}
        while queue:
            node = queue.popleft()
            if node in reached or (
                node[0] == _stage("mixture") and not self._mixture_takes(experiment, node[1], sources)
            ):
                continue
            reached[node] = None
            queue.extend(edges.get(node, []))
        versions: dict[str, list[str]] = {}
        for stage, version in reached:
            versions.setdefault(stage, []).append(version)
        return {
            "documents": documents,
            "trajectories": self.query(
                f"SELECT {_v('trajectories')}, shard, finish_reason, output_tokens, prompt_version, model "
                "FROM trajectories WHERE experiment = ? AND doc_id = ?",
                [experiment, doc_id],
            ),
            "stages": [{"stage": s, "version": v} for s, v in reached],
            **{
                name: self._rows_at(name, experiment, versions.get(_stage(name)))
                for name in ("checkpoints", "scores", "sft_checkpoints", "sft_scores")
            },
        }

    def _mixture_takes(self, experiment: str, version: str, sources: set[str]) -> bool:
        rows = self.query(
            f"SELECT source, selected_sequences FROM mixture WHERE experiment = ? AND {_v('mixture')} = ?",
            [experiment, version],
        )
        return any(r["selected_sequences"] > 0 for r in rows if r["source"] in sources)

    def _rows_at(self, name: str, experiment: str, versions: list[str] | None) -> list[dict[str, Any]]:
        if not versions:
            return []
        marks = ", ".join("?" for _ in versions)
        sql = f"SELECT * FROM {name} WHERE experiment = ? AND {_v(name)} IN ({marks})"
        return self.query(sql, [experiment, *versions])

    def tokens_seen(self, experiment: str, checkpoint_version: str) -> list[dict[str, Any]]:
        """Real tokens a checkpoint trained on, per source: its mixture's selection, found through lineage."""
        return self.query(
            f"""
            SELECT m.source, m.selected_sequences AS sequences, m.selected_tokens AS real_tokens, m.epochs
            FROM lineage l JOIN mixture m ON m.experiment = l.experiment AND m.{_v("mixture")} = l.parent_version
            WHERE l.experiment = ? AND l.stage = '{_stage("checkpoints")}' AND l.version = ?
                AND l.parent_stage = '{_stage("mixture")}'
            ORDER BY m.source
            """,
            [experiment, checkpoint_version],
        )

    def score_inputs(
        self, experiment: str, variant: str, benchmark: str, version: str, tables: str = ""
    ) -> dict[str, Any]:
        """For one benchmark cell (variant x benchmark at a benchmarks version): its scores, its per-sample records,
        and every stage version behind it with that stage's rows (checkpoint, token shards, generation shards,
        corpus documents by shard): the inputs behind the score. ``tables="sft_"``: a cell of an SFT model."""
        scores, samples = f"{tables}scores", f"{tables}eval_samples"
        cell = [experiment, variant, version, benchmark]
        where = f"WHERE experiment = ? AND variant = ? AND {_v(scores)} = ? AND benchmark = ?"
        upstream, seen = [], set()
        for found in self.lineage(experiment, _stage(scores), version):  # nearest first; a stage reached twice once
            if (found["stage"], found["version"]) in seen:
                continue
            seen.add((found["stage"], found["version"]))
            sql = STAGE_ROWS.get(found["stage"])
            upstream.append(found | {"rows": self.query(sql, [experiment, found["version"]]) if sql else []})
        return {
            "scores": self.query(
                f"SELECT metric, value, stderr, n_samples, primary_metric FROM {scores} {where}", cell
            ),
            "samples": self.query(
                f"SELECT doc_index, prompt, generation, extracted, target, correct FROM {samples} {where} "
                "ORDER BY doc_index",
                cell,
            ),
            "upstream": upstream,
        }
