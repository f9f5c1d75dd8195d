"""Run untrusted Python (model-written code plus its tests) in a contained process and say whether it passed.

Each program gets a throwaway directory, a scrubbed environment, ``python -I``, resource limits (CPU, address space,
processes, file size, open files, no core dumps), a wall-clock timeout after which its whole process group is killed,
and no network: new network/PID/mount namespaces where the machine allows them, otherwise an audit hook that refuses
sockets. When we run as root the program runs as an unprivileged uid of its own, because RLIMIT_NPROC is not
enforced for root and root could write anywhere; each concurrent run gets a different uid so that one run's fork bomb
cannot use up another's process allowance. The setup itself happens in ``sandbox_child`` (see there for why).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LAUNCHER = Path(__file__).with_name("sandbox_child.py")
UID_BASE = 0x30000000  # far above any real account; uid = base + per-process block + counter
UIDS_PER_PROCESS = 1 << 16
SETUP_FAILED = 125
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    namespaces: bool = True  # False forces the audit-hook fallback (machines without namespaces, tests)


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str  # passed | failed | timeout | memory | output_limit | crashed | killed | error
    wall_s: float
    exit_code: int | None
    isolation: tuple[str, ...]
    stderr_tail: str


DEFAULT_LIMITS = SandboxLimits()


_counter = itertools.count()


def _next_uid() -> int:
    """A uid no other run of this process uses now, nor soon: even zombies of an earlier run (which still count
    against RLIMIT_NPROC until reaped) cannot take a later run's process allowance."""
    return UID_BASE + (os.getpid() % 4096) * UIDS_PER_PROCESS + next(_counter) % UIDS_PER_PROCESS


def _interpreter_paths() -> list[str]:
    """Directories the program's interpreter needs (venv and base install), as real paths."""
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(paths)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to exit without reaping it, so its pid (the group id we kill next) cannot be reused yet."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill what a run left behind and wait (a little) until it is gone: escapees from the process group without a
    PID namespace, and processes of a killed namespace that the kernel is still tearing down."""
    for _ in range(100):
        found = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
            if str(uid) in uid_line.split()[1:2]:
                found = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return
        time.sleep(0.05)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _reason(status: dict, stderr: str) -> str:
    if status.get("setup_error"):
        return "error"
    sig = status.get("signal")
    if sig is not None:
        return {signal.SIGXCPU: "timeout", signal.SIGKILL: "killed", signal.SIGXFSZ: "output_limit"}.get(
            signal.Signals(sig), "crashed"
        )
    code = status.get("exit_code")
    if code == 0:
        return "passed"
    if code is None:
        return "error"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    return "memory" if last.startswith("MemoryError") else "failed"


def run_program(source: str, limits: SandboxLimits = DEFAULT_LIMITS) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox; ``passed`` means it exited 0 within the limits."""
    as_root = os.geteuid() == 0
    uid = _next_uid() if as_root else os.getuid()
    root = Path(tempfile.mkdtemp(prefix="tpt-sandbox-"))
    start = time.monotonic()
    timed_out = False
    try:
        os.chmod(root, 0o711)
        work, control = root / "work", root / "control"
        work.mkdir(mode=0o700)
        control.mkdir(mode=0o700)
        (work / "program.py").write_text(source, encoding="utf-8", errors="replace")
        if as_root:
            for path in (work, work / "program.py"):
                os.chown(path, uid, uid)
        config = {
            "workdir": str(work),
            "status": str(control / "status.json"),
            "python": sys.executable,
            "needed": _interpreter_paths(),
            "uid": uid,
            "gid": uid,
            "namespaces": limits.namespaces,
            "cpu_s": max(1, int(limits.timeout_s + 0.999)),
            "memory_bytes": limits.memory_mb << 20,
            "max_processes": limits.max_processes,
            "max_file_bytes": limits.max_file_mb << 20,
            "max_open_files": limits.max_open_files,
            "env": {**_ENV, "HOME": str(work), "TMPDIR": str(work), "PYTHONIOENCODING": "utf-8"},
        }
        cmd = [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config)]
        with (control / "stdout").open("wb") as out, (control / "stderr").open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=root,
                env=_ENV,
                start_new_session=True,
                close_fds=True,
            )
            try:
                timed_out = not _wait_exit(proc.pid, limits.timeout_s)
            finally:
                _kill_group(proc.pid)  # also takes any stragglers still in the group after a normal exit
                proc.wait()
        wall = time.monotonic() - start
        try:
            status = json.loads((control / "status.json").read_text())
        except (OSError, ValueError):
            status = {"isolation": [], "setup_error": "launcher wrote no status"}
        if as_root:
            _kill_uid(uid)
        stderr = _tail(control / "stderr")
        reason = "timeout" if timed_out else _reason(status, stderr)
        if reason == "error" and status.get("setup_error"):
            stderr = f"sandbox setup failed: {status['setup_error']}\n{stderr}"
        return SandboxResult(
            passed=reason == "passed",
            reason=reason,
            wall_s=round(wall, 4),
            exit_code=status.get("exit_code"),
            isolation=tuple(status.get("isolation", [])),
            stderr_tail=stderr,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_programs(
    sources: Sequence[str], limits: SandboxLimits = DEFAULT_LIMITS, workers: int = 2
) -> list[SandboxResult]:
    """Run many programs, ``workers`` at a time; results are in the order of ``sources``."""
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources)))) as pool:
        return list(pool.map(lambda source: run_program(source, limits), sources))


@lru_cache(maxsize=4)
def probe(limits: SandboxLimits = DEFAULT_LIMITS) -> SandboxResult:
    """Run one empty program: does the sandbox start on this machine, and with what isolation."""
    return run_program("pass\n", limits)


def isolation_in_force(limits: SandboxLimits = DEFAULT_LIMITS) -> tuple[str, ...]:
    return probe(limits).isolation
