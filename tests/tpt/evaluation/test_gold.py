"""The continuous metric's gold continuations and bits per byte, checked against values worked out by hand, and
items without a gold solution or too long for the model left out of a real lm-eval run and counted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tpt.evaluation.gold import bits_per_byte, gsm8k_gold, has_gold, mbpp_gold
from tpt.evaluation.runner import run_benchmarks
from tpt.evaluation.tasks import gold_task_config


def test_gsm8k_gold_is_the_worked_answer_in_the_exemplars_style() -> None:
    doc = {"question": "?", "answer": "She sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"}
    assert gsm8k_gold(doc) == "She sold 48/2 = 24 clips. In all 48+24 = 72. The answer is 72."
    assert gsm8k_gold({"question": "?", "target": "It is 6. The answer is 6."}) == "It is 6. The answer is 6."
    assert not has_gold("gsm8k", {"question": "?", "answer": "reasoning only ####  "})


def test_mbpp_exemplars_end_with_done_and_test_items_do_not() -> None:
    doc = {"code": "def f():\n    return 1"}
    assert mbpp_gold(doc) == doc["code"] and mbpp_gold(doc | {"is_fewshot": True}) == doc["code"] + "\n[DONE]"


def test_bits_per_byte_counts_utf8_bytes_of_the_continuation() -> None:
    assert bits_per_byte(-math.log(2) * 8, " ab") == pytest.approx(8 / 3)
    assert bits_per_byte(-math.log(2), "é") == pytest.approx(0.5)  # two bytes


def test_gold_task_keeps_the_generative_prompt_and_scores_one_loglikelihood(tmp_path: Path) -> None:
    config = gold_task_config("mbpp", tmp_path / "mbpp.jsonl", cache_dir=tmp_path)
    assert config["output_type"] == "loglikelihood" and config["num_fewshot"] == 3
    assert config["doc_to_text"].startswith("You are an expert Python programmer")
    assert config["target_delimiter"] == "" and [m["metric"] for m in config["metric_list"]] == ["bpb", "logprob"]


@pytest.mark.slow
def test_items_without_gold_or_too_long_for_the_model_are_left_out_and_counted(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "sets"
    folder.mkdir()
    docs = [
        {"task_id": f"T/{i}", "prompt": f"def f{i}():\n", "canonical_solution": gold, "test": "", "entry_point": "f"}
        for i, gold in enumerate(["    return 1\n", "", "    x = 1\n" * 3000, "    return 3\n"])
    ]
    (folder / "humaneval.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    run = run_benchmarks(
        tiny_checkpoint,
        ["humaneval"],
        work_dir=tmp_path / "work",
        limit=1,
        max_gen_toks=4,
        batch_size=1,
        data_folder=folder,
        gold=True,
        log=lambda line: None,
    )
    gold = run.benchmarks["humaneval"].gold
    assert (gold.n_items, gold.skipped_no_gold, gold.skipped_too_long) == (2, 1, 1)  # the model holds 2048 tokens
    assert [i.n_bytes for i in gold.items] == [len("    return 1\n"), len("    return 3\n")]
    for item in gold.items:
        assert item.bpb == pytest.approx(bits_per_byte(item.logprob, "    return 1\n"))
    assert gold.bpb.value == pytest.approx(sum(i.bpb for i in gold.items) / 2)
