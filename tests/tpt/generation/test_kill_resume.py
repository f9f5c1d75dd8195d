"""kill -9 in the middle of a shard, then a rerun: no finished trajectory lost, none duplicated.

Deterministic: the stand-in engine takes one ticket per batch from a gate folder, and the test hands out exactly three,
so three batches (of one document) are on disk when the driver and all of Ray are killed, whatever the machine's load.
"""

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

DOCS = [f"Fact {i}: the number {i} squared is {i * i}, and its cube is {i**3}." for i in range(8)]

CHILD = """
import sys
from pathlib import Path

import pyarrow as pa
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig, ModelSource
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement, generate_shards

model_dir, out, ray_dir, gate = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
docs = [f"Fact {i}: the number {i} squared is {i * i}, and its cube is {i**3}." for i in range(8)]
table = pa.table({"doc_id": [f"d{i}" for i in range(8)], "source": ["web"] * 8, "text": docs})
generation = GenerationConfig(
    engine="standin", model=ModelSource(kind="local", name=model_dir), prompt=PromptConfig(version="kill"),
    sampling=SamplingConfig(max_thinking_tokens=24, seed=5), max_document_tokens=64, batch_size=1)
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
generate_shards({"shard-00000": table}, out, EngineSpec("standin", model_dir, standin_gate=gate), generation,
                WorkerPlacement(), lambda line: print(line, flush=True))
"""


def _kill_everything(process: subprocess.Popen, ray_dir: str) -> None:
    """SIGKILL the driver and every Ray process it started (they carry its temp dir on their command line)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for proc in psutil.process_iter(["cmdline"]):
        if any(ray_dir in arg for arg in proc.info["cmdline"] or []):
            proc.kill()


def test_kill_9_mid_shard_loses_and_duplicates_nothing(tmp_path, smollm2_dir, embedded):
    out = tmp_path / "trajectories"
    shard_dir = out / "shard-00000"
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(3):
        (gate / f"ticket-{i}").touch()
    ray_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(smollm2_dir), str(out), ray_dir, str(gate)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output: list[bytes] = []
    drain = threading.Thread(target=lambda: output.extend(iter(child.stdout.readline, b"")), daemon=True)
    drain.start()  # a full pipe would block the child
    deadline = time.monotonic() + 300
    while len(list(shard_dir.glob("part-*.parquet"))) < 3 or list(gate.glob("ticket-*")):
        assert child.poll() is None, b"".join(output).decode()[-2000:]
        assert time.monotonic() < deadline, "three batches did not finish in 5 minutes"
        time.sleep(0.1)
    time.sleep(0.5)  # the fourth batch now waits for a ticket that never comes
    _kill_everything(child, ray_dir)
    survivors = {r["doc_id"]: r["thinking"] for r in read_trajectories(shard_dir).to_pylist()}
    assert len(survivors) == 3  # exactly the three batches that were let through

    generation = GenerationConfig(
        engine="standin",
        model=embedded.generation.model,
        prompt=PromptConfig(version="kill"),
        sampling=SamplingConfig(max_thinking_tokens=24, seed=5),
        max_document_tokens=64,
        batch_size=1,
    )
    table = pa.table({"doc_id": [f"d{i}" for i in range(8)], "source": ["web"] * 8, "text": DOCS})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = generate_shards(
            {"shard-00000": table}, out, EngineSpec("standin", str(smollm2_dir)), generation, WorkerPlacement(), print
        )["shard-00000"]
    finally:
        ray.shutdown()
    final = read_trajectories(shard_dir).to_pylist()
    ids = [r["doc_id"] for r in final]
    assert sorted(ids) == [f"d{i}" for i in range(8)]  # every document once: nothing lost, nothing duplicated
    assert summary.finished_before == 3 and summary.generated_this_run == 5
    assert all(r["thinking"] == survivors[r["doc_id"]] for r in final if r["doc_id"] in survivors)
    assert not [p for p in shard_dir.iterdir() if p.name.endswith(".tmp")]  # half-written files were cleared
    shutil.rmtree(ray_dir, ignore_errors=True)
