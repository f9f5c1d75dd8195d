"""A Dagster driver process for the cluster tests: the experiment's corpus, data and training jobs (or a few assets
of them), executed in process against the Ray that ``--address`` names (none: a local Ray), with two generator
actors and a two-worker Ray Train launch of one thread each. It then writes what the test checks: each run's
outcome, the libraries every node imported, and the tasks and actors Ray's state API lists.

    python -m tests.resources.cluster_driver EXPERIMENT.yaml ROOT [--address ADDR [--dashboard URL]] [--assets KEY ...]
"""

import argparse
import json
import sys
from pathlib import Path

import dagster as dg

from assets.partitions import corpus_shards
from pipelines.definitions import build_definitions
from pipelines.private import partition_range_tags
from resources import ArtifactStorage, DuckDBCatalog, Evaluator, RayCluster, ThinkingGenerator, Trainer
from tpt.config import load_experiment


def resources(root: Path, address: str | None) -> dict:
    return {
        "storage": ArtifactStorage(root=str(root / "artifacts")),
        "catalog": DuckDBCatalog(path=str(root / "catalog.duckdb")),
        "ray_cluster": RayCluster(address=address, num_cpus=2),
        "generator": ThinkingGenerator(workers=2, torch_threads=1, device="cpu"),
        "trainer": Trainer(device="cpu", launcher="ray", workers=2, threads_per_worker=1),
        "evaluator": Evaluator(device="cpu"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("root", type=Path)
    parser.add_argument("--address")
    parser.add_argument("--dashboard", help="the head's dashboard URL, which serves Ray's state API")
    parser.add_argument("--assets", nargs="*", help="asset keys (a/b) of the data job to run; default: all jobs")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.experiment)
    cluster = resources(args.root, args.address)
    defs = build_definitions([experiment], cluster)
    outcome: dict = {"runs": {}}
    with dg.DagsterInstance.ephemeral() as instance:

        def run(job: str, **kwargs) -> bool:
            result = defs.resolve_job_def(f"{experiment.name}_{job}").execute_in_process(
                instance=instance, raise_on_error=False, **kwargs
            )
            failures = [
                (e.step_failure_data.error.message.strip() if e.is_step_failure else e.message)
                for e in result.all_events
                if e.is_failure
            ]
            outcome["runs"][job] = {"success": result.success, "failures": failures}
            return result.success

        if run("corpus"):
            shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
            selection = [dg.AssetKey(a.split("/")) for a in args.assets] if args.assets else None
            span = partition_range_tags(shards[0], shards[-1])
            if run("data", tags=span, asset_selection=selection) and not args.assets:
                run("training", partition_key=experiment.scale_names[0])
    if args.address:
        outcome |= placement(cluster["ray_cluster"], args.dashboard)
    (args.root / "outcome.json").write_text(json.dumps(outcome, indent=1))
    return 0


def placement(cluster: RayCluster, dashboard: str | None) -> dict:
    """Where everything ran, from Ray's state API, and what each node imported; read after the runs."""
    import ray
    from ray.util.state import list_actors, list_nodes, list_tasks

    cluster.ensure()
    try:
        libraries = cluster.node_libraries()
        if not dashboard:
            return {"libraries": libraries}
        tasks = [
            {"name": t.name, "node_id": t.node_id, "state": t.state} for t in list_tasks(address=dashboard, limit=10000)
        ]
        actors = [
            {"class_name": a.class_name, "node_id": a.node_id, "state": a.state}
            for a in list_actors(address=dashboard, limit=10000)
        ]
        nodes = {n.node_id: n.resources_total for n in list_nodes(address=dashboard) if n.state == "ALIVE"}
        return {"libraries": libraries, "nodes": nodes, "tasks": tasks, "actors": actors}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
