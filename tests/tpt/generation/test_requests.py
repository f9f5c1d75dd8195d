"""Request keys: each component changes the key; the index finds a key by opening only the parts that hold it."""

import pyarrow as pa
import pytest

from tpt.atomic import write_parquet
from tpt.config import GenerationConfig, ModelSource, PromptConfig, SamplingConfig
from tpt.generation import requests
from tpt.generation.requests import cached_rows, record_part, request_keys
from tpt.generation.worker import OUTPUT_SCHEMA

BASE = GenerationConfig(
    model=ModelSource(kind="local", name="/models/a"), prompt=PromptConfig(version="v1"), max_document_tokens=2048
)


@pytest.mark.parametrize(
    "changed",
    [
        BASE.model_copy(update={"prompt": PromptConfig(version="v2")}),
        BASE.model_copy(update={"prompt": PromptConfig(version="v1", template="Think: {{CONTEXT}}")}),
        BASE.model_copy(update={"model": ModelSource(kind="local", name="/models/b")}),
        BASE.model_copy(update={"max_document_tokens": 1024}),
        BASE.model_copy(update={"sampling": SamplingConfig(seed=1)}),
        BASE.model_copy(update={"engine": "vllm"}),
    ],
)
def test_each_versioned_component_changes_the_key(changed):
    assert request_keys(["doc"], changed, "transformers-1") != request_keys(["doc"], BASE, "transformers-1")


def test_the_engine_version_and_the_document_change_the_key_and_speed_settings_do_not():
    key = request_keys(["doc"], BASE, "vllm-0.32.0")
    assert key != request_keys(["doc"], BASE, "vllm-0.32.1") and key != request_keys(["other"], BASE, "vllm-0.32.0")
    faster = BASE.model_copy(update={"batch_size": 512, "max_concurrent_batches": 2})
    assert request_keys(["doc"], faster, "vllm-0.32.0") == key


def _part(root, run: int, n: int):
    rows = [
        {"doc_id": f"r{run}d{i}", "request_key": f"k{run}-{i}", "finish_reason": "stop", "thinking": f"t{run}-{i}"}
        for i in range(n)
    ]
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    path = root / "exp" / "trajectories" / f"v{run}" / "shard-00000" / f"part-{run:04d}.parquet"
    write_parquet(path, table)
    record_part(root, path, table)


def test_a_lookup_opens_only_the_parts_that_hold_the_asked_keys(tmp_path, monkeypatch):
    opened: list[str] = []
    real_read = requests.read_table
    monkeypatch.setattr(requests, "read_table", lambda path, **kw: opened.append(str(path)) or real_read(path, **kw))
    for run in range(20):
        _part(tmp_path, run, 3)
    found = cached_rows(tmp_path, ["k3-1", "k17-0", "missing"])
    assert sorted(found["thinking"].to_pylist()) == ["t17-0", "t3-1"] and len(opened) == 2

    for run in range(20, 200):  # ten times the files written: the same lookup opens the same two
        _part(tmp_path, run, 3)
    monkeypatch.setattr(type(tmp_path), "glob", lambda *a, **k: pytest.fail("a lookup listed the artifact root"))
    opened.clear()
    found = cached_rows(tmp_path, ["k3-1", "k17-0", "missing"])
    assert sorted(found["thinking"].to_pylist()) == ["t17-0", "t3-1"] and len(opened) == 2


def test_parts_written_before_the_index_existed_are_indexed_once(tmp_path):
    table = pa.Table.from_pylist(
        [{"doc_id": "d", "request_key": "old", "finish_reason": "stop", "thinking": "kept"}], schema=OUTPUT_SCHEMA
    )
    write_parquet(tmp_path / "exp" / "trajectories" / "v0" / "shard-00000" / "part-a.parquet", table)
    assert cached_rows(tmp_path, ["old"])["thinking"].to_pylist() == ["kept"]
    assert (tmp_path / requests.INDEX).exists()
