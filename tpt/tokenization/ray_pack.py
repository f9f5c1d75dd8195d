"""Tokenize + pack one Ray task per corpus shard; each task reads its own parquet, so only paths cross the wire, and
reserves the memory it was measured to use, so Ray does not start more of them than a node holds."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tpt.atomic import read_json
from tpt.errors import InputError
from tpt.paths import read_metadata, read_table
from tpt.progress import Progress
from tpt.tokenization.pack import index_path_for, tokenize_and_pack

BATCH_ROWS = 4096
# What a packing task reserves (Ray's ``memory=``), measured with benchmarks/measure_pack_memory.py: a task's peak
# RSS above its loaded tokenizer was 5.2x the shard's uncompressed text at 10k documents, 4.6x at 40k (the Arrow
# table, each document's tokens, the packed array, allocator slack); plus the worker process itself.
MEMORY_PER_TEXT_BYTE = 6.0
MEMORY_BASE_BYTES = 768 * 2**20  # the worker with transformers and the tokenizer loaded: 690 MB measured


def task_memory(source_parquet: str) -> int:
    """Bytes a packing task reserves for this shard, from the parquet footer alone (nothing is read)."""
    meta = read_metadata(source_parquet)
    names = meta.schema.names
    text = sum(
        meta.row_group(i).column(names.index("text")).total_uncompressed_size for i in range(meta.num_row_groups)
    )
    return int(MEMORY_BASE_BYTES + MEMORY_PER_TEXT_BYTE * text)


@dataclass(frozen=True)
class PackJob:
    source_parquet: str
    out_path: str  # .bin; the .json index beside it is written last and marks the shard done


def pack_parquet(job: PackJob, tokenizer_dir: str, seq_len: int) -> dict:
    # Ray reserved one CPU for this task; a tokenizer thread pool per task would oversubscribe the node.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    table = read_table(job.source_parquet, columns=["source", "text"])
    batches = table.to_batches(max_chunksize=BATCH_ROWS)  # Python strings for one batch at a time, not the shard
    texts = (t for b in batches for t in b.column("text").to_pylist())
    sources = (s for b in batches for s in b.column("source").to_pylist())
    return tokenize_and_pack(texts, tokenizer_dir, seq_len, job.out_path, sources=sources).as_metadata()


def pack_on_ray(
    jobs: Sequence[PackJob], tokenizer_dir: str, seq_len: int, log: Callable[[str], None]
) -> tuple[list[dict], int]:
    """Index of every job's shard (in job order) and how many were packed now; finished shards are not redone."""
    import ray

    results: dict[int, dict] = {}
    pending = {}
    for i, job in enumerate(jobs):
        index = index_path_for(job.out_path)
        if index.exists():
            results[i] = read_json(index)
        else:
            pending[i] = job
    if pending:
        remote = ray.remote(num_cpus=1)(pack_parquet)
        refs = {
            remote.options(memory=task_memory(job.source_parquet)).remote(job, tokenizer_dir, seq_len): i
            for i, job in pending.items()
        }
        progress = Progress("tokenize+pack shards", len(refs), log, unit="tokens", interval_s=10)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            try:
                stats = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # bad input keeps its one-line message; packed shards stay
                if isinstance(exc.cause, InputError):
                    raise exc.cause from None
                raise
            results[refs[ready[0]]] = stats
            progress.advance(1, amount=stats["n_real_tokens"])
    return [results[i] for i in range(len(jobs))], len(pending)


def shard_out_path(folder: Path, shard: str) -> Path:
    return folder / f"{shard}.bin"
