"""Real training runs of a tiny LLaMA on real SmolLM2 tokens: a few seconds each on two CPU cores."""

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tpt.config import MixtureConfig, MixtureSource, ModelShape, TrainingConfig
from tpt.tokenization import PackedShards, tokenize_and_pack
from tpt.tokenization.mixture import MixtureError, resolve_mixture
from tpt.training import CheckpointError, ModelTooLargeError, TrainingInputError, train
from tpt.training.checkpoint import checkpoint_dirs, read_weights, training_fingerprint
from tpt.training.loop import DataParallel

SHAPE = ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
CONFIG = TrainingConfig(
    model=SHAPE,
    seq_len=32,
    batch_tokens=4 * 32,  # 4 sequences per step, accumulated over micro-batches of 2
    token_budget=6 * 4 * 32,  # 6 steps
    lr=3e-3,
    warmup_steps=2,
    schedule="cosine",
    micro_batch_size=2,
    checkpoint_every=2,
)
NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer_dir) -> PackedShards:
    """Two shards of about 8 sequences in all, so 6 steps of 4 sequences run three epochs."""
    folder = tmp_path_factory.mktemp("shards")
    texts = [f"{n} has {i} apples and buys {i + 2} more, so {n} has {2 * i + 2} apples." for i, n in enumerate(NAMES)]
    tokenize_and_pack(texts[:3], tokenizer_dir, CONFIG.seq_len, folder / "part-0.bin")
    tokenize_and_pack(texts[3:], tokenizer_dir, CONFIG.seq_len, folder / "part-1.bin")
    return PackedShards.from_dir(folder)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, shards, tokenizer_dir):
    out = tmp_path_factory.mktemp("full")
    lines: list[str] = []
    steps: list[tuple] = []
    result = train(
        CONFIG,
        shards,
        out,
        tokenizer_dir=tokenizer_dir,
        log=lines.append,
        on_step=lambda *a: steps.append(a),
        log_interval_s=0,
    )
    return result, out, lines, steps


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_training_lowers_the_loss_and_reports(full_run, shards):
    result, out, lines, steps = full_run
    assert result.steps == 6 and len(result.losses) == 6 and result.tokens_seen == 6 * 128
    assert result.losses[-1] < result.losses[0] - 0.3
    assert result.final_loss == result.losses[-1]
    assert result.epochs == -(-6 * 4 // len(shards)) and result.data_passes == 6 * 4 / len(shards)
    assert result.tokens_per_s > 0 and result.flops_per_token > 6 * result.n_params // 2
    assert [s[0] for s in steps] == list(range(1, 7)) and steps[-1][3] == 6 * 128
    assert [s[1] for s in steps] == result.losses
    assert any("training steps: 6/6 (100.0%)" in line and "ETA" in line for line in lines)
    curve = (out / "loss_curve.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,grad_norm,tokens_seen" and len(curve) == 7
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert result.checkpoint.name == "step-00000006"


def test_final_model_loads_with_auto_classes_and_generates(full_run):
    result, *_ = full_run
    model = AutoModelForCausalLM.from_pretrained(result.final_model)
    tokenizer = AutoTokenizer.from_pretrained(result.final_model)
    assert sum(p.numel() for p in model.parameters()) == result.n_params
    trained = read_weights(result.checkpoint)
    saved = load_file(result.final_model / "model.safetensors")
    assert saved.keys() <= trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    prompt = tokenizer("Ada has 3 apples", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_resumed_run_repeats_the_uninterrupted_curve_exactly(tmp_path, full_run, shards, tokenizer_dir):
    result, *_ = full_run

    def stop_at_3(step, *_):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train(CONFIG, shards, tmp_path, tokenizer_dir=tokenizer_dir, log=lambda _: None, on_step=stop_at_3)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000002"]
    # Step 3 was lost with the process; the resumed run redoes it. The checkpoint interval is operational.
    resumed_config = CONFIG.model_copy(update={"checkpoint_every": 3})
    resumed = train(resumed_config, shards, tmp_path, tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert resumed.resumed_from_step == 2
    assert resumed.losses == result.losses  # bit-for-bit, not approx
    a, b = load_file(result.final_model / "model.safetensors"), load_file(resumed.final_model / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_another_config_or_data_is_refused(tmp_path, full_run, shards, tokenizer_dir):
    _, out, *_ = full_run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    before = _digest(tmp_path / "checkpoints" / "step-00000006")
    with pytest.raises(CheckpointError, match="different training config") as refused:
        train(CONFIG.model_copy(update={"lr": 1e-3}), shards, tmp_path, tokenizer_dir=tokenizer_dir)
    assert "\n" not in str(refused.value)
    other_data = PackedShards(shards.paths[:1])
    with pytest.raises(CheckpointError, match="different token shards"):
        train(CONFIG, other_data, tmp_path, tokenizer_dir=tokenizer_dir)
    assert _digest(tmp_path / "checkpoints" / "step-00000006") == before
    assert not (tmp_path / "final").exists()


def test_corrupt_checkpoint_is_refused_and_the_earlier_one_kept(tmp_path, full_run, shards, tokenizer_dir):
    _, out, *_ = full_run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    earlier = _digest(tmp_path / "checkpoints" / "step-00000004")
    state = tmp_path / "checkpoints" / "step-00000006" / "__0_0.distcp"  # the one shard of a one-process run
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match="step-00000006 is damaged: __0_0.distcp checksum mismatch.*step-00000004 is intact"
    ) as refused:
        train(CONFIG, shards, tmp_path, tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert "\n" not in str(refused.value)
    assert _digest(tmp_path / "checkpoints" / "step-00000004") == earlier
    assert state.read_bytes() == bytes(data), "the damaged file is left for inspection, not overwritten"
    # Following the message's advice resumes from the intact checkpoint and finishes the run.
    shutil.rmtree(state.parent)
    resumed = train(CONFIG, shards, tmp_path, tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert resumed.resumed_from_step == 4 and resumed.steps == 6


def test_refusals_happen_before_anything_is_written(tmp_path, shards, tokenizer_dir):
    with pytest.raises(ModelTooLargeError, match="GiB"):
        train(CONFIG, shards, tmp_path / "run", tokenizer_dir=tokenizer_dir, memory_limit_bytes=1_000_000)
    with pytest.raises(ValueError, match="seq_len"):
        longer = CONFIG.model_copy(update={"seq_len": 64, "batch_tokens": 256, "token_budget": 512})
        train(longer, shards, tmp_path / "run", tokenizer_dir=tokenizer_dir)
    assert not (tmp_path / "run").exists()


def test_a_budget_past_the_data_with_epochs_capped_is_refused_before_compute(tmp_path, full_run, shards, tokenizer_dir):
    """``max_epochs: 1`` allows one pass over the data: the mixture refuses a longer budget, and the loop refuses a
    mixture order shorter than its budget, before any compute and leaving the earlier checkpoints as they were."""
    available = shards.sequences_by_source()
    once = MixtureConfig(sources=[MixtureSource(name=name, weight=1, max_epochs=1) for name in available])
    with pytest.raises(MixtureError, match="more than its max_epochs 1") as refused:
        resolve_mixture(available, 6 * 4, once)
    assert "\n" not in str(refused.value)

    _, out, *_ = full_run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    before = _digest(tmp_path / "checkpoints" / "step-00000006")
    one_pass = resolve_mixture(available, len(shards), once)
    with pytest.raises(TrainingInputError, match=r"needs 24 sequences \(6 steps\)") as refused:
        train(CONFIG, shards, tmp_path, tokenizer_dir=tokenizer_dir, order=one_pass)
    assert "\n" not in str(refused.value)
    assert _digest(tmp_path / "checkpoints" / "step-00000006") == before and not (tmp_path / "final").exists()


def test_activation_checkpointing_is_exact_and_the_chunked_loss_equal_to_rounding(full_run, shards, tokenizer_dir):
    """Recomputing each layer in the backward repeats the same ops: bit for bit, so the field is operational. The
    chunked loss adds chunk sums in another order: equal to float rounding only, so the field is versioned."""
    result, *_ = full_run
    quiet = {"tokenizer_dir": tokenizer_dir, "log": lambda _: None}
    with tempfile.TemporaryDirectory() as out:
        recomputed = train(CONFIG.model_copy(update={"activation_checkpointing": True}), shards, out, **quiet)
    assert recomputed.losses == result.losses
    chunked_config = CONFIG.model_copy(update={"loss_chunk_tokens": 16})  # 62 targets a micro-batch: 4 chunks
    with tempfile.TemporaryDirectory() as out:
        chunked = train(chunked_config, shards, out, **quiet)
    gaps = [abs(a - b) for a, b in zip(chunked.losses, result.losses, strict=True)]
    print(f"\nchunked vs whole loss, largest gap {max(gaps):.2e}: {chunked.losses} vs {result.losses}")
    assert max(gaps) < 1e-5
    assert training_fingerprint(chunked_config) != training_fingerprint(CONFIG)
    assert training_fingerprint(CONFIG.model_copy(update={"activation_checkpointing": True})) == (
        training_fingerprint(CONFIG)
    )


def test_async_checkpoints_are_published_and_resume_exactly(tmp_path, full_run, shards, tokenizer_dir):
    result, *_ = full_run
    config = CONFIG.model_copy(update={"async_checkpoint": True})
    background = train(config, shards, tmp_path / "a", tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert background.losses == result.losses
    assert [p.name for p in checkpoint_dirs(tmp_path / "a" / "checkpoints")] == ["step-00000004", "step-00000006"]
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-00000004", tmp_path / "b" / "checkpoints" / "step-00000004")
    resumed = train(config, shards, tmp_path / "b", tokenizer_dir=tokenizer_dir, log=lambda _: None)
    assert resumed.resumed_from_step == 4 and resumed.losses == result.losses


def test_a_world_size_that_does_not_divide_the_batch_is_refused_before_compute(tmp_path, shards, tokenizer_dir):
    with pytest.raises(TrainingInputError, match="4 sequences per step .* do not split over 3 ranks") as refused:
        train(CONFIG, shards, tmp_path, tokenizer_dir=tokenizer_dir, parallel=DataParallel(0, 3))
    assert "\n" not in str(refused.value) and not tmp_path.joinpath("checkpoints").exists()
