"""The catalog's memory in the process that writes it (the Dagster process): its growth while N document rows are
upserted in the corpus stage's 65,536-row batches, one fresh process per N, for the merge as shipped; pass
``--tree`` to measure another checkout's catalog (for example main's) on the same rows.

    python benchmarks/bench_catalog_memory.py                         # N = 100k, 1M, 3M
    python benchmarks/bench_catalog_memory.py --tree /path/to/other/checkout
    python benchmarks/bench_catalog_memory.py --rows 800000 3000000 --batch 3000000  # one upsert, one huge delta

Growth is the peak resident set (VmHWM, reset just before the first write) minus the resident set then: it should
stop growing once merges start (about 600k rows), whatever N.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

BATCH = 65536

WRITER = """
import json, sys, tempfile, time
import numpy as np, pyarrow as pa
from tpt.catalog import Catalog

def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) // 1024

n, batch = int(sys.argv[1]), int(sys.argv[2])
catalog = Catalog(tempfile.mkdtemp() + "/catalog")
one = {"experiment": ["e"], "corpus_version": ["c0"], "doc_id": ["x"], "source": ["w"], "shard": ["s"], "n_chars": [1]}
catalog.upsert("documents", pa.table(one))  # libraries loaded before the baseline
baseline = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
rng, started = np.random.default_rng(0), time.perf_counter()
for start in range(0, n, batch):
    k = min(batch, n - start)
    ids = [f"{v:032x}" for v in rng.integers(0, 2**62, k)]
    catalog.upsert("documents", pa.table({
        "experiment": ["e"] * k, "corpus_version": ["c1"] * k, "doc_id": ids, "source": ["web"] * k,
        "shard": [f"shard-{start // 100000:05d}"] * k, "n_chars": rng.integers(200, 20000, k),
    }))
wall = round(time.perf_counter() - started, 1)
files = len(catalog.store.files("documents"))
print("RESULT", json.dumps({"rows": n, "wall_s": wall, "growth_mb": status("VmHWM") - baseline, "files": files}))
"""


def measure(tree: Path, rows: int, batch: int = BATCH) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", WRITER, str(rows), str(batch)], env=env, check=True,
                         capture_output=True, text=True, cwd=tree).stdout  # fmt: skip
    return json.loads(re.search(r"RESULT (\{.*\})", out).group(1))  # after any progress bar DuckDB drew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per upsert (one huge delta: --batch N)")
    args = parser.parse_args()
    print("| rows | upsert wall s | peak growth MB | files |\n| --- | --- | --- | --- |")
    for rows in args.rows:
        m = measure(args.tree, rows, args.batch)
        print(f"| {m['rows']:,} | {m['wall_s']} | {m['growth_mb']} | {m['files']} |")


if __name__ == "__main__":
    main()
