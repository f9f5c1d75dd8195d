"""A real Ray cluster of several nodes on this machine, started with ``ray start`` as a user starts one, and stopped
whatever happens. Token authentication is on (Ray 2.60's default once a token exists), with a token of the
cluster's own, never the user's ``~/.ray/auth_token``. Each node runs ``ray start --block`` in its own process
group, so stopping one kills exactly its processes: never ``ray stop``, which kills every Ray on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RayNodes:
    port: int  # the head's GCS port: drivers join at 127.0.0.1:<port>
    client_port: int  # Ray Client server: ray://127.0.0.1:<client_port>
    dashboard_port: int  # the head's dashboard, which serves Ray's state API
    root: Path  # temp dir of every node (short: Ray's socket paths must stay under 108 bytes)
    env: dict[str, str]  # what a driver needs besides the address: the auth mode and token
    nodes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_node(
        self, num_cpus: int, resources: Mapping[str, float], *, head: bool = False, env: Mapping[str, str] = ()
    ) -> subprocess.Popen:
        """``ray start`` of one node (the head when ``head``), loopback only, ports chosen free."""
        where = (
            ["--head", "--port", str(self.port), "--ray-client-server-port", str(self.client_port)]
            + ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)]
            if head
            else ["--address", self.address]
        )
        command = [RAY, "start", "--block", *where, "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus)]
        command += ["--resources", json.dumps(dict(resources)), "--temp-dir", str(self.root)]
        command += ["--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
        log = (self.root / f"node{len(self.nodes)}.log").open("wb")
        # A node's workers get no source tree of this process on their path (a real node has none): they import
        # ``tpt`` from the runtime env the driver ships, and the rest from the installed environment.
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        node = subprocess.Popen(
            command,
            env={**base, **self.env, **dict(env)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_node reaches its raylet and workers
        )
        self.nodes.append(node)
        return node

    def state(self, kind: str) -> list[dict]:
        """Rows of Ray's state API (``nodes``, ``tasks``, ``actors``) from the head's dashboard, with the cluster's
        token: what ``ray.util.state.list_<kind>`` returns, without joining the cluster from this process."""
        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        request = urllib.request.Request(
            f"{self.dashboard}/api/v0/{kind}?limit=10000&detail=1", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["result"]["result"]

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> list[dict]:
        """The alive nodes once ``count`` have registered."""
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if node.poll() is not None:
                    raise RuntimeError(f"ray start exited ({node.returncode}): {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError, KeyError):  # the dashboard answers after the GCS
                alive = [n for n in self.state("nodes") if n["state"] == "ALIVE"]
                if len(alive) >= count:
                    return alive
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes did not register within {timeout_s:.0f}s: {self.log_tail()}")
            time.sleep(2)

    def wait_until_dead(self, node_id: str, timeout_s: float = 120) -> None:
        """Until the head has marked a stopped node dead, so no later check waits on it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(n["node_id"] != node_id or n["state"] == "DEAD" for n in self.state("nodes")):
                return
            time.sleep(2)
        raise RuntimeError(f"node {node_id} not marked dead within {timeout_s:.0f}s")

    def log_tail(self, chars: int = 3000) -> str:
        return " | ".join(p.read_text(errors="replace")[-chars:] for p in sorted(self.root.glob("node*.log")))

    def stop_node(self, node: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # ray start's own shutdown can hang on a dead head
            os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)

    def stop(self) -> None:
        """Every node (workers first), then any process still naming this cluster's temp dir."""
        for node in reversed(self.nodes):
            self.stop_node(node)
        for pid in self.leftover():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def leftover(self) -> list[int]:
        """Processes of this cluster still running (raylets, GCS, workers): their command lines name its dir."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in cmdline and int(proc.name) != os.getpid():
                found.append(int(proc.name))
        return found


def start_cluster(node_cpus: Mapping[str, int]) -> RayNodes:
    """A head and one node more per entry after the first, each with its CPUs and a custom resource named as the
    key (``head_node``, ``worker_node``), so placement can be told apart; returns once all have registered."""
    root = Path(tempfile.mkdtemp(prefix="tptray", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    cluster = RayNodes(free_port(), free_port(), free_port(), root, env)
    try:
        for i, (name, cpus) in enumerate(node_cpus.items()):
            cluster.start_node(cpus, {name: 1}, head=i == 0)
            if i == 0:
                cluster.wait_for_nodes(1)
        cluster.wait_for_nodes(len(node_cpus))
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: RayNodes) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
