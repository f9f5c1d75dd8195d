import json
import os
import re
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tpt.catalog import Catalog, CatalogLayoutError, schema, store
from tpt.catalog import catalog as catalog_module
from tpt.catalog import migrate as migrate_module

REPO = Path(__file__).resolve().parents[2]


def test_upsert_replaces_rows_with_the_same_key(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    row = {"experiment": "e", "corpus_version": "v1", "doc_id": "d1", "source": "web", "shard": "s0", "n_chars": 10}
    catalog.upsert("documents", [row, row | {"doc_id": "d2"}])
    catalog.upsert("documents", [row | {"n_chars": 99}])  # a rerun rewrites, never duplicates
    rows = catalog.query("SELECT doc_id, n_chars FROM documents ORDER BY doc_id")
    assert rows == [{"doc_id": "d1", "n_chars": 99}, {"doc_id": "d2", "n_chars": 10}]


def test_lineage_walks_from_a_score_back_to_the_corpus(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    chain = [
        ("corpus", "c1"),
        ("thinking_trajectories", "t1"),
        ("augmented_documents", "a1"),
        ("token_shards", "k1"),
        ("checkpoint", "m1"),
        ("benchmark_scores", "b1"),
    ]
    for (parent, parent_v), (child, child_v) in pairwise(chain):
        catalog.record_stage("e", child, child_v, parents=[(parent, parent_v)])
    catalog.record_stage("e", "benchmark_scores", "b1", parents=[("checkpoint", "m1")])  # recorded twice: no duplicate
    catalog.record_stage("other", "benchmark_scores", "b1", parents=[("checkpoint", "zz")])  # another experiment
    found = catalog.lineage("e", "benchmark_scores", "b1")
    assert [(r["stage"], r["version"]) for r in found] == list(reversed(chain[:-1]))
    assert [r["depth"] for r in found] == [1, 2, 3, 4, 5]
    runs = catalog.query("SELECT count(*) AS n FROM stage_runs WHERE experiment = 'e' AND stage = 'benchmark_scores'")
    assert runs == [{"n": 2}]


def test_score_inputs_lists_the_rows_behind_one_score(tmp_path):
    catalog = Catalog(tmp_path / "c.duckdb")
    catalog.record_stage("e", "thinking_trajectories", "t1", parents=[("corpus", "c1")])
    catalog.record_stage("e", "augmented_documents", "a1", parents=[("corpus", "c1"), ("thinking_trajectories", "t1")])
    catalog.record_stage("e", "token_shards", "k1", parents=[("augmented_documents", "a1")])
    catalog.record_stage("e", "checkpoint", "m1", parents=[("token_shards", "k1")])
    catalog.record_stage("e", "benchmark_scores", "b1", parents=[("checkpoint", "m1")])
    catalog.record_stage("e", "benchmark_scores", "b2", parents=[("checkpoint", "m2")])  # another cell's checkpoint
    doc = {"experiment": "e", "corpus_version": "c1", "source": "web", "n_chars": 10}
    catalog.upsert("documents", [doc | {"doc_id": f"d{i}", "shard": f"s{i % 2}"} for i in range(5)])
    shard = {
        "experiment": "e",
        "thinking_trajectories_version": "t1",
        "generated_this_run": 1,
        "cache_hits": 0,
        "errors": 0,
    }
    catalog.upsert("generation_shards", [shard | {"shard": "s0", "documents": 3, "output_tokens": 30}])
    packed = {"experiment": "e", "variant": "tpt", "token_shards_version": "k1", "shard": "s0", "documents": 3}
    catalog.upsert("token_shards", [packed | {"sequences": 2, "real_tokens": 100}])
    ckpt = {"experiment": "e", "variant": "tpt", "checkpoint_version": "m1", "path": "/m1", "tokens_seen": 4096}
    catalog.upsert("checkpoints", [ckpt | {"steps": 1, "final_loss": 5.0}])
    cell = {"experiment": "e", "variant": "tpt", "benchmark_scores_version": "b1", "benchmark": "gsm8k"}
    catalog.upsert("scores", [cell | {"metric": "exact_match,strict-match", "value": 0.5, "primary_metric": True}])
    sample = cell | {"prompt": "Q: 1+1? A:", "extracted": "2", "target": "2"}
    catalog.upsert("eval_samples", [sample | {"doc_index": 0, "generation": "2", "correct": True}])
    catalog.upsert("eval_samples", [sample | {"doc_index": 1, "generation": "3", "correct": False}])
    found = catalog.score_inputs("e", "tpt", "gsm8k", "b1")
    assert [s["value"] for s in found["scores"]] == [0.5]
    assert [(s["doc_index"], s["correct"]) for s in found["samples"]] == [(0, True), (1, False)]
    upstream = {(u["stage"], u["version"]): u["rows"] for u in found["upstream"]}
    assert list(upstream) == [
        ("checkpoint", "m1"),
        ("token_shards", "k1"),
        ("augmented_documents", "a1"),
        ("corpus", "c1"),
        ("thinking_trajectories", "t1"),
    ]  # nearest first, the corpus once
    assert upstream[("checkpoint", "m1")][0]["path"] == "/m1"
    assert upstream[("token_shards", "k1")] == [
        {"variant": "tpt", "shard": "s0", "documents": 3, "sequences": 2, "real_tokens": 100}
    ]
    assert [r["shard"] for r in upstream[("thinking_trajectories", "t1")]] == ["s0"]
    assert [(r["shard"], r["documents"]) for r in upstream[("corpus", "c1")]] == [("s0", 3), ("s1", 2)]
    assert upstream[("augmented_documents", "a1")] == []  # a stage with no rows of its own still shows in the chain


def test_upsert_takes_an_arrow_table_and_leaves_columns_not_given_null(tmp_path):
    catalog = Catalog(tmp_path / "c")
    rows = pa.table({"experiment": ["e", "e"], "corpus_version": ["v1"] * 2, "doc_id": ["a", "b"], "n_chars": [1, 2]})
    assert catalog.upsert("documents", rows) == 2
    found = catalog.query("SELECT doc_id, n_chars, source FROM documents ORDER BY doc_id")
    assert found == [{"doc_id": "a", "n_chars": 1, "source": None}, {"doc_id": "b", "n_chars": 2, "source": None}]


def test_the_last_row_of_a_key_given_twice_in_one_batch_wins(tmp_path):
    catalog = Catalog(tmp_path / "c")
    row = {"experiment": "e", "corpus_version": "v1", "doc_id": "d1", "n_chars": 1}
    assert catalog.upsert("documents", [row, row | {"n_chars": 2}, row | {"doc_id": "d2"}]) == 2
    assert catalog.query("SELECT doc_id, n_chars FROM documents ORDER BY doc_id") == [
        {"doc_id": "d1", "n_chars": 2},
        {"doc_id": "d2", "n_chars": 1},
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"experiment": "e", "corpus_version": "v1", "doc_id": "d", "colour": "red"}], "no column(s) ['colour']"),
        ([{"experiment": "e", "doc_id": "d"}], "1 rows lack key column 'corpus_version'"),
        ([{"experiment": "e", "corpus_version": "v1", "doc_id": "d", "n_chars": "many"}], "catalog rows for documents"),
    ],
)
def test_bad_rows_fail_in_one_line_and_write_nothing(tmp_path, rows, message):
    catalog = Catalog(tmp_path / "c")
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        catalog.upsert("documents", rows)
    assert "\n" not in str(caught.value)
    assert catalog.query("SELECT count(*) AS n FROM documents") == [{"n": 0}]


def test_reruns_replace_rows_across_merges_and_the_files_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_DELTAS", 2)
    catalog = Catalog(tmp_path / "c")
    doc = {"experiment": "e", "corpus_version": "v1", "source": "web"}
    catalog.upsert("documents", [doc | {"doc_id": f"d{i}", "n_chars": 0} for i in range(100)])  # the big file
    for run in range(1, 8):  # reruns rewrite a few keys each; the small files are merged as they pile up
        catalog.upsert("documents", [doc | {"doc_id": f"d{i}", "n_chars": run} for i in range(run * 10)])
        assert len(catalog.store.files("documents")) <= 3
    rows = catalog.query("SELECT doc_id, n_chars FROM documents")
    assert len(rows) == 100
    expected = {f"d{i}": max([run for run in range(1, 8) if i < run * 10], default=0) for i in range(100)}
    assert {r["doc_id"]: r["n_chars"] for r in rows} == expected


def test_a_merge_rewrites_the_bases_a_rerun_replaced_rows_of_and_leaves_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_DELTAS", 0)  # every write merges
    monkeypatch.setattr(store, "SMALL_BASE_BYTES", 0)  # and no base is small enough to be folded in
    catalog = Catalog(tmp_path / "c")
    doc = {"experiment": "e", "source": "web"}
    catalog.upsert("documents", [doc | {"corpus_version": "v1", "doc_id": f"d{i}", "n_chars": 1} for i in range(50)])
    catalog.upsert("documents", [doc | {"corpus_version": "v2", "doc_id": f"d{i}", "n_chars": 1} for i in range(50)])
    before = catalog.store.files("documents")
    catalog.upsert("documents", [doc | {"corpus_version": "v1", "doc_id": f"d{i}", "n_chars": 2} for i in range(10)])
    files = catalog.store.files("documents")
    # v1's base replaced by a copy without the rerun's keys (a new file, never one changed in place), v2's untouched
    assert len(before) == 2 and set(before) & set(files) == {before[1]} and len(files) == 3
    assert all("/base-" in f for f in files)
    rows = catalog.query("SELECT corpus_version AS v, n_chars, count(*) AS n FROM documents GROUP BY ALL ORDER BY ALL")
    assert rows == [
        {"v": "v1", "n_chars": 1, "n": 40},
        {"v": "v1", "n_chars": 2, "n": 10},
        {"v": "v2", "n_chars": 1, "n": 50},
    ]
    # the bases hold no key twice between them, so a plain scan of the files counts each row once
    [plain] = catalog.query(f"SELECT count(*) AS n FROM {catalog.store.scan(files)}")
    assert plain == {"n": 100}


def test_a_writer_that_finds_a_merge_under_way_skips_it_and_a_dead_merges_lock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_DELTAS", 1)
    catalog = Catalog(tmp_path / "c")
    doc = {"experiment": "e", "corpus_version": "v1", "source": "web"}
    catalog.upsert("documents", [doc | {"doc_id": "d0"}])
    lock = tmp_path / "c" / "documents" / ".merging"
    lock.write_text(str(time.time()))  # another process merges this table now
    started = time.perf_counter()
    for i in range(1, 4):
        catalog.upsert("documents", [doc | {"doc_id": f"d{i}"}])
    assert time.perf_counter() - started < 5  # no wait for the lock
    assert sum("/delta-" in f for f in catalog.store.files("documents")) == 4  # nothing merged
    lock.write_text(str(time.time() - store.MERGE_STALE_S - 1))  # its process died
    catalog.upsert("documents", [doc | {"doc_id": "d4"}])
    assert not lock.exists()
    assert [f.rsplit("/", 1)[1][:5] for f in catalog.store.files("documents")] == ["base-"]
    assert catalog.query("SELECT count(*) AS n FROM documents") == [{"n": 5}]


def test_a_catalog_on_an_fsspec_url(tmp_path):
    catalog = Catalog("memory://catalog-test/c")
    catalog.record_stage("e", "thinking_trajectories", "t1", parents=[("corpus", "c1")])
    catalog.upsert("documents", [{"experiment": "e", "corpus_version": "c1", "doc_id": "d", "source": "web"}])
    assert catalog.lineage("e", "thinking_trajectories", "t1") == [{"stage": "corpus", "version": "c1", "depth": 1}]
    assert catalog.document_uses("e", "d")["stages"] == [
        {"stage": "corpus", "version": "c1"},
        {"stage": "thinking_trajectories", "version": "t1"},
    ]


WRITER = """
import sys
from tpt.catalog import Catalog, store
store.MAX_DELTAS = 3  # merges run while the other process writes
path, name, batches, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
catalog = Catalog(path)
open(f"{path}.{name}.ready", "w").close()
while not __import__("os").path.exists(f"{path}.go"):
    pass
for b in range(batches):
    doc = {"experiment": "e", "source": name, "shard": "s", "n_chars": b}
    mine = [doc | {"corpus_version": name, "doc_id": f"{b}-{i}"} for i in range(size)]
    shared = [doc | {"corpus_version": "shared", "doc_id": f"{i}"} for i in range(size)]  # both write these keys
    catalog.upsert("documents", mine + shared)
    catalog.record_stage("e", "corpus", f"{name}-{b}", parents=[("source", name)])
"""


def test_two_processes_writing_at_once_both_succeed_and_no_row_is_lost(tmp_path):
    path, batches, size = str(tmp_path / "c"), 15, 200
    catalog = Catalog(path)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, name, str(batches), str(size)], env=env)
        for name in ("a", "b")
    ]
    while not all(os.path.exists(f"{path}.{name}.ready") for name in ("a", "b")):
        time.sleep(0.05)
    Path(f"{path}.go").touch()
    seen = []
    while any(w.poll() is None for w in writers):  # readers meanwhile: never blocked, never see a row twice
        [row] = catalog.query("SELECT count(*) AS n, count(DISTINCT (corpus_version, doc_id)) AS keys FROM documents")
        assert row["n"] == row["keys"]
        seen.append(row["n"])
    assert [w.wait() for w in writers] == [0, 0]
    counts = catalog.query("SELECT corpus_version, count(*) AS n FROM documents GROUP BY ALL ORDER BY ALL")
    assert counts == [
        {"corpus_version": v, "n": n} for v, n in [("a", batches * size), ("b", batches * size), ("shared", size)]
    ]
    assert catalog.query("SELECT count(*) AS n FROM stage_runs") == [{"n": 2 * batches}]
    assert catalog.query("SELECT count(*) AS n FROM lineage") == [{"n": 2 * batches}]
    assert seen == sorted(seen) and len(seen) > 1
    assert len(catalog.store.files("documents")) <= 5


OLD_SCHEMA = """
CREATE TABLE stage_runs (experiment VARCHAR, stage VARCHAR, variant VARCHAR, version VARCHAR, run_id VARCHAR,
    recorded_at TIMESTAMP, wall_s DOUBLE, reused BOOLEAN, metrics JSON);
CREATE TABLE lineage (experiment VARCHAR, stage VARCHAR, version VARCHAR, parent_stage VARCHAR, parent_version VARCHAR,
    PRIMARY KEY (experiment, stage, version, parent_stage, parent_version));
CREATE TABLE documents (experiment VARCHAR, corpus_version VARCHAR, doc_id VARCHAR, source VARCHAR, shard VARCHAR,
    n_chars BIGINT, PRIMARY KEY (experiment, corpus_version, doc_id));
INSERT INTO stage_runs VALUES ('e', 'corpus', NULL, 'c1', 'r', '2026-01-01', 1.5, false, '{"documents": 2}');
INSERT INTO lineage VALUES ('e', 'trajectories', 't1', 'corpus', 'c1');
INSERT INTO documents VALUES ('e', 'c1', 'd1', 'web', 's0', 10), ('e', 'c1', 'd2', 'wiki', 's1', 20);
"""


def test_a_single_file_catalog_of_schema_1_fails_in_one_line_then_migrates(tmp_path):
    old = tmp_path / "catalog.duckdb"
    with duckdb.connect(str(old)) as con:
        con.execute(OLD_SCHEMA)
    with pytest.raises(CatalogLayoutError, match=r"python -m tpt\.catalog migrate") as caught:
        Catalog(old)
    assert "\n" not in str(caught.value)
    command = [sys.executable, "-m", "tpt.catalog", "migrate", str(old)]
    done = subprocess.run(command, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == {"stage_runs": 1, "lineage": 1, "documents": 2}
    catalog = Catalog(old)
    assert catalog.query("SELECT doc_id, n_chars FROM documents ORDER BY doc_id") == [
        {"doc_id": "d1", "n_chars": 10},
        {"doc_id": "d2", "n_chars": 20},
    ]
    assert catalog.lineage("e", "trajectories", "t1") == [
        {"stage": "corpus", "version": "c1", "depth": 1}
    ]  # old rows keep the names they were recorded under
    [run] = catalog.query("SELECT wall_s, metrics FROM stage_runs")
    assert run["wall_s"] == 1.5 and json.loads(run["metrics"]) == {"documents": 2}
    assert (tmp_path / "catalog.duckdb.v1").is_file()  # the old file is kept


def test_a_renamed_column_is_migrated_and_an_unmigrated_catalog_is_refused(tmp_path, monkeypatch):
    """A future rename, simulated: the next schema calls ``token_shards_version`` ``next_version``."""
    path, renamed, now = tmp_path / "c", "next_version", schema.SCHEMA_VERSION
    row = {"experiment": "e", "variant": "tpt", "token_shards_version": "k1", "shard": "s0", "real_tokens": 7}
    Catalog(path).upsert("token_shards", [row, row | {"shard": "s1"}])
    Catalog(path).upsert("token_shards", [row | {"real_tokens": 8}])  # a rerun: its row wins after the migration
    old = schema.TABLES["token_shards"]
    columns = {(renamed if c == "token_shards_version" else c): t for c, t in old.columns.items()}
    key = tuple(renamed if c == "token_shards_version" else c for c in old.key)
    monkeypatch.setitem(schema.TABLES, "token_shards", schema.Table(columns, key, renamed))
    for module in (schema, catalog_module, migrate_module):
        monkeypatch.setattr(module, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(migrate_module, "RENAMES", {"token_shards": {"token_shards_version": renamed}})
    with pytest.raises(
        CatalogLayoutError, match=f"has schema {now}, this code reads schema {now + 1}; convert it once"
    ):
        Catalog(path)
    assert migrate_module.migrate(path)["token_shards"] == 2
    rows = Catalog(path).query(f"SELECT {renamed}, shard, real_tokens FROM token_shards ORDER BY shard")
    assert rows == [
        {renamed: "k1", "shard": "s0", "real_tokens": 8},
        {renamed: "k1", "shard": "s1", "real_tokens": 7},
    ]
