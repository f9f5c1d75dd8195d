"""The model being pretrained: a LLaMA-architecture config from the experiment's shape, and its arithmetic.

Parameter count, FLOPs and memory are computed from the shape alone, so a config that cannot fit is refused
before a single tensor is allocated, and throughput can be reported as model FLOPs (MFU) on any device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from tpt.config import ModelShape
from tpt.errors import InputError


class ModelTooLargeError(InputError, MemoryError):
    """The estimated training memory exceeds what the device has; the message is one line."""


@dataclass(frozen=True)
class SpecialTokens:
    eos_id: int
    pad_id: int
    bos_id: int | None = None


def llama_config(shape: ModelShape, vocab_size: int, seq_len: int, tokens: SpecialTokens) -> Any:
    """A transformers ``LlamaConfig`` (no biases, no dropout, as in LLaMA-3) that lm-eval and vLLM can load."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        tie_word_embeddings=shape.tie_embeddings,
        bos_token_id=tokens.bos_id,
        eos_token_id=tokens.eos_id,
        pad_token_id=tokens.pad_id,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
    )


def build_model(config: Any) -> Any:
    """A freshly initialised fp32 causal LM of ``config`` (``LlamaForCausalLM`` for ``llama_config``; any architecture
    for a loaded student's config, as FSDP's export rebuilds it); the caller seeds torch first for a reproducible
    init."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


def embedding_params(shape: ModelShape, vocab_size: int) -> int:
    return vocab_size * shape.hidden_size


def layer_params(shape: ModelShape) -> int:
    """Parameters of one decoder layer."""
    h, head_dim = shape.hidden_size, shape.hidden_size // shape.num_heads
    kv = shape.num_kv_heads * head_dim
    attention = h * h + 2 * h * kv + h * h  # q, k, v, o projections, no biases
    mlp = 3 * h * shape.intermediate_size  # gate, up, down
    return attention + mlp + 2 * h  # two RMSNorm weights


def param_count(shape: ModelShape, vocab_size: int) -> int:
    """Exact number of parameters of ``LlamaForCausalLM`` for this shape (checked against the built model)."""
    lm_head = 0 if shape.tie_embeddings else vocab_size * shape.hidden_size
    return embedding_params(shape, vocab_size) + shape.num_layers * layer_params(shape) + shape.hidden_size + lm_head


def flops_per_token(shape: ModelShape, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token: ``6 N + 12 L H T`` (PaLM, Chowdhery et al. 2022, appendix B; Chinchilla app. F).

    ``6 N``: forward (2 FLOPs per multiply-add) plus backward (twice the forward) over every weight that takes
    part in a matmul. N leaves out the input embedding table, which is a lookup, unless it is tied to the
    output projection (then the one matrix is counted once, as the LM head). ``12 L H T``: the attention scores
    and weighted sum (QK^T and AV, 2 matmuls x 2 FLOPs x 3 for forward+backward) with L layers, hidden size H
    and sequence length T, counted over the full T x T matrix as in PaLM, not halved for the causal mask.
    """
    n = param_count(shape, vocab_size)
    if not shape.tie_embeddings:
        n -= embedding_params(shape, vocab_size)
    return 6 * n + 12 * shape.num_layers * shape.hidden_size * seq_len


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    gathered: int = 0  # FSDP: whole weights and gradients of the units being computed

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.gathered


def memory_estimate(
    shape: ModelShape,
    vocab_size: int,
    seq_len: int,
    micro_batch_size: int,
    *,
    activation_bytes: int = 4,
    shards: int = 1,
) -> MemoryEstimate:
    """Bytes to train one micro-batch on one device: fp32 weights and grads (4 + 4 per param), AdamW's two fp32
    moments (8), and activations.

    ``shards``: FSDP over that many ranks divides weights, grads and moments; at its peak a rank also holds the
    all-gathered weights and not yet reduce-scattered grads (8 bytes per param) of the root unit (embeddings,
    final norm, LM head: gathered for the whole forward and backward), of the decoder layer it computes and of
    the one it prefetches. Activations are not sharded (each rank runs whole micro-batches).

    The activation term is rough, on purpose: per layer ``s b h (34 + 5 a s / h)`` values (Korthikanti et al.
    2022, no recomputation), scaled by ``activation_bytes / 2`` (their count is for 16-bit activations; pass 2
    under bf16 autocast, 4 in fp32), plus the logits and their gradient (``3 b s V`` fp32 values, which
    dominate for small models with large vocabularies).
    """
    n = param_count(shape, vocab_size)
    s, b, h, a = seq_len, micro_batch_size, shape.hidden_size, shape.num_heads
    per_layer = s * b * h * (34 + 5 * a * s / h) * activation_bytes / 2
    logits = 3 * b * s * vocab_size * 4
    root = n - shape.num_layers * layer_params(shape)
    return MemoryEstimate(
        weights=math.ceil(4 * n / shards),
        gradients=math.ceil(4 * n / shards),
        optimizer=math.ceil(8 * n / shards),
        activations=int(shape.num_layers * per_layer + logits),
        gathered=0 if shards == 1 else 8 * (root + 2 * layer_params(shape)),
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


def check_fits(estimate: MemoryEstimate, device: str, limit_bytes: int | None = None) -> None:
    """Refuse a config whose estimate exceeds ``limit_bytes`` (default: what the device has free now)."""
    limit = available_memory(device) if limit_bytes is None else limit_bytes
    if limit is not None and estimate.total > limit:
        gib = 2**30
        gathered = f", FSDP all-gathered {estimate.gathered / gib:.2f}" if estimate.gathered else ""
        raise ModelTooLargeError(
            f"training needs about {estimate.total / gib:.2f} GiB on {device} (weights {estimate.weights / gib:.2f}, "
            f"grads {estimate.gradients / gib:.2f}, AdamW {estimate.optimizer / gib:.2f}, activations "
            f"{estimate.activations / gib:.2f}{gathered}) but {limit / gib:.2f} GiB is available; use a smaller "
            "model, seq_len or micro_batch_size, or shard it with FSDP over more Ray workers"
        )
