"""kill -9 in the middle of a shard, then a rerun: no finished trajectory lost, none duplicated.

Deterministic on the stand-in engine: it takes one ticket per batch from a gate folder, and the test hands out
exactly three, so three batches (of one document) are on disk when the driver and all of Ray are killed, whatever
the machine's load. On the real vLLM path (ray.data.llm's async replica) the kill comes once two batches are on
disk: what was in flight then is lost and generated again, nothing finished is.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import pyarrow as pa
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement, generate_shards, read_trajectories

pytestmark = pytest.mark.slow

CHILD = """
import sys
from pathlib import Path

import pyarrow as pa
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig, ModelSource
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement, generate_shards

engine, model_dir, out, ray_dir, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5]
n = 8 if engine == "standin" else 16
docs = [f"Fact {i}: the number {i} squared is {i * i}, and its cube is {i**3}." for i in range(n)]
table = pa.table({"doc_id": [f"d{i}" for i in range(n)], "source": ["web"] * n, "text": docs})
generation = GenerationConfig(
    engine=engine, model=ModelSource(kind="local", name=model_dir), prompt=PromptConfig(version="kill"),
    sampling=SamplingConfig(max_thinking_tokens=24, seed=5), max_document_tokens=64,
    batch_size=1 if engine == "standin" else 2, max_concurrent_batches=2)
spec = (EngineSpec("standin", model_dir, standin_gate=gate) if engine == "standin"
        else EngineSpec("vllm", model_dir, max_model_len=512, max_num_seqs=2))
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
generate_shards({"shard-00000": table}, out, spec, generation, WorkerPlacement(), lambda line: print(line, flush=True))
"""


def _kill_everything(process: subprocess.Popen, ray_dir: str) -> None:
    """SIGKILL the driver and every Ray process it started (they carry its temp dir on their command line)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for proc in psutil.process_iter(["cmdline"]):
        if any(ray_dir in arg for arg in proc.info["cmdline"] or []):
            proc.kill()


def _start(args: list[str]) -> tuple[subprocess.Popen, list[bytes]]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), *args],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output: list[bytes] = []
    drain = threading.Thread(target=lambda: output.extend(iter(child.stdout.readline, b"")), daemon=True)
    drain.start()  # a full pipe would block the child
    return child, output


def _rerun(spec: EngineSpec, model, out, n: int):
    """The child's run again, in this process, to the end: its summary and the shard's rows."""
    generation = GenerationConfig(
        engine=spec.engine,
        model=model,
        prompt=PromptConfig(version="kill"),
        sampling=SamplingConfig(max_thinking_tokens=24, seed=5),
        max_document_tokens=64,
        batch_size=1 if spec.engine == "standin" else 2,
        max_concurrent_batches=2,
    )
    docs = [f"Fact {i}: the number {i} squared is {i * i}, and its cube is {i**3}." for i in range(n)]
    table = pa.table({"doc_id": [f"d{i}" for i in range(n)], "source": ["web"] * n, "text": docs})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = generate_shards({"shard-00000": table}, out, spec, generation, WorkerPlacement(), print)
    finally:
        ray.shutdown()
    return summary["shard-00000"], read_trajectories(out / "shard-00000").to_pylist()


def test_kill_9_mid_shard_loses_and_duplicates_nothing(tmp_path, smollm2_dir, embedded):
    out = tmp_path / "trajectories"
    shard_dir = out / "shard-00000"
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(3):
        (gate / f"ticket-{i}").touch()
    ray_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    child, output = _start(["standin", str(smollm2_dir), str(out), ray_dir, str(gate)])
    deadline = time.monotonic() + 300
    while len(list(shard_dir.glob("part-*.parquet"))) < 3 or list(gate.glob("ticket-*")):
        assert child.poll() is None, b"".join(output).decode()[-2000:]
        assert time.monotonic() < deadline, "three batches did not finish in 5 minutes"
        time.sleep(0.1)
    time.sleep(0.5)  # the fourth batch now waits for a ticket that never comes
    _kill_everything(child, ray_dir)
    survivors = {r["doc_id"]: r["thinking"] for r in read_trajectories(shard_dir).to_pylist()}
    assert len(survivors) == 3  # exactly the three batches that were let through

    summary, final = _rerun(EngineSpec("standin", str(smollm2_dir)), embedded.generation.model, out, 8)
    ids = [r["doc_id"] for r in final]
    assert sorted(ids) == [f"d{i}" for i in range(8)]  # every document once: nothing lost, nothing duplicated
    assert summary.finished_before == 3 and summary.generated_this_run == 5
    assert all(r["thinking"] == survivors[r["doc_id"]] for r in final if r["doc_id"] in survivors)
    assert not [p for p in shard_dir.iterdir() if p.name.endswith(".tmp")]  # half-written files were cleared
    shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.mark.must_run("vllm")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (see test_vllm_engine)")
def test_kill_9_on_the_vllm_path_loses_only_what_was_in_flight(tmp_path, smollm2_dir, embedded):
    out, ray_dir = tmp_path / "trajectories", tempfile.mkdtemp(prefix="rv", dir="/tmp")
    shard_dir = out / "shard-00000"
    child, output = _start(["vllm", str(smollm2_dir), str(out), ray_dir, ""])
    deadline = time.monotonic() + 600
    while len(list(shard_dir.glob("part-*.parquet"))) < 2:
        assert child.poll() is None, b"".join(output).decode()[-2000:]
        assert time.monotonic() < deadline, "two batches did not finish in 10 minutes"
        time.sleep(0.05)
    _kill_everything(child, ray_dir)
    survivors = {r["doc_id"]: r["thinking"] for r in read_trajectories(shard_dir).to_pylist()}
    assert 2 <= len(survivors) < 16, len(survivors)  # the kill came mid-shard

    spec = EngineSpec("vllm", str(smollm2_dir), max_model_len=512, max_num_seqs=2)
    summary, final = _rerun(spec, embedded.generation.model, out, 16)
    assert sorted(r["doc_id"] for r in final) == sorted(f"d{i}" for i in range(16))  # each once
    assert summary.finished_before == len(survivors) and summary.generated_this_run == 16 - len(survivors)
    assert all(r["thinking"] == survivors[r["doc_id"]] for r in final if r["doc_id"] in survivors)
    shutil.rmtree(ray_dir, ignore_errors=True)
