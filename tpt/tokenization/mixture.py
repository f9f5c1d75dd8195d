"""Resolving a mixture spec into the exact list of sequences a pretraining run sees.

Each source gets ``weight / sum(weights)`` of the run's sequences (its natural share of the tokens when no weights
are given), rounded by largest remainder so the counts add up exactly. A source asked for more sequences than it
has is repeated: whole seeded permutations of it (epochs), then the start of one more; a source asked for fewer is
subsampled. The picks of all sources are then shuffled together, so the order too is a pure function of
(shards, weights, seed): resuming or re-running a training job reads the same sequences in the same order.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tpt.atomic import read_json, write_atomic, write_json
from tpt.config import MixtureConfig
from tpt.errors import InputError
from tpt.versioning import content_hash

ORDER_FILE = "order.npy"
SHARES_FILE = "mixture.json"


class MixtureError(InputError, ValueError):
    """A mixture that cannot be resolved against the packed data; the message is one line."""


@dataclass(frozen=True)
class SourceShare:
    source: str
    weight: float  # normalised: the shares sum to 1
    available_sequences: int
    available_tokens: int
    selected_sequences: int
    selected_tokens: int  # real (non-padding) tokens in the selected sequences
    epochs: float  # selected / available: above 1 the source is upsampled

    def as_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedMixture:
    order: np.ndarray  # global sequence ids, in training order
    shares: list[SourceShare]

    @property
    def fingerprint(self) -> str:
        """The order's bytes hashed directly: at paper scale it holds millions of ids."""
        return content_hash("mixture", hashlib.sha256(self.order.tobytes()).hexdigest())

    def indices(self, start: int, count: int) -> list[int]:
        if start < 0 or start + count > self.order.size:
            raise IndexError(f"positions {start}..{start + count} lie outside the mixture's {self.order.size}")
        return self.order[start : start + count].tolist()

    def epochs(self, positions: int) -> float:
        """Passes over the most repeated source after ``positions`` sequences (sources are interleaved evenly)."""
        return max(s.epochs for s in self.shares) * positions / self.order.size

    def save(self, folder: Path) -> None:
        """``order.npy`` first, then ``mixture.json``: the JSON on disk always describes a whole order file."""

        def write_order(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a temp file's name
                np.save(fh, self.order, allow_pickle=False)

        write_atomic(folder / ORDER_FILE, write_order)
        write_json(
            folder / SHARES_FILE, {"sequences": int(self.order.size), "sources": [s.as_row() for s in self.shares]}
        )

    @classmethod
    def load(cls, folder: Path) -> ResolvedMixture:
        shares = [SourceShare(**row) for row in read_json(folder / SHARES_FILE)["sources"]]
        with (folder / ORDER_FILE).open("rb") as fh:
            return cls(np.load(fh, allow_pickle=False), shares)

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / SHARES_FILE).exists()

    @classmethod
    def finished(cls, folder: Path) -> ResolvedMixture | None:
        """The mixture resolved in ``folder``, or None: the one notion of done for a mixture."""
        return cls.load(folder) if cls.exists(folder) else None


def resolve_mixture(
    available: dict[str, tuple[np.ndarray, np.ndarray]], n_sequences: int, config: MixtureConfig
) -> ResolvedMixture:
    """``available``: per source, global sequence ids and their real lengths (``PackedShards.sequences_by_source``)."""
    if n_sequences <= 0:
        raise MixtureError(f"a mixture needs a positive number of sequences, got {n_sequences}")
    weights = _weights(available, config)
    counts = _largest_remainder(weights, n_sequences)
    picks, shares = [], []
    for k, (name, weight) in enumerate(weights.items()):
        ids, lengths = available.get(name, (np.empty(0, np.int64), np.empty(0, np.int64)))
        count = counts[name]
        if count and ids.size == 0:
            raise MixtureError(f"mixture source {name!r} has weight {weight:.3g} but no packed sequences")
        epochs = count / ids.size if ids.size else 0.0
        limit = _max_epochs(config, name)
        if limit is not None and epochs > limit:
            raise MixtureError(
                f"mixture source {name!r} would be repeated {epochs:.2f} times for its share {weight:.3g} of "
                f"{n_sequences} sequences, more than its max_epochs {limit}"
            )
        chosen = _draw(np.random.default_rng([config.seed, k]), ids.size, count)
        picks.append(ids[chosen])
        shares.append(
            SourceShare(
                source=name,
                weight=weight,
                available_sequences=int(ids.size),
                available_tokens=int(lengths.sum()),
                selected_sequences=count,
                selected_tokens=int(lengths[chosen].sum()),
                epochs=epochs,
            )
        )
    order = np.concatenate(picks)
    np.random.default_rng([config.seed, len(weights)]).shuffle(order)
    return ResolvedMixture(order, shares)


def _draw(rng: np.random.Generator, available: int, count: int) -> np.ndarray:
    """``count`` positions in ``range(available)``: whole permutations (epochs), then the start of one more."""
    if count == 0:
        return np.empty(0, np.int64)
    return np.concatenate([rng.permutation(available) for _ in range(-(-count // available))])[:count]


def _weights(available: dict[str, tuple[np.ndarray, np.ndarray]], config: MixtureConfig) -> dict[str, float]:
    if config.sources is None:
        raw = {name: float(lengths.sum()) for name, (_, lengths) in sorted(available.items())}
    else:
        raw = {s.name: s.weight for s in config.sources}
    total = sum(raw.values())
    if not total > 0:
        raise MixtureError("mixture weights must sum to a positive number (no tokens to draw from)")
    return {name: w / total for name, w in raw.items()}


def _largest_remainder(weights: dict[str, float], n: int) -> dict[str, int]:
    quotas = {name: w * n for name, w in weights.items()}
    counts = {name: int(q) for name, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda name: (-(quotas[name] - counts[name]), name))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def _max_epochs(config: MixtureConfig, name: str) -> float | None:
    return next((s.max_epochs for s in config.sources or [] if s.name == name), None)
