"""Thinking trajectories: an expert's thinking t for every document d of a corpus shard, generated on a Ray Data
actor pool that reads the shards and writes the trajectories itself (the Dagster process moves paths and reads
ids and counts back, never text); resumable per document, cached per request; each shard's own figures on its own
partition."""

from collections import Counter

import numpy as np
import pyarrow as pa

from assets.stage import StageResult, StageRun, markdown_table, png_markdown
from resources.ray_cluster import RayAsk
from tpt.config import Experiment, GenerationConfig
from tpt.corpus.build import load_manifest
from tpt.generation.estimate import estimate
from tpt.generation.shard_files import generate_shard_files, shard_ids
from tpt.generation.shard_runner import SUCCESS, ShardSummary
from tpt.generation.telemetry import EngineTelemetry
from tpt.plots import histogram
from tpt.stages import Instance, Read, Stage
from tpt.versioning import versioned_fields

CATALOG_COLUMNS = ["doc_id", "shard", "finish_reason", "prompt_tokens", "output_tokens", "document_cut", "engine"]
READ_COLUMNS = [*CATALOG_COLUMNS, "error", "source"]


def generation_kinds(experiment: Experiment) -> set[str]:
    """The UI's badges of a generation stage: Ray and every engine the experiment's TPT variants generate with."""
    return {"ray", *(experiment.generation_for(v).engine for v in experiment.tpt_variants)}


def _own(experiment: Experiment, instance: Instance) -> dict:
    return versioned_fields(experiment.generation_for(instance.variant))


def thinking_trajectories(run: StageRun) -> StageResult:
    out, corpus, generator = run.output, run.input("corpus"), run.resources.generator
    pending = [s for s in run.shards if not (out.path / s / SUCCESS).exists()]
    if pending:
        run.resources.ray_cluster.ensure(RayAsk.for_generator(generator))
    summaries = generate_shard_files(
        corpus.path,
        run.shards,
        out.path,
        generator.engine_spec(run.experiment.generation_for(run.instance.variant)),
        run.experiment.generation_for(run.instance.variant),
        generator.placement(),
        run.log,
        cache_root=run.outputs.root.parent,
    )
    gpus = generator.gpus_in_use()
    tables = {s: shard_ids(out.path / s, READ_COLUMNS) for s in run.shards}  # no thinking text
    table = pa.concat_tables(tables.values(), promote_options="permissive")
    fixed = {"experiment": run.experiment.name, "thinking_trajectories_version": out.version}
    rows = {
        "trajectories": _constant_columns(table.select([*CATALOG_COLUMNS, "error"]), fixed),  # Arrow, per document
        "generation_shards": [fixed | _shard_row(s, gpus) for s in summaries.values()],
    }
    extra = {
        "shards": markdown_table([s.as_dict() | {"finish_reasons": str(s.finish_reasons)} for s in summaries.values()]),
        "thinking_length_by_source": png_markdown(
            histogram(_lengths_by_source(table), title="Thinking length by document domain", xlabel="thinking tokens"),
            "thinking length by source",
        ),
    }
    figures = _figures(run.experiment.generation_for(run.instance.variant), table, list(summaries.values()), gpus)
    measured = next((s.telemetry for s in summaries.values() if s.telemetry is not None), None)
    if measured is not None:  # the engines of this run, and what the whole corpus would cost at their rate
        figures |= {"engine_telemetry": measured.as_dict()} | _projection(run, table, measured)
    return StageResult(
        reused=not pending,
        figures=figures,
        rows=rows,
        extra_metadata=extra,
        per_partition={
            s: _figures(run.experiment.generation_for(run.instance.variant), tables[s], [summaries[s]], gpus)
            | {"reused_finished_output": s not in pending}
            for s in run.shards
        },
    )


def _figures(generation: GenerationConfig, table: pa.Table, summaries: list[ShardSummary], gpus: int) -> dict:
    pairs = zip(table["output_tokens"].to_pylist(), table["finish_reason"].to_pylist(), strict=True)
    lengths = np.array([n for n, reason in pairs if reason != "error"] or [0])
    generated = [s for s in summaries if s.generated_this_run]
    rate = max((s.output_tokens_per_s for s in generated), default=0.0)  # shards of one run share the pool's rate
    return {
        "shards": [s.shard for s in summaries],
        "documents": table.num_rows,
        "generated_this_run": sum(s.generated_this_run for s in summaries),
        "cache_hits": sum(s.cache_hits for s in summaries),
        "prompt_tokens": sum(s.prompt_tokens for s in summaries),
        "output_tokens": sum(s.output_tokens for s in summaries),
        "output_tokens_per_s": rate,
        "output_tokens_per_s_per_gpu": round(rate / gpus, 3) if gpus else None,
        "finish_reasons": dict(sum((Counter(s.finish_reasons) for s in summaries), Counter())),
        "errors": sum(s.errors for s in summaries),
        "documents_cut": int(sum(table["document_cut"].to_pylist())),
        "thinking_tokens_mean": round(float(lengths.mean()), 1),
        "thinking_tokens_p50": float(np.percentile(lengths, 50)),
        "thinking_tokens_p90": float(np.percentile(lengths, 90)),
        "thinking_tokens_max": int(lengths.max()),
        "engine": table["engine"][0].as_py(),
        "prompt_version": generation.prompt.version,
        "model": generation.model.name,
    }


def _projection(run: StageRun, table: pa.Table, measured: EngineTelemetry) -> dict:
    corpus = run.input("corpus")
    total = load_manifest(corpus.path, corpus.version).n_documents
    try:
        cost = estimate(table, measured.output_tokens_per_s_per_replica, total, run.resources.generator.placement())
    except ValueError:  # nothing timed and successful in this run's shards
        return {}
    return {
        "projected_corpus_output_tokens": cost.estimated_output_tokens,
        "projected_corpus_wall_hours": cost.estimated_wall_hours,
        "projected_corpus_gpu_hours": cost.estimated_gpu_hours,
    }


def _constant_columns(table: pa.Table, fixed: dict[str, str]) -> pa.Table:
    for name, value in fixed.items():
        table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    return table


def _shard_row(s: ShardSummary, gpus: int) -> dict:
    return {
        "shard": s.shard,
        "documents": s.documents,
        "generated_this_run": s.generated_this_run,
        "cache_hits": s.cache_hits,
        "errors": s.errors,
        "prompt_tokens": s.prompt_tokens,
        "output_tokens": s.output_tokens,
        "output_tokens_per_s": s.output_tokens_per_s,
        "gpus": gpus,
        "wall_s": s.wall_s,
        "finish_reasons": str(s.finish_reasons),
    }


def _lengths_by_source(table: pa.Table) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    rows = zip(
        table["source"].to_pylist(), table["output_tokens"].to_pylist(), table["finish_reason"].to_pylist(), strict=True
    )
    for source, n, reason in rows:
        if reason != "error":
            groups.setdefault(source, []).append(n)
    return groups


STAGE = Stage(
    name="thinking_trajectories",
    revision=2,  # 2: per-request seeds on transformers, vLLM through ray.data.llm
    own=_own,
    reads=(Read("corpus"), Read("thinking_model")),
    partitioning="shards",
    per_variant="tpt",
    settings=("generator",),
    resources=("ray_cluster",),
    job="shards",
    kinds=generation_kinds,
    accelerator=True,
    retried=True,
    description="The {variant} variant's thinking t (an expert's thought process) for every document d of a corpus "
    "shard (the paper's prompt, document cut to a token limit, generation stopped at </think>), generated on a Ray "
    "Data actor pool; resumable per document, cached per request.",
    compute=thinking_trajectories,
)
