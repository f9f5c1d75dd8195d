"""Engine telemetry of one run, from the timestamps every generated row carries (queued, started, finished).

Counting from the rows, not from the engine's own log, keeps the figures exact on every engine and across resumes:
the running and waiting request counts over time follow from the intervals (a sweep over start and end events), and
the time-averaged counts are the intervals' total length over the span (Little's law). KV-cache use and
prefix-cache hits are not in the rows that ray.data.llm returns (it exports them to Ray's Prometheus endpoint only,
with ``log_engine_metrics``), so they are absent here rather than guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class EngineTelemetry:
    replicas: int
    generating_s: float  # first request started .. last request finished, this run
    output_tokens: int
    output_tokens_per_s: float  # all replicas together, while generating
    output_tokens_per_s_per_replica: float
    mean_running_per_replica: float  # time-averaged sequences in the engine (the batch it decodes)
    peak_running_per_replica: float
    mean_waiting_per_replica: float  # queued in the engine, not yet scheduled
    max_num_seqs: int | None  # the engine's limit, where known: mean_running / max_num_seqs is how full it ran
    gpu_hours: float | None  # wall time of the run x GPUs held; None on CPU workers

    def as_dict(self) -> dict:
        return asdict(self)


def measure(
    rows: pa.Table, replicas: int, wall_s: float, gpus_per_replica: float, max_num_seqs: int | None
) -> EngineTelemetry | None:
    """Telemetry over ``rows`` (this run's generated rows); None when none carries timestamps."""
    ok = rows.filter(pc.and_(pc.not_equal(rows["finish_reason"], "error"), pc.is_valid(rows["finished_at"])))
    if ok.num_rows == 0:
        return None
    queued, started, finished = (
        ok[c].to_numpy(zero_copy_only=False).astype(float) for c in ("queued_at", "started_at", "finished_at")
    )
    span = float(finished.max() - started.min())
    tokens = int(pc.sum(ok["output_tokens"]).as_py() or 0)
    rate = tokens / span if span > 0 else 0.0
    return EngineTelemetry(
        replicas=replicas,
        generating_s=round(span, 3),
        output_tokens=tokens,
        output_tokens_per_s=round(rate, 2),
        output_tokens_per_s_per_replica=round(rate / replicas, 2),
        mean_running_per_replica=round(float((finished - started).sum()) / span / replicas, 2) if span else 0.0,
        peak_running_per_replica=round(_peak(started, finished) / replicas, 2),
        mean_waiting_per_replica=round(float((started - queued).sum()) / span / replicas, 2) if span else 0.0,
        max_num_seqs=max_num_seqs,
        gpu_hours=round(wall_s * replicas * gpus_per_replica / 3600, 5) if gpus_per_replica else None,
    )


def _peak(starts: np.ndarray, ends: np.ndarray) -> int:
    events = np.concatenate([np.stack([starts, np.ones_like(starts)], 1), np.stack([ends, -np.ones_like(ends)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # at equal times an end comes before a start
    return int(np.cumsum(events[:, 1]).max())
