"""Packing documents into fixed-length training sequences: one raw token file plus a JSON index per shard.

A shard is the documents joined as ``doc EOS doc EOS ...``, cut every ``seq_len`` tokens; only the last sequence
can be partial, and it is padded and its real length recorded so the loss can ignore the padding. The token file
is a bare C-order array (no header) so it can be memory-mapped from anywhere (numpy, torch, other languages) with
just the index: ``np.memmap(path, dtype, mode="r", shape=(n_sequences, seq_len))``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from tpt.atomic import write_atomic, write_json
from tpt.tokenization.tokenizer import encode_documents, load_tokenizer, special_ids

INDEX_FORMAT = "tpt-packed-tokens/1"


@dataclass(frozen=True)
class ShardStats:
    """What one packed shard holds; ``wall_s`` and ``tokens_per_s`` are measurements, not part of the index."""

    path: Path
    index_path: Path
    n_documents: int
    n_empty_documents: int
    n_sequences: int
    seq_len: int
    dtype: str
    n_real_tokens: int
    n_padding_tokens: int
    packing_efficiency: float
    last_sequence_tokens: int
    eos_id: int
    pad_id: int
    bos_id: int | None
    vocab_size: int
    tokenizer: str
    sha256: str
    wall_s: float
    tokens_per_s: float

    def as_metadata(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every id: half the disk and page cache of uint32 for most vocabs."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def index_path_for(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".bin":
        raise ValueError(f"packed token files end in .bin, got {path.name!r}")
    return path.with_suffix(".json")


def tokenize_and_pack(
    texts: Iterable[str], tokenizer_dir: str | Path, seq_len: int, out_path: str | Path, *, batch_size: int = 512
) -> ShardStats:
    """Tokenize ``texts`` (batch encoding), pack them into ``out_path`` (.bin) and write its index (.json).

    The token file is renamed into place before the index, so an index on disk always describes a whole file.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (one input and one target token), got {seq_len}")
    out_path = Path(out_path)
    index_path = index_path_for(out_path)
    tokenizer = load_tokenizer(tokenizer_dir)
    ids = special_ids(tokenizer)
    dtype = token_dtype(ids.vocab_size)
    start = time.monotonic()

    chunks: list[np.ndarray] = []
    n_documents = n_empty = 0
    for batch in _batches(texts, batch_size):
        kept = []
        for text in batch:
            if not isinstance(text, str):
                raise ValueError(f"document {n_documents + n_empty} is a {type(text).__name__}, expected str")
            if text:
                kept.append(text)
                n_documents += 1
            else:
                n_empty += 1
        if kept:
            docs = encode_documents(tokenizer, kept, ids.eos_id)
            chunks.append(np.fromiter(chain.from_iterable(docs), dtype=dtype, count=sum(map(len, docs))))
    if n_documents == 0:
        raise ValueError(f"no documents to pack into {out_path.name} ({n_empty} empty strings skipped)")

    stream = np.concatenate(chunks)
    n_real = int(stream.size)
    n_sequences = math.ceil(n_real / seq_len)
    tokens = np.full(n_sequences * seq_len, ids.pad_id, dtype=dtype)
    tokens[:n_real] = stream
    sha256 = hashlib.sha256(tokens.tobytes()).hexdigest()
    write_atomic(out_path, lambda tmp: tokens.tofile(tmp))

    n_padding = n_sequences * seq_len - n_real
    index = {
        "format": INDEX_FORMAT,
        "tokens_file": out_path.name,
        "n_sequences": n_sequences,
        "seq_len": seq_len,
        "dtype": dtype.name,
        "n_documents": n_documents,
        "n_empty_documents": n_empty,
        "n_real_tokens": n_real,
        "n_padding_tokens": n_padding,
        "packing_efficiency": n_real / (n_sequences * seq_len),
        "last_sequence_tokens": n_real - (n_sequences - 1) * seq_len,
        "eos_id": ids.eos_id,
        "pad_id": ids.pad_id,
        "bos_id": ids.bos_id,
        "vocab_size": ids.vocab_size,
        "tokenizer": ids.name,
        "sha256": sha256,
    }
    write_json(index_path, index)
    wall = time.monotonic() - start
    fields = {k: v for k, v in index.items() if k not in ("format", "tokens_file")}
    return ShardStats(
        path=out_path, index_path=index_path, wall_s=wall, tokens_per_s=n_real / max(wall, 1e-9), **fields
    )


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of documents, got a single str")
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch
