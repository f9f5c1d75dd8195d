"""Dagster as a deployment, rehearsed on one machine: a real Postgres started by the test, and ``dagster-daemon``
and ``dagster-webserver`` (127.0.0.1) on the shipped ``deploy/dagster.yaml`` as it is (Postgres storage, the run
queue, run monitoring, pools), driven through the GraphQL API the UI speaks. A backfill of the token shards
completes; a run whose worker is killed with -9 mid-step is failed and its pool slot freed by the daemon alone."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from assets.stage import ACCELERATOR_POOL, asset_key
from tests.pipelines.conftest import GraphNames, graph_names
from tests.pipelines.dagster_dev import ASSET_JOB, REPO_ROOT, DagsterDev, DagsterDevError, _free_port
from tests.pipelines.postgres import Postgres, PostgresUnavailable, start_postgres
from tpt.config import Experiment

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
POOL = """query($key: String!) { instance { concurrencyLimit(concurrencyKey: $key) {
  slotCount claimedSlots { runId stepKey } pendingSteps { runId } } } }"""
RUN_EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status eventConnection { events {
  __typename ... on MessageEvent { message }
  ... on EngineEvent { metadataEntries { label ... on TextMetadataEntry { text } } } } } } } }"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    try:
        pg = start_postgres()
    except PostgresUnavailable as why:
        pytest.skip(f"no Postgres for the deployment test: {why}")
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def deploy_experiment(embedded: Experiment, tmp_path_factory) -> tuple[Experiment, Path]:
    """Two shards of four documents; training long enough (2000 steps) that a kill lands mid-step."""
    raw = embedded.model_dump(mode="json")
    raw["name"] = "deploy"
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    raw["training"]["token_budget"] = raw["training"]["batch_tokens"] * 2000
    path = tmp_path_factory.mktemp("deploy_experiment") / "deploy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Experiment.model_validate(raw), path


@pytest.fixture(scope="module")
def names(deploy_experiment) -> GraphNames:
    return graph_names(deploy_experiment[0])


def _env(postgres: Postgres, root: Path, experiment_file: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **postgres.env, "DAGSTER_HOME": str(root / "home"), "PYTHONPATH": path}
    env |= {"TPT_EXPERIMENTS": str(experiment_file), "TPT_ARTIFACT_ROOT": str(root / "artifacts")}
    env["TPT_CATALOG"] = str(root / "catalog.duckdb")
    env.pop("TPT_RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def deployment(postgres, deploy_experiment, tmp_path_factory) -> Iterator[tuple[DagsterDev, subprocess.Popen, Path]]:
    """The recipe of the README's "Moving to a cluster": DAGSTER_HOME holding deploy/dagster.yaml, the preflight,
    then the daemon and the webserver, each in its own process group."""
    root = tmp_path_factory.mktemp("deployment")
    (root / "home").mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", root / "home" / "dagster.yaml")
    env = _env(postgres, root, deploy_experiment[1])
    checked = subprocess.run(
        [sys.executable, "deploy/preflight.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    port = _free_port()
    started = []
    for name, command in {
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
    }.items():
        with (root / f"{name}.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )  # fmt: skip
            )
    daemon, webserver = started
    server = DagsterDev(f"http://127.0.0.1:{port}", webserver, root / "webserver.log")
    try:
        server.wait_until(server.loaded, "loaded code location", 240)
        yield server, daemon, root
    finally:
        for process in started:  # the whole group: the process, its code server and any run worker
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def _daemon_log(root: Path) -> str:
    return (root / "daemon.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def corpus_run(deployment, names) -> dict:
    server, daemon, root = deployment
    run_id = server.launch_run(names.corpus_job)
    assert server.run(run_id)["status"] in {"QUEUED", "STARTING", "STARTED", "SUCCESS"}
    try:
        return server.wait_for_run(run_id, timeout_s=300)
    except DagsterDevError as error:
        raise AssertionError(f"{error}\n{_daemon_log(root)}") from None


def test_token_shard_backfill_completes_on_postgres(deployment, corpus_run, names, postgres):
    server, daemon, root = deployment
    shards = server.partition_keys(names.vanilla_tokens)
    assert len(shards) == 2
    backfill = server.wait_for_backfill(server.launch_backfill(names.vanilla_tokens, shards), timeout_s=420)
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, _daemon_log(root))
    assert sorted(e["partition"] for e in server.materializations(names.vanilla_tokens)) == shards
    with postgres.connect() as connection, connection.cursor() as cursor:  # the runs live in Postgres
        cursor.execute("SELECT run_id, status FROM runs")
        stored = dict(cursor.fetchall())
        cursor.execute("SELECT status FROM bulk_actions")
        actions = [row[0] for row in cursor.fetchall()]
    assert corpus_run["runId"] in stored and {r["runId"] for r in backfill["runs"]} <= set(stored)
    assert set(stored.values()) == {"SUCCESS"} and actions == ["COMPLETED_SUCCESS"]
    assert not list((root / "home").rglob("*.db")), "a SQLite file beside the Postgres-backed instance"
    assert daemon.poll() is None


def _pool(server: DagsterDev) -> dict:
    return server.query(POOL, key=ACCELERATOR_POOL)["instance"]["concurrencyLimit"]


def _worker_pid(server: DagsterDev, run_id: str) -> int | None:
    events = server.query(RUN_EVENTS, id=run_id)["runOrError"]["eventConnection"]["events"]
    pids = [m["text"] for e in events for m in e.get("metadataEntries") or [] if m["label"] == "pid"]
    return int(pids[-1]) if pids else None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize(
    ("also_its_code_server", "said"),
    [
        (False, "terminated by signal 9"),  # the code server that started the worker notices and fails the run
        (True, "is gone'. Marking run"),  # nothing watched it any more: run monitoring's health check fails it
    ],
)
def test_killed_run_fails_and_frees_its_pool_slot_without_a_manual_step(
    deployment, corpus_run, names, deploy_experiment, also_its_code_server, said
):
    server, daemon, root = deployment
    experiment = deploy_experiment[0]
    [scale] = experiment.scale_names
    checkpoint = asset_key(experiment, "checkpoint", "vanilla").path
    run_id = server.launch_run(ASSET_JOB, [names.vanilla_mixture, checkpoint], scale)

    def training() -> list | None:  # the checkpoint step holds the pool's one slot
        claimed = [s for s in _pool(server)["claimedSlots"] if s["runId"] == run_id]
        return claimed or None

    [slot] = server.wait_until(training, "the checkpoint step's pool slot", 300)
    assert "checkpoint" in slot["stepKey"] and _pool(server)["slotCount"] == 1
    pid = _worker_pid(server, run_id)
    assert pid is not None
    time.sleep(3)  # inside the training loop
    if also_its_code_server:  # the daemon's code server, which started the worker; the daemon starts another
        parent = _parent(pid)
        assert b"grpc" in Path(f"/proc/{parent}/cmdline").read_bytes()
        os.kill(parent, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def failed() -> dict | None:
        run = server.query(RUN_EVENTS, id=run_id)["runOrError"]
        return run if run["status"] == "FAILURE" else None

    run = server.wait_until(failed, "the killed run marked failed", 180)
    messages = [e.get("message") or "" for e in run["eventConnection"]["events"]]
    assert any(said in m for m in messages), (messages[-5:], _daemon_log(root))
    server.wait_until(lambda: _pool(server)["claimedSlots"] == [] or None, "the slot freed", 120)
    print(f"kill -9 -> run failed and slot freed in {time.monotonic() - killed:.0f}s")
    assert _pool(server)["pendingSteps"] == [] and daemon.poll() is None


def test_refused_connection_is_one_line_before_anything_starts(tmp_path):
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DAGSTER_PG_HOST": "127.0.0.1"}
    env |= {"DAGSTER_PG_PORT": str(_free_port()), "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "x"}
    env |= {"DAGSTER_PG_DB": "dagster"}
    env.pop("TPT_RAY_ADDRESS", None)
    checked = subprocess.run(
        [sys.executable, "deploy/preflight.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 1
    [line] = checked.stderr.strip().splitlines()
    assert line.startswith(
        f"preflight: Postgres at 127.0.0.1:{env['DAGSTER_PG_PORT']}/dagster did not accept the connection"
    )
    assert line.endswith("failed: Connection refused")
