import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field, PrivateAttr

import tpt
from tpt.errors import InputError

PACKAGE_DIR = Path(tpt.__file__).parent


class RayClusterError(InputError, RuntimeError):
    pass


class RayCluster(dg.ConfigurableResource):
    """Ray for the stages that fan out. No address: a local Ray started on first use and stopped after the run.
    An address (``ray://head:10001``, ``head:6379`` or ``auto``) joins an existing cluster (KubeRay, ``ray up``);
    the ``tpt`` package then travels to the workers as a runtime-env module."""

    address: str | None = Field(
        default_factory=lambda: os.environ.get("TPT_RAY_ADDRESS") or None,
        description="existing cluster to join; empty starts a local Ray (defaults to $TPT_RAY_ADDRESS)",
    )
    num_cpus: int | None = Field(None, description="CPUs a local Ray may use (default: all)")
    connect_timeout_s: float = Field(10.0, gt=0)

    _started_here: bool = PrivateAttr(default=False)

    def ensure(self) -> None:
        """Connect (or start) once per process; a dead address is a one-line error before any work."""
        import ray

        if ray.is_initialized():
            return
        if self.address and self.address != "auto":
            self._check_reachable(self.address)
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address:
            kwargs["address"] = self.address
            kwargs["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
        else:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(**kwargs)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayClusterError(f"could not start or join Ray ({self.address or 'local'}): {first}") from None
        self._started_here = True

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

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
