"""What one generation worker does with a batch of documents: prompt, generate, cut at ``</think>``.

A batch that makes the engine raise is bisected: each half is retried, down to the single documents that fail, so a
poison document is recorded with its error and skipped (k poison documents cost about k * log2(batch) extra calls,
not a batch's worth of single-document calls) instead of failing, or endlessly retrying, the whole shard. An error
that says the engine itself is dead is raised instead: Ray replaces the actor and retries the batch.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pyarrow as pa

from tpt.config import GenerationConfig
from tpt.generation.engines import ENGINE_DEAD, Completion, EngineSpec, ThinkingEngine, make_engine, request_seed
from tpt.generation.prompt import BuiltPrompt, build_prompt, extract_thinking

OUTPUT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("request_key", pa.string()),
        ("source", pa.string()),
        ("thinking", pa.string()),
        ("finish_reason", pa.string()),  # stop | length | error
        ("prompt_tokens", pa.int64()),
        ("document_tokens", pa.int64()),
        ("document_cut", pa.bool_()),
        ("output_tokens", pa.int64()),
        ("error", pa.string()),
        ("engine", pa.string()),
        ("batch_wall_s", pa.float64()),
        ("from_cache", pa.bool_()),
        # When the request entered the engine's queue, started running, finished (wall clock, seconds): engine
        # telemetry (running and waiting requests over time) is computed from these.
        ("queued_at", pa.float64()),
        ("started_at", pa.float64()),
        ("finished_at", pa.float64()),
    ]
)
PASSTHROUGH = ("doc_id", "shard", "request_key", "source")
FORCED = "forced_tokens"  # benchmarks only: a document column that makes the engine generate exactly that many tokens
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)


class ThinkingWorker:
    """Callable class for Ray Data ``map_batches``: the engine is built once per actor; one batch at a time."""

    def __init__(self, spec: EngineSpec, generation: GenerationConfig, engine: ThinkingEngine | None = None):
        self.engine = engine or make_engine(spec)
        self.generation = generation

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return asyncio.run(self._process(batch))

    async def _engine_call(self, prompts: list[str], seeds: list[int], forced: list[int] | None) -> list[Completion]:
        extra = {"forced_lengths": forced} if forced is not None else {}
        return list(self.engine.generate(prompts, self.generation.sampling, seeds, **extra))

    async def _process(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        started, started_at = time.perf_counter(), time.time()
        doc_ids = [str(d) for d in batch["doc_id"]]
        g = self.generation
        prompts = [safe_prompt(str(t), self.engine.tokenizer, g) for t in batch["text"]]
        ok = [i for i, p in enumerate(prompts) if isinstance(p, BuiltPrompt)]
        seeds = [request_seed(g.sampling.seed, doc_ids[i]) for i in ok]
        forced = [int(batch[FORCED][i]) for i in ok] if FORCED in batch else None
        try:
            generated = await self._isolating_failures([prompts[i].text for i in ok], seeds, forced)
        except Exception as exc:
            if type(exc).__name__ in ENGINE_DEAD and _in_ray_actor():
                os._exit(1)  # a system failure to Ray: it restarts the actor and retries the batch elsewhere
            raise
        results: list = list(prompts)  # prompt errors stay; the others are replaced by their generation
        for i, result in zip(ok, generated, strict=True):
            results[i] = result
        return self._rows(batch, prompts, results, time.perf_counter() - started, started_at)

    async def _isolating_failures(
        self, prompts: list[str], seeds: list[int], forced: list[int] | None
    ) -> list[Completion | str]:
        try:
            return await self._engine_call(prompts, seeds, forced)
        except Exception as exc:
            if type(exc).__name__ in ENGINE_DEAD:
                raise
            if len(prompts) == 1:  # the poison document is recorded, the shard goes on
                return [_describe(exc)]
        half = len(prompts) // 2
        halves = [(prompts[:half], seeds[:half]), (prompts[half:], seeds[half:])]
        parts = [forced[:half], forced[half:]] if forced is not None else [None, None]
        return [r for (p, s), f in zip(halves, parts, strict=True) for r in await self._isolating_failures(p, s, f)]

    def _rows(self, batch, prompts: list, results: list, wall: float, started_at: float) -> dict[str, list]:
        g, finished_at = self.generation, time.time()
        out: dict[str, list] = {name: [str(v) for v in batch[name]] for name in PASSTHROUGH}
        out |= {name: [] for name in OUTPUT_COLUMNS if name not in PASSTHROUGH}
        for prompt, result in zip(prompts, results, strict=True):
            out["from_cache"].append(False)
            out["document_tokens"].append(prompt.document_tokens if isinstance(prompt, BuiltPrompt) else 0)
            out["document_cut"].append(prompt.cut if isinstance(prompt, BuiltPrompt) else False)
            out["engine"].append(self.engine.version)
            out["batch_wall_s"].append(wall)
            ran = isinstance(result, Completion) and result.started_at is not None  # the engine's own times
            out["queued_at"].append(started_at)
            out["started_at"].append(result.started_at if ran else started_at)
            out["finished_at"].append(result.finished_at if ran else finished_at)
            if isinstance(result, Completion):
                thinking, stopped = extract_thinking(result.text, g.sampling.stop)
                finish = "stop" if stopped else result.finish_reason
                out["thinking"].append(thinking)
                out["finish_reason"].append(finish)
                out["prompt_tokens"].append(result.prompt_tokens)
                out["output_tokens"].append(result.output_tokens)
                out["error"].append(None)
            else:
                out["thinking"].append(None)
                out["finish_reason"].append("error")
                out["prompt_tokens"].append(0)
                out["output_tokens"].append(0)
                out["error"].append(result)
        return out


class ContinuousThinkingWorker(ThinkingWorker):
    """The transformers engine with several batches in flight on one actor (Ray Data async UDF, actor
    ``max_concurrency``): every batch's requests join one decode loop, whose rows (``max_num_seqs``, default the
    batch size) stay full across batch boundaries instead of draining at the end of each batch."""

    def __init__(self, spec: EngineSpec, generation: GenerationConfig, engine: ThinkingEngine | None = None):
        super().__init__(spec, generation, engine)
        self.rows = spec.max_num_seqs or generation.batch_size

    async def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return await self._process(batch)

    async def _engine_call(self, prompts: list[str], seeds: list[int], forced: list[int] | None) -> list[Completion]:
        return await self.engine.generate_async(prompts, self.generation.sampling, seeds, self.rows, forced)


def _in_ray_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def safe_prompt(text: str, tokenizer, g: GenerationConfig) -> BuiltPrompt | str:
    """The prompt, or the one-line error of a document the tokenizer or template cannot take (bad bytes)."""
    try:
        return build_prompt(text, tokenizer, g.prompt, g.max_document_tokens)
    except Exception as exc:
        return _describe(exc)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"
