"""Loading the pretraining tokenizer once, and encoding documents so that EOS is an unambiguous boundary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tpt.errors import InputError


class TokenizerError(InputError, ValueError):
    """A tokenizer folder that cannot be used for packing; the message is one line."""


@dataclass(frozen=True)
class SpecialIds:
    eos_id: int
    pad_id: int
    bos_id: int | None
    vocab_size: int
    name: str


def load_tokenizer(tokenizer_dir: str | Path) -> Any:
    """A fast (Rust) tokenizer from a local folder, cached per process since shards are packed many at a time."""
    path = Path(tokenizer_dir).expanduser()
    if not path.is_dir():
        raise TokenizerError(f"tokenizer folder {path} does not exist")
    return _load(str(path.resolve()))


@lru_cache(maxsize=8)
def _load(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"tokenizer folder {path} could not be loaded: {first}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"tokenizer in {path} is not a fast tokenizer (needs tokenizer.json)")
    if tokenizer.eos_token_id is None:
        raise TokenizerError(f"tokenizer in {path} has no EOS token to separate documents")
    return tokenizer


def special_ids(tokenizer: Any) -> SpecialIds:
    """EOS separates documents; padding reuses the tokenizer's pad token or, lacking one, EOS."""
    eos = int(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id
    bos = tokenizer.bos_token_id
    return SpecialIds(
        eos_id=eos,
        pad_id=eos if pad is None else int(pad),
        bos_id=None if bos is None else int(bos),
        vocab_size=len(tokenizer),
        name=Path(str(tokenizer.name_or_path)).name or str(tokenizer.name_or_path),
    )


def encode_documents(tokenizer: Any, texts: Sequence[str], eos_id: int) -> list[np.ndarray]:
    """Token ids of each document followed by EOS, straight from the Rust tokenizer (no Python lists per token).

    Special tokens are added the way the tokenizer does by default (a Llama-3 tokenizer prepends BOS, SmolLM2's
    adds nothing), so the model sees documents as it will see prompts at evaluation time. Special-token *text*
    inside a document (a literal "<|endoftext|>") is split into ordinary tokens: only the packer writes EOS.
    """
    backend = tokenizer.backend_tokenizer
    before, backend.encode_special_tokens = backend.encode_special_tokens, True
    try:
        encodings = backend.encode_batch_fast(list(texts), add_special_tokens=True)
    finally:
        backend.encode_special_tokens = before
    out: list[np.ndarray] = []
    for encoding in encodings:
        ids = encoding.ids
        if not ids or ids[-1] != eos_id:  # some tokenizers append EOS themselves; never write two
            ids.append(eos_id)
        out.append(np.array(ids, dtype=np.uint32))
    return out
