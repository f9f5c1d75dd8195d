"""The vLLM path: ray.data.llm's processor, whose async engine replicas stay full while uneven thinking finishes.

Each replica holds up to ``batch_size * max_concurrent_batches`` rows (and lets ``1.1 * max_num_seqs`` of them into
the engine at once): new requests enter as others finish, so a replica runs near ``max_num_seqs`` sequences until
the tail of the whole run, not of each batch. Rows come back per input batch, which is what the shard runner
writes as one part. The library's own error handling is used: a request the engine refuses (a prompt longer than
``max_model_len``) comes back with its error and the rest of its batch is unaffected; a dead engine
(``EngineDeadError``) makes the actor exit so that Ray restarts it and retries the batch.

Prompts are built here, not by the library's chat-template stage, because the document is first cut to
``max_document_tokens`` with the model's tokenizer and the paper's template goes around it.
"""

from __future__ import annotations

from functools import lru_cache, partial

import pyarrow as pa

from tpt.config import GenerationConfig
from tpt.generation.engines import EngineSpec, engine_version, request_seed, vllm_engine_kwargs
from tpt.generation.prompt import BuiltPrompt, extract_thinking
from tpt.generation.worker import OUTPUT_SCHEMA, PASSTHROUGH, safe_prompt

ERROR = "__inference_error__"


@lru_cache(maxsize=4)
def _tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def preprocess(row: dict, model: str, generation: GenerationConfig) -> dict:
    """A corpus row to a vLLM request; a document that cannot become a prompt skips the engine with its error."""
    s = generation.sampling
    prompt = safe_prompt(str(row["text"]), _tokenizer(model), generation)
    built = isinstance(prompt, BuiltPrompt)
    params = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_thinking_tokens,
        "stop": list(s.stop),
        "seed": request_seed(s.seed, str(row["doc_id"])),
    }
    if row.get("forced_tokens"):  # a benchmark's fixed length: the same work on every side of the comparison
        params |= {"max_tokens": int(row["forced_tokens"]), "ignore_eos": True, "stop": []}
    return {name: str(row[name]) for name in PASSTHROUGH} | {
        "prompt": prompt.text if built else " ",
        "sampling_params": params,
        "document_tokens": prompt.document_tokens if built else 0,
        "document_cut": prompt.cut if built else False,
        ERROR: "" if built else prompt,
    }


def postprocess(row: dict, generation: GenerationConfig, engine: str) -> dict:
    """An engine output row to the trajectory schema (see worker.OUTPUT_SCHEMA)."""
    error = row.get(ERROR) or None
    n_out = int(row.get("num_generated_tokens") or 0)
    thinking, stopped = extract_thinking(row.get("generated_text") or "", generation.sampling.stop)
    # The library's rows do not carry vLLM's finish reason: a request that used its whole budget ran out of length.
    finish = "error" if error else ("length" if n_out >= generation.sampling.max_thinking_tokens else "stop")
    metrics = row.get("metrics") or {}
    # Engine-core timestamps are monotonic; anchored to the request's wall-clock arrival they compare across nodes.
    origin = (metrics.get("arrival_time") or 0.0) - (metrics.get("queued_ts") or 0.0)
    taken = row.get("time_taken_llm") or 0.0
    return {name: str(row[name]) for name in PASSTHROUGH} | {
        "thinking": None if error else thinking,
        "finish_reason": "stop" if stopped and not error else finish,
        "prompt_tokens": 0 if error else int(row.get("num_input_tokens") or 0),
        "document_tokens": int(row["document_tokens"]),
        "document_cut": bool(row["document_cut"]),
        "output_tokens": 0 if error else n_out,
        "error": error[:300] if error else None,
        "engine": engine,
        "batch_wall_s": float(taken) if taken > 0 else 0.0,
        "from_cache": False,
        "queued_at": origin + metrics["queued_ts"] if metrics.get("queued_ts") else None,
        "started_at": origin + metrics["scheduled_ts"] if metrics.get("scheduled_ts") else None,
        "finished_at": origin + metrics["last_token_ts"] if metrics.get("last_token_ts") else None,
    }


def finish_batch(batch: pa.Table, generation: GenerationConfig) -> pa.Table:
    """The library passes a failed row around the postprocess, raw: give it the trajectory schema too."""
    if ERROR not in batch.column_names:
        return batch
    engine = engine_version("vllm")
    rows = [postprocess(r, generation, engine) if r.get(ERROR) else r for r in batch.to_pylist()]
    return pa.Table.from_pylist([{k: r.get(k) for k in OUTPUT_SCHEMA.names} for r in rows], schema=OUTPUT_SCHEMA)


def build(spec: EngineSpec, generation: GenerationConfig, workers: int, cpus: float, gpus: float):
    """The ray.data.llm processor for this spec: ``processor(dataset)`` gives trajectory rows."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    tp = spec.tensor_parallel_size
    bundle = {"CPU": cpus / tp} | ({"GPU": gpus / tp} if gpus else {})
    config = vLLMEngineProcessorConfig(
        model_source=spec.model,
        engine_kwargs=vllm_engine_kwargs(spec, on_gpu=gpus > 0),
        concurrency=workers,
        batch_size=generation.batch_size,
        max_concurrent_batches=generation.max_concurrent_batches,
        placement_group_config={"bundles": [bundle] * tp},
        should_continue_on_error=True,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )
    return build_processor(
        config,
        preprocess=partial(preprocess, model=spec.model, generation=generation),
        postprocess=partial(postprocess, generation=generation, engine=engine_version("vllm")),
    )
