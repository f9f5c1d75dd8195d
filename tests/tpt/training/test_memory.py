"""The memory estimate: its arithmetic, the paper config's fit on 80 GB GPUs, and its match with measured peaks."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.experiments import experiment_path
from tpt.config import ModelShape, load_experiment
from tpt.training import ModelTooLargeError, check_fits, memory_estimate, training_memory
from tpt.training.model import layer_params, param_count

LLAMA3_8B = ModelShape(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336)
VOCAB = 128_256
GIB = 2**30
ROOT = Path(__file__).resolve().parents[3]


def test_fsdp_divides_the_sharded_state_and_adds_what_it_gathers():
    n = param_count(LLAMA3_8B, VOCAB)
    whole = memory_estimate(LLAMA3_8B, VOCAB, 2048, 1, activation_bytes=2)
    sharded = memory_estimate(LLAMA3_8B, VOCAB, 2048, 1, activation_bytes=2, shards=8)
    assert whole.weights + whole.gradients + whole.optimizer == 16 * n
    assert (sharded.weights, sharded.gradients, sharded.optimizer) == (4 * n // 8, 4 * n // 8, 8 * n // 8)
    assert sharded.activations == whole.activations and sharded.logits == whole.logits
    assert whole.gathered == 2 * n  # autocast's bf16 copies of the weights on one device
    root = 2 * VOCAB * 4096 + 4096  # embeddings, LM head, final norm: gathered for the whole step
    assert sharded.gathered == 2 * 2 * (root + 2 * layer_params(LLAMA3_8B))  # bf16 weights + grads, root + 2 layers
    # Accumulating micro-batches, FSDP holds every layer's unsharded (bf16) gradient until the last one.
    accumulating = memory_estimate(LLAMA3_8B, VOCAB, 2048, 1, activation_bytes=2, shards=8, accumulates=True)
    assert accumulating.gathered - sharded.gathered == 2 * n - 2 * (root + 2 * layer_params(LLAMA3_8B))


def test_checkpointing_and_chunking_shrink_what_grows_with_context():
    plain = memory_estimate(LLAMA3_8B, VOCAB, 8192, 1, activation_bytes=2)
    checkpointed = memory_estimate(LLAMA3_8B, VOCAB, 8192, 1, activation_bytes=2, activation_checkpointing=True)
    chunked = memory_estimate(LLAMA3_8B, VOCAB, 8192, 1, activation_bytes=2, loss_chunk_tokens=1024)
    assert checkpointed.activations < plain.activations / 10
    assert plain.logits > 13 * GIB and chunked.logits < 2 * GIB  # 8k x 128k logits: 14 bytes each at the peak
    # Linear in the context (SDPA's flash kernels store no seq x seq scores).
    shorter = memory_estimate(LLAMA3_8B, VOCAB, 2049, 1, activation_bytes=2)
    assert shorter.activations * 4 == pytest.approx(plain.activations, rel=1e-3)


def test_paper_8b_fits_80gb_gpus_with_the_settings_it_ships():
    """FSDP over 8 or 64 GPUs, bf16, activation checkpointing and the chunked loss: under 80 GB per GPU; the same
    config without checkpointing and chunking would not fit even on 64, and one GPU cannot hold it at all."""
    training = load_experiment(experiment_path("paper_8b")).training
    assert training.activation_checkpointing and training.loss_chunk_tokens
    for gpus in (8, 64):
        estimate = training_memory(training, VOCAB, device="cuda", world_size=gpus, strategy="fsdp")
        check_fits(estimate, "cuda", limit_bytes=80 * 10**9)
        print(f"paper_8b, FSDP over {gpus} GPUs: {estimate.total / GIB:.1f} GiB per GPU ({estimate})")
    bare = training.model_copy(update={"activation_checkpointing": False, "loss_chunk_tokens": None})
    with pytest.raises(ModelTooLargeError, match="turn on activation_checkpointing") as refused:
        estimate = training_memory(bare, VOCAB, device="cuda", world_size=64, strategy="fsdp")
        check_fits(estimate, "cuda", 80 * 10**9, checkpointing=False)
    assert "\n" not in str(refused.value)
    with pytest.raises(ModelTooLargeError, match="even with activation checkpointing") as refused:
        check_fits(training_memory(training, VOCAB, device="cuda"), "cuda", 80 * 10**9, checkpointing=True)
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_estimate_is_within_25_percent_of_the_measured_peak():
    """Two real CPU runs (checkpointing off and on) in fresh processes, peak RSS against the estimate; the full
    table is ``benchmarks/bench_memory.py``'s."""
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_memory.py", "--quick", "--check", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.count("| h256 L4") == 2
