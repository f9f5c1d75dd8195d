"""A private Postgres for tests: Debian's ``postgresql`` binaries, a cluster of its own made with ``initdb`` in a
temporary folder and started with ``pg_ctl`` on a free loopback port (as the ``postgres`` user when this process is
root, since Postgres refuses to run as root), password authentication on, stopped and deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, DATABASE = "dagster", "dagster"


class PostgresUnavailable(RuntimeError):
    """Why a Postgres cannot be started here, in one line (tests skip with it)."""


@dataclass
class Postgres:
    root: Path
    port: int
    password: str
    bin_dir: Path
    owner: str | None  # the user the server runs as, when this process is root

    @property
    def env(self) -> dict[str, str]:
        """What ``deploy/dagster.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": DATABASE,
        }

    def connect(self):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=DATABASE, connect_timeout=5
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            _run(self, [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "stop", "-m", "immediate"])
        shutil.rmtree(self.root, ignore_errors=True)


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise PostgresUnavailable("no Postgres server here (Debian: apt-get install postgresql, as root)")
    return found[-1].parent


def _run(pg: Postgres, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", pg.owner, "--"] if pg.owner else []
    return subprocess.run(prefix + command, check=True, capture_output=True, text=True, timeout=120, **kwargs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_postgres() -> Postgres:
    bin_dir = _bin_dir()
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError:
            raise PostgresUnavailable("running as root and there is no postgres user to run the server") from None
    root = Path(tempfile.mkdtemp(prefix="tptpg", dir="/tmp"))
    pg = Postgres(root, _free_port(), secrets.token_hex(16), bin_dir, owner)
    try:
        password_file = root / "password"
        password_file.write_text(pg.password)
        if owner:
            info = pwd.getpwnam(owner)
            for path in (root, password_file):
                os.chown(path, info.pw_uid, info.pw_gid)
        data = root / "data"
        _run(pg, [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(password_file),
                  "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"])  # fmt: skip
        options = f"-p {pg.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        _run(
            pg, [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"]
        )
        connection = _connect_admin(pg)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
    except subprocess.CalledProcessError as error:
        pg.stop()
        raise PostgresUnavailable(f"{Path(error.cmd[-1] if error.cmd else '?').name}: {_first(error.stderr)}") from None
    except BaseException:
        pg.stop()
        raise
    return pg


def _connect_admin(pg: Postgres):
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1", port=pg.port, user=USER, password=pg.password, dbname="postgres", connect_timeout=5
    )


def _first(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
