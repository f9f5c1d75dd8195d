"""The mixture resolver: deterministic, honours weights, repeats whole epochs, refuses what it cannot do."""

from collections import Counter

import numpy as np
import pydantic
import pytest

from tpt.config import Experiment, MixtureConfig, MixtureSource
from tpt.tokenization.mixture import MixtureError, ResolvedMixture, resolve_mixture

SEQ_LEN = 16


def _available(**sizes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sources laid out one after another in the global sequence ids, each with a partial last sequence."""
    out, first = {}, 0
    for name, n in sizes.items():
        lengths = np.full(n, SEQ_LEN)
        lengths[-1] = 5
        out[name] = (np.arange(first, first + n), lengths)
        first += n
    return out


def _weights(seed: int = 0, **weights: float) -> MixtureConfig:
    return MixtureConfig(sources=[MixtureSource(name=n, weight=w) for n, w in weights.items()], seed=seed)


def _source_of(available, ids) -> Counter:
    owner = {int(i): name for name, (seq, _) in available.items() for i in seq}
    return Counter(owner[int(i)] for i in ids)


def test_same_inputs_same_order_and_a_new_seed_a_new_one():
    available = _available(web=300, math=120)
    config = _weights(web=0.5, math=0.5)
    first, again = resolve_mixture(available, 500, config), resolve_mixture(available, 500, config)
    assert np.array_equal(first.order, again.order) and first.fingerprint == again.fingerprint
    other = resolve_mixture(available, 500, _weights(seed=1, web=0.5, math=0.5))
    assert not np.array_equal(first.order, other.order)
    assert _source_of(available, first.order) == _source_of(available, other.order)  # same counts, new order


def test_weights_are_honoured_and_small_sources_are_repeated_by_whole_epochs():
    available = _available(web=1000, math=40)
    mixture = resolve_mixture(available, 400, _weights(web=0.875, math=0.125))
    assert _source_of(available, mixture.order) == {"web": 350, "math": 50}
    shares = {s.source: s for s in mixture.shares}
    assert shares["math"].epochs == pytest.approx(50 / 40) and shares["web"].epochs == pytest.approx(0.35)
    math_ids = Counter(int(i) for i in mixture.order if int(i) in set(available["math"][0].tolist()))
    assert set(math_ids.values()) == {1, 2} and sum(v == 2 for v in math_ids.values()) == 10  # one epoch + 10
    web_ids = [int(i) for i in mixture.order if int(i) < 1000]
    assert len(set(web_ids)) == len(web_ids)  # a subsampled source never repeats
    # Any window of the shuffled order holds the sources near their weights (they are interleaved, not blocks).
    assert 0.05 < _source_of(available, mixture.order[:100])["math"] / 100 < 0.25


def test_natural_proportions_follow_token_counts():
    available = _available(web=300, wiki=100)
    mixture = resolve_mixture(available, 200, MixtureConfig())
    counts = _source_of(available, mixture.order)
    assert counts["web"] == pytest.approx(150, abs=1) and counts["web"] + counts["wiki"] == 200
    selected = {s.source: s.selected_tokens for s in mixture.shares}
    assert selected["web"] + selected["wiki"] <= 200 * SEQ_LEN


def test_rounding_adds_up_exactly():
    mixture = resolve_mixture(_available(a=10, b=10, c=10), 100, _weights(a=1, b=1, c=1))
    assert sorted(s.selected_sequences for s in mixture.shares) == [33, 33, 34]
    assert mixture.order.size == 100


def test_max_epochs_and_empty_sources_are_refused_in_one_line():
    available = _available(web=100, math=10)
    config = MixtureConfig(
        sources=[MixtureSource(name="web", weight=1), MixtureSource(name="math", weight=1, max_epochs=4)]
    )
    with pytest.raises(MixtureError, match=r"'math' would be repeated 10.00 times .* max_epochs 4") as err:
        resolve_mixture(available, 200, config)
    assert "\n" not in str(err.value)
    with pytest.raises(MixtureError, match="'code' has weight 0.5 but no packed sequences"):
        resolve_mixture(available, 10, _weights(web=1, code=1))


def test_weights_must_sum_to_a_positive_number_and_name_known_sources(embedded):
    with pytest.raises(pydantic.ValidationError, match="sum to a positive number"):
        _weights(web=0.0, math=0.0)
    raw = embedded.model_dump(mode="json") | {"mixture": {"sources": [{"name": "reddit", "weight": 1.0}]}}
    with pytest.raises(pydantic.ValidationError, match=r"mixture names sources the corpus does not have: \['reddit'\]"):
        Experiment.model_validate(raw)


def test_save_and_load_round_trip(tmp_path):
    mixture = resolve_mixture(_available(web=30, math=5), 64, _weights(web=3, math=1))
    mixture.save(tmp_path)
    loaded = ResolvedMixture.load(tmp_path)
    assert np.array_equal(loaded.order, mixture.order) and loaded.shares == mixture.shares
    assert loaded.indices(10, 3) == mixture.order[10:13].tolist()
    with pytest.raises(IndexError):
        loaded.indices(63, 2)
