"""Atomic writes: a reader (or a restarted run) sees a whole file or none, never half of one. A local file is
written beside its target and renamed over it; a file for an object store is written to a local temporary file and
uploaded in one put (``tpt.paths.publish``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tpt.paths import Location, as_path, is_remote, publish


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Location:
    """Call ``write(tmp_path)`` then publish it as ``path``; a local temp file sits in the same directory."""
    path = as_path(path)
    if not is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=None if is_remote(path) else path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Location:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(as_path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | Path, table: pa.Table) -> Location:
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))
