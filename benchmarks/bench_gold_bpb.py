"""Cost per item of the continuous metric (gold bits per byte) on CPU, for the embedded student's shape.

A randomly initialised model of the embedded config's shape and tokenizer (what a checkpoint of the embedded run
is, in cost), evaluated through ``run_benchmarks`` with the gold tasks on ``--items`` items per benchmark, one
benchmark per call; the figure is that call's CPU time (this process's, which on a loaded shared machine is the
honest one; the wall time is printed beside it) less the same call without the gold task, per item. The ceiling: the
same model's bare forward pass (one ``seq_len`` sequence, logits and log-softmax as lm-eval's hf backend computes
them), so the ratio shows what lm-eval's request handling adds.

    PYTHONPATH=$PWD python benchmarks/bench_gold_bpb.py --items 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipelines.experiments import experiment_path
from tpt.config import BENCHMARKS, load_experiment
from tpt.evaluation.runner import run_benchmarks
from tpt.models import resolve_model


def student(out: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    experiment = load_experiment(experiment_path("embedded"))
    shape, tokenizer_dir = experiment.training.model, resolve_model(experiment.tokenizer, weights=False)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=experiment.training.seq_len,
        tie_word_embeddings=shape.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def bare_forward_cpu_s(checkpoint: Path, seq_len: int, repeats: int = 5) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len))
    with torch.inference_mode():
        torch.log_softmax(model(ids).logits, dim=-1)
        start = time.process_time()
        for _ in range(repeats):
            torch.log_softmax(model(ids).logits, dim=-1)
    return (time.process_time() - start) / repeats


def cpu_s(checkpoint: Path, benchmark: str, work: Path, batch_size: int, gold_limit: int | None) -> tuple:
    start, wall = time.process_time(), time.perf_counter()
    run = run_benchmarks(
        checkpoint,
        [benchmark],
        work_dir=work,
        limit=1,
        max_gen_toks=1,
        batch_size=batch_size,
        gold=gold_limit is not None,
        gold_limit=gold_limit,
        log=lambda line: None,
    )
    return time.process_time() - start, time.perf_counter() - wall, run.benchmarks[benchmark].gold


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = student(Path(tmp) / "student")
        ceiling = bare_forward_cpu_s(checkpoint, 1024)
        print(f"bare forward + log-softmax, 1 x 1024 tokens: {ceiling:.3f} CPU s")
        for benchmark in BENCHMARKS:
            base, _, _ = cpu_s(checkpoint, benchmark, Path(tmp) / f"{benchmark}-0", args.batch_size, None)
            cpu, wall, gold = cpu_s(checkpoint, benchmark, Path(tmp) / benchmark, args.batch_size, args.items)
            per_item = (cpu - base) / gold.n_items
            print(
                f"{benchmark}: {gold.n_items} items, {cpu - base:.1f} CPU s = {per_item:.3f} CPU s/item "
                f"({per_item / ceiling:.2f}x the bare 1024-token forward; gold task wall {gold.wall_s:.1f} s); "
                f"bpb {gold.bpb.value:.3f} +/- {gold.bpb.stderr:.3f}"
            )


if __name__ == "__main__":
    main()
