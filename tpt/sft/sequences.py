"""The SFT sequences the training loop reads: one conversation per row, padded to ``seq_len``, with its loss mask.

Built once into ``sft_data.npz`` (ids, lengths, mask) with a ``sft_data.json`` report beside it (written last: its
presence means the data is finished), so a resumed or Ray-launched run reads the very same rows."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpt.atomic import read_json, write_atomic, write_json
from tpt.config import SFTConfig
from tpt.corpus.decontaminate import NgramIndex
from tpt.sft.chat import render_masked
from tpt.sft.data import SFTDataError, iter_conversations
from tpt.skips import Skips
from tpt.tokenization.tokenizer import load_tokenizer, special_ids
from tpt.versioning import content_hash

DATA_FILE, REPORT_FILE = "sft_data.npz", "sft_data.json"


@dataclass
class SFTSequences:
    """``TokenSequences`` with a third array per batch: the loss mask (assistant tokens)."""

    ids: np.ndarray  # (n, seq_len) int64, padded
    lengths: np.ndarray  # (n,)
    mask: np.ndarray  # (n, seq_len) bool
    vocab_size: int

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    @property
    def fingerprint(self) -> str:
        return content_hash("sft", _digest(self.ids, self.lengths, self.mask))

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = np.asarray(indices, dtype=np.int64)
        return self.ids[at], self.lengths[at], self.mask[at]

    @classmethod
    def load(cls, folder: str | Path) -> SFTSequences | None:
        folder = Path(folder)
        if not (folder / REPORT_FILE).exists():
            return None
        with np.load(folder / DATA_FILE) as data:
            return cls(data["ids"], data["lengths"], data["mask"], int(read_json(folder / REPORT_FILE)["vocab_size"]))


def _save(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: savez would otherwise append .npz to the temp name
        np.savez(fh, **arrays)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def build_sft_sequences(
    config: SFTConfig,
    tokenizer_dir: str | Path,
    folder: str | Path,
    *,
    contamination: NgramIndex | None = None,
) -> tuple[SFTSequences, dict]:
    """Render, mask and pad every usable conversation of ``config.sources``; counted skips for conversations with
    no assistant turn, longer than ``seq_len``, or sharing an n-gram with a test item. Reuses a finished build."""
    folder = Path(folder)
    done = SFTSequences.load(folder)
    if done is not None:
        return done, read_json(folder / REPORT_FILE)
    tokenizer = load_tokenizer(tokenizer_dir)
    special = special_ids(tokenizer)
    rows, masks, sources = [], [], {}
    for source in config.sources:
        skips, accepted = Skips(), 0
        for messages in iter_conversations(source, skips):
            text = "\n".join(m["content"] for m in messages)
            hit = contamination.find(text) if contamination is not None else None
            if hit is not None:
                skips.add(f"contaminated:{hit.benchmark}", hit.ngram)
                continue
            ids, mask = render_masked(tokenizer, messages)
            if len(ids) > config.seq_len:
                skips.add("longer_than_seq_len", f"{len(ids)} tokens")
                continue
            rows.append(ids)
            masks.append(mask)
            accepted += 1
        sources[source.name] = {"accepted": accepted, **skips.as_dict()}
    if not rows:
        raise SFTDataError(f"no usable SFT conversation in {[s.name for s in config.sources]}: {sources}")
    ids = np.full((len(rows), config.seq_len), special.pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), config.seq_len), dtype=bool)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(r)], mask[i, : len(m)] = r, m
    lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
    sequences = SFTSequences(ids, lengths, mask, special.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / DATA_FILE, lambda tmp: _save(tmp, ids=ids, lengths=lengths, mask=mask))
    report = {
        "samples": len(rows),
        "assistant_tokens": int(mask.sum()),
        "tokens": int(lengths.sum()),
        "vocab_size": special.vocab_size,
        "packing": "none: one conversation per sequence, padded",
        "sources": sources,
    }
    write_json(folder / REPORT_FILE, report)
    return sequences, report
