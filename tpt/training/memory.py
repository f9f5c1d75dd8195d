"""Memory a training step needs per device, from the config alone, so a run that cannot fit is refused before a
single tensor is allocated.

The activation terms are counted from what autograd actually saves in transformers' ``LlamaDecoderLayer`` with SDPA
(a flash kernel on CPU and GPU: no ``seq x seq`` scores are stored), found by recording the tensors saved in the
forward of 1- and 2-layer models of several shapes: per token and layer, ``6 h + 2 kv + 4 f`` values in the compute
dtype (the attention projections and outputs, the MLP's gate, up, activation and product) plus ``2 h + heads + 2``
fp32 values (the RMSNorms' fp32 work and the attention's log-sum-exp), with ``h`` the hidden size, ``kv`` the
key/value width and ``f`` the MLP width. Activation checkpointing keeps one ``h`` per token and layer and recomputes
one layer at a time in the backward, after the loss's own peak. The loss holds ``3 x tokens x vocab`` fp32 values
at its peak in the backward (log-probabilities, their gradient, the logits' gradient), over a chunk's tokens when
it is chunked (``loss.py``).

``benchmarks/bench_memory.py`` checks the total against the peak resident memory of real CPU runs (fp32); the
bf16 figures for GPUs (FSDP's bf16 parameters, autocast's weight copies) follow the same count and were not
measured on a GPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tpt.config import ModelShape, TrainingConfig
from tpt.errors import InputError
from tpt.training.model import layer_params, param_count

if TYPE_CHECKING:
    from tpt.training.init import Student


class ModelTooLargeError(InputError, MemoryError):
    """The estimated training memory exceeds what the device has; the message is one line."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int  # decoder layers' saved tensors, the final norm's, the backward's working set
    gathered: int = 0  # FSDP: unsharded weights and gradients; one device on a GPU: autocast's bf16 weight copies
    logits: int = 0  # the loss's peak: logits, log-probabilities and their gradients (one chunk when chunked)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.gathered + self.logits


def memory_estimate(
    shape: ModelShape,
    vocab_size: int,
    seq_len: int,
    micro_batch_size: int,
    *,
    activation_bytes: int = 4,
    shards: int = 1,
    activation_checkpointing: bool = False,
    loss_chunk_tokens: int | None = None,
    accumulates: bool = False,
    n_params: int | None = None,
) -> MemoryEstimate:
    """Bytes to train one micro-batch on one device: fp32 weights and gradients (4 + 4 per parameter) and AdamW's
    two fp32 moments (8), divided over ``shards`` FSDP ranks, plus activations in the compute dtype
    (``activation_bytes``: 4 for fp32, 2 for bf16 on GPUs).

    Under FSDP a rank also holds the unsharded weights of the root unit (embeddings, final norm, LM head: kept for
    the whole forward and backward) and of two decoder layers (the one computed and the one prefetched), and their
    unsharded gradients; when it ``accumulates`` (more than one micro-batch a step, gradients reduce-scattered only
    on the last) the unsharded gradients of the whole model until then. Activations are not sharded: each rank runs
    whole micro-batches. ``n_params``: the exact count of a loaded checkpoint (biases etc.; the shape's count is
    LLaMA's).
    """
    n, per_layer_params = n_params or param_count(shape, vocab_size), layer_params(shape)
    h, f, a, b = shape.hidden_size, shape.intermediate_size, shape.num_heads, activation_bytes
    kv = shape.num_kv_heads * (h // a)
    tokens = micro_batch_size * (seq_len - 1)
    layer = tokens * ((6 * h + 2 * kv + 4 * f) * b + (2 * h + a + 2) * 4)
    working = tokens * (4 * h * 4 + 2 * f * b)  # final norm, the hidden states' gradients, one layer's backward
    chunk = tokens if loss_chunk_tokens is None else min(loss_chunk_tokens, tokens)
    logits = chunk * vocab_size * (12 if b == 4 else 14) + (tokens * h * 4 if loss_chunk_tokens else 0)
    if activation_checkpointing:
        # Each layer's input is kept; one layer at a time is recomputed, later in the backward than the loss's
        # peak (which comes first), so the peak holds the larger of the two, not both.
        activations = shape.num_layers * tokens * h * b + max(layer + working - logits, 0)
    else:
        activations = shape.num_layers * layer + working
    if shards > 1:
        root = n - shape.num_layers * per_layer_params
        unsharded = b * (root + 2 * per_layer_params)
        gathered = unsharded + (b * n if accumulates else unsharded)
    else:
        gathered = 2 * n if b == 2 else 0  # autocast caches a bf16 copy of every weight for the forward
    return MemoryEstimate(
        weights=math.ceil(4 * n / shards),
        gradients=math.ceil(4 * n / shards),
        optimizer=math.ceil(8 * n / shards),
        activations=int(activations),
        gathered=int(gathered),
        logits=int(logits),
    )


def training_memory(
    config: TrainingConfig,
    vocab_size: int,
    *,
    device: str = "cpu",
    world_size: int = 1,
    strategy: str = "ddp",
    student: Student | None = None,
) -> MemoryEstimate:
    """The estimate for ``config`` as the loop runs it: bf16 activations on CUDA, fp32 on CPU; FSDP over
    ``world_size`` ranks when ``strategy`` is ``fsdp``. ``student``: the model's shape, embedding rows and exact
    parameter count from a loaded checkpoint's config (a fresh model's come from ``config.model``)."""
    sharded = strategy == "fsdp" and world_size > 1
    per_rank = config.batch_tokens // config.seq_len // world_size
    if student is None and config.model is None:
        raise ValueError("training.init's memory is estimated from its loaded config: pass the student")
    return memory_estimate(
        student.shape if student else config.model,
        student.vocab_rows if student else vocab_size,
        config.seq_len,
        config.micro_batch_size,
        activation_bytes=2 if device.startswith("cuda") else 4,
        shards=world_size if sharded else 1,
        activation_checkpointing=config.activation_checkpointing,
        loss_chunk_tokens=config.loss_chunk_tokens,
        accumulates=per_rank > config.micro_batch_size,
        n_params=student.n_params if student else None,
    )


def available_memory(device: str) -> int | None:
    """Free bytes on ``device`` (CUDA free memory, or the host's MemAvailable); None when it cannot be told."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(
    estimate: MemoryEstimate, device: str, limit_bytes: int | None = None, *, checkpointing: bool | None = None
) -> None:
    """Refuse a config whose estimate exceeds ``limit_bytes`` (default: what the device has free now)."""
    limit = available_memory(device) if limit_bytes is None else limit_bytes
    if limit is None or estimate.total <= limit:
        return
    gib = 2**30
    gathered = f", FSDP all-gathered {estimate.gathered / gib:.2f}" if estimate.gathered else ""
    hint = "" if checkpointing is not False else "turn on activation_checkpointing, "
    raise ModelTooLargeError(
        f"training needs about {estimate.total / gib:.2f} GiB on {device} (weights {estimate.weights / gib:.2f}, "
        f"grads {estimate.gradients / gib:.2f}, AdamW {estimate.optimizer / gib:.2f}, activations "
        f"{estimate.activations / gib:.2f}, logits {estimate.logits / gib:.2f}{gathered}) but {limit / gib:.2f} GiB "
        f"is available{' even with activation checkpointing' if checkpointing else ''}; {hint}set loss_chunk_tokens, "
        "use a smaller model, seq_len or micro_batch_size, or shard it with FSDP over more Ray workers"
    )
