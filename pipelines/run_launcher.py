"""A run launcher for a Dagster deployment on one host (webserver, daemon and code servers on one machine, the
compute on a Ray cluster): Dagster's default launcher, plus the run-worker health check that run monitoring asks
for. With the default launcher only the code server that started a run worker notices its death; when that code
server died too (the OOM killer, a restarted daemon), the run stayed STARTED and its pool slots claimed forever.
With this one the monitoring daemon marks such a run failed, and then frees its slots
(``free_slots_after_run_end_seconds``). Container launchers (``K8sRunLauncher``, ``DockerRunLauncher``)
bring their own check; use them where run workers live elsewhere."""

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus


class HostRunLauncher(DefaultRunLauncher):
    """Runs each run worker as a subprocess of the code server (as the default launcher does) and reports it dead
    once the process whose pid the run worker recorded at its start is gone or is another program."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        started = self._worker_start(run.run_id)
        if started is None:  # not yet recorded: nothing to judge by, so not a failure
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not recorded its pid yet")
        pid, at = started
        if not _same_process(pid, at):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def _worker_start(self, run_id: str) -> tuple[int, float] | None:
        """Pid and time of the run worker's own "Started process for run (pid: N)" event; the last one, should
        the run have been resumed."""
        events = self._instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        starts = [
            (int(event.dagster_event.engine_event_data.metadata["pid"].value), event.timestamp)
            for event in events
            if event.dagster_event and "pid" in (event.dagster_event.engine_event_data.metadata or {})
        ]
        return starts[-1] if starts else None


def _same_process(pid: int, recorded_at: float) -> bool:
    """The process exists and started before it recorded its pid (so the pid was not reused since)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: not our worker
        return False
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():  # not Linux: existence is all there is to go by
        return True
    ticks = int(stat.read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks since boot
    boot = next(
        float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= recorded_at + 1.0
