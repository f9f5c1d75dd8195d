"""Generate the thinking for one corpus shard on Ray Data, resumable at the document level.

Every batch that comes back from the actor pool is written at once as its own parquet part (atomically), so a
killed run loses at most the batches in flight; on restart the documents found in parts are left out, so nothing
is generated twice. A ``_SUCCESS.json`` marks a finished shard, which later runs skip without touching Ray.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tpt.atomic import read_json, write_json, write_parquet
from tpt.config import GenerationConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.worker import OUTPUT_SCHEMA, ThinkingWorker
from tpt.progress import Progress

SUCCESS = "_SUCCESS.json"


@dataclass(frozen=True)
class WorkerPlacement:
    """How many engine actors and what each reserves; on GPUs one actor per GPU (``gpus_per_worker=1``)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass(frozen=True)
class ShardSummary:
    shard: str
    documents: int
    generated_this_run: int
    finished_before: int
    errors: int
    prompt_tokens: int
    output_tokens: int
    finish_reasons: dict[str, int]
    wall_s: float
    output_tokens_per_s: float  # over this run's generation only

    def as_dict(self) -> dict:
        return asdict(self)


def read_trajectories(shard_dir: Path) -> pa.Table | None:
    parts = sorted(shard_dir.glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts])


def generate_shard(
    documents: pa.Table,
    shard_dir: Path,
    spec: EngineSpec,
    generation: GenerationConfig,
    placement: WorkerPlacement,
    log: Callable[[str], None],
    progress_interval_s: float = 15.0,
) -> ShardSummary:
    """Thinking for every document of ``documents`` (columns doc_id, source, text) under ``shard_dir``."""
    shard = shard_dir.name
    if (shard_dir / SUCCESS).exists():
        return ShardSummary(**read_json(shard_dir / SUCCESS))
    started = time.perf_counter()
    previous = read_trajectories(shard_dir)
    done_ids = set(previous.column("doc_id").to_pylist()) if previous is not None else set()
    todo = documents.filter(pc.invert(pc.is_in(documents["doc_id"], pa.array(sorted(done_ids), pa.string()))))
    log(f"{shard}: {documents.num_rows} documents, {len(done_ids)} already finished, {todo.num_rows} to generate")
    progress = Progress(f"{shard} thinking", documents.num_rows, log, unit="output tok", interval_s=progress_interval_s)
    progress.done = len(done_ids)
    generated = output_tokens_now = 0
    if todo.num_rows:
        for part in _run_actor_pool(todo, spec, generation, placement):
            write_parquet(shard_dir / f"part-{_part_name(part)}.parquet", part)
            n_out = int(pc.sum(part["output_tokens"]).as_py() or 0)
            generated += part.num_rows
            output_tokens_now += n_out
            errors = part.num_rows - int(pc.sum(pc.not_equal(part["finish_reason"], "error")).as_py() or 0)
            progress.advance(part.num_rows, amount=n_out, extra=f"{errors} errors in last batch" if errors else "")
    gen_wall = time.perf_counter() - started
    summary = summarize(shard, read_trajectories(shard_dir), generated, len(done_ids), gen_wall, output_tokens_now)
    if summary.documents >= documents.num_rows:
        write_json(shard_dir / SUCCESS, summary.as_dict())
    return summary


def summarize(shard: str, table: pa.Table, generated: int, before: int, wall: float, out_now: int) -> ShardSummary:
    reasons = Counter(table.column("finish_reason").to_pylist())
    return ShardSummary(
        shard=shard,
        documents=table.num_rows,
        generated_this_run=generated,
        finished_before=before,
        errors=reasons.get("error", 0),
        prompt_tokens=int(pc.sum(table["prompt_tokens"]).as_py() or 0),
        output_tokens=int(pc.sum(table["output_tokens"]).as_py() or 0),
        finish_reasons=dict(reasons),
        wall_s=round(wall, 3),
        output_tokens_per_s=round(out_now / wall, 3) if generated and wall > 0 else 0.0,
    )


def _part_name(part: pa.Table) -> str:
    ids = "\n".join(sorted(part.column("doc_id").to_pylist()))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def _run_actor_pool(todo: pa.Table, spec: EngineSpec, generation: GenerationConfig, placement: WorkerPlacement):
    """Yield one arrow table per finished batch, in completion order."""
    import ray.data
    from ray.data import ActorPoolStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    size = generation.batch_size
    blocks = [todo.select(["doc_id", "source", "text"]).slice(i, size) for i in range(0, todo.num_rows, size)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        ThinkingWorker,
        fn_constructor_kwargs={"spec": spec, "generation": generation},
        batch_size=size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=placement.workers),
        num_cpus=placement.cpus_per_worker,
        num_gpus=placement.gpus_per_worker or None,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        yield batch.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
