from collections import Counter

import pytest

from tpt.training.data import DataOrder
from tpt.training.optim import Schedule


def test_each_epoch_is_a_seeded_permutation():
    order = DataOrder(10, seed=3)
    first_two = order.indices(0, 20)
    assert sorted(first_two[:10]) == list(range(10)) and sorted(first_two[10:]) == list(range(10))
    assert first_two[:10] != first_two[10:], "each epoch draws its own permutation"
    assert DataOrder(10, seed=3).indices(7, 6) == first_two[7:13], "a position alone fixes the data (resume)"
    assert DataOrder(10, seed=4).indices(0, 10) != first_two[:10]
    assert order.epochs(20) == 2 and order.epochs(21) == 3 and order.epochs(1) == 1
    assert Counter(order.indices(0, 25)).most_common(1)[0][1] == 3
    with pytest.raises(ValueError, match="no training sequences"):
        DataOrder(0, seed=0)


def test_schedule_warms_up_then_holds_or_decays():
    constant = Schedule(warmup_steps=4, total_steps=20, kind="constant")
    assert [constant(s) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert constant(19) == 1.0
    cosine = Schedule(warmup_steps=4, total_steps=20, kind="cosine")
    values = [cosine(s) for s in range(4, 20)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert Schedule(0, 5, "constant")(0) == 1.0
