"""CI fails on a skip of a test the CI machine kind must run, unless TPT_ALLOW_SKIPS says it is expected."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIPPING = """
import pytest

@pytest.mark.must_run("vllm")
def test_needs_vllm():
    pytest.skip("vLLM is not installed")

def test_optional():
    pytest.skip("nothing to see")
"""


@pytest.mark.parametrize(
    ("env", "failed"),
    [
        ({"CI": "true"}, True),
        ({"CI": "true", "TPT_ALLOW_SKIPS": "browser,vllm"}, False),
        ({"CI": "true", "TPT_ALLOW_SKIPS": "browser"}, True),
        ({"CI": ""}, False),
    ],
    ids=["ci", "ci-allowed", "ci-other-allowed", "not-ci"],
)
def test_a_must_run_skip_fails_only_in_ci(tmp_path: Path, env: dict, failed: bool) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k not in ("CI", "TPT_ALLOW_SKIPS")}
        | env
        | {"PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = done.stdout.strip().splitlines()[-1]
    if failed:
        assert done.returncode == 1 and "1 failed, 1 skipped" in summary, done.stdout
        assert "test_needs_vllm must run in CI (vllm) but skipped: Skipped: vLLM is not installed." in done.stdout
        assert "set TPT_ALLOW_SKIPS=vllm" in done.stdout
    else:
        assert done.returncode == 0 and "2 skipped" in summary, done.stdout
        assert "SKIPPED [1] test_skipping.py:6: vLLM is not installed" in done.stdout  # -rs: the reason is shown
