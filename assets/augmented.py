"""x = [d; t]: every document of a corpus shard followed by its thinking, one parquet shard per corpus shard."""

from assets.stage import StageResult, StageRun
from resources.ray_cluster import RayAsk
from tpt.augment import AugmentJob, augment_on_ray, finished_summary, task_memory
from tpt.config import Experiment
from tpt.errors import InputError
from tpt.generation.shard_runner import SUCCESS
from tpt.stages import Instance, Read, Stage


class UnfinishedUpstreamError(InputError, RuntimeError):
    pass


def _own(experiment: Experiment, instance: Instance) -> dict:
    return {"join_separator": experiment.join_separator}


def augmented_documents(run: StageRun) -> StageResult:
    out, corpus, thinking = run.output, run.input("corpus"), run.input("thinking_trajectories")
    for shard in run.shards:
        if not (thinking.path / shard / SUCCESS).exists():
            raise UnfinishedUpstreamError(
                f"{shard} has no finished trajectories; materialize thinking_trajectories for it first"
            )
    jobs = {
        s: AugmentJob(str(corpus.path / f"{s}.parquet"), str(thinking.path / s), str(out.path / f"{s}.parquet"))
        for s in run.shards
    }
    per_shard = {s: finished_summary(j.out_path) for s, j in jobs.items()}
    finished = {s for s, f in per_shard.items() if f is not None}
    todo = {s: j for s, j in jobs.items() if s not in finished}
    if todo:  # one Ray task per shard: the join reads and writes where the workers are, never in this process
        largest = max(task_memory(j) for j in todo.values())
        ask = RayAsk("an augment task", 1, {"CPU": 1.0, "memory": float(largest)}, "shard size (documents_per_shard)")
        run.resources.ray_cluster.ensure(ask)
        per_shard |= augment_on_ray(todo, run.experiment.join_separator)
    figures = {k: sum(f[k] for f in per_shard.values()) for k in next(iter(per_shard.values()))}
    per_shard = {s: f | {"reused_finished_output": s in finished} for s, f in per_shard.items()}
    run.log(f"augmented {figures['documents']} documents, {figures['documents_with_thinking']} with thinking")
    return StageResult(not todo, figures, per_partition=per_shard)


STAGE = Stage(
    name="augmented_documents",
    revision=1,
    own=_own,
    reads=(Read("corpus"), Read("thinking_trajectories")),
    partitioning="shards",
    per_variant="tpt",
    resources=("ray_cluster",),
    job="shards",
    kinds=frozenset({"ray", "parquet"}),
    description="x = [d; t]: every document followed by the {variant} variant's thinking, one parquet shard per "
    "corpus shard (an Arrow join in a Ray task per shard).",
    compute=augmented_documents,
)
