"""The training memory estimate (``tpt.training.memory``) against the peak memory real CPU runs reach.

Each case runs ``tpt.training.train`` (2 steps, one micro-batch each, a checkpoint at the end) in a fresh process,
after a one-step warm-up run of a tiny model (which loads the libraries training needs on first use), and measures
the peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` just before training) minus the
resident size at that moment. Peak RSS, not tracemalloc (which sees only Python's own allocator, not
torch's) and not a tensor tracker (which would miss the allocator's and the kernels' own buffers): it is what the
operating system has to give the run. glibc is told to serve every allocation above 64 KiB by mmap
(``MALLOC_MMAP_THRESHOLD_``), so a freed tensor leaves the resident set at once, as it leaves CUDA's allocated
bytes; otherwise freed heap memory stays resident and the peak would count it twice.

    python benchmarks/bench_memory.py            # the table in benchmarks/RESULTS.md
    python benchmarks/bench_memory.py --quick --check 0.25   # two cases, exit 1 if one is off by more than 25%
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tpt.config import ModelShape, TrainingConfig

VOCAB = 49_152  # SmolLM2's tokenizer, the one the embedded experiment uses

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from tpt.config import TrainingConfig
    from tpt.tokenization import PackedShards
    from tpt.training import train

    config_json, shard, tokenizer, out = sys.argv[1:5]
    torch.set_num_threads(2)
    config, shards = TrainingConfig.model_validate_json(config_json), PackedShards([shard])

    def rss_kib(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field))

    # A one-step run of a tiny model first: the libraries that training loads on first use (transformers' LLaMA,
    # DCP, safetensors, the thread pools) stay resident and are not the run's memory.
    tiny = config.model.model_copy(update=dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                               intermediate_size=64))
    warm = config.model_copy(update=dict(model=tiny, batch_tokens=config.seq_len, token_budget=config.seq_len,
                                         micro_batch_size=1))
    train(warm, shards, out + "-warm", tokenizer_dir=tokenizer, log=lambda line: None)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = rss_kib("VmRSS:")
    train(config, shards, out, tokenizer_dir=tokenizer, log=lambda line: None)
    print(json.dumps({"peak_bytes": (rss_kib("VmHWM:") - before) * 1024}))
    """
)


def cases(quick: bool) -> list[tuple[str, TrainingConfig]]:
    small = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256)
    mid = ModelShape(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=768)
    deep = ModelShape(hidden_size=192, num_layers=8, num_heads=6, num_kv_heads=2, intermediate_size=512)

    def config(shape, seq, micro, ac, chunk):
        return TrainingConfig(
            model=shape,
            seq_len=seq,
            batch_tokens=seq * micro,
            token_budget=2 * seq * micro,
            warmup_steps=0,
            micro_batch_size=micro,
            checkpoint_every=2,
            activation_checkpointing=ac,
            loss_chunk_tokens=chunk,
        )

    all_cases = [
        ("h64 L2, seq 256 x 4, whole logits", config(small, 256, 4, False, None)),
        ("h64 L2, seq 256 x 4, whole logits, ckpt", config(small, 256, 4, True, None)),
        ("h256 L4, seq 512 x 4, chunk 512", config(mid, 512, 4, False, 512)),
        ("h256 L4, seq 512 x 4, chunk 512, ckpt", config(mid, 512, 4, True, 512)),
        ("h256 L4, seq 1024 x 2, chunk 256", config(mid, 1024, 2, False, 256)),
        ("h256 L4, seq 1024 x 2, chunk 256, ckpt", config(mid, 1024, 2, True, 256)),
        ("h192 L8, seq 2048 x 1, chunk 512", config(deep, 2048, 1, False, 512)),
        ("h192 L8, seq 2048 x 1, chunk 512, ckpt", config(deep, 2048, 1, True, 512)),
    ]
    return [all_cases[4], all_cases[5]] if quick else all_cases


def measure(config: TrainingConfig, shard: Path, tokenizer_dir: Path) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as out:
        args = [sys.executable, "-c", CHILD, config.model_dump_json(), str(shard), str(tokenizer_dir), out]
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two cases (checkpointing off and on)")
    parser.add_argument("--check", type=float, help="exit 1 if |estimate / measured - 1| exceeds this anywhere")
    args = parser.parse_args()

    from pipelines.experiments import experiment_path
    from tpt.config import load_experiment
    from tpt.models import resolve_model
    from tpt.tokenization import PackedShards, tokenize_and_pack
    from tpt.training import training_memory

    tokenizer_dir = resolve_model(load_experiment(experiment_path("embedded")).tokenizer, weights=False)
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-data-"))
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "with",
        "was",
        "on",
        "be",
        "by",
        "at",
        "this",
        "are",
        "from",
        "or",
        "an",
    ]
    texts = [" ".join(words[(i * j + j // 7) % len(words)] for j in range(2500)) for i in range(24)]
    shards: dict[int, Path] = {}
    print("| case | estimate MiB | measured peak MiB | estimate / measured |\n| --- | --- | --- | --- |")
    worst = 0.0
    for name, config in cases(args.quick):
        if config.seq_len not in shards:
            shards[config.seq_len] = tokenize_and_pack(
                texts, tokenizer_dir, config.seq_len, folder / f"tokens-{config.seq_len}.bin"
            ).path
        assert PackedShards([shards[config.seq_len]]).vocab_size == VOCAB
        estimate = training_memory(config, VOCAB).total
        peak = measure(config, shards[config.seq_len], tokenizer_dir)
        worst = max(worst, abs(estimate / peak - 1))
        print(f"| {name} | {estimate / 2**20:,.0f} | {peak / 2**20:,.0f} | {estimate / peak:.2f} |", flush=True)
    print(f"largest gap: {worst:.1%}")
    if args.check is not None and worst > args.check:
        sys.exit(1)


if __name__ == "__main__":
    main()
