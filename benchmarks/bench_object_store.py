"""The data stages with a local artifact root vs an S3 root on a loopback S3 server, same documents, one run.

    PYTHONPATH=$PWD python benchmarks/bench_object_store.py --documents 20000 --work /tmp/bench-object-store

The scale rehearsal's path (``bench_datapath.py``: its synthetic documents, its experiment with the STAND-IN thinking
engine, both passes through Dagster) once with ``<work>/art`` as the root and catalog, once with
``s3://tpt-artifacts/bench`` on moto's S3 server (``python -m moto.server`` on 127.0.0.1, a process of its own).
Printed: each stage's summed step wall time under both roots, the ratio S3 / local, both passes' wall times. The
loopback server has no network between it and the workers and stores objects in its own memory, so the ratio is
the cost of the object-store path in this code (request round trips, puts of whole files, downloads into the
cache), not of a real store's latency or bandwidth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_datapath  # noqa: E402

from tests.s3 import BUCKET, loopback_s3  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--shard-documents", type=int, default=5_000)
    parser.add_argument("--shards-per-run", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    bench_datapath.write_corpus(args.documents, args.work / "inbox", per_file=args.shard_documents)
    exp = bench_datapath.experiment(args.work, args.shard_documents, args.shards_per_run)
    found = {}
    started = time.perf_counter()
    found["local"] = bench_datapath.rehearse(args.work / "local", exp, root=str(args.work / "local" / "art"))
    print(f"local root: {time.perf_counter() - started:.1f} s", flush=True)
    import ray

    ray.shutdown()  # the S3 pass's workers must start with the server's environment
    with loopback_s3():
        started = time.perf_counter()
        (args.work / "s3").mkdir()
        found["s3"] = bench_datapath.rehearse(args.work / "s3", exp, root=f"s3://{BUCKET}/bench")
        print(f"s3 root: {time.perf_counter() - started:.1f} s", flush=True)
        ray.shutdown()
    report = {"documents": args.documents, "shards": found["local"]["shards"], "stages": {}, "passes": {}}
    local, remote = found["local"]["passes"][0]["steps_s"], found["s3"]["passes"][0]["steps_s"]
    for step in sorted(local):
        if step.rsplit("_", 1)[0] in bench_datapath.STAGES or step in bench_datapath.STAGES:
            ratio = remote[step] / local[step] if local[step] > 0.05 else None
            report["stages"][step] = {
                "local_s": round(local[step], 1),
                "s3_s": round(remote[step], 1),
                "s3_over_local": round(ratio, 2) if ratio else None,
            }
    for name in ("local", "s3"):
        report["passes"][name] = [p["wall_s"] for p in found[name]["passes"]]
    report["first_pass_s3_over_local"] = round(report["passes"]["s3"][0] / report["passes"]["local"][0], 2)
    (args.work / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
