"""Readers for every kind of corpus source. Bad input is counted by reason and skipped, never fatal."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from tpt.config import CorpusSource, HubDataset, LocalFolder, WheelFile
from tpt.errors import InputError
from tpt.offline import read_member
from tpt.skips import Skips

LOCAL_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.parquet")


class SourceError(InputError, RuntimeError):
    """A source that cannot be read at all (as opposed to a bad record inside it)."""


def local_files(source: LocalFolder) -> list[Path]:
    """The files a local source reads, in the order it reads them."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise SourceError(f"corpus folder {root} does not exist or is not a folder")
    files = sorted({p for pattern in LOCAL_PATTERNS for p in root.rglob(pattern)})
    if not files:
        raise SourceError(f"corpus folder {root} holds no {', '.join(LOCAL_PATTERNS)} files")
    return files


@dataclass(frozen=True)
class Unit:
    """One piece of input a build task reads on its own: a local file, a wheel member, or one data file of a hub
    dataset at a pinned commit. ``key`` names its content (a local file's size and time are part of it)."""

    source: str
    kind: Literal["local", "wheel_file", "hf_hub"]
    location: str  # a path, "wheel:member", or an hf:// URL
    key: str


def local_unit(source: LocalFolder, path: Path) -> Unit:
    stat = path.stat()
    return Unit(source.name, "local", str(path), f"{path}:{stat.st_size}:{stat.st_mtime_ns}")


def source_units(source: CorpusSource, revisions: dict[str, str]) -> list[Unit]:
    """Every unit of a source, in reading order; a hub source's files at ``revisions[source.name]``."""
    if isinstance(source, LocalFolder):
        return [local_unit(source, p) for p in local_files(source)]
    if isinstance(source, WheelFile):
        location = f"{source.wheel}:{source.member}"
        return [Unit(source.name, "wheel_file", location, location)]
    return [Unit(source.name, "hf_hub", url, url) for url in hub_data_files(source, revisions[source.name])]


def iter_unit_texts(unit: Unit, source: CorpusSource, skips: Skips, max_file_bytes: int) -> Iterator[str]:
    """Raw texts of one unit in a stable order; skipped records are counted in ``skips``. A local file that is gone
    by the time it is read (moved or deleted mid-build) is a counted skip, not a failure."""
    if unit.kind == "local":
        path = Path(unit.location)
        if not path.exists():
            skips.add("vanished_file", str(path))
            return
        yield from _local_folder([path], source.text_field, skips, max_file_bytes)
    elif unit.kind == "wheel_file":
        yield from _jsonl_lines(io.BytesIO(read_member(source.wheel, source.member)), source.text_field, skips)
    else:
        yield from _hub_file(unit.location, source.text_field, skips)


def _local_folder(files: list[Path], field: str, skips: Skips, max_file_bytes: int) -> Iterator[str]:
    for path in files:
        if path.stat().st_size == 0:
            skips.add("empty_file", str(path))
            continue
        if path.stat().st_size > max_file_bytes:
            skips.add("oversized_file", f"{path} ({path.stat().st_size} bytes)")
            continue
        try:
            if path.suffix == ".parquet":
                yield from _parquet(path, field, skips)
            else:
                opener = gzip.open if path.name.endswith(".gz") else open
                with opener(path, "rb") as fh:
                    yield from _jsonl_lines(fh, field, skips)
        except (OSError, EOFError, zlib.error, pa.ArrowException) as exc:  # corrupt gzip or parquet
            skips.add("unreadable_file", f"{path}: {type(exc).__name__}: {str(exc)[:120]}")


def _jsonl_lines(fh: io.BufferedIOBase, field: str, skips: Skips) -> Iterator[str]:
    for raw in fh:
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            skips.add("bad_utf8", repr(raw[:80]))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skips.add("bad_json", line[:80])
            continue
        text = record.get(field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            skips.add("missing_text_field", line[:80])
            continue
        yield text


def _parquet(path, field: str, skips: Skips) -> Iterator[str]:
    parquet = pq.ParquetFile(path)
    if field not in parquet.schema_arrow.names:
        skips.add("missing_text_field", f"{path}: no column {field!r}", n=parquet.metadata.num_rows)
        return
    for batch in parquet.iter_batches(columns=[field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    skips.add("bad_utf8", f"{path}: {value[:40]!r}")
                    continue
            if not isinstance(value, str):
                skips.add("missing_text_field", f"{path}: null text")
                continue
            yield value


def resolve_revision(source: HubDataset) -> str:
    """The commit a hub source reads: its configured revision (a sha, tag or branch) resolved to a sha. A dataset or
    revision that does not exist (or a hub that cannot be reached) is one line, before anything is read."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(source.dataset, revision=source.revision).sha
    except Exception as exc:  # RepositoryNotFoundError, RevisionNotFoundError, offline mode, network errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        at = f" at revision {source.revision!r}" if source.revision else ""
        raise SourceError(f"hub dataset {source.dataset!r}{at} could not be opened: {first[:200]}") from None


def hub_data_files(source: HubDataset, sha: str) -> list[str]:
    """The data files of the source's subset and split at commit ``sha`` (hf:// URLs), as ``datasets`` resolves
    them: each becomes one build task."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(source.dataset, source.subset, revision=sha)
        files = builder.config.data_files[source.split]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"hub dataset {source.dataset!r} at {sha[:12]} lists no files: {first[:200]}") from None
    return sorted(str(f) for f in files)


def _hub_file(url: str, field: str, skips: Skips) -> Iterator[str]:
    from huggingface_hub import HfFileSystem

    with HfFileSystem().open(url, "rb") as fh:
        if url.endswith(".parquet"):
            yield from _parquet(fh, field, skips)
        elif url.endswith(".gz"):
            with gzip.open(fh) as opened:
                yield from _jsonl_lines(opened, field, skips)
        else:
            yield from _jsonl_lines(fh, field, skips)
