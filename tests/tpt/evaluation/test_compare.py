"""Standard errors, seed spread and paired intervals, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from tpt.evaluation.compare import estimate, paired_difference


def test_estimate_is_the_mean_over_seeds_with_item_stderr_and_seed_spread() -> None:
    runs = [{0: 1.0, 1: 3.0, 2: 5.0}, {0: 3.0, 1: 5.0, 2: 7.0, 9: 100.0}]  # item 9 is scored by one seed only
    found = estimate(runs)
    assert found.per_seed == (3.0, 5.0) and found.mean == 4.0 and found.n_items == 3
    assert found.seed_std == pytest.approx(math.sqrt(2))
    assert found.stderr == pytest.approx(2.0 / math.sqrt(3))  # item means 2, 4, 6: sd 2


def test_a_constant_paired_shift_has_a_zero_width_interval_that_excludes_zero() -> None:
    base = [{i: float(i % 7) for i in range(50)}]
    diff = paired_difference([{i: v - 0.25 for i, v in base[0].items()}], base)
    assert (diff.mean, diff.low, diff.high) == pytest.approx((-0.25, -0.25, -0.25))
    assert diff.excludes_zero and (diff.n_items, diff.n_seeds) == (50, 1)


def test_noise_without_a_shift_gives_an_interval_around_zero_the_same_every_time() -> None:
    base = [{i: 0.0 for i in range(200)}, {i: 0.0 for i in range(200)}]
    noisy = [{i: (1.0 if (i * 7 + s) % 2 else -1.0) for i in range(200)} for s in range(2)]
    first, again = paired_difference(noisy, base), paired_difference(noisy, base)
    assert first == again  # a fixed bootstrap seed
    assert first.low < 0 < first.high and not first.excludes_zero
    assert first.high - first.low < 0.4


def test_runs_that_cannot_be_paired_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([{0: 1.0}], [{0: 1.0}, {0: 2.0}])
    with pytest.raises(ValueError, match="share no scored item"):
        paired_difference([{0: 1.0}], [{1: 1.0}])
