import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.stage import ACCELERATOR_POOL
from pipelines.run import RUN_HOST, RUN_PID, main, release_dead_runs_slots

REPO = Path(__file__).resolve().parents[2]


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
    # The embedded student by hand (embedded.yaml: hidden 128, 2 layers, 4 heads of 32, 2 KV heads, MLP 384, tied
    # embeddings, vocab 49152): the embedding table, per layer q and o (128 x 128), k and v (128 x 64), gate, up
    # and down (128 x 384) and two RMSNorm weights, and the final norm.
    parameters = 49152 * 128 + 2 * (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 384 + 2 * 128) + 128
    assert config["parameters"] == parameters == 6_685_312
    assert config["tokens"] == 122880 and config["tokens_per_parameter"] == pytest.approx(0.0183806, rel=1e-5)
    # 6 N + 12 L H T FLOPs per token (the tied table counted once, as the LM head), T = seq_len 1024
    assert config["training_flops"] == (6 * 6_685_312 + 12 * 2 * 128 * 1024) * 122880 == 5_315_493_888_000
    # 10 H100-hours (989e12 dense bf16 FLOP/s) at the default 40% MFU, spent at 20 tokens per parameter:
    # C = 6 N (20 N), so N = sqrt(C / 120)
    assert found["budget"]["flops"] == pytest.approx(10 * 3600 * 989e12 * 0.4)
    assert found["budget"]["parameters"] == pytest.approx(3.44500e8, rel=1e-5)
    assert found["budget"]["tokens"] == pytest.approx(6.89000e9, rel=1e-5)
    split = found["tpt_split"]
    assert split["raw_tokens_trained"] == 122880 / 4 and split["epochs"] == 122880 / 4e4
    assert split["vanilla_epochs"] == 122880 / 1e4


def test_plan_refuses_a_bad_budget_in_one_line(capsys):
    assert main(["plan", "embedded", "--vocab-size", "1000", "--gpu-hours", "5", "--mfu", "2"]) == 2
    assert capsys.readouterr().err.strip() == "tpt: MFU must be in (0, 1], got 2.0"


def test_a_run_killed_while_holding_the_accelerator_is_failed_and_its_slot_freed(tmp_path):
    """A `tpt run` killed with -9 mid-step leaves its pool slot claimed and its run STARTED; the next `tpt run`
    frees the slot and fails the run, and leaves a run whose process is alive alone."""
    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path), overrides=config) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)
        for run_id, pid in (("killed", dead.pid), ("alive", os.getpid())):
            tags = {RUN_HOST: socket.gethostname(), RUN_PID: str(pid)}
            started = dg.DagsterRunStatus.STARTED
            instance.add_run(dg.DagsterRun(job_name="embedded_training", run_id=run_id, tags=tags, status=started))
        assert storage.claim_concurrency_slot(ACCELERATOR_POOL, "killed", "training").is_claimed
        storage.set_concurrency_slots(ACCELERATOR_POOL, 2)
        assert storage.claim_concurrency_slot(ACCELERATOR_POOL, "alive", "evaluation").is_claimed
        assert release_dead_runs_slots(instance) == ["killed"]
        holders = [c.run_id for c in storage.get_concurrency_info(ACCELERATOR_POOL).claimed_slots]
        assert holders == ["alive"]
        assert instance.get_run_by_id("killed").status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id("alive").status == dg.DagsterRunStatus.STARTED


def _failing_run(tmp_path, monkeypatch, embedded, capfd, *flags: str) -> tuple[int, str, str]:
    """``tpt run`` of an experiment whose corpus folder does not exist: the first run fails, and the command ends."""
    raw = embedded.model_dump(mode="json") | {"name": "talks"}
    raw["corpus"]["sources"] = [{"kind": "local", "name": "docs", "path": str(tmp_path / "missing")}]
    raw["mixture"] = {"sources": None}
    path = tmp_path / "talks.yaml"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TPT_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("TPT_CATALOG", str(tmp_path / "artifacts" / "catalog.duckdb"))
    (tmp_path / "home").mkdir(exist_ok=True)
    code = main(["run", str(path), *flags])
    out, err = capfd.readouterr()
    return code, out, err


def test_tpt_run_reports_progress_and_a_summary_without_dagsters_event_lines(tmp_path, monkeypatch, embedded, capfd):
    code, out, err = _failing_run(tmp_path, monkeypatch, embedded, capfd)
    assert code == 1
    assert out.startswith("[1/") and "] corpus: FAILED in " in out
    assert "tpt run talks: 0 of 1 runs succeeded" in out and f"artifacts: {tmp_path / 'artifacts' / 'talks'}" in out
    assert f"UI: DAGSTER_HOME={tmp_path / 'home'} dagster dev -w workspace.yaml" in out
    assert " - DEBUG - " not in out + err and "STEP_START" not in out + err
    _, verbose_out, verbose_err = _failing_run(tmp_path, monkeypatch, embedded, capfd, "--verbose")
    assert "STEP_START" in verbose_out + verbose_err
