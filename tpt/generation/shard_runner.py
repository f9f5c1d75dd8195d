"""Generate the thinking for corpus shards on a Ray Data actor pool, resumable at three levels.

1. A shard with ``_SUCCESS.json`` is finished: later runs read its summary and never touch Ray.
2. Every batch that comes back from the pool is written at once, atomically, as its own parquet part in its shard's
   folder; a restarted run leaves out the documents found in parts, so a killed run loses at most the batches in
   flight and nothing is generated twice.
3. Before generating, each document's request key is looked up in the request index of the artifact root (any
   stage version, any experiment); hits are copied, not regenerated.

One actor pool serves all shards of a run, so the engine starts once however many shards a run covers. On vLLM the
pool is ray.data.llm's processor (async replicas kept full across batches, see ``vllm_processor``); on transformers
(and the stand-in) it is ``map_batches`` over ``ThinkingWorker`` actors.

Failures: a document the engine refuses is an error row (counted, never retried); an engine or actor that dies is
Ray's to restart (actors ``max_restarts=-1``, each batch retried ``BATCH_RETRIES`` times on a new actor), and a run
that still fails raises ``EngineFailedError``, which is retriable (a hardware fault, not bad input): Dagster's retry
resumes after the finished parts. ``max_errored_blocks`` stays 0, so a run never ends with documents silently left
out. The driver drops a row it has already written, so a retried batch cannot write a document twice.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tpt.atomic import read_json, write_json, write_parquet
from tpt.config import GenerationConfig
from tpt.errors import InputError
from tpt.generation import vllm_processor
from tpt.generation.engines import EngineSpec, engine_version
from tpt.generation.requests import cached_rows, record_part, request_keys
from tpt.generation.telemetry import EngineTelemetry, measure
from tpt.generation.worker import FORCED, OUTPUT_SCHEMA, ContinuousThinkingWorker, ThinkingWorker
from tpt.paths import read_table
from tpt.progress import Progress

SUCCESS = "_SUCCESS.json"
SUMMARY_COLUMNS = ["finish_reason", "prompt_tokens", "output_tokens"]
TIMES = ("queued_at", "started_at", "finished_at")
BATCH_RETRIES = 3  # per batch, on a fresh actor, when its actor died: an engine that dies that often is broken


class EngineFailedError(RuntimeError):
    """The engine workers failed (died past Ray's retries, or could not start): retriable, finished batches kept."""


class ModelNotFoundError(InputError, FileNotFoundError):
    """The thinking model is a local folder that does not exist: bad input, not worth a retry."""


class PlacementError(InputError, RuntimeError):
    """The actor pool asks for resources the Ray cluster does not have (it would wait for them forever)."""


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
    cache_hits: int
    errors: int
    prompt_tokens: int
    output_tokens: int
    finish_reasons: dict[str, int]
    wall_s: float  # this run's wall time for the whole pool (shards of one run share it)
    output_tokens_per_s: float  # over this run's generated documents only
    telemetry: EngineTelemetry | None = None  # the engines of this run (shards of one run share it)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardSummary:
        telemetry = data.get("telemetry")
        return cls(**data | {"telemetry": EngineTelemetry(**telemetry) if telemetry else None})


def read_trajectories(shard_dir: Path, columns: Sequence[str] | None = None) -> pa.Table | None:
    """A shard's finished trajectories (its part files; ``columns`` of them), or None before the first part."""
    parts = sorted(shard_dir.glob("part-*.parquet"))
    if not parts:
        return None
    columns = list(columns) if columns is not None else None
    return pa.concat_tables([read_table(p, columns=columns) for p in parts], promote_options="permissive")


def generate_shards(
    shards: Mapping[str, pa.Table],
    out_dir: Path,
    spec: EngineSpec,
    generation: GenerationConfig,
    placement: WorkerPlacement,
    log: Callable[[str], None],
    *,
    cache_root: Path | None = None,
    progress_interval_s: float = 15.0,
) -> dict[str, ShardSummary]:
    """Thinking for every document of every shard (columns doc_id, source, text), written under ``out_dir/<shard>``."""
    started = time.perf_counter()
    finished = {
        s: ShardSummary.from_dict(read_json(out_dir / s / SUCCESS)) for s in shards if (out_dir / s / SUCCESS).exists()
    }
    before = {s: _done_ids(out_dir / s) for s in shards if s not in finished}
    todo = _pending(shards, before, generation, spec)
    hits: Counter = Counter()
    if cache_root is not None and todo.num_rows:
        hits, hit_keys = _copy_cache_hits(todo, out_dir, cache_root)
        todo = todo.filter(pc.invert(pc.is_in(todo["request_key"], pa.array(sorted(hit_keys), pa.string()))))
    total = sum(shards[s].num_rows for s in before)
    done_already = sum(len(d) for d in before.values()) + sum(hits.values())
    log(
        f"thinking: {len(shards)} shards ({len(finished)} finished earlier), {total} documents to cover: "
        f"{done_already} done or cached, {todo.num_rows} to generate"
    )
    campaign = Campaign(spec, placement, cache_root, started)  # the artifact root's request index learns each part
    if todo.num_rows:
        batches = _run_actor_pool(todo, spec, generation, placement)
        campaign.run(batches, functools.partial(_write_batch, out_dir), total, done_already, log, progress_interval_s)
    sizes = {s: shards[s].num_rows for s in before}
    summaries = finished | campaign.summaries(out_dir, {s: len(d) for s, d in before.items()}, hits, sizes)
    return {s: summaries[s] for s in shards}


@dataclass
class Campaign:
    """One run's bookkeeping over the batches that come back from the engines, wherever they were written: progress,
    documents per shard, the request index, the timestamps for the telemetry; then each shard's summary, and
    ``_SUCCESS.json`` for a shard that has all its documents."""

    spec: EngineSpec
    placement: WorkerPlacement
    index: Path | None  # the artifact root, whose request index learns every part written
    started: float
    generated: Counter = field(default_factory=Counter)
    out_tokens: int = 0
    written: list[pa.Table] = field(default_factory=list)  # this run's rows, timestamps only

    def run(
        self,
        batches: Iterator[pa.Table],
        parts: Callable[[pa.Table], Iterator[tuple[str, Path, pa.Table]]],
        total: int,
        done_already: int,
        log: Callable[[str], None],
        interval_s: float,
    ) -> None:
        """Consume ``batches``; ``parts`` gives each batch's (shard, part file, rows), writing them if need be."""
        if self.spec.model.startswith(("/", ".")) and not Path(self.spec.model).exists():
            raise ModelNotFoundError(f"the thinking model folder {self.spec.model} does not exist")
        progress = Progress("thinking", total, log, unit="output tok", interval_s=interval_s)
        progress.done = done_already
        try:
            for batch in batches:
                self.written.append(batch.select(["finish_reason", "output_tokens", *TIMES]))
                for shard, path, rows in parts(batch):
                    if self.index is not None:
                        record_part(self.index, path, rows)
                    self.generated[shard] += rows.num_rows
                n_out = int(pc.sum(batch["output_tokens"]).as_py() or 0)
                self.out_tokens += n_out
                errors = int(pc.sum(pc.equal(batch["finish_reason"], "error")).as_py() or 0)
                progress.advance(batch.num_rows, amount=n_out, extra=f"{errors} errors in last batch" if errors else "")
        except (PlacementError, ModelNotFoundError):
            raise
        except Exception as exc:  # Ray wraps worker failures in many types; all end the run the same way
            raise EngineFailedError(
                f"the {self.spec.engine} workers failed ({_root_cause(exc)}); the {sum(self.generated.values())} "
                "documents finished in this run are kept, and a rerun resumes after them"
            ) from exc

    def summaries(
        self, out_dir: Path, before: Mapping[str, int], hits: Mapping[str, int], sizes: Mapping[str, int]
    ) -> dict[str, ShardSummary]:
        """The summary of every shard this run looked at (``before``: its documents finished earlier)."""
        wall = time.perf_counter() - self.started
        rate = self.out_tokens / wall if self.out_tokens else 0.0
        telemetry = (
            measure(
                pa.concat_tables(self.written),
                self.placement.workers,
                wall,
                self.placement.gpus_per_worker,
                self.spec.max_num_seqs,
            )
            if self.written
            else None
        )
        summaries = {}
        for shard, earlier in before.items():
            table = read_trajectories(out_dir / shard, SUMMARY_COLUMNS)
            summary = summarize(shard, table, self.generated[shard], earlier, hits.get(shard, 0), wall, rate, telemetry)
            if summary.documents >= sizes[shard]:
                write_json(out_dir / shard / SUCCESS, summary.as_dict())
            summaries[shard] = summary
        return summaries


def _write_batch(out_dir: Path, batch: pa.Table) -> Iterator[tuple[str, Path, pa.Table]]:
    """Write a batch that came back to the driver as one part per shard."""
    for shard, part in _split_by_shard(batch):
        path = out_dir / shard / f"part-{_part_name(part)}.parquet"
        write_parquet(path, part)
        yield shard, path, part


def summarize(
    shard: str,
    table: pa.Table | None,
    generated: int,
    before: int,
    hits: int,
    wall: float,
    rate: float,
    telemetry: EngineTelemetry | None = None,
) -> ShardSummary:
    reasons = Counter(table.column("finish_reason").to_pylist()) if table is not None else Counter()
    return ShardSummary(
        shard=shard,
        documents=table.num_rows if table is not None else 0,
        generated_this_run=generated,
        finished_before=before,
        cache_hits=hits,
        errors=reasons.get("error", 0),
        prompt_tokens=int(pc.sum(table["prompt_tokens"]).as_py() or 0) if table is not None else 0,
        output_tokens=int(pc.sum(table["output_tokens"]).as_py() or 0) if table is not None else 0,
        finish_reasons=dict(reasons),
        wall_s=round(wall, 3),
        output_tokens_per_s=round(rate, 3) if generated else 0.0,
        telemetry=telemetry if generated else None,
    )


def _done_ids(shard_dir: Path) -> set[str]:
    for stale in shard_dir.glob(".part-*.tmp"):  # a write cut short by a kill; its batch is simply redone
        stale.unlink()
    table = read_trajectories(shard_dir, ["doc_id"])
    return set(table.column("doc_id").to_pylist()) if table is not None else set()


def _pending(
    shards: Mapping[str, pa.Table], before: dict[str, set[str]], generation: GenerationConfig, spec: EngineSpec
) -> pa.Table:
    """Documents still to do, with their shard and request key, in shard order."""
    tables = []
    for shard, done in before.items():
        docs = shards[shard].select(
            ["doc_id", "source", "text", *([FORCED] if FORCED in shards[shard].column_names else [])]
        )
        docs = docs.filter(pc.invert(pc.is_in(docs["doc_id"], pa.array(sorted(done), pa.string()))))
        keys = request_keys(docs["doc_id"].to_pylist(), generation, engine_version(spec.engine))
        tables.append(
            docs.append_column("shard", pa.array([shard] * docs.num_rows, pa.string())).append_column(
                "request_key", pa.array(keys, pa.string())
            )
        )
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in ("doc_id", "source", "text", "shard", "request_key")})
    return pa.concat_tables(tables)


def _copy_cache_hits(todo: pa.Table, out_dir: Path, cache_root: Path) -> tuple[Counter, set[str]]:
    """Write cached trajectories for ``todo``'s keys into their shards (one part per shard); hits per shard."""
    hits: Counter = Counter()
    cached = cached_rows(cache_root, todo["request_key"].to_pylist(), exclude_dir=out_dir)
    if cached is None:
        return hits, set()
    by_key = {row["request_key"]: row for row in cached.to_pylist()}
    rows = [
        by_key[row["request_key"]] | row | {"from_cache": True}
        for row in todo.select(["doc_id", "shard", "request_key", "source"]).to_pylist()
        if row["request_key"] in by_key
    ]
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    for shard, part in _split_by_shard(table):
        write_parquet(out_dir / shard / f"part-{_part_name(part)}.parquet", part)
        hits[shard] += part.num_rows
    return hits, set(by_key)


def _split_by_shard(table: pa.Table):
    for shard in sorted(set(table["shard"].to_pylist())):
        yield shard, table.filter(pc.equal(table["shard"], shard))


def _part_name(part: pa.Table) -> str:
    ids = "\n".join(sorted(part.column("doc_id").to_pylist()))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def _run_actor_pool(todo: pa.Table, spec: EngineSpec, generation: GenerationConfig, placement: WorkerPlacement):
    """Yield one arrow table per finished batch, in completion order."""
    import ray.data

    configure_data_context(placement)
    size = generation.batch_size
    blocks = [todo.slice(i, size) for i in range(0, todo.num_rows, size)]
    dataset = thinking_stage(ray.data.from_arrow(blocks), spec, generation, placement)
    seen: set[str] = set()
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        batch = trajectory_batch(batch, spec, generation)
        fresh = [k not in seen for k in batch["request_key"].to_pylist()]
        seen.update(batch["request_key"].to_pylist())
        yield batch.filter(pa.array(fresh))  # a batch retried after its actor died comes back again


def configure_data_context(placement: WorkerPlacement) -> None:
    """Ray Data settings of a generation run (and a first look that the pool fits the cluster)."""
    import ray.data

    _check_fits(ray.cluster_resources(), placement)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.memory_usage_poll_interval_s = None  # a USS probe per second per actor costs a 2-core machine ~2% of generation
    ctx.max_errored_blocks = 0  # a block that fails past its retries fails the run: no document silently left out


def thinking_stage(source, spec: EngineSpec, generation: GenerationConfig, placement: WorkerPlacement):
    """``source`` (a Ray Dataset of doc_id, source, text, shard, request_key) through the engine pool: ray.data.llm's
    processor on vLLM; on transformers, actors with ``max_concurrent_batches`` batches in flight feeding one decode
    loop each (``ContinuousThinkingWorker``); else ``ThinkingWorker`` actors. Batches go through
    ``trajectory_batch``."""
    from ray.data import ActorPoolStrategy

    if spec.engine == "vllm":
        processor = vllm_processor.build(
            spec, generation, placement.workers, placement.cpus_per_worker, placement.gpus_per_worker
        )
        processor.get_stage_by_name("vLLMEngineStage").map_batches_kwargs["max_task_retries"] = BATCH_RETRIES
        return processor(source)
    in_flight = generation.max_concurrent_batches if spec.engine == "transformers" else 1
    return source.map_batches(
        ContinuousThinkingWorker if in_flight > 1 else ThinkingWorker,
        fn_constructor_kwargs={"spec": spec, "generation": generation},
        batch_size=generation.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(
            size=placement.workers, **({"max_tasks_in_flight_per_actor": in_flight} if in_flight > 1 else {})
        ),
        max_concurrency=in_flight,
        num_cpus=placement.cpus_per_worker,
        num_gpus=placement.gpus_per_worker or None,
        max_restarts=-1,
        max_task_retries=BATCH_RETRIES,
    )


def trajectory_batch(batch: pa.Table, spec: EngineSpec, generation: GenerationConfig) -> pa.Table:
    """A batch from ``thinking_stage`` in the trajectory schema."""
    if spec.engine == "vllm":
        batch = vllm_processor.finish_batch(batch, generation)
    for column in OUTPUT_SCHEMA:  # Ray Data leaves out a column that is null in every row of a block
        if column.name not in batch.column_names:
            batch = batch.append_column(column.name, pa.nulls(batch.num_rows, column.type))
    return batch.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)


def _check_fits(cluster: Mapping[str, float], placement: WorkerPlacement) -> None:
    for resource, per_worker in (("GPU", placement.gpus_per_worker), ("CPU", placement.cpus_per_worker)):
        have = cluster.get(resource, 0.0)
        if per_worker > have:
            raise PlacementError(
                f"the generator asks for {per_worker:g} {resource} per worker, the Ray cluster has {have:g}; "
                "set the generator resource's workers / gpus_per_worker / cpus_per_worker to fit"
            )


def _root_cause(exc: BaseException) -> str:
    """The last line of the deepest message in the chain: Ray puts the worker's own error there."""
    found = ""
    while exc is not None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines:
            found = lines[-1]
        exc = exc.__cause__ or exc.__context__
    return found[:300] or "no message"
