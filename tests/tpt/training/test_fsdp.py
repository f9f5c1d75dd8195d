"""FSDP through Ray Train: two gloo workers, each holding half of the weights, gradients and AdamW moments, train
to the same losses as one process, resume from their own checkpoints, and write checkpoints a single process
resumes from (and the other way round)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import ray
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.tpt.training.two_ranks import CONFIG, TEXTS
from tpt.atomic import read_json
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.training import CheckpointError, ModelTooLargeError, train
from tpt.training.checkpoint import read_weights
from tpt.training.ray_launch import train_on_ray

pytestmark = pytest.mark.slow

# Gradients are reduce-scattered per micro-batch instead of summed in one process, so equality is to float
# rounding: the largest gap measured is 9.5e-7 (step 5 of 6), the same as the DDP path's.
TOLERANCE = 1e-4
# The fp32 norm of the 1.6M-value embedding gradient is itself off by up to 2e-5 (relative) from its float64 value,
# one process or two; FSDP's norm, summed over shards, differed from one process's by at most 5.1e-5. A norm over
# one rank's shard only would be about 30% low.
NORM_TOLERANCE = 1e-3


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def shard(tmp_path_factory, tokenizer_dir) -> Path:
    return tokenize_and_pack(TEXTS, tokenizer_dir, CONFIG.seq_len, tmp_path_factory.mktemp("data") / "s.bin").path


@pytest.fixture(scope="module")
def single(tmp_path_factory, shard, tokenizer_dir):
    return train(CONFIG, PackedShards([shard]), tmp_path_factory.mktemp("single"), tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _fsdp(out: Path, shard: Path, tokenizer_dir: Path, **kwargs) -> dict:
    train_on_ray(
        CONFIG, [shard], out, tokenizer_dir=tokenizer_dir, mixture_dir=None, workers=2, strategy="fsdp", **kwargs
    )
    return read_json(out / "train_result.json")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, local_ray, shard, tokenizer_dir):
    out = tmp_path_factory.mktemp("fsdp")
    lines: list[str] = []
    return _fsdp(out, shard, tokenizer_dir, log=lines.append), out, lines


def test_two_fsdp_workers_match_a_single_process_run(fsdp_run, single):
    result, out, lines = fsdp_run
    print(f"\none process: {single.losses}\n2 FSDP workers: {result['losses']}")  # benchmarks/RESULTS.md, with -s
    assert len(result["losses"]) == len(single.losses) == 6
    gaps = [abs(a - b) for a, b in zip(result["losses"], single.losses, strict=True)]
    assert max(gaps) < TOLERANCE, (result["losses"], single.losses)
    assert result["losses"][-1] < result["losses"][0]
    assert any("per rank (FSDP over 2)" in line for line in lines) and any("trained 6 steps" in x for x in lines)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    # Clipping acted on every step (norm above grad_clip) and saw the norm of the whole gradient, not a shard's.
    norms, reference_norms = _grad_norms(out / "loss_curve.csv"), _grad_norms(single.loss_curve)
    assert min(reference_norms) > CONFIG.grad_clip
    assert max(abs(a / b - 1) for a, b in zip(norms, reference_norms, strict=True)) < NORM_TOLERANCE

    # The final model is the whole model, in Hugging Face format, equal to the last checkpoint's weights.
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert json.loads((out / "final" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert sum(p.numel() for p in model.parameters()) == single.n_params
    saved = load_file(out / "final" / "model.safetensors")
    last = read_weights(out / "checkpoints" / "step-00000006")
    assert all(torch.equal(saved[k], last[k]) for k in saved)
    reference = load_file(single.final_model / "model.safetensors")
    assert saved.keys() == reference.keys()
    assert max((saved[k] - reference[k]).abs().max().item() for k in saved) < TOLERANCE


def _grad_norms(curve: Path) -> list[float]:
    with open(curve, encoding="utf-8") as fh:
        return [float(row["grad_norm"]) for row in csv.DictReader(fh)]


def test_fsdp_resumes_from_its_checkpoint_after_a_refused_relaunch(tmp_path, fsdp_run, shard, tokenizer_dir):
    """The run stopped after step 3 (its later checkpoint and results gone): a relaunch that does not fit is refused
    before any compute and leaves the checkpoint alone; the next one resumes and repeats the unbroken curve."""
    unbroken, out, _ = fsdp_run
    shutil.copytree(out / "checkpoints" / "step-00000003", tmp_path / "checkpoints" / "step-00000003")
    state = tmp_path / "checkpoints" / "step-00000003" / "__1_0.distcp"  # rank 1's shard
    before = state.read_bytes()
    with pytest.raises(ModelTooLargeError, match="FSDP all-gathered") as refused:
        _fsdp(tmp_path, shard, tokenizer_dir, memory_limit_bytes=1_000_000)
    assert "\n" not in str(refused.value)
    assert state.read_bytes() == before and not (tmp_path / "final").exists()
    # A damaged shard is refused in one line before any worker starts, and left as it was.
    state.write_bytes(before[:-1] + bytes([before[-1] ^ 0xFF]))
    with pytest.raises(CheckpointError, match=r"step-00000003 is damaged: __1_0.distcp checksum mismatch") as bad:
        _fsdp(tmp_path, shard, tokenizer_dir)
    assert "\n" not in str(bad.value) and state.read_bytes() != before
    state.write_bytes(before)

    resumed = _fsdp(tmp_path, shard, tokenizer_dir)
    assert resumed["resumed_from_step"] == 3
    assert resumed["losses"] == unbroken["losses"]  # bit for bit: the same sharding, the same reductions


def test_checkpoints_reshard_between_two_fsdp_workers_and_one_process(tmp_path, fsdp_run, single, shard, tokenizer_dir):
    """2 -> 1 and 1 -> 2 ranks: DCP reads the slices each new rank needs; the resumed curves stay within TOLERANCE of
    the single-process one (the reductions differ, so not bit for bit)."""
    fsdp_result, out, _ = fsdp_run
    # FSDP -> one process: steps 1-3 from the FSDP run, 4-6 trained in this process.
    shutil.copytree(out / "checkpoints" / "step-00000003", tmp_path / "a" / "checkpoints" / "step-00000003")
    lines: list[str] = []
    one = train(CONFIG, PackedShards([shard]), tmp_path / "a", tokenizer_dir=tokenizer_dir, log=lines.append)
    assert one.resumed_from_step == 3 and one.losses[:3] == fsdp_result["losses"][:3]
    assert any("written by 2 rank(s), resharded to 1" in line for line in lines)
    assert max(abs(a - b) for a, b in zip(one.losses, single.losses, strict=True)) < TOLERANCE

    # One process -> FSDP: a single-process run stopped after step 3, relaunched on two FSDP workers.
    def stop_at_3(step, *_):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train(CONFIG, PackedShards([shard]), tmp_path / "b", tokenizer_dir=tokenizer_dir, on_step=stop_at_3)
    sharded = _fsdp(tmp_path / "b", shard, tokenizer_dir)
    assert sharded["resumed_from_step"] == 3 and sharded["losses"][:3] == single.losses[:3]
    assert max(abs(a - b) for a, b in zip(sharded["losses"], single.losses, strict=True)) < TOLERANCE
