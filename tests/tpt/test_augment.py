"""x = [d; t] as an Arrow join: order, failed or empty thinking, duplicates; one Ray task per shard."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tpt.augment import AugmentError, AugmentJob, augment, augment_on_ray, finished_summary

DOCS = pa.table({"doc_id": ["a", "b", "c", "d"], "source": ["web"] * 4, "text": ["A", "B", "C", "D"]})


def _trajectories(ids, thinking, reasons) -> pa.Table:
    return pa.table({"doc_id": ids, "thinking": thinking, "finish_reason": reasons})


def test_join_keeps_document_order_and_leaves_failed_or_empty_thinking_out():
    got = augment(
        DOCS, _trajectories(["d", "c", "b", "a"], ["td", None, "", "ta"], ["stop", "error", "stop", "length"]), "|"
    )
    assert got.to_pylist() == [
        {"doc_id": "a", "source": "web", "text": "A|ta", "has_thinking": True},
        {"doc_id": "b", "source": "web", "text": "B", "has_thinking": False},
        {"doc_id": "c", "source": "web", "text": "C", "has_thinking": False},
        {"doc_id": "d", "source": "web", "text": "D|td", "has_thinking": True},
    ]


def test_a_document_twice_in_the_trajectories_is_joined_once():
    got = augment(DOCS, _trajectories(["a", "b", "c", "d", "a"], list("tuvwx"), ["stop"] * 5), "|")
    assert got.num_rows == 4 and got["doc_id"].to_pylist() == ["a", "b", "c", "d"]


def test_a_document_without_a_trajectory_is_refused():
    with pytest.raises(ValueError, match="1 documents have no trajectory"):
        augment(DOCS, _trajectories(["a", "b", "c"], list("xyz"), ["stop"] * 3), "|")


def test_one_task_per_shard_writes_the_shard_and_its_figures(tmp_path):
    jobs = {}
    for shard, ids in (("shard-00000", ["a", "b", "c", "d"]), ("shard-00001", ["a", "b", "c"])):
        pq.write_table(DOCS, tmp_path / f"{shard}.parquet")
        (tmp_path / "thinking" / shard).mkdir(parents=True)
        pq.write_table(
            _trajectories(ids, ["x"] * len(ids), ["stop"] * len(ids)), tmp_path / "thinking" / shard / "part-0.parquet"
        )
        jobs[shard] = AugmentJob(
            str(tmp_path / f"{shard}.parquet"),
            str(tmp_path / "thinking" / shard),
            str(tmp_path / "out" / f"{shard}.parquet"),
        )
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        figures = augment_on_ray({"shard-00000": jobs["shard-00000"]}, "|")
        with pytest.raises(AugmentError, match=r"^1 documents have no trajectory \(first: d\)"):
            augment_on_ray({"shard-00001": jobs["shard-00001"]}, "|")
    finally:
        ray.shutdown()
    assert figures == {
        "shard-00000": {"documents": 4, "documents_with_thinking": 4, "documents_without_thinking": 0, "characters": 12}
    }
    assert finished_summary(jobs["shard-00000"].out_path) == figures["shard-00000"]  # a rerun reads only this
    assert pq.read_table(jobs["shard-00000"].out_path)["text"].to_pylist() == ["A|x", "B|x", "C|x", "D|x"]
    assert finished_summary(jobs["shard-00001"].out_path) is None  # nothing half-written
