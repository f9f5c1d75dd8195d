"""Pretraining step rate: our loop (``tpt.training.train``) vs a bare torch loop on the same model, data and batch.

bare:  the same transformers ``LlamaForCausalLM`` and AdamW, the same sequences in the same order and the same
       micro-batches, with the plain ``labels=`` loss; no checkpoints, no deterministic mode, no progress.
ours:  ``train()`` as the checkpoint asset calls it (deterministic algorithms on CPU, padding-masked loss, grad
       clipping, LR schedule, DCP checkpoints every ``checkpoint_every`` steps, progress); its step times come from
       ``on_step``, the bare loop's from the same clock.

Each loop reports tokens/s over steps 2.. (the first pays for lazy initialisation) and of its fastest step (the
figure least disturbed by other load on a shared machine); ratios are of the medians over alternating repeats.

Both run with activation checkpointing off and on (transformers' ``gradient_checkpointing_enable``, non-reentrant,
per decoder layer, in both loops), so each ratio compares like with like.

    python benchmarks/bench_training.py --steps 8 --repeats 2
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


def bare(config, shards: PackedShards, tokenizer_dir: Path, steps: int) -> list[float]:
    """Seconds per step."""
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
    times = [time.perf_counter()]
    for step in range(steps):
        tokens, _ = shards.batch(order.indices(step * per_step, per_step))
        optimizer.zero_grad(set_to_none=True)
        for lo in range(0, per_step, config.micro_batch_size):
            x = torch.from_numpy(tokens[lo : lo + config.micro_batch_size])
            (model(input_ids=x, labels=x).loss * len(x) / per_step).backward()
        optimizer.step()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def ours(config, shards: PackedShards, tokenizer_dir: Path) -> list[float]:
    """Seconds per step, the first one from the call (it includes building the model, as bare's does not)."""
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    times = [time.perf_counter()]
    train(
        config,
        shards,
        out,
        tokenizer_dir=tokenizer_dir,
        log=lambda line: None,
        on_step=lambda *_: times.append(time.perf_counter()),
    )
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def rates(step_times: list[float], batch_tokens: int) -> tuple[float, float]:
    """(tokens/s over steps 2.., tokens/s of the fastest step): the first step is left out of both (it pays for
    model building in ours and for lazy initialisation in both); the fastest step is the figure least disturbed by
    other load on a shared machine."""
    rest = step_times[1:]
    return batch_tokens * len(rest) / sum(rest), batch_tokens / min(rest)


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
        measured: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
        for _ in range(args.repeats):
            measured["bare"].append(rates(bare(run, shards, tokenizer_dir, args.steps), run.batch_tokens))
            measured["ours"].append(rates(ours(run, shards, tokenizer_dir), run.batch_tokens))
        label = f"activation checkpointing {'on' if checkpointing else 'off'}"
        for name, values in measured.items():
            mean = ", ".join(f"{m:,.0f}" for m, _ in values)
            print(f"{label}, {name}: {mean} tokens/s; fastest step {', '.join(f'{b:,.0f}' for _, b in values)}")
        for i, kind in enumerate(("over steps", "fastest step")):
            ours_rate = statistics.median(v[i] for v in measured["ours"])
            ratio = ours_rate / statistics.median(v[i] for v in measured["bare"])
            print(f"{label}, median ratio ours/bare ({kind}): {ratio:.3f}")


if __name__ == "__main__":
    main()
