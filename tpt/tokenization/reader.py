"""Reading many packed shards as one array of sequences, without loading any of them up front.

Only the small JSON indexes are read when the reader is built; each token file is memory-mapped the first time
one of its sequences is asked for, so a reader over thousands of shards costs a few kilobytes until it is used. A
shard on an object store is downloaded whole, once, into the local cache (``$TPT_CACHE_DIR/remote``) the first time
it is asked for, and mapped from there. The copies are never evicted, and a mixture's order reaches every shard,
so each training node ends up holding the whole token set of its mixture.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tpt.errors import InputError
from tpt.offline import cache_dir
from tpt.paths import Location, as_path, local_copy
from tpt.tokenization.pack import INDEX_FORMAT, index_path_for
from tpt.versioning import content_hash

_SHARED = ("seq_len", "vocab_size", "eos_id", "pad_id", "tokenizer")


class ShardError(InputError, ValueError):
    """A packed shard that is missing, incomplete or inconsistent with the others; the message is one line."""


class PackedShards:
    """Sequence ``i`` of the concatenation of shards, with its real (unpadded) length."""

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = [as_path(p) for p in paths]
        if not self.paths:
            raise ShardError("no packed shards given")
        self.indexes = [_read_index(p) for p in self.paths]
        first = self.indexes[0]
        for path, index in zip(self.paths[1:], self.indexes[1:], strict=True):
            for key in _SHARED:
                if index[key] != first[key]:
                    raise ShardError(
                        f"{path.name}: {key}={index[key]!r} differs from {self.paths[0].name} ({first[key]!r})"
                    )
        self.seq_len: int = first["seq_len"]
        self.vocab_size: int = first["vocab_size"]
        self.eos_id: int = first["eos_id"]
        self.pad_id: int = first["pad_id"]
        self.tokenizer: str = first["tokenizer"]
        self.starts = [0]
        for index in self.indexes:
            self.starts.append(self.starts[-1] + index["n_sequences"])
        self._maps: dict[int, np.memmap] = {}
        self._lengths: dict[int, np.ndarray] = {}

    @classmethod
    def from_dir(cls, folder: str | Path) -> PackedShards:
        """Every complete shard (a .bin with its .json index) in ``folder``, in name order."""
        folder = as_path(folder)
        paths = sorted(p for p in folder.glob("*.bin") if p.with_suffix(".json").exists())
        if not paths:
            raise ShardError(f"no packed shards (*.bin with a .json index) in {folder}")
        return cls(paths)

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def n_real_tokens(self) -> int:
        return sum(index["n_real_tokens"] for index in self.indexes)

    @property
    def fingerprint(self) -> str:
        """Identity of the token content (shard checksums in order): a checkpoint is only valid for this data."""
        return content_hash([index["sha256"] for index in self.indexes], self.seq_len)

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, row inside that shard) of global sequence ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {i} is out of range for {len(self)} sequences")
        shard = bisect.bisect_right(self.starts, i) - 1
        return shard, i - self.starts[shard]

    def real_length(self, i: int) -> int:
        """``seq_len``, except for the padded last sequence of each source in each shard."""
        shard, row = self.locate(i)
        return int(self._real_lengths(shard)[row])

    def sequences_by_source(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per source: the global ids of its sequences and their real lengths (what a mixture chooses from)."""
        ids: dict[str, list[np.ndarray]] = {}
        lengths: dict[str, list[np.ndarray]] = {}
        for shard, index in enumerate(self.indexes):
            real = self._real_lengths(shard)
            for span in index["sources"]:
                rows = slice(span["first_sequence"], span["first_sequence"] + span["n_sequences"])
                ids.setdefault(span["name"], []).append(np.arange(rows.start, rows.stop) + self.starts[shard])
                lengths.setdefault(span["name"], []).append(real[rows])
        return {name: (np.concatenate(ids[name]), np.concatenate(lengths[name])) for name in sorted(ids)}

    def _real_lengths(self, shard: int) -> np.ndarray:
        """Real tokens of each sequence of one shard, from its index: the one place the per-source rule lives."""
        if shard not in self._lengths:
            index = self.indexes[shard]
            spans = index["sources"]
            starts = [span["first_sequence"] for span in spans]
            ends = [span["first_sequence"] + span["n_sequences"] for span in spans]
            if starts[:1] != [0] or starts[1:] != ends[:-1] or ends[-1:] != [index["n_sequences"]]:
                raise ShardError(f"{self.paths[shard].name}: its source ranges do not cover its sequences exactly")
            real = np.full(index["n_sequences"], self.seq_len, dtype=np.int64)
            for span, end in zip(spans, ends, strict=True):
                real[end - 1] = span["last_sequence_tokens"]
            self._lengths[shard] = real
        return self._lengths[shard]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        shard, row = self.locate(i)
        return np.array(self._map(shard)[row]), self.real_length(i)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Tokens ``[n, seq_len]`` as int64 and real lengths ``[n]`` for global sequence ``indices``."""
        tokens = np.empty((len(indices), self.seq_len), dtype=np.int64)
        lengths = np.empty(len(indices), dtype=np.int64)
        for k, i in enumerate(indices):
            shard, row = self.locate(int(i))
            tokens[k] = self._map(shard)[row]
            lengths[k] = self.real_length(int(i))
        return tokens, lengths

    def _map(self, shard: int) -> np.memmap:
        if shard not in self._maps:
            index, path = self.indexes[shard], self.paths[shard]
            dtype = np.dtype(index["dtype"])
            expected = index["n_sequences"] * index["seq_len"] * dtype.itemsize
            local = local_copy(path, cache_dir() / "remote") if path.exists() else None
            size = local.stat().st_size if local is not None else -1
            if size != expected:
                raise ShardError(f"{path}: token file has {size} bytes, its index says {expected}")
            self._maps[shard] = np.memmap(local, dtype=dtype, mode="r", shape=(index["n_sequences"], index["seq_len"]))
        return self._maps[shard]


def _read_index(path: Location) -> dict[str, Any]:
    try:
        index_path = index_path_for(path)
    except ValueError as exc:
        raise ShardError(str(exc)) from None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: no index {index_path.name} beside it (shard missing or not finished)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{index_path}: not a valid JSON index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ShardError(f"{index_path}: not a packed-token index (format {INDEX_FORMAT!r} expected)")
    return index
