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
