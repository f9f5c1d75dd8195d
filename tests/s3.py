"""A real S3-compatible server on 127.0.0.1 for the tests and benchmarks (moto's server, in a process of its own),
with the environment every S3 client of the code reads (s3fs in the Dagster process and on the Ray workers a run
starts after it is set)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

BUCKET = "tpt-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_environment(endpoint: str, key: str = "loopback-test") -> Iterator[None]:
    """Point the AWS environment at ``endpoint`` (restored afterwards). File system instances are cached by their
    arguments, not by the environment they read, so the cache is cleared on the way in and out."""
    import s3fs

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "2",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def moto_server(check_signatures: bool = False) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port until the block ends; yields its endpoint. With
    ``check_signatures`` (``INITIAL_NO_AUTH_ACTION_COUNT=0``) it refuses a key it never issued, as S3 does."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if check_signatures:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"moto's server did not start on 127.0.0.1:{port}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def loopback_s3(bucket: str = BUCKET) -> Iterator[str]:
    """A server, its environment set and ``bucket`` created; yields the endpoint."""
    import boto3

    with moto_server() as endpoint, s3_environment(endpoint):
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield endpoint


@contextlib.contextmanager
def refusing_s3() -> Iterator[str]:
    """A server that checks signatures, with the environment of a key it never issued."""
    with moto_server(check_signatures=True) as endpoint, s3_environment(endpoint, key="never-issued"):
        yield endpoint
