"""Thinking generation: the bare engine vs our stage, on the same prompts, in one run; prints the tok/s ratio.

bare:  the engine as a user would call it without this project: ``model.generate`` over batches (transformers) or
       one ``LLM.generate`` over all prompts (vLLM), in this process, no Dagster, no Ray. Timed from model load.
stage: ``tpt.generation.shard_runner.generate_shards``: Ray Data actor pool, prompts built in the worker, per-request
       seeds, atomic part files. Timed end to end (Ray actor start and model load included), as a user pays it.
Both also report the rate with start-up excluded (bare: after load; stage: inside the worker, from the batch wall
times the parts record), which is the rate a long shard converges to.

    python benchmarks/bench_generation.py --engine transformers --documents 48
    python benchmarks/bench_generation.py --engine vllm --documents 48 --batch-size 48
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from pipelines.experiments import experiment_path
from tpt.config import GenerationConfig, load_experiment
from tpt.corpus.build import build_corpus, read_shard
from tpt.generation.engines import EngineSpec
from tpt.generation.estimate import worker_rate
from tpt.generation.prompt import build_prompt
from tpt.generation.shard_runner import WorkerPlacement, generate_shards
from tpt.models import resolve_model


def documents(n: int) -> pa.Table:
    experiment = load_experiment(experiment_path("embedded"))
    out = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    manifest, _ = build_corpus(experiment.corpus, out, "bench")
    return pa.concat_tables([read_shard(out, s) for s in manifest.shard_names]).slice(0, n)


def bare_transformers(model_dir: Path, texts: list[str], g: GenerationConfig, threads: int) -> tuple[int, float, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [build_prompt(t, tokenizer, g.prompt, g.max_document_tokens).text for t in texts]
    loaded, out_tokens, s = time.perf_counter(), 0, g.sampling
    for i in range(0, len(prompts), g.batch_size):
        enc = tokenizer(prompts[i : i + g.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.max_thinking_tokens,
                stop_strings=list(s.stop),
                tokenizer=tokenizer,
                pad_token_id=tokenizer.pad_token_id,
            )
        out_tokens += int((out[:, enc["input_ids"].shape[1] :] != tokenizer.pad_token_id).sum())
    end = time.perf_counter()
    return out_tokens, end - started, end - loaded


def bare_vllm(model_dir: Path, texts: list[str], g: GenerationConfig) -> tuple[int, float, float]:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), enforce_eager=True, gpu_memory_utilization=0.2)
    tokenizer = llm.get_tokenizer()
    prompts = [build_prompt(t, tokenizer, g.prompt, g.max_document_tokens).text for t in texts]
    s = g.sampling
    params = SamplingParams(
        temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_thinking_tokens, stop=list(s.stop)
    )
    loaded = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    end = time.perf_counter()
    del llm
    gc.collect()
    return sum(len(o.outputs[0].token_ids) for o in outs), end - started, end - loaded


def stage(model_dir: Path, table: pa.Table, g: GenerationConfig, engine: str, threads: int) -> tuple[int, float, float]:
    import ray

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    spec = EngineSpec(engine, str(model_dir), torch_threads=threads)
    started = time.perf_counter()
    summary = generate_shards({"shard-00000": table}, out, spec, g, WorkerPlacement(), lambda line: None)
    wall = time.perf_counter() - started
    ray.shutdown()
    tokens = summary["shard-00000"].output_tokens
    inside = tokens / worker_rate(out / "shard-00000")
    shutil.rmtree(out)
    return tokens, wall, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the embedded experiment's (8)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    g = load_experiment(experiment_path("embedded")).generation
    g = g.model_copy(update={"engine": args.engine, "batch_size": args.batch_size or g.batch_size})
    model_dir = resolve_model(g.model)
    table = documents(args.documents)
    texts = table["text"].to_pylist()
    if args.engine == "vllm":
        b_tokens, b_total, b_gen = bare_vllm(model_dir, texts, g)
    else:
        b_tokens, b_total, b_gen = bare_transformers(model_dir, texts, g, args.threads)
    s_tokens, s_total, s_gen = stage(model_dir, table, g, args.engine, args.threads)
    print(
        f"engine {args.engine}, documents {len(texts)}, batch {g.batch_size}, "
        f"max_new_tokens {g.sampling.max_thinking_tokens}, threads {args.threads}"
    )
    for name, tokens, total, gen in (("bare ", b_tokens, b_total, b_gen), ("stage", s_tokens, s_total, s_gen)):
        print(
            f"{name}: {tokens} output tokens; end to end {total:.1f}s = {tokens / total:.1f} tok/s; "
            f"generation only {gen:.1f}s = {tokens / gen:.1f} tok/s"
        )
    print(f"ratio stage/bare, end to end: {(s_tokens / s_total) / (b_tokens / b_total):.3f}")
    print(f"ratio stage/bare, generation only: {(s_tokens / s_gen) / (b_tokens / b_gen):.3f}")


if __name__ == "__main__":
    main()
