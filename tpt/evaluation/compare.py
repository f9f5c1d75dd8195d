"""Uncertainty for every number the report compares: a metric's mean over items with its standard error, its spread
over training seeds, and a variant's paired difference from vanilla with a 95% interval.

Pairing: both variants are scored on the same items, and seed ``s`` of one is compared with seed ``s`` of the other,
so item difficulty cancels out of the difference. The interval is a paired bootstrap that resamples items and seeds
(each with replacement, independently) with a fixed seed, so the same scores always give the same interval; with
one seed it is the ordinary paired bootstrap over items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric over seeds: the mean of the per-seed means, the item-level standard error of that mean, and the
    spread of the per-seed means (sample standard deviation; 0 with one seed)."""

    mean: float
    stderr: float
    seed_std: float
    per_seed: tuple[float, ...]
    n_items: int


@dataclass(frozen=True)
class Difference:
    """``variant - baseline`` over paired items and seeds, with a bootstrap interval."""

    mean: float
    low: float
    high: float
    n_items: int
    n_seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


Scores = Sequence[Mapping[int, float]]
"""One mapping per seed: item id -> the item's value."""


def _matrix(runs: Scores, items: Sequence[int]) -> np.ndarray:
    return np.array([[run[i] for i in items] for run in runs], dtype=np.float64)


def estimate(runs: Scores) -> Estimate:
    """The metric's mean over seeds of each seed's item mean; items missing from a seed are left out everywhere."""
    if not runs:
        raise ValueError("no runs to estimate from")
    items = sorted(set.intersection(*(set(r) for r in runs)))
    if not items:
        raise ValueError("the runs share no scored item")
    values = _matrix(runs, items)
    per_seed = values.mean(axis=1)
    item_means = values.mean(axis=0)
    stderr = float(item_means.std(ddof=1) / np.sqrt(len(items))) if len(items) > 1 else 0.0
    seed_std = float(per_seed.std(ddof=1)) if len(runs) > 1 else 0.0
    return Estimate(float(per_seed.mean()), stderr, seed_std, tuple(float(v) for v in per_seed), len(items))


def paired_difference(variant: Scores, baseline: Scores, *, resamples: int = BOOTSTRAP_RESAMPLES) -> Difference:
    """``variant - baseline`` on the items both scored, seed by seed (the i-th run of each), with a 95% paired
    bootstrap interval over items and seeds."""
    if len(variant) != len(baseline) or not variant:
        raise ValueError(f"paired runs differ in number: {len(variant)} and {len(baseline)}")
    items = sorted(set.intersection(*(set(r) for r in [*variant, *baseline])))
    if not items:
        raise ValueError("the variants share no scored item")
    diff = _matrix(variant, items) - _matrix(baseline, items)
    n_seeds, n_items = diff.shape
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats = np.empty(resamples)
    for b in range(resamples):
        seeds = rng.integers(n_seeds, size=n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        picked = rng.integers(n_items, size=n_items)
        stats[b] = diff[np.ix_(seeds, picked)].mean()
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Difference(float(diff.mean()), float(low), float(high), n_items, n_seeds)
