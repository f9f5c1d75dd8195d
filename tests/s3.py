"""A real S3-compatible server on 127.0.0.1 for the tests (moto's server), with the environment every S3 client of
the code reads (s3fs in the Dagster process and on the Ray workers a run starts after it is set)."""

from __future__ import annotations

import contextlib
import logging
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
def loopback_s3(bucket: str = BUCKET) -> Iterator[str]:
    """moto's server in a thread of this process, its environment set and ``bucket`` created; yields the
    endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with s3_environment(endpoint):
            boto3.client("s3").create_bucket(Bucket=bucket)
            yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def refusing_s3() -> Iterator[str]:
    """moto's server in a process of its own with signature checks on (``INITIAL_NO_AUTH_ACTION_COUNT=0``), so
    a key it never issued is refused as a real S3 refuses it; yields the endpoint, its environment set."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
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
                raise RuntimeError("moto's server did not start")
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        with s3_environment(endpoint, key="never-issued"):
            yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
