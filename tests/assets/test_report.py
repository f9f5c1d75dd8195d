"""The report's comparison: each variant's value with its standard error and seed spread, each TPT variant's paired
difference from vanilla with its interval, per benchmark and metric, and the same table as the terminal prints it."""

import pytest

from assets.report import GOLD_METRIC, comparison_table, text_table
from tpt.config import Experiment


def test_each_tpt_variant_is_compared_with_vanilla_over_the_same_items_and_seeds(embedded):
    raw = embedded.model_dump(mode="json") | {"seeds": [0, 1], "variants": ["vanilla", "tpt", "tpt_b"]}
    experiment = Experiment.model_validate(raw | {"variant_generation": {"tpt_b": {"sampling": {"top_p": 0.5}}}})
    items = range(100)
    vanilla = [{i: 2.0 + (i % 5) / 10 for i in items}, {i: 2.1 + (i % 5) / 10 for i in items}]
    per_item = {
        ("base", "gsm8k", GOLD_METRIC, "vanilla"): vanilla,
        ("base", "gsm8k", GOLD_METRIC, "tpt"): [{i: v - 0.3 for i, v in run.items()} for run in vanilla],
        ("base", "gsm8k", GOLD_METRIC, "tpt_b"): [dict(run) for run in vanilla],
    }
    [row] = comparison_table(experiment, per_item)
    assert (row["benchmark"], row["metric"], row["items"], row["seeds"]) == ("gsm8k", GOLD_METRIC, 100, 2)
    assert row["vanilla"] == pytest.approx(2.25) and row["tpt"] == pytest.approx(1.95)
    assert row["vanilla seed sd"] == pytest.approx(0.1 / 2**0.5)
    assert row["tpt - vanilla"] == pytest.approx(-0.3) and row["tpt excludes 0"] is True
    assert row["tpt 95% CI"] == "[-0.3000, -0.3000]"
    assert row["tpt_b - vanilla"] == 0.0 and row["tpt_b excludes 0"] is False
    assert row["paper 8B 100B tok tpt"] == ""  # the paper reports accuracy, not bits per byte
    printed = text_table([row]).splitlines()
    assert printed[0].split()[:4] == ["scale", "benchmark", "metric", "items"] and "paper" not in printed[0]
    assert "gold_bpb" in printed[1] and "yes" in printed[1] and "-0.3000" in printed[1]


def test_sft_rows_compare_the_same_way_without_the_papers_pretraining_figures(embedded):
    per_item = {
        ("base", "gsm8k", "exact_match", "vanilla"): [{0: 0.0, 1: 1.0, 2: 0.0, 3: 0.0}],
        ("base", "gsm8k", "exact_match", "tpt"): [{0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}],
    }
    [pretrained], [sft] = comparison_table(embedded, per_item), comparison_table(embedded, per_item, paper=False)
    assert pretrained["paper 8B 100B tok tpt"] == 0.501 and sft["paper 8B 100B tok tpt"] == ""
    assert sft["tpt - vanilla"] == pytest.approx(0.5) == pretrained["tpt - vanilla"]
    assert sft["vanilla ±"] == pretrained["vanilla ±"] > 0
