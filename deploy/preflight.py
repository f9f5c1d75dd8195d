"""Before dagster-daemon and dagster-webserver start: does the instance's Postgres answer, does the artifact root
(``TPT_ARTIFACT_ROOT``, an object store's included) take a write, and (with
TPT_RAY_ADDRESS) does the Ray cluster answer with nodes that import the project's libraries? One line per
failure, exit status 1, and nothing started; Dagster itself would retry the database and then print a traceback.

    DAGSTER_HOME=... DAGSTER_PG_HOST=... python deploy/preflight.py
"""

import os
import sys
from pathlib import Path
from typing import Any

import yaml


def postgres_settings(instance_yaml: Path) -> dict[str, Any] | None:
    """The ``postgres_db`` settings of the instance's storage with ``{env: NAME}`` resolved; None without one."""
    config = yaml.safe_load(instance_yaml.read_text()) or {}
    database = (config.get("storage") or {}).get("postgres", {}).get("postgres_db")
    if database is None:
        return None
    resolved = {}
    for field, value in database.items():
        if isinstance(value, dict) and "env" in value:
            if value["env"] not in os.environ:
                raise SystemExit(f"preflight: {instance_yaml} reads ${value['env']} for {field}, which is not set")
            value = os.environ[value["env"]]
        resolved[field] = value
    return resolved


def check_postgres(settings: dict[str, Any]) -> str | None:
    import psycopg2

    where = f"{settings.get('hostname')}:{settings.get('port', 5432)}/{settings.get('db_name')}"
    try:
        psycopg2.connect(
            host=settings.get("hostname"),
            port=int(settings.get("port", 5432)),
            user=settings.get("username"),
            password=settings.get("password"),
            dbname=settings.get("db_name"),
            connect_timeout=5,
        ).close()
    except psycopg2.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return f"Postgres at {where} did not accept the connection: {lines[0] if lines else type(exc).__name__}"
    return None


def check_storage() -> str | None:
    """The artifact root (an object store's bucket and key included) takes a write."""
    from resources import ArtifactStorage
    from tpt.paths import StorageError, check_writable

    try:
        check_writable(ArtifactStorage().root)
    except StorageError as exc:
        return str(exc)
    return None


def check_ray() -> str | None:
    from resources.ray_cluster import RayCluster, RayClusterError

    cluster = RayCluster()
    if not cluster.address:
        return None
    try:
        cluster.ensure()
    except RayClusterError as exc:
        return str(exc)
    cluster.teardown_after_execution(None)
    return None


def main() -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").is_file():
        print(
            "preflight: DAGSTER_HOME must name a folder holding dagster.yaml (e.g. deploy/dagster.yaml)",
            file=sys.stderr,
        )
        return 1
    settings = postgres_settings(Path(home) / "dagster.yaml")
    problems = [p for p in (check_postgres(settings) if settings else None, check_storage(), check_ray()) if p]
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
