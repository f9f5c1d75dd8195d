"""Thinking for corpus shards given as files: the workers read the documents and write the trajectories.

``generate_shards`` takes tables, so whoever calls it holds every document it asks for. Here the Dagster process
hands over only the shard paths: a Ray Data task per shard file reads it on a worker a slice at a time and leaves out
the documents already finished, the engine actors generate, and a task per batch writes that batch's part file
beside the others. What comes back to the driver is one small row per document (no text), for progress and the
summaries. Resume, the request cache and ``_SUCCESS.json`` work as in ``shard_runner``: one shard at a time, the
driver reads ids only (never text), so its memory follows one shard's ids, not the corpus.

A retried write task writes the same part again (its name is the hash of its ids), so a retry does not duplicate a
document; a batch that Ray re-forms differently after a failure could, which the one_trajectory_per_document check
would then report for its shard.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tpt.atomic import read_json, write_parquet
from tpt.config import GenerationConfig
from tpt.generation.engines import EngineSpec, engine_version
from tpt.generation.requests import request_keys
from tpt.generation.shard_runner import (
    SUCCESS,
    TIMES,
    Campaign,
    ShardSummary,
    WorkerPlacement,
    _copy_cache_hits,
    _part_name,
    _split_by_shard,
    configure_data_context,
    read_trajectories,
    thinking_stage,
    trajectory_batch,
)
from tpt.paths import as_path, parquet_file, read_metadata, read_table

# All the driver sees of a generated document: its shard, part file and request key (for the request index), its
# finish reason, length and timestamps (for progress and the engine telemetry). No text.
READ_ROWS = 4096  # documents a read task hands on at a time: its memory, whatever the shard's size
RETURNED = ["shard", "part", "request_key", "finish_reason", "output_tokens", *TIMES]


def shard_ids(shard_dir: Path, columns: Sequence[str] = ("doc_id",)) -> pa.Table | None:
    """The given columns of a shard's finished trajectories (its part files), or None before the first part."""
    for stale in shard_dir.glob(".part-*.tmp"):  # a write cut short by a kill; its batch is simply redone
        stale.unlink()
    return read_trajectories(shard_dir, columns)


def _written_parts(batch: pa.Table):
    """The (shard, part file, rows) of a batch the workers wrote: its rows carry their part's path."""
    for part in pc.unique(batch["part"]).to_pylist():
        rows = batch.filter(pc.equal(batch["part"], part))
        yield rows["shard"][0].as_py(), as_path(part), rows


def generate_shard_files(
    corpus_dir: Path,
    shards: Sequence[str],
    out_dir: Path,
    spec: EngineSpec,
    generation: GenerationConfig,
    placement: WorkerPlacement,
    log: Callable[[str], None],
    *,
    cache_root: Path | None = None,
    progress_interval_s: float = 15.0,
) -> dict[str, ShardSummary]:
    """Thinking for every document of ``corpus_dir/<shard>.parquet`` (columns doc_id, source, text), written under
    ``out_dir/<shard>`` by the workers; the same summaries as ``generate_shards``."""
    started = time.perf_counter()
    finished = {
        s: ShardSummary.from_dict(read_json(out_dir / s / SUCCESS)) for s in shards if (out_dir / s / SUCCESS).exists()
    }
    before, hits, todo, sizes = {}, Counter(), {}, {}
    version = engine_version(spec.engine)
    for shard in (s for s in shards if s not in finished):  # one shard's ids at a time
        path = corpus_dir / f"{shard}.parquet"
        sizes[shard] = read_metadata(path).num_rows
        done = shard_ids(out_dir / shard)
        before[shard] = done.num_rows if done is not None else 0
        docs = read_table(path, columns=["doc_id", "source"])
        if done is not None:
            docs = docs.filter(pc.invert(pc.is_in(docs["doc_id"], done["doc_id"].combine_chunks())))
        if cache_root is not None and docs.num_rows:
            keys = request_keys(docs["doc_id"].to_pylist(), generation, version)
            asked = docs.append_column("shard", pa.array([shard] * docs.num_rows, pa.string()))
            found, _ = _copy_cache_hits(asked.append_column("request_key", pa.array(keys)), out_dir, cache_root)
            hits[shard] = found[shard]
        todo[shard] = docs.num_rows - hits[shard]
    total = sum(sizes.values())
    done_already = sum(before.values()) + sum(hits.values())
    log(
        f"thinking: {len(shards)} shards ({len(finished)} finished earlier), {total} documents to cover: "
        f"{done_already} done or cached, {sum(todo.values())} to generate (read and written on the workers)"
    )
    campaign = Campaign(spec, placement, cache_root, started)  # the driver indexes what the workers wrote
    pending = [s for s, n in todo.items() if n]
    if pending:
        batches = _run_on_files(corpus_dir, pending, out_dir, spec, generation, placement)
        campaign.run(batches, _written_parts, total, done_already, log, progress_interval_s)
    summaries = finished | campaign.summaries(out_dir, before, hits, sizes)
    return {s: summaries[s] for s in shards}


def _run_on_files(
    corpus_dir: Path,
    shards: list[str],
    out_dir: Path,
    spec: EngineSpec,
    generation: GenerationConfig,
    placement: WorkerPlacement,
):
    """Yield the small rows of every written batch, in completion order."""
    import ray.data

    configure_data_context(placement)
    light = _light_tasks(placement)
    units = [{"shard": s, "path": str(corpus_dir / f"{s}.parquet")} for s in shards]
    pending = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        _pending_documents,
        fn_kwargs={"out_dir": str(out_dir), "generation": generation, "engine": engine_version(spec.engine)},
        batch_format="pyarrow",
        batch_size=1,  # one shard file per task
        **light,
    )
    written = thinking_stage(pending, spec, generation, placement).map_batches(
        _write_parts,
        fn_kwargs={"out_dir": str(out_dir), "spec": spec, "generation": generation},
        batch_format="pyarrow",
        batch_size=None,
        **light,
    )
    yield from written.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def _light_tasks(placement: WorkerPlacement) -> dict:
    """Ray arguments of the reads and the part writes. They reserve no CPU: the engine actors may hold every CPU of
    the cluster (the embedded default's one actor takes both cores; two one-CPU actors fill the two-node rehearsal),
    and a task that waits for a CPU slot an actor never frees waits forever. Their number is capped instead (two per
    engine worker keep the actors fed), and Ray Data's object-store backpressure bounds the blocks in flight. (Not
    ``read_parquet``: in Ray 2.60 it lists the files in a task of one CPU whatever ``num_cpus`` says.)"""
    return {"num_cpus": 0, "concurrency": max(2, 2 * placement.workers)}


def _pending_documents(unit: pa.Table, out_dir: str, generation: GenerationConfig, engine: str) -> Iterator[pa.Table]:
    """One shard file's documents not yet finished, read READ_ROWS at a time, with their shard and request key (the
    engine's input)."""
    [(shard, path)] = zip(unit["shard"].to_pylist(), unit["path"].to_pylist(), strict=True)
    done = read_trajectories(as_path(out_dir) / shard, ["doc_id"])  # the driver cleared stale temp files before
    finished = done["doc_id"].combine_chunks() if done is not None else None
    for batch in parquet_file(path).iter_batches(batch_size=READ_ROWS, columns=["doc_id", "source", "text"]):
        docs = pa.Table.from_batches([batch])
        if finished is not None:
            docs = docs.filter(pc.invert(pc.is_in(docs["doc_id"], finished)))
        if docs.num_rows:
            keys = request_keys(docs["doc_id"].to_pylist(), generation, engine)
            docs = docs.append_column("shard", pa.array([shard] * docs.num_rows, pa.string()))
            yield docs.append_column("request_key", pa.array(keys, pa.string()))


def _write_parts(batch: pa.Table, out_dir: str, spec: EngineSpec, generation: GenerationConfig) -> pa.Table:
    """Write a generated batch as one part per shard (atomic, named by its ids, so a retried batch rewrites the
    same file); return what the driver counts."""
    batch = trajectory_batch(batch, spec, generation)
    returned = []
    for shard, part in _split_by_shard(batch):
        path = as_path(out_dir) / shard / f"part-{_part_name(part)}.parquet"
        write_parquet(path, part)
        returned.append(part.append_column("part", pa.array([str(path)] * part.num_rows, pa.string())))
    return pa.concat_tables(returned).select(RETURNED) if returned else _empty_returned()


def _empty_returned() -> pa.Table:
    from tpt.generation.worker import OUTPUT_SCHEMA

    schema = pa.schema([OUTPUT_SCHEMA.field(c) if c != "part" else pa.field("part", pa.string()) for c in RETURNED])
    return schema.empty_table()
