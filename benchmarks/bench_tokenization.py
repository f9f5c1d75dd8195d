"""Tokenize + pack: bare ``tokenizers`` batch encoding vs our stage on the same text, per core; our stage on 1 vs 2
Ray workers. Prints the ratios.

bare:   ``tokenizers.Tokenizer.encode_batch_fast`` over the texts in batches, ids collected, one thread
        (``TOKENIZERS_PARALLELISM=false``), tokenizer loaded before the clock.
stage:  ``tpt.tokenization.ray_pack.pack_on_ray``: one Ray task per shard (1 CPU each, one tokenizer thread each),
        each reading its parquet, tokenizing per source, packing, writing the token file and index. Timed from job
        submission (Ray started before the clock; worker start and tokenizer load inside it).

The text is the embedded default's two offline sources read in full (2,000 short OpenWebText and Wikipedia
documents, 1.3 MB), each document repeated ``--copies`` times (64: 85 MB, ~20M tokens, so that a run takes long
enough for start-up costs to count only as much as they would on a real shard), split into ``--shards`` shards.
Both sides see the same repetition, so the tokenizer's word cache helps both alike.

    python benchmarks/bench_tokenization.py --copies 64 --shards 8 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # per core: one tokenizer thread, on both sides

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipelines.experiments import experiment_path  # noqa: E402
from tpt.config import load_experiment  # noqa: E402
from tpt.corpus.sources import iter_texts  # noqa: E402
from tpt.models import resolve_model  # noqa: E402
from tpt.skips import Skips  # noqa: E402
from tpt.tokenization.ray_pack import PackJob, pack_on_ray  # noqa: E402

SEQ_LEN = 2048


def sample(shards: int, copies: int, folder: Path) -> tuple[list[str], list[Path]]:
    experiment = load_experiment(experiment_path("embedded"))
    rows = []
    for source in experiment.corpus.sources:
        unlimited = source.model_copy(update={"max_documents": None})
        rows += [(source.name, text) for text in iter_texts(unlimited, Skips(), 2**31)] * copies
    paths = []
    for k in range(shards):
        part = rows[k::shards]
        path = folder / f"shard-{k:05d}.parquet"
        pq.write_table(pa.table({"source": [s for s, _ in part], "text": [t for _, t in part]}), path)
        paths.append(path)
    return [t for _, t in rows], paths


def bare(tokenizer_file: Path, texts: list[str], batch_size: int = 512) -> tuple[int, float]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    started, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), batch_size):
        ids = [e.ids for e in tokenizer.encode_batch_fast(texts[i : i + batch_size], add_special_tokens=True)]
        tokens += sum(map(len, ids))
    return tokens, time.perf_counter() - started


def stage(tokenizer_dir: Path, paths: list[Path], workers: int) -> tuple[int, float, float]:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    jobs = [PackJob(str(p), str(out / f"{p.stem}.bin")) for p in paths]
    started = time.perf_counter()
    indexes, _ = pack_on_ray(jobs, str(tokenizer_dir), SEQ_LEN, lambda line: None)
    wall = time.perf_counter() - started
    ray.shutdown()
    shutil.rmtree(out)
    tokens = sum(i["n_real_tokens"] - i["n_documents"] for i in indexes)  # EOS is the packer's, not text
    in_tasks = sum(i["wall_s"] for i in indexes) / workers  # read + tokenize + pack + write, start-up excluded
    return tokens, wall, in_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=64)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="the three measurements alternate; medians reported")
    args = parser.parse_args()
    tokenizer_dir = resolve_model(load_experiment(experiment_path("embedded")).tokenizer, weights=False)
    folder = Path(tempfile.mkdtemp(prefix="bench-text-"))
    texts, paths = sample(args.shards, args.copies, folder)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    runs: dict[str, list[tuple[int, float, float]]] = {"bare": [], "stage_1": [], "stage_2": []}
    for _ in range(args.repeats):
        tokens, wall = bare(tokenizer_dir / "tokenizer.json", texts)
        runs["bare"].append((tokens, wall, wall))
        runs["stage_1"].append(stage(tokenizer_dir, paths, 1))
        runs["stage_2"].append(stage(tokenizer_dir, paths, 2))
    print(
        f"{len(texts)} documents, {megabytes:.1f} MB, {args.shards} shards, seq_len {SEQ_LEN}, {args.repeats} repeats"
    )
    rate, steady = {}, {}
    for name, results in runs.items():
        for tokens, wall, busy in results:
            print(
                f"{name:8}: {tokens} tokens in {wall:.2f}s = {tokens / wall:,.0f} tok/s; in tasks {tokens / busy:,.0f}"
            )
        rate[name] = statistics.median(t / w for t, w, _ in results)
        steady[name] = statistics.median(t / b for t, _, b in results)
    for label, r in (("end to end", rate), ("start-up excluded", steady)):
        print(f"median ratio stage (1 worker) / bare, per core, {label}: {r['stage_1'] / r['bare']:.3f}")
        print(f"median ratio stage 2 workers / 1 worker, {label}: {r['stage_2'] / r['stage_1']:.3f}")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
