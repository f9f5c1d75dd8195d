"""A real ``dagster dev`` for tests: a subprocess on 127.0.0.1 with its own DAGSTER_HOME, and a small client for the
GraphQL API that the UI itself speaks, so the tests drive the graph the way a user's clicks do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "tpt"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository Dagster makes of a Definitions object
ASSET_JOB = "__ASSET_JOB"  # the implicit job the UI launches a selection of assets with

# Sensor-requested runs stay in the queue (a limit of 0 on the tag every sensor run carries): a test checks what a
# tick asks for, not the thinking generation it would start.
HOLD_SENSOR_RUNS = {"key": "dagster/sensor_name", "limit": 0}


def instance_settings(project: dict[str, Any]) -> dict[str, Any]:
    """The project's instance settings (``dagster_home/dagster.yaml``) with sensor runs held, runs dequeued within a
    second, and no first-visit dialog in the browser."""
    concurrency = project.get("concurrency", {})
    runs = concurrency.get("runs", {})
    return project | {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        "concurrency": concurrency
        | {"runs": runs | {"tag_concurrency_limits": [*runs.get("tag_concurrency_limits", []), HOLD_SENSOR_RUNS]}},
    }


METADATA = """
fragment metadata on MetadataEntry {
  label
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on BoolMetadataEntry { boolValue }
  ... on TextMetadataEntry { text }
  ... on PathMetadataEntry { path }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }
}
"""
MATERIALIZATION = "runId partition assetKey { path } metadataEntries { ...metadata }"
WORKSPACE = """{ workspaceOrError { __typename ... on PythonError { message }
  ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message errorChain { error { message } } } } } } } }"""
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""
RUN = (
    "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status jobName "
    f"assetMaterializations {{ {MATERIALIZATION} }} }} }} }}" + METADATA
)
RUN_FAILURES = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events { __typename
  ... on ExecutionStepFailureEvent { stepKey error { message } } ... on RunFailureEvent { message } } } } } }"""
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status partitionNames runs { runId status } error { message } } } }"""
ASSET_MATERIALIZATIONS = (
    "query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename "
    f"... on Asset {{ assetMaterializations {{ {MATERIALIZATION} }} }} }} }}" + METADATA
)
PARTITION_KEYS = """query($key: AssetKeyInput!) { assetNodes(assetKeys: [$key]) { partitionKeys } }"""
GROUP_ASSETS = """query($group: AssetGroupSelector!) { assetNodes(group: $group) { assetKey { path } } }"""
SENSOR_DRY_RUN = """mutation($sensor: SensorSelector!) { sensorDryRun(selectorData: $sensor, cursor: null) {
  __typename ... on DryRunInstigationTick { evaluationResult { skipReason error { message }
    runRequests { runKey tags { key value } } } } ... on Error { message } } }"""
START_SENSOR = """mutation($sensor: SensorSelector!) { startSensor(sensorSelector: $sensor) {
  __typename ... on Sensor { sensorState { status } } ... on Error { message } } }"""
SENSOR_TICKS = """query($sensor: SensorSelector!) { sensorOrError(sensorSelector: $sensor) { __typename
  ... on Sensor { sensorState { ticks(limit: 5) { status skipReason error { message }
    runs { runId status jobName tags { key value } } } } } } }"""
SCHEDULE_DRY_RUN = """mutation($schedule: ScheduleSelector!, $at: Float) {
  scheduleDryRun(selectorData: $schedule, timestamp: $at) { __typename
    ... on DryRunInstigationTick { evaluationResult { skipReason error { message }
      runRequests { runKey tags { key value } } } } ... on Error { message } } }"""
SCHEDULE = """query($schedule: ScheduleSelector!) { scheduleOrError(scheduleSelector: $schedule) {
  __typename ... on Schedule { pipelineName cronSchedule } } }"""

FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

T = TypeVar("T")


class DagsterDevError(RuntimeError):
    pass


def selector(**names: str) -> dict[str, str]:
    """A sensor, schedule, job or group of the ``tpt`` location, as GraphQL selectors name them."""
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, **names}


def metadata_values(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Label -> value of a materialization's metadata entries (JSON entries parsed)."""
    values = {}
    for entry in entries:
        fields = {k: v for k, v in entry.items() if k != "label"}
        value = next(iter(fields.values()), None)
        values[entry["label"]] = json.loads(value) if "jsonString" in fields else value
    return values


def tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in item["tags"]}


@dataclass
class DagsterDev:
    url: str
    process: subprocess.Popen
    log: Path

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": document, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # a query the schema refuses: say why, not just "400"
            refusal = error.read()[:3000].decode(errors="replace")
            raise DagsterDevError(f"GraphQL answered {error.code}: {refusal}") from None
        if answer.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {json.dumps(answer['errors'])[:3000]}")
        return answer["data"]

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_until(self, found: Callable[[], T | None], what: str, timeout_s: float) -> T:
        """Poll until ``found`` returns something; a dead server or the deadline fails with its log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DagsterDevError(
                    f"dagster dev exited ({self.process.returncode}) waiting for {what}:\n" + self.log_tail()
                )
            result = found()
            if result is not None:
                return result
            time.sleep(1)
        raise DagsterDevError(f"no {what} after {timeout_s:.0f}s; dagster dev's log ends:\n{self.log_tail()}")

    def loaded(self) -> bool | None:
        """True once the code location has loaded, None while it starts; a location that failed to load raises."""
        try:
            workspace = self.query(WORKSPACE)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
        entry = entries.get(LOCATION)
        if entry is None or entry["loadStatus"] != "LOADED":
            return None
        location = entry["locationOrLoadError"]
        if location["__typename"] != "RepositoryLocation":
            causes = [location["message"], *(link["error"]["message"] for link in location["errorChain"])]
            raise DagsterDevError(f"code location {LOCATION} failed to load: " + " <- ".join(causes))
        return True

    def stop(self) -> None:
        """Kill the whole process group: the webserver, the daemon, the code server and any run workers."""
        with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def launch_run(self, job: str, assets: Sequence[Sequence[str]] = (), partition: str | None = None) -> str:
        """A run of ``job``, or of some of its assets and one partition, as the Materialize button asks for it."""
        params: dict[str, Any] = {"selector": selector(jobName=job)}
        if assets:
            params["selector"]["assetSelection"] = [{"path": list(a)} for a in assets]
        if partition is not None:
            params["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": partition}]}
        launched = self.query(LAUNCH_RUN, params=params)["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise DagsterDevError(f"launchRun {job}: {launched}")
        return launched["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.query(RUN, id=run_id)["runOrError"]

    def wait_for_run(self, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        """The finished run; a failed one raises with its step errors, so a broken stage reads as itself."""

        def finished() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in FINISHED_RUN else None

        run = self.wait_until(finished, f"end of run {run_id}", timeout_s)
        if run["status"] != "SUCCESS":
            events = self.query(RUN_FAILURES, id=run_id)["runOrError"]["eventConnection"]["events"]
            failures = [e for e in events if e["__typename"] in {"ExecutionStepFailureEvent", "RunFailureEvent"}]
            raise DagsterDevError(f"run {run_id} of {run['jobName']} ended {run['status']}: {failures}")
        return run

    def launch_backfill(self, asset: Sequence[str], partitions: Sequence[str]) -> str:
        params = {"assetSelection": [{"path": list(asset)}], "partitionNames": list(partitions)}
        launched = self.query(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise DagsterDevError(f"launchPartitionBackfill {asset}: {launched}")
        return launched["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout_s: float = 420) -> dict[str, Any]:
        """The daemon that ``dagster dev`` runs takes the backfill in steps 30 s apart: submit, then mark done."""

        def finished() -> dict[str, Any] | None:
            backfill = self.query(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
            return backfill if backfill["status"] in FINISHED_BACKFILL else None

        return self.wait_until(finished, f"end of backfill {backfill_id}", timeout_s)

    def materializations(self, asset: Sequence[str]) -> list[dict[str, Any]]:
        found = self.query(ASSET_MATERIALIZATIONS, key={"path": list(asset)})["assetOrError"]
        return found["assetMaterializations"] if found["__typename"] == "Asset" else []

    def partition_keys(self, asset: Sequence[str]) -> list[str]:
        [node] = self.query(PARTITION_KEYS, key={"path": list(asset)})["assetNodes"]
        return node["partitionKeys"]

    def group_assets(self, group: str) -> list[list[str]]:
        nodes = self.query(GROUP_ASSETS, group=selector(groupName=group))["assetNodes"]
        return [n["assetKey"]["path"] for n in nodes]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_dagster_dev(home: Path, env: Mapping[str, str], timeout_s: float = 240) -> DagsterDev:
    """``dagster dev -w workspace.yaml`` from the repository root, loopback only, on a free port; returns once the
    code location has loaded. The worktree's packages come first on the path of every process it starts."""
    home.mkdir(parents=True, exist_ok=True)
    project = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text()) or {}
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_settings(project)))
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": path, **env}
    full_env.pop("TPT_RAY_ADDRESS", None)  # a local Ray, whatever the caller's shell points at
    attempt = 0
    while True:
        port = _free_port()
        log = home / f"dagster_dev.{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
                cwd=REPO_ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches every child
            )
        server = DagsterDev(f"http://127.0.0.1:{port}", process, log)
        try:
            server.wait_until(server.loaded, "loaded code location", timeout_s)
            return server
        except DagsterDevError:
            server.stop()
            attempt += 1  # another process may take the free port before the webserver binds it: try another
            if attempt == 3 or "address already in use" not in server.log_tail().lower():
                raise
