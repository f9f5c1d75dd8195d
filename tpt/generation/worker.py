"""What one generation worker does with a batch of documents: prompt, generate, cut at ``</think>``.

A batch that makes the engine raise is retried one document at a time, so a poison document is recorded with its
error and skipped instead of failing (or endlessly retrying) the whole shard.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from tpt.config import GenerationConfig
from tpt.generation.engines import ENGINE_DEAD, Completion, EngineSpec, ThinkingEngine, make_engine, request_seed
from tpt.generation.prompt import build_prompt, extract_thinking

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
    ]
)
PASSTHROUGH = ("doc_id", "shard", "request_key", "source")
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)


class ThinkingWorker:
    """Callable class for Ray Data ``map_batches``: the engine is built once per actor."""

    def __init__(self, spec: EngineSpec, generation: GenerationConfig, engine: ThinkingEngine | None = None):
        self.engine = engine or make_engine(spec)
        self.generation = generation

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        started = time.perf_counter()
        doc_ids = [str(d) for d in batch["doc_id"]]
        texts = [str(t) for t in batch["text"]]
        g = self.generation
        prompts = [build_prompt(t, self.engine.tokenizer, g.prompt, g.max_document_tokens) for t in texts]
        seeds = [request_seed(g.sampling.seed, d) for d in doc_ids]
        results = self._generate_isolating_failures([p.text for p in prompts], seeds)
        wall = time.perf_counter() - started
        out: dict[str, list] = {name: [str(v) for v in batch[name]] for name in PASSTHROUGH}
        out |= {name: [] for name in OUTPUT_COLUMNS if name not in PASSTHROUGH}
        for prompt, result in zip(prompts, results, strict=True):
            out["from_cache"].append(False)
            out["document_tokens"].append(prompt.document_tokens)
            out["document_cut"].append(prompt.cut)
            out["engine"].append(self.engine.version)
            out["batch_wall_s"].append(wall)
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

    def _generate_isolating_failures(self, prompts: list[str], seeds: list[int]) -> list[Completion | str]:
        sampling = self.generation.sampling
        try:
            return list(self.engine.generate(prompts, sampling, seeds))
        except Exception as exc:
            if type(exc).__name__ in ENGINE_DEAD:
                raise
            if len(prompts) == 1:  # the poison document is recorded, the shard goes on
                return [_describe(exc)]
        results: list[Completion | str] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            try:
                results.append(self.engine.generate([prompt], sampling, [seed])[0])
            except Exception as exc:
                if type(exc).__name__ in ENGINE_DEAD:
                    raise
                results.append(_describe(exc))
        return results


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"
