"""kill -9 in the middle of a shard, then a rerun: no finished trajectory lost, none duplicated."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
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

model_dir, out, ray_dir = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
docs = [f"Fact {i}: the number {i} squared is {i * i}, and its cube is {i**3}." for i in range(8)]
table = pa.table({"doc_id": [f"d{i}" for i in range(8)], "source": ["web"] * 8, "text": docs})
generation = GenerationConfig(
    model=ModelSource(kind="local", name=model_dir), prompt=PromptConfig(version="kill"),
    sampling=SamplingConfig(max_thinking_tokens=24, seed=5), max_document_tokens=64, batch_size=1)
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
generate_shards({"shard-00000": table}, out, EngineSpec("transformers", model_dir, torch_threads=2), generation,
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
    ray_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(smollm2_dir), str(out), ray_dir],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while len(list(shard_dir.glob("part-*.parquet"))) < 3:
        assert child.poll() is None, child.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no batches finished in 5 minutes"
        time.sleep(0.2)
    _kill_everything(child, ray_dir)
    survivors = {r["doc_id"]: r["thinking"] for r in read_trajectories(shard_dir).to_pylist()}
    assert 3 <= len(survivors) < 8  # killed mid-shard, with finished batches on disk

    generation = GenerationConfig(
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
            {"shard-00000": table},
            out,
            EngineSpec("transformers", str(smollm2_dir), torch_threads=2),
            generation,
            WorkerPlacement(),
            print,
        )["shard-00000"]
    finally:
        ray.shutdown()
    final = read_trajectories(shard_dir).to_pylist()
    ids = [r["doc_id"] for r in final]
    assert sorted(ids) == [f"d{i}" for i in range(8)]  # every document once: nothing lost, nothing duplicated
    assert summary.finished_before == len(survivors) and summary.generated_this_run == 8 - len(survivors)
    assert all(r["thinking"] == survivors[r["doc_id"]] for r in final if r["doc_id"] in survivors)
    assert not [p for p in shard_dir.iterdir() if p.name.endswith(".tmp")]  # half-written files were cleared
    shutil.rmtree(ray_dir, ignore_errors=True)
