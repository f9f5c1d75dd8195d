"""kill -9 in the middle of a training run, then a relaunch: the same loss curve as a run never interrupted."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tpt.config import ModelShape, TrainingConfig
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import train

pytestmark = pytest.mark.slow

CONFIG = TrainingConfig(
    model=ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64),
    seq_len=32,
    batch_tokens=4 * 32,
    token_budget=30 * 4 * 32,  # 30 steps
    lr=3e-3,
    warmup_steps=3,
    schedule="cosine",
    micro_batch_size=2,
    checkpoint_every=5,
)

CHILD = """
import sys, time
import torch
from tpt.config import TrainingConfig
from tpt.tokenization import PackedShards
from tpt.training import train

config_json, shard, out, tokenizer = sys.argv[1:5]
torch.set_num_threads(1)
train(TrainingConfig.model_validate_json(config_json), PackedShards([shard]), out, tokenizer_dir=tokenizer,
      log=lambda line: None, on_step=lambda *_: time.sleep(0.3))  # slow steps leave time to kill mid-run
"""


def test_kill_9_mid_run_then_relaunch_repeats_the_uninterrupted_curve(tmp_path, tokenizer_dir):
    texts = [f"Step {i}: the learner sees sentence {i} about {i % 5} cats and {i % 3} dogs." for i in range(40)]
    shard = tokenize_and_pack(texts, tokenizer_dir, CONFIG.seq_len, tmp_path / "s.bin").path
    out = tmp_path / "run"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CHILD),
            CONFIG.model_dump_json(),
            str(shard),
            str(out),
            str(tokenizer_dir),
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-00000010").exists():
        assert child.poll() is None and time.monotonic() < deadline, "the run ended or stalled before step 10"
        time.sleep(0.1)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert kept[-1] in ("step-00000010", "step-00000015") and not (out / "final").exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit needs the thread count the killed run had
    try:
        resumed = train(CONFIG, PackedShards([shard]), out, tokenizer_dir=tokenizer_dir, log=lambda _: None)
        unbroken = train(CONFIG, PackedShards([shard]), tmp_path / "unbroken", tokenizer_dir=tokenizer_dir)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from_step in (10, 15)
    assert resumed.losses == unbroken.losses  # bit-for-bit, every step of the curve
    assert len(resumed.losses) == 30 and resumed.losses[-1] < resumed.losses[0]
