"""What a full generation will cost, from a sample run through the real stage, before anyone spends it.

The rate is the engines' own while generating (the run's telemetry, from the timestamps of every request), so engine
start-up does not distort it; the output length per document comes from the sample. Both scale linearly: tokens
with documents, hours with tokens over (rate x workers). The estimate is as good as the sample is like the corpus
and the sample's hardware is like the run's, so it is meant to be run where the generation will run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tpt.atomic import read_json
from tpt.generation.shard_runner import SUCCESS, WorkerPlacement
from tpt.paths import parquet_file, read_table


@dataclass(frozen=True)
class CostEstimate:
    sample_documents: int
    total_documents: int
    mean_prompt_tokens: float
    mean_output_tokens: float
    p90_output_tokens: float
    stopped_share: float  # ended at the stop marker rather than the length cap
    output_tokens_per_s_per_worker: float
    workers: int
    gpus_per_worker: float
    estimated_output_tokens: int
    estimated_wall_hours: float
    estimated_gpu_hours: float | None  # None on CPU workers
    estimated_worker_hours: float

    def as_dict(self) -> dict:
        return asdict(self)


def sample_documents(shards: Mapping[str, pa.Table], n: int) -> pa.Table:
    """``n`` documents spread evenly over all shards, the same ones every time."""
    docs = pa.concat_tables([t.select(["doc_id", "source", "text"]) for t in shards.values()])
    if docs.num_rows <= n:
        return docs
    return docs.take(np.linspace(0, docs.num_rows - 1, n).round().astype(int))


def sample_shard_files(shards: Mapping[str, tuple[Path, int]], n: int) -> pa.Table:
    """The documents ``sample_documents`` picks, read from the shard files (name -> (path, documents)): only the row
    groups that hold a picked row, and only the columns the prompt needs, so the sample costs n rows, not the
    corpus."""
    total = sum(rows for _, rows in shards.values())
    picks = np.arange(total) if total <= n else np.linspace(0, total - 1, n).round().astype(int)
    tables, first = [], 0
    for path, rows in shards.values():
        local = picks[(picks >= first) & (picks < first + rows)] - first
        first += rows
        if local.size:
            tables.append(_read_rows(path, local))
    return pa.concat_tables(tables)


def _read_rows(path: Path, rows: np.ndarray) -> pa.Table:
    parquet = parquet_file(path)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    starts = np.cumsum([0, *sizes])
    owner = np.searchsorted(starts, rows, side="right") - 1
    groups = sorted(set(owner.tolist()))
    table = parquet.read_row_groups(groups, columns=["doc_id", "source", "text"])
    before = dict(zip(groups, np.cumsum([0, *(sizes[g] for g in groups)]).tolist(), strict=False))
    return table.take([before[g] + int(r - starts[g]) for g, r in zip(owner.tolist(), rows, strict=True)])


def worker_rate(sample_dir: Path) -> float:
    """Output tokens per second of one engine replica while generating: the shard's engine telemetry where its run
    recorded one, else from the parts' own timings (each part one batch; cache hits were not timed here)."""
    marker = sample_dir / SUCCESS
    telemetry = read_json(marker).get("telemetry") if marker.exists() else None
    if telemetry:
        return float(telemetry["output_tokens_per_s_per_replica"])
    tokens = seconds = 0.0
    for part in sorted(sample_dir.glob("part-*.parquet")):
        table = read_table(part, columns=["output_tokens", "batch_wall_s", "from_cache", "finish_reason"])
        if table.num_rows == 0 or any(table["from_cache"].to_pylist()):
            continue
        tokens += sum(table["output_tokens"].to_pylist())
        seconds += table["batch_wall_s"][0].as_py()
    return tokens / seconds if seconds else 0.0


def estimate(sample: pa.Table, rate: float, total_documents: int, placement: WorkerPlacement) -> CostEstimate:
    ok = [r for r in sample.to_pylist() if r["finish_reason"] != "error"]
    if not ok or rate <= 0:
        raise ValueError("the sample produced no timed, successful generations to estimate from")
    out = np.array([r["output_tokens"] for r in ok], dtype=float)
    total_tokens = float(out.mean()) * total_documents  # a Python float: numpy scalars are not Dagster metadata
    wall_h = total_tokens / (rate * placement.workers) / 3600
    return CostEstimate(
        sample_documents=len(ok),
        total_documents=total_documents,
        mean_prompt_tokens=round(float(np.mean([r["prompt_tokens"] for r in ok])), 1),
        mean_output_tokens=round(float(out.mean()), 1),
        p90_output_tokens=float(np.percentile(out, 90)),
        stopped_share=round(sum(r["finish_reason"] == "stop" for r in ok) / len(ok), 3),
        output_tokens_per_s_per_worker=round(rate, 2),
        workers=placement.workers,
        gpus_per_worker=placement.gpus_per_worker,
        estimated_output_tokens=int(round(total_tokens)),
        estimated_wall_hours=round(wall_h, 4),
        estimated_gpu_hours=round(wall_h * placement.workers * placement.gpus_per_worker, 4)
        if placement.gpus_per_worker
        else None,
        estimated_worker_hours=round(wall_h * placement.workers, 4),
    )
