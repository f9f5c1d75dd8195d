"""Token shards: each variant's text tokenized with the student's tokenizer and packed to seq_len, each source on its
own, one memory-mapped token file per corpus shard (a Ray task each): vanilla packs the documents alone, TPT the
augmented [d; t] texts of the same documents."""

import time

from assets.augmented import UnfinishedUpstreamError
from assets.stage import StageResult, StageRun, markdown_table
from resources.ray_cluster import RayAsk
from tpt.config import Experiment
from tpt.models import resolve_model
from tpt.paths import as_path
from tpt.stages import Instance, Read, Stage
from tpt.tokenization.ray_pack import PackJob, pack_on_ray, shard_out_path, task_memory
from tpt.versioning import versioned_fields


def _own(experiment: Experiment, instance: Instance) -> dict:
    return {
        "variant": instance.variant,
        "tokenizer": versioned_fields(experiment.tokenizer),
        "seq_len": experiment.training.seq_len,
    }


def token_shards(run: StageRun) -> StageResult:
    out, (source,) = run.output, run.inputs()  # vanilla reads the corpus, TPT the augmented text
    jobs = [PackJob(str(source.path / f"{s}.parquet"), str(shard_out_path(out.path, s))) for s in run.shards]
    missing = [j.source_parquet for j in jobs if not as_path(j.source_parquet).exists()]
    if missing:
        raise UnfinishedUpstreamError(
            f"{len(missing)} input shards are missing (first: {missing[0]}); materialize {source.stage}"
        )
    todo = [j for j in jobs if not as_path(j.out_path).with_suffix(".json").exists()]
    if todo:  # each packing task reserves the memory it was measured to use: the largest must fit a node
        largest = max(task_memory(j.source_parquet) for j in todo)
        ask = RayAsk(
            "a token-packing task", 1, {"CPU": 1.0, "memory": float(largest)}, "shard size (documents_per_shard)"
        )
        run.resources.ray_cluster.ensure(ask)
    tokenizer_dir = str(resolve_model(run.experiment.tokenizer, weights=False))
    started = time.perf_counter()
    indexes, packed_now = pack_on_ray(jobs, tokenizer_dir, run.experiment.training.seq_len, run.log)
    pack_s = time.perf_counter() - started
    fixed = {"experiment": run.experiment.name, "variant": run.instance.variant, "token_shards_version": out.version}
    per_shard = {shard: _figures(index) for shard, index in zip(run.shards, indexes, strict=True)}
    sources = [
        fixed
        | {"shard": shard, "source": span["name"], "documents": span["n_documents"]}
        | {"sequences": span["n_sequences"], "real_tokens": span["n_real_tokens"]}
        for shard, index in zip(run.shards, indexes, strict=True)
        for span in index["sources"]
    ]
    rows = {"token_shards": [fixed | {"shard": s} | f for s, f in per_shard.items()], "token_sources": sources}
    reuse = {s: {"reused_finished_output": "wall_s" not in i} for s, i in zip(run.shards, indexes, strict=True)}
    totals = {k: sum(f[k] for f in per_shard.values()) for k in ("documents", "sequences", "real_tokens")}
    padding = sum(f["padding_tokens"] for f in per_shard.values())
    packed_tokens = sum(i["n_real_tokens"] for i in indexes if "wall_s" in i)  # only fresh results carry timings
    figures = totals | {
        "variant": run.instance.variant,
        "padding_tokens": padding,
        "packing_efficiency": round(totals["real_tokens"] / (totals["real_tokens"] + padding), 4),
        "seq_len": run.experiment.training.seq_len,
        "shards_packed_this_run": packed_now,
        "tokens_per_s_this_run": round(packed_tokens / pack_s, 1) if packed_now else 0.0,
        "real_tokens_by_source": _by_source(sources),
    }
    table = markdown_table([{"shard": s} | f for s, f in per_shard.items()])
    return StageResult(
        packed_now == 0,
        figures,
        rows,
        extra_metadata={"shards": table},
        per_partition={s: f | reuse[s] for s, f in per_shard.items()},
    )


def _figures(index: dict) -> dict:
    return {
        "documents": index["n_documents"],
        "sequences": index["n_sequences"],
        "real_tokens": index["n_real_tokens"],
        "padding_tokens": index["n_padding_tokens"],
        "packing_efficiency": index["packing_efficiency"],
    }


def _by_source(rows: list[dict]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["source"]] = totals.get(row["source"], 0) + row["real_tokens"]
    return totals


STAGE = Stage(
    name="token_shards",
    revision=2,  # 2: each source packed on its own
    own=_own,
    reads=(Read("corpus", variants=("vanilla",)), Read("augmented_documents", variants=("tpt",))),
    partitioning="shards",
    per_variant=True,
    resources=("ray_cluster",),
    job="shards",
    kinds=frozenset({"ray", "numpy"}),
    retried=True,
    description="The {variant} variant tokenized with the student's tokenizer and packed to seq_len, each source on "
    "its own, one memory-mapped token file per corpus shard (Ray task each).",
    compute=token_shards,
)
