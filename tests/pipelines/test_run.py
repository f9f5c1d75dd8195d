import json

from pipelines.run import main


def test_cli_refuses_a_missing_experiment_in_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tpt: {tmp_path / 'nope.yaml'}: experiment file not found"


def test_cli_refuses_an_invalid_experiment_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not Valid\n")
    assert main(["estimate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tpt: {bad}: ") and "\n" not in err


def test_lineage_refuses_a_benchmark_the_experiment_does_not_run(capsys):
    assert main(["lineage", "embedded", "--variant", "tpt", "--benchmark", "mmlu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tpt: benchmark 'mmlu' is not one of ['gsm8k', 'math', 'humaneval', 'mbpp']"


def test_plan_places_the_config_and_splits_a_tpt_budget(capsys):
    assert main(["plan", "embedded", "--gpu-hours", "10", "--raw-tokens", "1e4", "--augmented-tokens", "4e4"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["vocab_size"] == 49152  # read from the real SmolLM2 tokenizer
    config = found["config"]
    assert config["tokens"] == 122880 and config["tokens_per_parameter"] == config["tokens"] / config["parameters"]
    assert found["budget"]["tokens"] == 20 * found["budget"]["parameters"]
    split = found["tpt_split"]
    assert split["raw_tokens_trained"] == 122880 / 4 and split["epochs"] == 122880 / 4e4
    assert split["vanilla_epochs"] == 122880 / 1e4


def test_plan_refuses_a_bad_budget_in_one_line(capsys):
    assert main(["plan", "embedded", "--vocab-size", "1000", "--gpu-hours", "5", "--mfu", "2"]) == 2
    assert capsys.readouterr().err.strip() == "tpt: MFU must be in (0, 1], got 2.0"
