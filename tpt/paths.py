"""Artifact locations: a local folder or any fsspec URL (``s3://``, ``gs://``, ``abfs://``) behind one pathlib-like
type. URLs become ``UPath`` (universal_pathlib, which dagster brings), whose ``/``, ``exists``, ``glob``, ``open``
and ``read_text`` work on any fsspec file system; local paths stay plain ``pathlib`` paths. Only what an object
store cannot do branches here: Arrow's file system argument, publishing a file (no rename: a PUT is already
all-or-nothing), deleting a folder, and memory maps (a cached local copy of an immutable remote file).

Object stores are configured the way their own clients are (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, an instance role), so the Dagster process, Ray workers and pyarrow all see one setup
and no secret passes through a config or a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from upath import UPath

from tpt.errors import InputError

Location = Path | UPath


def as_path(path: str | os.PathLike | UPath) -> Location:
    """A ``Path`` for a local path (``~`` expanded), a ``UPath`` for a URL."""
    if isinstance(path, UPath) and is_remote(path):
        return path
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return UPath(text, use_listings_cache=False)  # other processes write here: a cached listing would miss it
    return Path(text.removeprefix("file://")).expanduser()


def is_remote(path: Any) -> bool:
    return isinstance(path, UPath) and not isinstance(path, Path)


def resolved(path: str | os.PathLike | UPath) -> Location:
    """An absolute location: a URL as it is, a local path resolved (every process of a run names the same folder)."""
    found = as_path(path)
    return found if is_remote(found) else found.resolve()


def arrow(path: str | os.PathLike | UPath) -> tuple[str, Any]:
    """``(source, filesystem)`` for pyarrow's readers and writers: the fsspec file system of a URL (the one its
    listing used), none for a local path."""
    found = as_path(path)
    return (found.path, found.fs) if is_remote(found) else (str(found), None)


def read_table(path: str | os.PathLike | UPath, **kwargs) -> Any:
    source, filesystem = arrow(path)
    return pq.read_table(source, filesystem=filesystem, **kwargs)


def parquet_file(path: str | os.PathLike | UPath) -> pq.ParquetFile:
    source, filesystem = arrow(path)
    return pq.ParquetFile(source, filesystem=filesystem)


def read_metadata(path: str | os.PathLike | UPath) -> Any:
    source, filesystem = arrow(path)
    return pq.read_metadata(source, filesystem=filesystem)


def read_schema(path: str | os.PathLike | UPath) -> Any:
    source, filesystem = arrow(path)
    return pq.read_schema(source, filesystem=filesystem)


def publish(local: Path, path: Location) -> None:
    """Put a finished local file at ``path``: a rename in the same folder, or one upload (a reader of an object
    store sees the whole object or none)."""
    if is_remote(path):
        path.fs.put_file(str(local), path.path)
        local.unlink()
    else:
        os.replace(local, path)


def move(source: Location, target: Location) -> None:
    if is_remote(source):
        source.fs.mv(source.path, target.path)
    else:
        os.replace(source, target)


def remove_tree(path: Location) -> None:
    """Delete a folder and everything in it; a folder that is not there is fine."""
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def local_copy(path: Location, cache: Path) -> Path:
    """A local file with the content of ``path`` (itself where it is local), downloaded once, whole, and kept
    under a name of the URL, size and ETag (or modification time): an artifact is immutable once published, and a
    file written again under the same URL (another store, a rebuilt folder) is another copy."""
    if not is_remote(path):
        return path
    info = path.fs.info(path.path)
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    target = cache / hashlib.sha256(f"{path}|{info.get('size')}|{stamp}".encode()).hexdigest()[:24] / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            path.fs.get_file(path.path, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target


class StorageError(InputError):
    """An artifact root that cannot be reached or written (no such bucket, refused credentials, no answer)."""


def check_writable(root: str | os.PathLike | UPath) -> None:
    """Write and delete one empty object under an object-store root, so that a wrong endpoint, bucket or key
    fails in one line before a run does any work (a local root is created by the first write)."""
    found = as_path(root)
    if not is_remote(found):
        return
    probe = found / f".tpt-probe-{uuid.uuid4().hex}"
    try:
        found.fs.pipe_file(probe.path, b"")
        found.fs.rm_file(probe.path)
    except Exception as exc:  # every client's own error type: botocore's, gcsfs's, aiohttp's
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"artifact root {found} cannot be written: {type(exc).__name__}: {reason}") from None
