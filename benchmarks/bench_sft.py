"""SFT step rate: our loop (``tpt.training.train`` on ``SFTSequences``) vs a bare torch SFT loop, same data and masking.

Data: the embedded_midtrain SFT sources (evals-registry word problems, all samples), rendered with SmolLM2's chat
template, one conversation per padded sequence, loss on assistant tokens only. Model: a small LLaMA on SmolLM2's
vocabulary saved as a checkpoint, so both loops start from the same weights (``training.init``).

bare:  ``AutoModelForCausalLM`` + AdamW, ``labels=`` with -100 outside assistant tokens, the same micro-batches
       cut to their longest conversation (dynamic padding, as the loop does), each micro-batch's mean loss weighted
       by its share of the batch's targets; nothing else.
ours:  ``train()`` as the sft_checkpoint asset calls it (deterministic algorithms, masked loss, grad clipping, LR
       schedule, checkpoints every ``steps // 2``, progress); its tokens/s is measured over the steps, as the bare one.

    python benchmarks/bench_sft.py --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from pipelines.experiments import experiment_path
from tpt.config import ModelSource, load_experiment
from tpt.models import resolve_model
from tpt.sft import SFTSequences, build_sft_sequences
from tpt.tokenization import load_tokenizer
from tpt.training import train
from tpt.training.data import DataOrder
from tpt.training.loop import IGNORE


def bare(config, data: SFTSequences, init_dir: Path, steps: int) -> float:
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=0.0)
    order, per_step = DataOrder(len(data), config.seed), config.batch_tokens // config.seq_len
    started = time.perf_counter()
    for step in range(steps):
        ids, lengths, mask = data.batch(order.indices(step * per_step, per_step))
        labels = torch.from_numpy(ids).masked_fill(~torch.from_numpy(mask), IGNORE)
        total = int((labels[:, 1:] != IGNORE).sum())
        optimizer.zero_grad(set_to_none=True)
        for lo in range(0, per_step, config.micro_batch_size):
            width = int(lengths[lo : lo + config.micro_batch_size].max())  # dynamic padding, as HF's collators do
            x = torch.from_numpy(ids[lo : lo + config.micro_batch_size, :width])
            y = labels[lo : lo + config.micro_batch_size, :width]
            share = int((y[:, 1:] != IGNORE).sum()) / max(total, 1)
            (model(input_ids=x, labels=y).loss * share).backward()
        optimizer.step()
    return steps * config.batch_tokens / (time.perf_counter() - started)


def ours(config, data: SFTSequences, init_dir: Path, tokenizer_dir: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    return train(config, data, out, tokenizer_dir=tokenizer_dir, init_dir=init_dir, log=lambda line: None).tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="bare and ours alternate; medians are reported")
    args = parser.parse_args()
    experiment = load_experiment(experiment_path("embedded_midtrain"))
    sft = experiment.sft.model_copy(
        update={"sources": [s.model_copy(update={"max_samples": None}) for s in experiment.sft.sources]}
    )
    tokenizer_dir = resolve_model(experiment.tokenizer)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-data-"))
    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).save_pretrained(work / "init")
    tokenizer.save_pretrained(work / "init")
    data, report = build_sft_sequences(sft, tokenizer_dir, work / "data")
    config = sft.training(ModelSource(kind="local", name=str(work / "init")), len(data))
    config = config.model_copy(
        update={"token_budget": args.steps * config.batch_tokens, "checkpoint_every": max(args.steps // 2, 1)}
    )
    print(
        f"{report['samples']} conversations, {report['assistant_tokens']} assistant tokens; seq_len {config.seq_len}, "
        f"{config.batch_tokens // config.seq_len} sequences a step in micro-batches of {config.micro_batch_size}, "
        f"{args.steps} steps, {torch.get_num_threads()} threads"
    )
    rates: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(args.repeats):
        rates["bare"].append(bare(config, data, work / "init", args.steps))
        rates["ours"].append(ours(config, data, work / "init", work / "init"))
    for name, values in rates.items():
        print(f"{name}: " + ", ".join(f"{v:,.0f}" for v in values) + " tokens/s")
    print(f"median ratio ours/bare: {statistics.median(rates['ours']) / statistics.median(rates['bare']):.3f}")


if __name__ == "__main__":
    main()
