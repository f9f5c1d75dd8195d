"""The student the loop trains: a freshly initialised LLaMA of the experiment's shape, or any causal LM transformers
knows (Qwen2, LLaMA, SmolLM...) loaded from a checkpoint for mid-training or SFT.

Both come with their parameter count, FLOPs per token and memory estimate before a tensor is allocated: for a
checkpoint they are read off its config (the model is built on the meta device to count parameters exactly), so a
model that cannot fit, is not a causal LM, or cannot embed the tokenizer's ids is refused before any compute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tpt.config import ModelShape, TrainingConfig
from tpt.errors import InputError
from tpt.training.model import (
    MemoryEstimate,
    SpecialTokens,
    build_model,
    flops_per_token,
    llama_config,
    memory_estimate,
    param_count,
)


class InitModelError(InputError, ValueError):
    """A checkpoint the student cannot start from; the message is one line."""


@dataclass(frozen=True)
class Student:
    n_params: int
    flops_per_token: int
    estimate: MemoryEstimate
    build: Callable[[], torch.nn.Module]  # the caller seeds torch first (a fresh init draws from it)


def make_student(
    config: TrainingConfig,
    vocab_size: int,
    special: SpecialTokens,
    *,
    init_dir: str | Path | None = None,
    activation_bytes: int = 4,
    shards: int = 1,
) -> Student:
    """A fresh LLaMA of ``config.model``, or the causal LM in ``init_dir`` (required when ``config.init`` is set)."""
    if config.init is not None and init_dir is None:
        raise InitModelError(f"training.init is {config.init.name!r} but no resolved model folder was given")
    if init_dir is None:
        shape = config.model
        hf_config = llama_config(shape, vocab_size, config.seq_len, special)
        return Student(
            param_count(shape, vocab_size),
            flops_per_token(shape, vocab_size, config.seq_len),
            memory_estimate(
                shape,
                vocab_size,
                config.seq_len,
                config.micro_batch_size,
                activation_bytes=activation_bytes,
                shards=shards,
            ),
            lambda: build_model(hf_config),
        )
    return pretrained_student(init_dir, vocab_size, config, activation_bytes=activation_bytes, shards=shards)


def pretrained_student(
    init_dir: str | Path, vocab_size: int, config: TrainingConfig, *, activation_bytes: int = 4, shards: int = 1
) -> Student:
    """The causal LM in ``init_dir``, checked against the tokenizer's ``vocab_size`` from its config alone."""
    hf_config = causal_lm_config(init_dir)
    rows = int(hf_config.vocab_size)
    if vocab_size > rows:  # fewer is fine: Qwen2.5 pads its embedding table past the tokenizer's 151,665 ids
        raise InitModelError(
            f"{init_dir}: the tokenizer has {vocab_size} tokens but the model embeds only {rows}; ids past {rows - 1} "
            "would index out of the embedding table (use the model's own tokenizer)"
        )
    n_params = exact_param_count(hf_config)
    shape = shape_of(hf_config)
    embedding = rows * shape.hidden_size
    matmul_params = n_params if shape.tie_embeddings else n_params - embedding
    fpt = 6 * matmul_params + 12 * shape.num_layers * shape.hidden_size * config.seq_len
    estimate = memory_estimate(
        shape, rows, config.seq_len, config.micro_batch_size, activation_bytes=activation_bytes, shards=shards
    )
    whole = -(-4 * n_params // shards)  # the shape's count is LLaMA's; the loaded model's is exact (biases etc.)
    estimate = dataclasses.replace(estimate, weights=whole, gradients=whole, optimizer=2 * whole)
    return Student(n_params, fpt, estimate, lambda: load_causal_lm(init_dir))


def causal_lm_config(init_dir: str | Path) -> Any:
    """The checkpoint's transformers config, refused unless transformers has a causal-LM head for it."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = Path(init_dir)
    if not (path / "config.json").is_file():
        raise InitModelError(f"{path}: no config.json, not a Hugging Face model folder")
    try:
        hf_config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitModelError(f"{path}: transformers cannot read its config: {first}") from None
    heads = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(hf_config), None)
    heads = heads if isinstance(heads, (list, tuple)) else [heads] if heads else []
    saved = list(getattr(hf_config, "architectures", None) or [h.__name__ for h in heads])
    if not heads or not set(saved) & {h.__name__ for h in heads}:  # a BertModel checkpoint has no LM head
        raise InitModelError(
            f"{path}: a {hf_config.model_type!r} model saved as {saved or 'no architecture'} is not a causal LM "
            "transformers knows; training continues only from decoder-only language models (Qwen2, LLaMA, SmolLM...)"
        )
    return hf_config


def load_causal_lm(init_dir: str | Path) -> torch.nn.Module:
    """The checkpoint's weights in fp32 (the loop's master weights; bf16 autocast on CUDA), without a KV cache."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(init_dir), dtype=torch.float32)
    model.config.use_cache = False
    return model


def exact_param_count(hf_config: Any) -> int:
    """Parameters of the model this config builds, counted on the meta device (no memory, no init)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


def shape_of(hf_config: Any) -> ModelShape:
    """The LLaMA-style shape that the activation estimate needs, read from a decoder config's usual fields."""
    heads = hf_config.num_attention_heads
    return ModelShape(
        hidden_size=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        intermediate_size=getattr(hf_config, "intermediate_size", None) or 4 * hf_config.hidden_size,
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
    )
