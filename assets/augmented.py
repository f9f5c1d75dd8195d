"""x = [d; t]: every document of a corpus shard followed by its thinking, one parquet shard per corpus shard."""

import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.stage import StageResult, StageRun
from tpt.atomic import write_parquet
from tpt.augment import augment
from tpt.config import Experiment
from tpt.corpus.build import read_shard
from tpt.errors import InputError
from tpt.generation.shard_runner import SUCCESS, read_trajectories
from tpt.stages import Instance, Read, Stage


class UnfinishedUpstreamError(InputError, RuntimeError):
    pass


def _own(experiment: Experiment, instance: Instance) -> dict:
    return {"join_separator": experiment.join_separator}


def augmented_documents(run: StageRun) -> StageResult:
    out, corpus, thinking = run.output, run.input("corpus"), run.input("thinking_trajectories")
    per_shard, finished = {}, set()
    for shard in run.shards:
        target = out.path / f"{shard}.parquet"
        if not (thinking.path / shard / SUCCESS).exists():
            raise UnfinishedUpstreamError(
                f"{shard} has no finished trajectories; materialize thinking_trajectories for it first"
            )
        if target.exists():
            finished.add(shard)
            table = pq.read_table(target, columns=["has_thinking", "text"])
        else:
            table = augment(
                read_shard(corpus.path, shard), read_trajectories(thinking.path / shard), run.experiment.join_separator
            )
            write_parquet(target, table)
        with_thinking = int(pc.sum(table["has_thinking"]).as_py() or 0)
        per_shard[shard] = {
            "documents": table.num_rows,
            "documents_with_thinking": with_thinking,
            "documents_without_thinking": table.num_rows - with_thinking,
            "characters": int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0),
        }
    figures = {k: sum(f[k] for f in per_shard.values()) for k in next(iter(per_shard.values()))}
    per_shard = {s: f | {"reused_finished_output": s in finished} for s, f in per_shard.items()}
    run.log(f"augmented {figures['documents']} documents, {figures['documents_with_thinking']} with thinking")
    return StageResult(len(finished) == len(run.shards), figures, per_partition=per_shard)


STAGE = Stage(
    name="augmented_documents",
    revision=1,
    own=_own,
    reads=(Read("corpus"), Read("thinking_trajectories")),
    partitioning="shards",
    per_variant="tpt",
    job="shards",
    kinds=frozenset({"python", "parquet"}),
    description="x = [d; t]: every document followed by the {variant} variant's thinking, one parquet shard per "
    "corpus shard.",
    compute=augmented_documents,
)
