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
