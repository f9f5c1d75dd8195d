"""The sandbox launcher: its own process (``python -I -S sandbox_child.py CONFIG_JSON``), standard library only.

Isolation has to be set up between fork and exec. Doing that in a ``preexec_fn`` of the (multi-threaded) evaluation
process can deadlock, so a fresh single-threaded interpreter does it instead: it enters new network, PID and mount
namespaces, hides the shared writable directories and anything the unprivileged user may not see, forks the program's
process (PID 1 of the new PID namespace, so the kernel kills every descendant when it exits), sets resource limits,
drops to the sandbox uid and execs ``python -I``. Where namespaces are not allowed it falls back to an audit hook
that refuses sockets and process spawning. What was actually in force is written to the status file.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
SETUP_FAILED = 125

# Runs first in the program's interpreter when no namespaces could be made: refuses the network, spawning and forking
# (RLIMIT_NPROC may not hold), ctypes (the way around audit hooks, which Python code cannot remove), and changes to
# files outside the work dir.
AUDIT_WRAPPER = """
import os, sys
_DENIED = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function")
_PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.symlink": (1,),
                "os.link": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
                "shutil.rmtree": (0,)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_HOME = os.path.realpath(os.getcwd())
def _inside(path):
    if isinstance(path, int):
        return True
    path = os.fsdecode(path)
    real = os.path.realpath(path)
    return real == _HOME or real.startswith(_HOME + os.sep) or real == "/dev/null"
def _deny(event, args):
    if event.startswith(_DENIED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
        if writes and not _inside(path):
            raise PermissionError(f"sandbox: writing {path} is not allowed")
    elif event in _PATH_EVENTS and not all(_inside(args[i]) for i in _PATH_EVENTS[event]):
        raise PermissionError(f"sandbox: {event} outside the work dir is not allowed")
sys.addaudithook(_deny)
_path = sys.argv[1]
sys.argv = sys.argv[1:]
with open(_path, encoding="utf-8") as _fh:
    _code = compile(_fh.read(), _path, "exec")
exec(_code, {"__name__": "__main__", "__file__": _path, "__builtins__": __builtins__})
"""

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _enter_namespaces(as_root: bool) -> list[str]:
    """New network (only a downed loopback), PID and mount namespaces; a user namespace too when not root."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | (0 if as_root else CLONE_NEWUSER)
    _check(_libc.unshare(flags), "unshare")
    if not as_root:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted below propagates back to the host
    names = ["network-namespace", "pid-namespace", "mount-namespace"]
    return names + ([] if as_root else ["user-namespace"])


def hidden_ancestor(path: str) -> str | None:
    """The top-most directory on ``path`` that other users cannot enter (e.g. a 0700 /root holding the interpreter)."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _cover(directory: str, keep: dict[str, int], mode: str) -> None:
    """Mount an empty tmpfs over ``directory``, then bind the kept paths below it back in place (from O_PATH fds)."""
    _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size=64m")
    for path, fd in keep.items():
        if path.startswith(directory.rstrip("/") + "/"):
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)


def _prepare_filesystem(workdir: str, needed: list[str], drop: bool) -> list[str]:
    """Private empty /tmp, /var/tmp, /dev/shm (the work dir bound back in); the interpreter made reachable."""
    keep = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in [workdir, *needed]}
    done = []
    try:
        for directory in SHARED_WRITABLE:
            if os.path.isdir(directory) and not os.path.islink(directory) and directory not in keep:
                _cover(directory, keep, "1777")
                done.append(f"private {directory}")
        if drop:
            for path in needed:
                blocker = hidden_ancestor(path)
                if blocker and blocker not in keep:
                    _cover(blocker, keep, "755")
                    done.append(f"hidden {blocker} (interpreter bound back)")
    finally:
        for fd in keep.values():
            os.close(fd)
    return done


def _set_limits(cfg: dict) -> None:
    cpu = int(cfg["cpu_s"])
    memory = int(cfg["memory_bytes"])
    for limit, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_NPROC, (cfg["max_processes"],) * 2),
        (resource.RLIMIT_FSIZE, (cfg["max_file_bytes"],) * 2),
        (resource.RLIMIT_NOFILE, (cfg["max_open_files"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(limit, value)


def _become_program(cfg: dict, namespaces: bool, drop: bool) -> None:
    """In the forked child: limits, drop privileges, exec. Never returns."""
    if namespaces:  # PID 1 of the new namespace: a /proc that shows only the sandbox's own processes
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _set_limits(cfg)
    if drop:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")  # after setuid, which clears it
    os.chdir(cfg["workdir"])
    program = os.path.join(cfg["workdir"], "program.py")
    argv = [cfg["python"], "-I", "-B"]
    argv += [program] if namespaces else ["-c", AUDIT_WRAPPER, program]
    os.execve(cfg["python"], argv, cfg["env"])


def _write_status(fd: int, status: dict) -> None:
    data = json.dumps(status).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    status_fd = os.open(cfg["status"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    status: dict = {"isolation": [], "setup_error": None, "exit_code": None, "signal": None}
    try:
        as_root, real_uid = os.geteuid() == 0, os.getuid()
        namespaces = False
        if cfg["namespaces"]:
            try:
                status["isolation"] += _enter_namespaces(as_root)
                namespaces = True
            except (OSError, AttributeError) as exc:  # AttributeError: a libc without unshare
                status["isolation"].append(f"no namespaces ({getattr(exc, 'strerror', None) or exc})")
        reachable = namespaces or all(hidden_ancestor(p) is None for p in cfg["needed"])
        drop = as_root and reachable
        if namespaces:
            status["isolation"] += _prepare_filesystem(cfg["workdir"], cfg["needed"], drop)
        else:
            status["isolation"].append("audit hook refuses network, process spawning and writes outside the work dir")
        if drop:
            status["isolation"].append("own unprivileged uid")
        else:
            status["isolation"].append(f"uid {real_uid}" + (" (interpreter not reachable)" if as_root else ""))
        status["isolation"].append("rlimits")
        _write_status(status_fd, status)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                _become_program(cfg, namespaces, drop)
            except BaseException as exc:
                os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
            os._exit(SETUP_FAILED)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            failure = pipe.read().decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
        if failure:
            status["setup_error"] = failure
        elif os.WIFSIGNALED(wait_status):
            status["signal"] = os.WTERMSIG(wait_status)
        else:
            status["exit_code"] = os.WEXITSTATUS(wait_status)
    except Exception as exc:
        status["setup_error"] = f"{type(exc).__name__}: {exc}"
    _write_status(status_fd, status)
    if status["setup_error"]:
        return SETUP_FAILED
    return status["exit_code"] if status["signal"] is None else 128 + status["signal"]


if __name__ == "__main__":
    sys.exit(main())
