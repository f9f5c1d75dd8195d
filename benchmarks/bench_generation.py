"""Thinking generation: the bare engine vs our stage, on the same prompts, in one run.

bare:  ``model.generate`` in this process (no Dagster, no Ray), model loaded before the clock starts.
stage: ``tpt.generation.shard_runner.generate_shard`` through Ray Data and its actor pool, clock around the whole
       call (actor start, model load, part files and all), which is what a user pays.

    python benchmarks/bench_generation.py --documents 48
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.experiments import experiment_path
from tpt.config import load_experiment
from tpt.corpus.build import build_corpus, read_shard
from tpt.generation.engines import EngineSpec
from tpt.generation.prompt import build_prompt
from tpt.generation.shard_runner import WorkerPlacement, generate_shard
from tpt.models import resolve_model


def documents(n: int) -> pa.Table:
    experiment = load_experiment(experiment_path("embedded"))
    out = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    manifest, _ = build_corpus(experiment.corpus, out, "bench")
    table = pa.concat_tables([read_shard(out, s) for s in manifest.shard_names])
    return table.slice(0, n)


def bare(model_dir: Path, texts: list[str], generation, threads: int) -> tuple[int, float]:
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [build_prompt(t, tokenizer, generation.prompt, generation.max_document_tokens).text for t in texts]
    s = generation.sampling
    out_tokens, started = 0, time.perf_counter()
    for i in range(0, len(prompts), generation.batch_size):
        enc = tokenizer(
            prompts[i : i + generation.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
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
        out_tokens += int((new != tokenizer.pad_token_id).sum())
    return out_tokens, time.perf_counter() - started


def stage(model_dir: Path, table: pa.Table, generation, threads: int) -> tuple[int, float]:
    import ray

    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
    shard_dir = Path(tempfile.mkdtemp(prefix="bench-shard-")) / "shard-00000"
    spec = EngineSpec("transformers", str(model_dir), torch_threads=threads)
    started = time.perf_counter()
    summary = generate_shard(table, shard_dir, spec, generation, WorkerPlacement(), lambda line: None)
    wall = time.perf_counter() - started
    ray.shutdown()
    shutil.rmtree(shard_dir.parent)
    return summary.output_tokens, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    experiment = load_experiment(experiment_path("embedded"))
    generation = experiment.generation
    model_dir = resolve_model(generation.model)
    table = documents(args.documents)
    texts = table["text"].to_pylist()
    b_tokens, b_wall = bare(model_dir, texts, generation, args.threads)
    s_tokens, s_wall = stage(model_dir, table, generation, args.threads)
    b_rate, s_rate = b_tokens / b_wall, s_tokens / s_wall
    sampling = generation.sampling
    print(f"documents {len(texts)}, batch {generation.batch_size}, max_new_tokens {sampling.max_thinking_tokens}")
    print(f"bare  engine: {b_tokens} output tokens in {b_wall:.1f}s = {b_rate:.1f} tok/s")
    print(f"our   stage : {s_tokens} output tokens in {s_wall:.1f}s = {s_rate:.1f} tok/s (Ray Data actor, end to end)")
    print(f"ratio stage/bare: {s_rate / b_rate:.3f}")


if __name__ == "__main__":
    main()
