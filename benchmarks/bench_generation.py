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
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from pipelines.experiments import experiment_path
from tpt.config import GenerationConfig, load_experiment
from tpt.corpus.build import build_corpus, read_shard
from tpt.devices import vllm_device_args
from tpt.generation.engines import EngineSpec, request_seed
from tpt.generation.estimate import worker_rate
from tpt.generation.prompt import build_prompt
from tpt.generation.shard_runner import WorkerPlacement, generate_shards
from tpt.models import resolve_model


def documents(n: int) -> pa.Table:
    experiment = load_experiment(experiment_path("embedded"))
    out = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    manifest, _ = build_corpus(experiment.corpus, out, "bench")
    return pa.concat_tables([read_shard(out, s) for s in manifest.shard_names]).slice(0, n)


def bare_transformers(model_dir: Path, table: pa.Table, g: GenerationConfig, threads: int) -> tuple[int, float, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts, ids = table["text"].to_pylist(), table["doc_id"].to_pylist()
    prompts = [build_prompt(t, tokenizer, g.prompt, g.max_document_tokens).text for t in texts]
    loaded, out_tokens, s = time.perf_counter(), 0, g.sampling
    for i in range(0, len(prompts), g.batch_size):
        enc = tokenizer(prompts[i : i + g.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        # The stage's seeding, so both sample the very same tokens and do the very same work.
        torch.manual_seed(hash(tuple(request_seed(s.seed, d) for d in ids[i : i + g.batch_size])) & 0xFFFFFFFF)
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
        new = out[:, enc["input_ids"].shape[1] :]
        out_tokens += int((new != tokenizer.pad_token_id).sum() + (new == tokenizer.pad_token_id).any(dim=1).sum())
    end = time.perf_counter()
    return out_tokens, end - started, end - loaded


def bare_vllm(model_dir: Path, table: pa.Table, g: GenerationConfig) -> tuple[int, float, float]:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), **vllm_device_args(on_gpu=False))  # the settings vLLM needs on a CPU
    tokenizer = llm.get_tokenizer()
    prompts = [build_prompt(t, tokenizer, g.prompt, g.max_document_tokens).text for t in table["text"].to_pylist()]
    s = g.sampling
    params = [  # the stage's per-document seeds, so both sample the same tokens
        SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_thinking_tokens,
            stop=list(s.stop),
            seed=request_seed(s.seed, d),
        )
        for d in table["doc_id"].to_pylist()
    ]
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
    placement = WorkerPlacement(cpus_per_worker=threads)  # what the generator resource reserves on CPU
    summary = generate_shards({"shard-00000": table}, out, spec, g, placement, lambda line: None)
    wall = time.perf_counter() - started
    print("CPU seconds by process during the stage:", ray_cpu_seconds(), flush=True)
    ray.shutdown()
    tokens = summary["shard-00000"].output_tokens
    inside = tokens / worker_rate(out / "shard-00000")
    shutil.rmtree(out)
    return tokens, wall, inside


def ray_cpu_seconds() -> dict[str, float]:
    """CPU time of the Ray processes (all started by this stage's ``ray.init``): where the 2 cores went."""
    import psutil

    seconds: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ray" not in cmdline or proc.info["cpu_times"] is None:
            continue
        name = cmdline.split()[0].rsplit("/", 1)[-1][:40]
        seconds[name] = seconds.get(name, 0.0) + proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the embedded experiment's (8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="bare and stage alternate; medians are reported")
    args = parser.parse_args()
    g = load_experiment(experiment_path("embedded")).generation
    g = g.model_copy(update={"engine": args.engine, "batch_size": args.batch_size or g.batch_size})
    model_dir = resolve_model(g.model)
    table = documents(args.documents)
    runs: dict[str, list[tuple[int, float, float]]] = {"bare": [], "stage": []}
    for _ in range(args.repeats):  # alternating, so a slow spell of a shared machine hits both sides alike
        if args.engine == "vllm":
            runs["bare"].append(bare_vllm(model_dir, table, g))
        else:
            runs["bare"].append(bare_transformers(model_dir, table, g, args.threads))
        runs["stage"].append(stage(model_dir, table, g, args.engine, args.threads))
    print(
        f"engine {args.engine}, documents {table.num_rows}, batch {g.batch_size}, "
        f"max_new_tokens {g.sampling.max_thinking_tokens}, threads {args.threads}, repeats {args.repeats}"
    )
    rates = {}
    for name, results in runs.items():
        for tokens, total, gen in results:
            print(
                f"{name:5}: {tokens} output tokens; end to end {total:.1f}s = {tokens / total:.1f} tok/s; "
                f"generation only {gen:.1f}s = {tokens / gen:.1f} tok/s"
            )
        rates[name] = (statistics.median(t / a for t, a, _ in results), statistics.median(t / b for t, _, b in results))
    print(f"median ratio stage/bare, end to end: {rates['stage'][0] / rates['bare'][0]:.3f}")
    print(f"median ratio stage/bare, generation only: {rates['stage'][1] / rates['bare'][1]:.3f}")


if __name__ == "__main__":
    main()
