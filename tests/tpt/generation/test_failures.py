"""Poison documents, bisection, and a generation actor killed mid-shard, on the stand-in engine (fast and exact:
the real engines' own failure paths are tested in test_shard_runner.py and test_vllm_engine.py)."""

import os
import signal
import threading
import time

import pyarrow as pa
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import SUCCESS, WorkerPlacement, generate_shards, read_trajectories
from tpt.generation.standin import StandInEngine
from tpt.generation.worker import ThinkingWorker


@pytest.fixture(scope="module")
def generation(embedded) -> GenerationConfig:
    return GenerationConfig(
        engine="standin",
        model=embedded.generation.model,
        prompt=PromptConfig(version="failures"),
        sampling=SamplingConfig(max_thinking_tokens=8, seed=1),
        max_document_tokens=64,
        batch_size=2,
    )


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _shard(n: int, poison: set[int] = frozenset()) -> pa.Table:
    texts = [("POISON " if i in poison else "") + f"Document {i} says that {i} + {i} = {2 * i}." for i in range(n)]
    return pa.table({"doc_id": [f"d{i}" for i in range(n)], "source": ["web"] * n, "text": texts})


def test_a_poison_document_is_found_by_bisection_not_one_by_one(smollm2_dir, generation):
    engine = StandInEngine(EngineSpec("standin", str(smollm2_dir)))
    worker = ThinkingWorker(EngineSpec("standin", str(smollm2_dir)), generation, engine=engine)
    table = _shard(16, poison={5})
    batch = {c: table[c].to_pylist() for c in table.column_names} | {"shard": ["s"] * 16, "request_key": ["k"] * 16}
    out = worker(batch)
    assert [i for i, r in enumerate(out["finish_reason"]) if r == "error"] == [5]
    assert "refuses a POISON prompt" in out["error"][5]
    assert engine.calls == 1 + 2 * 4  # the batch, then both halves at each of log2(16) levels; one by one: 17


def test_a_poison_document_through_the_stage_is_recorded_counted_and_not_retried(
    local_ray, tmp_path, smollm2_dir, generation
):
    spec = EngineSpec("standin", str(smollm2_dir))
    shard = _shard(6, poison={2})
    first = generate_shards({"shard-00000": shard}, tmp_path, spec, generation, WorkerPlacement(), print)["shard-00000"]
    rows = {r["doc_id"]: r for r in read_trajectories(tmp_path / "shard-00000").to_pylist()}
    assert sorted(rows) == [f"d{i}" for i in range(6)] and (tmp_path / "shard-00000" / SUCCESS).exists()
    assert first.errors == 1 and first.finish_reasons == {"length": 5, "error": 1}
    assert rows["d2"]["finish_reason"] == "error" and "POISON" in rows["d2"]["error"] and rows["d2"]["thinking"] is None
    # A rerun, even with the success marker gone, treats the error row as done: it is not generated again.
    (tmp_path / "shard-00000" / SUCCESS).unlink()
    again = generate_shards({"shard-00000": shard}, tmp_path, spec, generation, WorkerPlacement(), print)["shard-00000"]
    assert again.generated_this_run == 0 and again.finished_before == 6 and again.errors == 1


def test_a_killed_generation_actor_is_restarted_and_every_document_lands_once(
    local_ray, tmp_path, smollm2_dir, generation
):
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(2):
        (gate / f"ticket-{i:03d}").touch()
    spec = EngineSpec("standin", str(smollm2_dir), standin_gate=str(gate))
    out = tmp_path / "t"
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(
            generate_shards({"shard-00000": _shard(8)}, out, spec, generation, WorkerPlacement(), print)
        )
    )
    worker.start()
    deadline = time.monotonic() + 120
    while len(list((out / "shard-00000").glob("part-*.parquet"))) < 2:  # two tickets: two batches, then it waits
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.1)
    (pid,) = [int(p.name.split("-")[1]) for p in gate.glob("pid-*")]
    os.kill(pid, signal.SIGKILL)  # the actor's process, in the middle of the shard
    for i in range(2, 40):
        (gate / f"ticket-{i:03d}").touch()
    worker.join(timeout=180)
    assert not worker.is_alive()
    ids = read_trajectories(out / "shard-00000")["doc_id"].to_pylist()
    assert sorted(ids) == [f"d{i}" for i in range(8)]  # every document exactly once
    assert result["shard-00000"].generated_this_run == 8 and (out / "shard-00000" / SUCCESS).exists()
    assert len(list(gate.glob("pid-*"))) == 2  # Ray started a second actor in place of the killed one
