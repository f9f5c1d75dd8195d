"""Which sequences each step reads: a pure function of (seed, position), so resuming needs only a counter.

Position ``p`` counts sequences consumed since the start of training. Epoch ``p // n`` reads the sequences in the
order of its own seeded permutation, so every sequence is seen once per epoch and no state beyond ``p`` has to
be checkpointed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tpt.versioning import content_hash


class SequenceOrder(Protocol):
    """Which sequence the loop reads at each position (``DataOrder`` or a resolved mixture)."""

    @property
    def fingerprint(self) -> str: ...

    def indices(self, start: int, count: int) -> list[int]: ...

    def epochs(self, positions: int) -> float: ...


class DataOrder:
    """Every sequence once per epoch, in a seeded order per epoch."""

    def __init__(self, n_sequences: int, seed: int):
        if n_sequences <= 0:
            raise ValueError("no training sequences: the packed shards are empty")
        self.n, self.seed = n_sequences, seed
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        return content_hash("epochs", self.n, self.seed)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._epoch = rng.permutation(self.n), epoch
        return self._perm

    def indices(self, start: int, count: int) -> list[int]:
        """Sequence ids for positions ``start .. start + count`` (may cross an epoch boundary)."""
        out: list[int] = []
        p = start
        while len(out) < count:
            epoch, offset = divmod(p, self.n)
            take = min(count - len(out), self.n - offset)
            out.extend(int(i) for i in self.permutation(epoch)[offset : offset + take])
            p += take
        return out

    def epochs(self, positions: int) -> int:
        """Number of epochs (permutations) that ``positions`` sequences touch; the last may be partial."""
        return math.ceil(positions / self.n)


class TokenSequences(Protocol):
    """What the loop needs from the data (``tpt.tokenization.PackedShards`` is one)."""

    seq_len: int
    vocab_size: int

    @property
    def fingerprint(self) -> str: ...

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...
