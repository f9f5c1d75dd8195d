"""The model being pretrained: a LLaMA-architecture config from the experiment's shape, its initialisation, and
its arithmetic. Parameter count and FLOPs are computed from the shape alone, so throughput can be reported as
model FLOPs (MFU) on any device and memory estimated before anything is allocated (``memory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpt.config import ModelShape
from tpt.versioning import content_hash


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


def empty_model(config: Any) -> Any:
    """The fp32 causal LM of ``config`` on the meta device (``LlamaForCausalLM`` for ``llama_config``; any
    architecture transformers knows for a checkpoint's config): shapes only, no memory, so FSDP can shard it before
    any rank allocates the whole model."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # fp32 whatever the config's dtype: these are the loop's master weights
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def build_model(config: Any, *, seed: int = 0, device: str = "cpu") -> Any:
    """A freshly initialised fp32 ``LlamaForCausalLM`` on ``device`` (see ``init_weights``)."""
    model = empty_model(config)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gave the tied LM head a tensor of its own
    init_buffers(model)
    init_weights(model, seed)
    return model


def init_weights(model: Any, seed: int) -> None:
    """Transformers' LLaMA init (normal(0, initializer_range) for matmul weights and embeddings, the padding row of
    the embedding zero, norms one), drawn per parameter from a generator seeded by (seed, parameter name) on the
    CPU. The draw depends on neither the world size nor the device, so one process, DDP and FSDP over any number of
    ranks start from the same weights, and a rank only ever holds one whole tensor (FSDP keeps its shard of it)."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    std = model.config.initializer_range
    owner = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owner.setdefault(id(param), module)  # tied embeddings: the embedding, which comes first, owns the weight
    with torch.no_grad():
        for name, param in model.named_parameters():
            module = owner[id(param)]
            full = torch.empty(param.shape, dtype=torch.float32)
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                generator = torch.Generator().manual_seed(int(content_hash("init", seed, name), 16))
                full.normal_(0.0, std, generator=generator)
                if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                    full[module.padding_idx] = 0
            else:  # RMSNorm gains
                full.fill_(1.0)
            if isinstance(param, DTensor):  # each rank keeps its slice, no communication
                full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.copy_(full.to(param.device, param.dtype) if not isinstance(full, DTensor) else full)


def init_buffers(model: Any) -> None:
    """The rotary embedding's frequencies, which ``to_empty`` leaves uninitialised (buffers are not in checkpoints)."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "original_inv_freq"):
                fresh = type(module)(model.config)
                for name, buffer in fresh.named_buffers(recurse=False):
                    getattr(module, name).copy_(buffer)


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
