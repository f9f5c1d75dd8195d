"""Packing documents into fixed-length training sequences: one raw token file plus a JSON index per shard.

Inside a shard each source (web, wiki, math, ...) is packed on its own: its documents joined as
``doc EOS doc EOS ...`` and cut every ``seq_len`` tokens, so every sequence belongs to exactly one source and a
mixture can weight sources by choosing sequences. Only each source's last sequence can be partial; it is padded
and its real length recorded so the loss can ignore the padding. The token file is a bare C-order array (no
header) that can be memory-mapped from anywhere with just the index:
``np.memmap(path, dtype, mode="r", shape=(n_sequences, seq_len))``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tpt.atomic import write_atomic, write_json
from tpt.errors import InputError
from tpt.paths import as_path
from tpt.tokenization.tokenizer import encode_documents, load_tokenizer, special_ids

INDEX_FORMAT = "tpt-packed-tokens/2"  # 2: per-source sequence ranges


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
    sources: list[dict[str, Any]]  # name, first_sequence, n_sequences, n_documents, n_real_tokens, last_sequence_tokens
    eos_id: int
    pad_id: int
    bos_id: int | None
    vocab_size: int
    tokenizer: str
    sha256: str
    wall_s: float
    tokens_per_s: float

    def as_metadata(self) -> dict[str, Any]:
        return {k: (str(v) if k in ("path", "index_path") else v) for k, v in asdict(self).items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every id: half the disk and page cache of uint32 for most vocabs."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def index_path_for(path: str | Path) -> Path:
    path = as_path(path)
    if path.suffix != ".bin":
        raise ValueError(f"packed token files end in .bin, got {path.name!r}")
    return path.with_suffix(".json")


class PackError(InputError, ValueError):
    """Documents that cannot be packed; the message is one line."""


def tokenize_and_pack(
    texts: Iterable[str],
    tokenizer_dir: str | Path,
    seq_len: int,
    out_path: str | Path,
    *,
    sources: Iterable[str] | None = None,
    batch_size: int = 512,
) -> ShardStats:
    """Tokenize ``texts`` (batch encoding), pack each source's documents into ``out_path`` (.bin) and write its
    index (.json). ``sources`` names each text's source (one source "all" when not given).

    The token file is renamed into place before the index, so an index on disk always describes a whole file.
    """
    if seq_len < 2:
        raise PackError(f"seq_len must be at least 2 (one input and one target token), got {seq_len}")
    out_path = as_path(out_path)
    index_path = index_path_for(out_path)
    tokenizer = load_tokenizer(tokenizer_dir)
    ids = special_ids(tokenizer)
    dtype = token_dtype(ids.vocab_size)
    start = time.monotonic()

    streams: dict[str, list[np.ndarray]] = {}
    documents: dict[str, int] = {}
    n_empty = 0
    for batch in _batches(texts, sources, batch_size):
        kept = [(source, text) for source, text in batch if text]
        n_empty += len(batch) - len(kept)
        if not kept:
            continue
        for (source, _), tokens in zip(
            kept, encode_documents(tokenizer, [t for _, t in kept], ids.eos_id), strict=True
        ):
            streams.setdefault(source, []).append(tokens.astype(dtype, copy=False))  # narrow at once: half the memory
            documents[source] = documents.get(source, 0) + 1
    if not streams:
        raise PackError(f"no documents to pack into {out_path.name} ({n_empty} empty strings skipped)")

    # One array for the whole shard, filled source by source: no per-source blocks or concatenated copies.
    sizes = {source: sum(t.size for t in streams[source]) for source in streams}
    tokens = np.full(sum(math.ceil(n / seq_len) for n in sizes.values()) * seq_len, ids.pad_id, dtype=dtype)
    ranges, first = [], 0
    for source in sorted(streams):
        at = first * seq_len
        for doc in streams.pop(source):
            tokens[at : at + doc.size] = doc
            at += doc.size
        n_sequences = math.ceil(sizes[source] / seq_len)
        ranges.append(
            {
                "name": source,
                "first_sequence": first,
                "n_sequences": n_sequences,
                "n_documents": documents[source],
                "n_real_tokens": sizes[source],
                "last_sequence_tokens": int(sizes[source] - (n_sequences - 1) * seq_len),
            }
        )
        first += n_sequences
    sha256 = hashlib.sha256(tokens.data).hexdigest()  # the buffer itself, not a bytes copy
    write_atomic(out_path, lambda tmp: tokens.tofile(tmp))

    n_real = sum(r["n_real_tokens"] for r in ranges)
    index = {
        "format": INDEX_FORMAT,
        "tokens_file": out_path.name,
        "n_sequences": first,
        "seq_len": seq_len,
        "dtype": dtype.name,
        "n_documents": sum(documents.values()),
        "n_empty_documents": n_empty,
        "n_real_tokens": n_real,
        "n_padding_tokens": int(tokens.size - n_real),
        "packing_efficiency": n_real / tokens.size,
        "sources": ranges,
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


def _batches(texts: Iterable[str], sources: Iterable[str] | None, size: int) -> Iterator[list[tuple[str, str]]]:
    if isinstance(texts, str):
        raise PackError("texts must be an iterable of documents, got a single str")
    labelled = zip(sources, texts, strict=True) if sources is not None else (("all", t) for t in texts)
    position = 0
    while batch := list(islice(labelled, size)):
        for offset, (_, text) in enumerate(batch):
            if not isinstance(text, str):
                raise PackError(f"document {position + offset} is a {type(text).__name__}, expected str")
        position += len(batch)
        yield batch
