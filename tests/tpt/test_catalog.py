from itertools import pairwise

from tpt.catalog import Catalog


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
        ("trajectories", "t1"),
        ("augmented", "a1"),
        ("token_shards", "k1"),
        ("checkpoint", "m1"),
        ("benchmarks", "b1"),
    ]
    for (parent, parent_v), (child, child_v) in pairwise(chain):
        catalog.record_stage("e", child, child_v, parents=[(parent, parent_v)])
    catalog.record_stage("e", "benchmarks", "b1", parents=[("checkpoint", "m1")])  # recorded twice: no duplicate
    catalog.record_stage("other", "benchmarks", "b1", parents=[("checkpoint", "zz")])  # another experiment
    found = catalog.lineage("e", "benchmarks", "b1")
    assert [(r["stage"], r["version"]) for r in found] == list(reversed(chain[:-1]))
    assert [r["depth"] for r in found] == [1, 2, 3, 4, 5]
    runs = catalog.query("SELECT count(*) AS n FROM stage_runs WHERE experiment = 'e' AND stage = 'benchmarks'")
    assert runs == [{"n": 2}]
