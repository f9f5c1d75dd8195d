import importlib.metadata
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field, PrivateAttr

import tpt
from tpt.errors import InputError

if TYPE_CHECKING:
    from resources.generator import ThinkingGenerator
    from resources.trainer import Trainer

PACKAGE_DIR = Path(tpt.__file__).parent
# What a worker process imports to run the stages (tokenization, generation, Ray Train); module = distribution name.
# A node must import each at the driver's version, or its results would not be the driver's.
WORKER_LIBRARIES = ("torch", "transformers", "tokenizers", "pyarrow", "numpy", "ray")
PROBE_TIMEOUT_S = 120.0
# Joining a reachable cluster can fail transiently: a Ray Client server whose session for this driver fails to start
# ("Initialization failure from server", seen on a loaded head right after the previous driver left). An address
# that does not answer fails before, in one line (``_check_reachable``), and is not retried.
JOIN_TRIES, JOIN_BACKOFF_S = 3, 5.0


class RayClusterError(InputError, RuntimeError):
    pass


@dataclass(frozen=True)
class RayAsk:
    """What one stage asks of the cluster: ``workers`` bundles of ``per_worker`` Ray resources each."""

    what: str
    workers: int
    per_worker: Mapping[str, float] = field(default_factory=dict)
    fix: str = ""

    @classmethod
    def for_generator(cls, generator: "ThinkingGenerator") -> "RayAsk":
        placement = generator.placement()
        per_worker = {"CPU": placement.cpus_per_worker, "GPU": placement.gpus_per_worker}
        return cls("the generator", placement.workers, per_worker, "workers / cpus_per_worker / gpus_per_worker")

    @classmethod
    def for_trainer(cls, trainer: "Trainer") -> "RayAsk":
        per_worker = {
            "CPU": float(trainer.threads_per_worker),
            "GPU": 1.0 if trainer.resolved_device().startswith("cuda") else 0.0,
        }
        return cls("the trainer", trainer.workers, per_worker, "workers / threads_per_worker / device")

    def shortfall(self, nodes: list[Mapping[str, float]]) -> str | None:
        """Why the cluster's alive nodes (their total resources) can never hold this ask; None when they can.
        Sound, not complete: a bundle that fits no node, or bundles that exceed the cluster's sum."""
        asked = {k: v for k, v in self.per_worker.items() if v}
        for resource, amount in asked.items():
            largest = max((node.get(resource, 0.0) for node in nodes), default=0.0)
            if amount > largest:
                return f"{amount:g} {resource} per worker, the largest node has {largest:g}"
            total = sum(node.get(resource, 0.0) for node in nodes)
            if amount * self.workers > total:
                return f"{self.workers} workers x {amount:g} {resource}, the cluster has {total:g} in all"
        if asked and not any(all(node.get(r, 0.0) >= a for r, a in asked.items()) for node in nodes):
            return f"{asked} per worker, no node has them all"
        return None


class RayCluster(dg.ConfigurableResource):
    """Ray for the stages that fan out. No address: a local Ray started on first use and stopped after the run.
    An address joins an existing cluster (``ray start``, KubeRay, ``ray up``): ``head:6379`` runs this process as
    a driver on the cluster (what every stage supports), ``ray://head:10001`` goes through Ray Client. The ``tpt``
    package then travels to the workers as a runtime-env module, and every node is checked, before any work, to
    import the libraries the stages run with at this process's versions."""

    address: str | None = Field(
        default_factory=lambda: os.environ.get("TPT_RAY_ADDRESS") or None,
        description="existing cluster to join; empty starts a local Ray (defaults to $TPT_RAY_ADDRESS)",
    )
    num_cpus: int | None = Field(None, description="CPUs a local Ray may use (default: all)")
    connect_timeout_s: float = Field(10.0, gt=0)

    _started_here: bool = PrivateAttr(default=False)
    _nodes_checked: bool = PrivateAttr(default=False)

    def ensure(self, *asks: RayAsk) -> None:
        """Connect (or start) once per process, then check that the cluster can hold ``asks`` and that its nodes
        can run the stages; a dead address, a cluster too small or a node without the project's libraries is a
        one-line error before any work."""
        import ray

        if not ray.is_initialized():
            self._connect()
        try:
            self._check_asks(asks)
            if self.address and not self._nodes_checked:
                self._check_node_imports()
                self._nodes_checked = True
        except RayClusterError:
            self.teardown_after_execution(None)
            raise

    def _connect(self) -> None:
        import ray

        if self.address and self.address != "auto":
            self._check_reachable(self.address)
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address:
            kwargs["address"] = self.address
            kwargs["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
        else:
            kwargs["num_cpus"] = self.num_cpus
        for attempt in range(1, JOIN_TRIES + 1):
            try:
                ray.init(**kwargs)
                break
            except Exception as exc:
                if not self.address or attempt == JOIN_TRIES:
                    raise RayClusterError(
                        f"could not start or join Ray ({self.address or 'local'}): {_first_line(exc)}"
                    ) from None
                ray.shutdown()
                time.sleep(JOIN_BACKOFF_S * attempt)
        self._started_here = True

    def _where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "the local Ray"

    def _check_asks(self, asks: tuple[RayAsk, ...]) -> None:
        import ray

        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        for ask in asks:
            short = ask.shortfall(nodes)
            if short:
                raise RayClusterError(
                    f"{ask.what} asks for {short} ({self._where()}, {len(nodes)} nodes); "
                    f"set its {ask.fix or 'resources'} to fit the cluster"
                )

    def node_libraries(self) -> dict[str, dict]:
        """Node id -> what a zero-CPU task pinned to that node imports: each library's version (or its import
        error) and the path ``tpt`` is imported from, the runtime env's copy on a joined cluster."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0, max_retries=0)(_import_probe())
        nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(WORKER_LIBRARIES)
            for node in nodes
        ]
        try:
            return dict(zip(nodes, ray.get(refs, timeout=PROBE_TIMEOUT_S), strict=True))
        except Exception as exc:
            raise RayClusterError(
                f"{self._where()}: a node could not run the import check: {_first_line(exc)}"
            ) from None

    def _check_node_imports(self) -> None:
        """A node that cannot import the stages' libraries and ``tpt``, or holds other versions than this process,
        is named in one line."""
        import ray

        expected = {name: importlib.metadata.version(name) for name in WORKER_LIBRARIES}
        addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        for node, found in self.node_libraries().items():
            name = f"node {addresses.get(node, '?')} ({node[:12]})"
            for module, want in [*expected.items(), ("tpt", None)]:
                have = found.get(module)
                if isinstance(have, dict):
                    raise RayClusterError(
                        f"{self._where()}: {name} cannot import {module} ({have['error']}); install the project's "
                        "environment on every node"
                    )
                if want is not None and have != want:
                    raise RayClusterError(
                        f"{self._where()}: {name} has {module} {have}, this process {want}; install the same "
                        "environment on every node"
                    )

    def _check_reachable(self, address: str) -> None:
        parsed = urlparse(address if "://" in address else f"ray://{address}")
        host, port = parsed.hostname, parsed.port
        if not host or not port:
            raise RayClusterError(f"Ray address {address!r} is not of the form ray://host:port or host:port")
        try:
            with socket.create_connection((host, port), timeout=self.connect_timeout_s):
                pass
        except OSError as exc:
            raise RayClusterError(
                f"Ray address {address} did not answer within {self.connect_timeout_s:g}s ({exc.strerror or exc})"
            ) from None

    def teardown_after_execution(self, context: dg.InitResourceContext | None) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
            self._nodes_checked = False


def _import_probe():
    """The task each node runs: each module's installed version, or its import error; ``tpt`` is the shipped
    package (its path). Made here and self-contained, so it travels by value: workers need no ``resources``."""

    def probe(libraries):
        import importlib
        import importlib.metadata

        found = {}
        for module in [*libraries, "tpt"]:
            try:
                imported = importlib.import_module(module)
            except Exception as exc:  # the node's own reason, kept for the one-line error
                found[module] = {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}
                continue
            found[module] = imported.__file__ if module == "tpt" else importlib.metadata.version(module)
        return found

    return probe


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
