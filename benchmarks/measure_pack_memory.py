"""Peak memory of one token-packing task, which ``tpt.tokenization.ray_pack.task_memory`` reserves from.

Each size runs in a fresh process: a shard of n realistic documents (the evals wheel's OpenWebText excerpts, each
made distinct) is written first, then ``pack_parquet`` packs it with the embedded tokenizer, and the process's peak
RSS above its loaded tokenizer is divided by the shard's uncompressed text bytes (the parquet footer's figure).

    PYTHONPATH=$PWD python benchmarks/measure_pack_memory.py 10000 40000
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent


def prepare(n: int, path: Path) -> None:
    from tpt.offline import read_member

    lines = read_member("evals", "evals/registry/data/schelling_point/owt_5.jsonl").decode().splitlines()
    base = [json.loads(line)["0"] for line in lines if line.strip()]
    texts = [f"{base[i % len(base)]} (variant {i})" for i in range(n)]
    sources = ["web", "wiki"] * (n // 2) + ["web"] * (n % 2)
    pq.write_table(pa.table({"doc_id": [f"{i:032x}" for i in range(n)], "source": sources, "text": texts}), path)


def measure(path: Path) -> dict:
    from tpt.config import Experiment
    from tpt.models import resolve_model
    from tpt.tokenization.ray_pack import PackJob, pack_parquet, task_memory
    from tpt.tokenization.tokenizer import load_tokenizer

    experiment = Experiment.model_validate(yaml.safe_load((ROOT / "pipelines/experiments/embedded.yaml").read_text()))
    tokenizer = str(resolve_model(experiment.tokenizer, weights=False))
    load_tokenizer(tokenizer)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    pack_parquet(PackJob(str(path), str(path.with_suffix(".bin"))), tokenizer, 1024)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    meta = pq.read_metadata(path)
    text = sum(meta.row_group(i).column(2).total_uncompressed_size for i in range(meta.num_row_groups))
    return {
        "documents": meta.num_rows,
        "text_MB": round(text / 1e6, 1),
        "process_before_MB": round(base / 1e6, 1),
        "peak_growth_MB": round((peak - base) / 1e6, 1),
        "growth_per_text_byte": round((peak - base) / text, 2),
        "reserved_MB": round(task_memory(str(path)) / 1e6, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    if sys.argv[1] == "--measure":
        print(json.dumps(measure(Path(sys.argv[2]))))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for n in map(int, sys.argv[1:]):
                shard = Path(tmp) / f"shard-{n}.parquet"
                prepare(n, shard)
                subprocess.run([sys.executable, __file__, "--measure", str(shard)], check=True)
