"""The student the loop trains: a freshly initialised LLaMA of the experiment's shape, or any causal LM transformers
knows (Qwen2, LLaMA, SmolLM...) continued from a checkpoint for mid-training or SFT.

Both are known before a tensor is allocated: the loop builds either on the meta device from its transformers config
(``model.empty_model``), shards or materialises it, then fills it with ``init_weights`` or with the checkpoint's
weights (``load_weights``: read one tensor at a time, each rank keeping its slice, as ``init_weights`` does). For a
checkpoint the parameter count is exact (counted on the meta device: biases and all) and the shape the memory
estimate needs is read off its config, so a model that cannot fit, is not a causal LM, or cannot embed the
tokenizer's ids is refused before any compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tpt.config import ModelShape, TrainingConfig
from tpt.errors import InputError
from tpt.training.model import SpecialTokens, empty_model, flops_per_token, init_weights, llama_config, param_count


class InitModelError(InputError, ValueError):
    """A checkpoint the student cannot start from; the message is one line."""


@dataclass(frozen=True)
class Student:
    """The model a run trains: its transformers config (built on the meta device by the loop), its arithmetic, and
    where its first weights come from (``init_dir``, or ``init_weights`` when None)."""

    hf_config: Any
    shape: ModelShape  # LLaMA-style shape for the activation estimate
    vocab_rows: int  # embedding rows: a checkpoint may pad its table past the tokenizer
    n_params: int
    flops_per_token: int
    init_dir: Path | None = None

    def initialise(self, lm: torch.nn.Module, seed: int) -> None:
        """First weights of ``lm`` (materialised, possibly FSDP-sharded): the seeded init or the checkpoint's."""
        if self.init_dir is None:
            init_weights(lm, seed)
        else:
            load_weights(lm, self.init_dir)


def make_student(
    config: TrainingConfig, vocab_size: int, special: SpecialTokens, *, init_dir: str | Path | None = None
) -> Student:
    """A fresh LLaMA of ``config.model``, or the causal LM in ``init_dir`` (required when ``config.init`` is set)."""
    if config.init is not None and init_dir is None:
        raise InitModelError(f"training.init is {config.init.name!r} but no resolved model folder was given")
    if init_dir is None:
        shape = config.model
        return Student(
            llama_config(shape, vocab_size, config.seq_len, special),
            shape,
            vocab_size,
            param_count(shape, vocab_size),
            flops_per_token(shape, vocab_size, config.seq_len),
        )
    return pretrained_student(init_dir, vocab_size, config.seq_len)


def pretrained_student(init_dir: str | Path, vocab_size: int, seq_len: int) -> Student:
    """The causal LM in ``init_dir``, checked against the tokenizer's ``vocab_size`` from its config alone."""
    hf_config = causal_lm_config(init_dir)
    rows = int(hf_config.vocab_size)
    if vocab_size > rows:  # fewer is fine: Qwen2.5 pads its embedding table past the tokenizer's 151,665 ids
        raise InitModelError(
            f"{init_dir}: the tokenizer has {vocab_size} tokens but the model embeds only {rows}; ids past {rows - 1} "
            "would index out of the embedding table (use the model's own tokenizer)"
        )
    hf_config.use_cache = False
    n_params = exact_param_count(hf_config)
    shape = shape_of(hf_config)
    matmul_params = n_params if shape.tie_embeddings else n_params - rows * shape.hidden_size
    fpt = 6 * matmul_params + 12 * shape.num_layers * shape.hidden_size * seq_len  # as model.flops_per_token
    return Student(hf_config, shape, rows, n_params, fpt, Path(init_dir))


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


def load_weights(lm: torch.nn.Module, init_dir: str | Path) -> None:
    """Copy the checkpoint's safetensors weights into ``lm`` (materialised on its device, or FSDP-sharded) in fp32,
    one tensor at a time: a rank holds at most one whole tensor beside its shards (FSDP keeps its slice of each).
    Tied weights are one parameter, filled once from the embedding."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor, distribute_tensor

    files = _weight_files(Path(init_dir))
    missing = [name for name, _ in lm.named_parameters() if name not in files]
    if missing:
        raise InitModelError(
            f"{init_dir}: the checkpoint has no weights for {len(missing)} parameter(s) of its architecture, e.g. "
            f"{missing[:3]} (a checkpoint saved under other names is not supported)"
        )
    handles: dict[Path, Any] = {}
    with torch.no_grad():
        for name, param in lm.named_parameters():
            if files[name] not in handles:
                handles[files[name]] = safe_open(str(files[name]), framework="pt", device="cpu")
            full = handles[files[name]].get_tensor(name).to(torch.float32)
            if tuple(full.shape) != tuple(param.shape):
                raise InitModelError(
                    f"{init_dir}: {name} is {tuple(full.shape)} in the checkpoint, {tuple(param.shape)} in its config"
                )
            if isinstance(param, DTensor):  # each rank keeps its slice, no communication
                full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.copy_(full if isinstance(full, DTensor) else full.to(param.device, param.dtype))


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it (one file, or a sharded checkpoint's index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise InitModelError(f"{folder}: no model.safetensors (or its index); the student loads safetensors weights")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt", device="cpu") as fh:
        return dict.fromkeys(fh.keys(), single)


def exact_param_count(hf_config: Any) -> int:
    """Parameters of the model this config builds, counted on the meta device (no memory, no init)."""
    return sum(p.numel() for p in empty_model(hf_config).parameters())


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
