"""The trained model as a Hugging Face folder: what lm-eval (hf and vllm backends) and vLLM load directly."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


def export_hf(model: Any, tokenizer_dir: str | Path, target: Path) -> Path:
    """``save_pretrained`` (safetensors) plus the tokenizer files, built beside ``target`` and swapped in whole."""
    tokenizer_dir = Path(tokenizer_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        model.save_pretrained(tmp)
        copied = [name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]
        if not copied:
            raise FileNotFoundError(f"no tokenizer files in {tokenizer_dir} to ship with the model")
        for name in copied:
            shutil.copy2(tokenizer_dir / name, tmp / name)
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
