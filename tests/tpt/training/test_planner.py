"""The token-budget planner on known points: Chinchilla's own, the paper's 40B-on-10B case, and bad budgets."""

import pytest

from tpt.config import ModelShape, ModelSource, TrainingConfig
from tpt.training.model import param_count
from tpt.training.planner import PlanError, assess, compute_optimal, gpu_hours_to_flops, thinking_split


def test_chinchilla_point_is_recovered():
    # Chinchilla: 70B parameters on 1.4T tokens, C = 6 N D = 5.88e23 FLOPs.
    plan = compute_optimal(6 * 70e9 * 1.4e12)
    assert plan.parameters == pytest.approx(70e9, rel=1e-9) and plan.tokens == pytest.approx(1.4e12, rel=1e-9)


def test_assessment_places_a_config_against_the_optimum():
    shape = ModelShape(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=1024)
    n = param_count(shape, 1000)
    long = assess(TrainingConfig(model=shape, seq_len=128, batch_tokens=1024, token_budget=200_000_000), 1000)
    assert long.parameters == n and long.tokens_per_parameter == pytest.approx(200_000_000 / n)
    # Trained on more than 20 tokens per parameter: the same compute would buy a larger model.
    assert long.tokens_per_parameter > 20 and long.parameters_vs_optimal < 1
    assert long.optimal.flops == long.training_flops
    short = assess(TrainingConfig(model=shape, seq_len=128, batch_tokens=1024, token_budget=10_000_000), 1000)
    assert short.tokens_per_parameter < 20 and short.parameters_vs_optimal > 1


def test_paper_case_forty_billion_on_ten_billion_raw_tokens():
    # Thinking that doubles the documents (20B augmented tokens): half the budget is raw text, two epochs.
    split = thinking_split(40e9, raw_tokens=10e9, augmented_tokens=20e9)
    assert split.raw_tokens_trained == pytest.approx(20e9) and split.thinking_tokens_trained == pytest.approx(20e9)
    assert split.epochs == pytest.approx(2.0)  # vanilla would pass 4 times over the same 10B raw tokens


def test_gpu_hours_convert_through_peak_and_mfu():
    assert gpu_hours_to_flops(1, "h100", 0.4) == pytest.approx(3600 * 989e12 * 0.4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compute_optimal(0), "compute budget must be positive"),
        (lambda: gpu_hours_to_flops(1, "tpu", 0.5), "unknown GPU 'tpu'"),
        (lambda: gpu_hours_to_flops(1, "h100", 1.5), "MFU must be in"),
        (lambda: thinking_split(1e9, raw_tokens=5, augmented_tokens=4), "raw tokens"),
    ],
)
def test_bad_budgets_fail_in_one_line(call, message):
    with pytest.raises(PlanError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_a_student_from_a_checkpoint_is_refused_in_one_line():
    init = TrainingConfig(init=ModelSource(kind="local", name="/m"), seq_len=8, batch_tokens=8, token_budget=8)
    with pytest.raises(PlanError, match="continues training.init's checkpoint"):
        assess(init, 1000)
