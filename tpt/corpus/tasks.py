"""Run a corpus build's independent tasks: as Ray tasks (one CPU each, on any node) or one after another here.

Both paths call the same functions with the same arguments (paths and small values, never documents), so the local
path is the Ray path without the scheduler; tests and the embedded default use it, a cluster build sets
``corpus.build_on_ray`` or joins a Ray address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tpt.errors import InputError
from tpt.progress import Progress


def run_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    *,
    on_ray: bool,
    what: str,
    log: Callable[[str], None],
    done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``fn(*call)`` for every call, results in call order; ``done(i, result)`` as each finishes (in completion
    order on Ray), so the caller can record progress that a restart skips. Bad input keeps its one-line error."""
    results: dict[int, Any] = {}
    progress = Progress(what, len(calls), log, unit="tasks", interval_s=15)
    if not on_ray:
        for i, call in enumerate(calls):
            results[i] = fn(*call)
            if done:
                done(i, results[i])
            progress.advance(1)
        return [results[i] for i in range(len(calls))]
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(fn)  # a lost worker is retried; tasks are idempotent
    refs = {remote.remote(*call): i for i, call in enumerate(calls)}
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, InputError):
                raise exc.cause from None
            raise
        results[refs[ready[0]]] = result
        if done:
            done(refs[ready[0]], result)
        progress.advance(1)
    return [results[i] for i in range(len(calls))]
