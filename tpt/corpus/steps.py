"""The four task kinds of a corpus build; each reads and writes files and returns small figures, and each can be
rerun after a crash (it rewrites whole files atomically, and a task whose marker is written is never rerun).

1. ``scan_unit`` (one per input file, wheel member or hub data file): read, normalise, length-filter, id,
   decontaminate; the unit's surviving documents in reading order, and their ids sorted by id prefix.
2. ``dedup_bucket`` (one per hash bucket of ids): exact dedup of the bucket's ids across every unit of the build
   and against every shard written before, keeping each document's first occurrence in reading order. No process
   holds more than its bucket's ids.
3. ``near_pass`` (one, only with near-dedup on): MinHash LSH over the survivors in reading order. Its index holds a
   signature per kept document (~1 KB each), so it is for corpora of millions of documents, not of a full crawl.
4. ``write_shard`` (one per output shard): the shard's documents from the units' files, written with their ids.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tpt.atomic import read_json, write_atomic, write_json, write_parquet
from tpt.config import CorpusConfig, CorpusSource
from tpt.corpus.decontaminate import NgramIndex
from tpt.corpus.documents import (
    CONTAMINATION_SCHEMA,
    SHARD_SCHEMA,
    bucket_prefixes,
    document_id,
    file_sha256,
    id_prefix,
    normalize,
)
from tpt.corpus.near_dedup import NearDuplicates
from tpt.corpus.sources import Unit, iter_unit_texts
from tpt.paths import as_path, read_table
from tpt.skips import Skips

DONE = "done.json"
DOCS = "docs.parquet"
IDS = "ids.parquet"
UNIT_CONTAMINATION = "contamination.parquet"
ID_ROW_GROUP = 8192  # ids files are sorted by prefix in small row groups, so a bucket reads only its own
SHARD_IDS = "_ids"  # <shard>.parquet: every written shard's ids by prefix, what later appends dedup against


@functools.lru_cache(maxsize=2)
def _test_index(benchmarks: tuple[str, ...], n: int, data_folder: str | None, test_sets: str) -> NgramIndex:
    """Built once per worker process (tens of megabytes), not once per file."""
    return NgramIndex.from_test_sets(benchmarks, n, data_folder, test_sets)


def scan_unit(
    unit: Unit, source: CorpusSource, config: CorpusConfig, work: str, test_data_folder: str | None, test_sets: str
) -> dict:
    """Phase 1 for one unit, into ``work``: docs (pos, doc_id, source, text), ids (prefix, doc_id, pos) and
    contamination records; ``done.json`` last, with the unit's skips and counts."""
    folder = as_path(work)
    if (folder / DONE).exists():
        return read_json(folder / DONE)
    decon = config.decontamination
    index = _test_index(tuple(decon.benchmarks), decon.ngram, test_data_folder, test_sets) if decon else None
    skips, rows, records, checked = Skips(), [], [], 0
    for raw in iter_unit_texts(unit, source, skips, config.max_file_bytes):
        text = normalize(raw)
        if not text:
            skips.add("empty")
        elif len(text) < config.min_chars:
            skips.add("too_short")
        elif len(text) > config.max_chars:
            skips.add("too_long", f"{len(text)} chars")
        else:
            doc_id = document_id(text)
            checked += 1
            match = index.find(text) if index else None
            if match is None:
                rows.append((doc_id, text))
                continue
            records.append(
                {"doc_id": doc_id, "source": unit.source, "benchmark": match.benchmark, "item": match.item}
                | {"ngram": match.ngram}
            )
            skips.add("contaminated", f"{match.benchmark} item {match.item}: '{match.ngram}'")
    ids = pa.array([d for d, _ in rows], pa.string())
    docs = pa.table(
        {"pos": pa.array(np.arange(len(rows))), "doc_id": ids, "source": pa.array([unit.source] * len(rows))}
        | {"text": pa.array([t for _, t in rows], pa.string())}
    )
    write_parquet(folder / DOCS, docs)
    _write_ids(folder / IDS, docs.select(["doc_id", "pos"]))
    write_parquet(folder / UNIT_CONTAMINATION, pa.Table.from_pylist(records, schema=CONTAMINATION_SCHEMA))
    result = {"documents": len(rows), "checked": checked, "vanished": "vanished_file" in skips.counts}
    result |= {"skips": skips.as_dict(), "index": _index_figures(index) if index else None}
    write_json(folder / DONE, result)
    return result


def _index_figures(index: NgramIndex) -> dict:
    return {"ngram": index.n, "test_items": index.items, "test_items_too_short": index.too_short}


def _write_ids(path: Path, table: pa.Table) -> None:
    table = table.append_column("prefix", id_prefix(table["doc_id"])).sort_by("prefix")
    write_parquet_grouped(path, table)


def write_parquet_grouped(path: Path, table: pa.Table) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ID_ROW_GROUP))


def _ids_in(paths: list[Path], prefixes: list[int], columns: list[str]) -> list[pa.Table]:
    return [read_table(p, columns=columns, filters=[("prefix", "in", prefixes)]) for p in paths]


def dedup_bucket(bucket: int, buckets: int, units: list[str], earlier: list[str], out: str) -> dict:
    """Phase 2 for one bucket: ``out`` (unit, pos) of the first occurrence of every id of the bucket that no
    earlier shard holds; per unit, how many were duplicates (and a few examples)."""
    marker = as_path(out).with_suffix(".json")
    if marker.exists():
        return read_json(marker)
    prefixes = bucket_prefixes(bucket, buckets)
    tables = []
    for i, found in enumerate(_ids_in([as_path(u) / IDS for u in units], prefixes, ["doc_id", "pos"])):
        tables.append(found.append_column("unit", pa.array(np.full(found.num_rows, i, dtype=np.int32))))
    new = pa.concat_tables(tables) if tables else pa.table({"doc_id": [], "pos": [], "unit": []})
    new = new.sort_by([("doc_id", "ascending"), ("unit", "ascending"), ("pos", "ascending")])
    ids = new["doc_id"].combine_chunks()
    first = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    old = _ids_in([as_path(p) for p in earlier], prefixes, ["doc_id"])
    if old and sum(t.num_rows for t in old):
        seen = pa.concat_tables(old)["doc_id"].combine_chunks()
        first &= ~pc.is_in(ids, value_set=seen).to_numpy(zero_copy_only=False)
    keep = new.filter(pa.array(first)).select(["unit", "pos"]).sort_by([("unit", "ascending"), ("pos", "ascending")])
    write_parquet_grouped(as_path(out), keep)
    dropped = new.filter(pa.array(~first))
    duplicates: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for unit, doc_id in zip(dropped["unit"].to_pylist(), dropped["doc_id"].to_pylist(), strict=True):
        duplicates[str(unit)] = duplicates.get(str(unit), 0) + 1
        kept = examples.setdefault(str(unit), [])
        if len(kept) < 3:
            kept.append(doc_id)
    units_kept = keep["unit"].to_numpy()
    kept_by_unit = {str(u): int(n) for u, n in zip(*np.unique(units_kept, return_counts=True), strict=True)}
    result = {"kept_by_unit": kept_by_unit, "duplicates": duplicates, "examples": examples}
    write_json(marker, result)
    return result


def kept_positions(build: Path, unit: int, near: set[int] | None = None) -> np.ndarray:
    """Positions (in reading order) of a unit's documents that survived exact (and near) dedup."""
    tables = [read_table(p, filters=[("unit", "=", unit)]) for p in sorted(build.glob("keep-*.parquet"))]
    positions = np.sort(np.concatenate([t["pos"].to_numpy() for t in tables] or [np.empty(0, np.int64)]))
    near_path = build / "near.parquet"
    if near_path.exists():
        rejected = read_table(near_path, filters=[("unit", "=", unit)])["pos"].to_numpy()
        positions = positions[~np.isin(positions, rejected)]
    return positions


def near_pass(config: CorpusConfig, units: list[str], build: str, minhash_before: str, minhash_after: str) -> dict:
    """Phase 3: near-duplicates among the survivors, in reading order, against the signatures of earlier builds
    too; ``near.parquet`` (unit, pos) of those dropped, per unit counts, and the grown signatures."""
    folder = as_path(build)
    marker = folder / "near.json"
    if marker.exists():
        return read_json(marker)
    near = NearDuplicates.load(config.near_dedup, as_path(minhash_before))
    rejected: dict[str, list] = {"unit": [], "pos": []}
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for i, unit in enumerate(units):
        positions = kept_positions(folder, i)
        docs = read_table(as_path(unit) / DOCS, columns=["pos", "doc_id", "text"])
        docs = docs.filter(pc.is_in(docs["pos"], value_set=pa.array(positions)))
        for pos, doc_id, text in zip(*(docs[c].to_pylist() for c in ("pos", "doc_id", "text")), strict=True):
            original = near.duplicate_of(doc_id, text)
            if original is not None:
                rejected["unit"].append(i)
                rejected["pos"].append(pos)
                counts[str(i)] = counts.get(str(i), 0) + 1
                kept = examples.setdefault(str(i), [])
                if len(kept) < 3:
                    kept.append(f"{doc_id} ~ {original}")
    table = pa.table({"unit": pa.array(rejected["unit"], pa.int32()), "pos": pa.array(rejected["pos"], pa.int64())})
    write_parquet(folder / "near.parquet", table)
    near.save(as_path(minhash_after))
    result = {"near_duplicates": counts, "examples": examples}
    write_json(marker, result)
    return result


def write_shard(slices: list[tuple[str, int, int, int]], build: str, path: str, ids_path: str) -> dict:
    """Phase 4: the shard from (unit folder, unit index, first kept rank, count) slices in order, and its ids."""
    tables = []
    for unit, index, first, count in slices:
        wanted = kept_positions(as_path(build), index)[first : first + count]
        docs = read_table(as_path(unit) / DOCS, columns=["pos", "doc_id", "source", "text"])
        tables.append(docs.filter(pc.is_in(docs["pos"], value_set=pa.array(wanted))).select(SHARD_SCHEMA.names))
    table = pa.concat_tables(tables).cast(SHARD_SCHEMA)
    digest = {}

    def write_and_hash(tmp: Path) -> None:  # hashed before it is published: no read back from an object store
        pq.write_table(table, tmp)
        digest["sha256"] = file_sha256(tmp)

    write_atomic(path, write_and_hash)
    _write_ids(as_path(ids_path), table.select(["doc_id"]))
    chars = int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0)
    return {"name": as_path(path).stem, "documents": table.num_rows, "chars": chars, "sha256": digest["sha256"]}
