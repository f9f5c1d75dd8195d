"""Pretraining step rate: our loop (``tpt.training.train``) vs a bare torch loop on the same model, data and batch.

bare:  the same transformers ``LlamaForCausalLM`` and AdamW, the same sequences in the same order and the same
       micro-batches, with the plain ``labels=`` loss; no checkpoints, no deterministic mode, no progress.
ours:  ``train()`` as the checkpoint asset calls it (deterministic algorithms on CPU, padding-masked loss, grad
       clipping, LR schedule, DCP checkpoints every ``checkpoint_every`` steps, progress); its tokens/s is measured
       over the steps, as the bare one is.

Both run with activation checkpointing off and on (transformers' ``gradient_checkpointing_enable``, non-reentrant,
per decoder layer, in both loops), so each ratio compares like with like.

    python benchmarks/bench_training.py --steps 12 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipelines.experiments import experiment_path
from tpt.config import load_experiment
from tpt.corpus.build import build_corpus, read_shard
from tpt.models import resolve_model
from tpt.tokenization import PackedShards, load_tokenizer, special_ids, tokenize_and_pack
from tpt.training import train
from tpt.training.data import DataOrder
from tpt.training.model import SpecialTokens, build_model, llama_config


def bare(config, shards: PackedShards, tokenizer_dir: Path, steps: int) -> float:
    ids = special_ids(load_tokenizer(tokenizer_dir))
    special = SpecialTokens(eos_id=ids.eos_id, pad_id=ids.pad_id, bos_id=ids.bos_id)
    model = build_model(llama_config(config.model, shards.vocab_size, config.seq_len, special), seed=config.seed)
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    order, per_step = DataOrder(len(shards), config.seed), config.batch_tokens // config.seq_len
    started = time.perf_counter()
    for step in range(steps):
        tokens, _ = shards.batch(order.indices(step * per_step, per_step))
        optimizer.zero_grad(set_to_none=True)
        for lo in range(0, per_step, config.micro_batch_size):
            x = torch.from_numpy(tokens[lo : lo + config.micro_batch_size])
            (model(input_ids=x, labels=x).loss * len(x) / per_step).backward()
        optimizer.step()
    return steps * config.batch_tokens / (time.perf_counter() - started)


def ours(config, shards: PackedShards, tokenizer_dir: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    return train(config, shards, out, tokenizer_dir=tokenizer_dir, log=lambda line: None).tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="bare and ours alternate; medians are reported")
    args = parser.parse_args()
    experiment = load_experiment(experiment_path("embedded"))
    config = experiment.training.model_copy(
        update={"token_budget": args.steps * experiment.training.batch_tokens, "checkpoint_every": args.steps // 2}
    )
    tokenizer_dir = resolve_model(experiment.tokenizer, weights=False)
    corpus_dir = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    manifest, _ = build_corpus(experiment.corpus, corpus_dir, "bench")
    texts = [t for s in manifest.shard_names for t in read_shard(corpus_dir, s)["text"].to_pylist()]
    stats = tokenize_and_pack(texts, tokenizer_dir, config.seq_len, corpus_dir / "tokens.bin")
    shards = PackedShards([stats.path])
    print(
        f"model {experiment.training.model}, seq_len {config.seq_len}, batch {config.batch_tokens} tokens, "
        f"micro-batch {config.micro_batch_size}, {args.steps} steps, {torch.get_num_threads()} threads"
    )
    for checkpointing in (False, True):
        run = config.model_copy(update={"activation_checkpointing": checkpointing})
        rates: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(args.repeats):
            rates["bare"].append(bare(run, shards, tokenizer_dir, args.steps))
            rates["ours"].append(ours(run, shards, tokenizer_dir))
        label = f"activation checkpointing {'on' if checkpointing else 'off'}"
        for name, values in rates.items():
            print(f"{label}, {name}: " + ", ".join(f"{v:,.0f}" for v in values) + " tokens/s")
        ratio = statistics.median(rates["ours"]) / statistics.median(rates["bare"])
        print(f"{label}, median ratio ours/bare: {ratio:.3f}")


if __name__ == "__main__":
    main()
