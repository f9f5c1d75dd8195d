"""Scale rehearsal of the data path through Dagster: corpus -> thinking -> [d; t] -> token shards -> mixture.

    PYTHONPATH=$PWD python benchmarks/bench_datapath.py --documents 100000 --work /tmp/rehearsal-100k

Synthetic but realistic documents: the evals wheel's OpenWebText and Wikipedia excerpts (DESIGN.md), each document
an excerpt with its sentences rotated and a sentence of another excerpt spliced in, so exact dedup does not
collapse them; planted in them: 1% exact copies of an earlier document, 0.5% near copies (one word changed: near
dedup is off at this scale, as in paper_8b.yaml, so these are kept and counted as planted) and 0.01% documents that
quote a GSM8K test question (decontamination must drop them). The files are written by a child process, so the
figures below are the Dagster process's alone.

The thinking is the STAND-IN engine (``engine: standin``: its "thinking" is the first tokens of its prompt, fast and
deterministic); everything else is the real code: the corpus build's tasks on Ray, the Ray Data pool that reads the
shards and writes the parts, the augment tasks, the packing tasks, the mixture, and every asset check of those
stages. Runs are the ones the new-shards sensor asks for: ``corpus.shards_per_run`` consecutive shards each.

Printed (and written to ``<work>/result.json``): the Dagster process's peak RSS, each stage's summed step wall
time and documents/s, the wall time of a second, unchanged pass, and the planted-document counts found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "corpus",
    "corpus_manifest",
    "thinking_model",
    "generation_cost_estimate",
    "thinking_trajectories",
    "augmented_documents",
    "token_shards_vanilla",
    "token_shards_tpt",
    "data_mixture_vanilla",
    "data_mixture_tpt",
)


def write_corpus(n: int, folder: Path, per_file: int) -> dict:
    """The synthetic documents as jsonl files, one folder per source; returns what was planted."""
    from tpt.evaluation.data import load_docs
    from tpt.offline import read_member

    questions = [d["question"] for d in load_docs("gsm8k").docs]
    bases = {}
    for source, member in (("openwebtext", "owt_5"), ("wikipedia", "wikipedia_5")):
        raw = read_member("evals", f"evals/registry/data/schelling_point/{member}.jsonl").decode()
        bases[source] = [json.loads(line)["0"].split(". ") for line in raw.splitlines() if line.strip()]
    planted = {"exact_copies": 0, "near_copies": 0, "contaminated": 0}
    texts: list[str] = []
    handles = {}
    for source in bases:
        (folder / source).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        source = "openwebtext" if i % 2 == 0 else "wikipedia"
        if i % 100 == 99:
            text = texts[i - 50]
            planted["exact_copies"] += 1
        elif i % 200 == 150:
            words = texts[i - 7].split(" ")
            words[len(words) // 2] = "altered"
            text = " ".join(words)
            planted["near_copies"] += 1
        else:  # a page of three excerpts of its source, one with its sentences rotated: ~1e9 combinations
            pool = bases[source]
            digest = hashlib.sha256(str(i).encode()).digest()
            a, b, c = (int.from_bytes(digest[k : k + 4], "little") % len(pool) for k in (0, 4, 8))
            k = digest[12] % len(pool[b])
            text = ". ".join([*pool[a], *pool[b][k:], *pool[b][:k], *pool[c]])
            if i % 10_000 == 5000:
                text = f"{text} {questions[(i // 10_000) % len(questions)]}"
                planted["contaminated"] += 1
        texts.append(text)
        key = (source, i // per_file)
        if key not in handles:
            for old in [k for k in handles if k[0] == source]:
                handles.pop(old).close()
            handles[key] = open(folder / source / f"part-{i // per_file:05d}.jsonl", "w")  # noqa: SIM115
        handles[key].write(json.dumps({"text": text}) + "\n")
    for handle in handles.values():
        handle.close()
    return planted


def experiment(work: Path, shard_documents: int, shards_per_run: int):
    from tpt.config import Experiment

    raw = yaml.safe_load((ROOT / "pipelines/experiments/embedded.yaml").read_text())
    raw["name"] = "rehearsal"
    raw["corpus"] = {
        "sources": [
            {"kind": "local", "name": s, "path": str(work / "inbox" / s)} for s in ("openwebtext", "wikipedia")
        ],
        "min_chars": 200,
        "max_chars": 20000,
        "documents_per_shard": shard_documents,
        "shards_per_run": shards_per_run,
        "decontamination": {"benchmarks": ["gsm8k", "math", "humaneval", "mbpp"], "ngram": 13},
        "near_dedup": None,
        "build_on_ray": True,
    }
    raw["generation"] |= {"engine": "standin", "batch_size": 1024}
    raw["generation"]["sampling"]["max_thinking_tokens"] = 32
    return Experiment.model_validate(raw)


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from the timestamps of Dagster's own step events."""
    import dagster as dg

    started, took = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            took[event.step_key] = entry.timestamp - started[event.step_key]
    return took


def rehearse(work: Path, exp, root: str | None = None) -> dict:
    """Both passes through Dagster; artifacts and catalog under ``root`` (a folder or URL; default ``work/art``)."""
    import dagster as dg

    from assets.partitions import corpus_shards
    from assets.stage import asset_key
    from pipelines.definitions import build_definitions
    from pipelines.private import partition_range_tags
    from pipelines.sensors import consecutive_runs
    from resources import ArtifactStorage, DuckDBCatalog, RayCluster, ThinkingGenerator
    from tests.support import resources_at

    root = root or str(work / "art")
    resources = resources_at(work) | {
        "storage": ArtifactStorage(root=root),
        "catalog": DuckDBCatalog(path=f"{root}/catalog"),
        "ray_cluster": RayCluster(num_cpus=2),
        "generator": ThinkingGenerator(cpus_per_worker=1, torch_threads=1),
    }
    mixture = dg.define_asset_job(
        "rehearsal_mixture",
        selection=dg.AssetSelection.assets(*(asset_key(exp, "data_mixture", v) for v in exp.variants)),
    )
    defs = build_definitions([exp], resources)
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[mixture]))
    instance = dg.DagsterInstance.ephemeral()
    import ray

    # The cluster the runs join, as a deployment's would be (started here, it is up before the first run and the
    # runs do not pay its start; a run that starts Ray itself stops it at its end).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    passes = []
    for attempt in ("first", "second"):
        seconds: dict[str, float] = defaultdict(float)
        started = time.perf_counter()

        def run(job: str, seconds: dict[str, float] = seconds, started: float = started, **kwargs) -> None:
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=True, **kwargs)
            for step, s in step_seconds(instance, result.run_id).items():
                seconds[step.removeprefix(f"{exp.name}__")] += s
            elapsed = round(time.perf_counter() - started, 1)
            progress = {"pass": len(passes) + 1, "job": job, "steps_s": seconds, "elapsed_s": elapsed}
            progress["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            with (work / "progress.jsonl").open("a") as fh:  # what a run cut short leaves
                fh.write(json.dumps(progress) + "\n")

        run(f"{exp.name}_corpus")
        run(f"{exp.name}_generation_estimate")
        shards = instance.get_dynamic_partitions(corpus_shards(exp).name)
        for shard_run in consecutive_runs(shards, shards, exp.corpus.shards_per_run):
            run(f"{exp.name}_shards", tags=partition_range_tags(shard_run[0], shard_run[-1]))
        run("rehearsal_mixture", partition_key=exp.scale_names[0])
        passes.append({"wall_s": round(time.perf_counter() - started, 1), "steps_s": dict(seconds)})
        print(f"{attempt} pass: {passes[-1]['wall_s']} s", flush=True)
    return {"passes": passes, "shards": len(shards), "instance": instance, "resources": resources}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--shard-documents", type=int, default=10_000)
    parser.add_argument("--shards-per-run", type=int, default=10)
    parser.add_argument("--per-file", type=int, default=10_000)
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args()
    inbox = args.work / "inbox"
    if args.write_only:
        planted = write_corpus(args.documents, inbox, args.per_file)
        (args.work / "planted.json").write_text(json.dumps(planted))
        return
    if not (args.work / "planted.json").exists():
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--write-only", "--documents", str(args.documents), "--work", str(args.work)]
            + ["--per-file", str(args.per_file)],
            check=True,
        )
        print(f"wrote {args.documents} documents in {time.perf_counter() - started:.0f} s (child process)")
    planted = json.loads((args.work / "planted.json").read_text())
    exp = experiment(args.work, args.shard_documents, args.shards_per_run)
    found = rehearse(args.work, exp)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = summarize(args, exp, found, planted, peak_mb)
    (args.work / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def summarize(args, exp, found: dict, planted: dict, peak_mb: float) -> dict:
    from tests.support import outputs
    from tpt.corpus.build import load_manifest

    corpus = outputs(exp, found["resources"]).of("corpus")
    manifest = load_manifest(corpus.path, corpus.version)
    first = found["passes"][0]["steps_s"]
    docs = manifest.n_documents
    stages, checks = {}, {}
    for step, seconds in sorted(first.items()):
        if step not in STAGES and step.rsplit("_", 1)[0] not in STAGES:  # the asset checks' steps (a TPT
            # variant's stages carry its name: thinking_trajectories_tpt)
            checks[step] = round(seconds, 2)
            continue
        n = args.documents if step == "corpus" else docs
        stages[step] = {"wall_s": round(seconds, 1), "documents_per_s": round(n / seconds, 1) if seconds else None}
    counts = defaultdict(int)
    for source in manifest.sources.values():
        for reason, n in source["counts"].items():
            counts[reason] += n
    return {
        "documents_written": args.documents,
        "documents_in_corpus": docs,
        "shards": found["shards"],
        "shards_per_run": exp.corpus.shards_per_run,
        "dagster_process_peak_rss_mb": round(peak_mb, 1),
        "stages_first_pass": stages,
        "checks_first_pass_s": checks,
        "first_pass_wall_s": found["passes"][0]["wall_s"],
        "second_pass_wall_s": found["passes"][1]["wall_s"],
        "second_pass_steps_s": {k: round(v, 2) for k, v in found["passes"][1]["steps_s"].items()},
        "planted": planted,
        "skips_by_reason": dict(counts),
        "contaminated_dropped": manifest.contamination.get("dropped"),
    }


if __name__ == "__main__":
    main()
