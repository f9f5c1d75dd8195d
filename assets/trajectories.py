import time
from collections import Counter

import dagster as dg
import numpy as np
import pyarrow as pa

from assets import keys
from assets.stage import finish, markdown_table, png_markdown, stage_asset
from resources import ArtifactStorage, DuckDBCatalog, RayCluster, ThinkingGenerator
from tpt.config import Experiment
from tpt.corpus.build import load_manifest, read_shard
from tpt.generation.shard_runner import SUCCESS, generate_shard, read_trajectories
from tpt.models import resolve_model
from tpt.plan import ExperimentPlan
from tpt.plots import histogram


def trajectories_asset(experiment: Experiment) -> dg.AssetsDefinition:
    code_version = ExperimentPlan(experiment, ".").trajectories.code_version
    generation = experiment.generation

    @stage_asset(
        experiment,
        keys.TRAJECTORIES,
        deps=[keys.key(experiment, keys.CORPUS), keys.key(experiment, keys.THINKING_MODEL)],
        code_version=code_version,
        kinds={"ray", generation.engine},
        description="An expert's thinking t for every document d (the paper's prompt, document cut to a token "
        "limit, generation stopped at </think>), generated on a Ray actor pool; resumable per document.",
    )
    def thinking_trajectories(
        context: dg.AssetExecutionContext,
        storage: ArtifactStorage,
        catalog: DuckDBCatalog,
        ray_cluster: RayCluster,
        generator: ThinkingGenerator,
    ):
        started = time.perf_counter()
        plan = storage.plan(experiment)
        manifest = load_manifest(plan.corpus.path, plan.corpus.version)
        if manifest is None:
            raise dg.Failure(f"corpus {plan.corpus.path} is not built; materialize {keys.CORPUS} first")
        out = plan.trajectories.path
        pending = [s for s in manifest.shard_names if not (out / s / SUCCESS).exists()]
        spec = None
        if pending:
            ray_cluster.ensure()
            spec = generator.engine_spec(generation, str(resolve_model(generation.model)))
        summaries = []
        for shard in manifest.shard_names:
            documents = read_shard(plan.corpus.path, shard)
            summary = generate_shard(documents, out / shard, spec, generation, generator.placement(), context.log.info)
            summaries.append(summary)
        reused = not pending
        table = pa.concat_tables([_with_shard(read_trajectories(out / s.shard), s.shard) for s in summaries])
        cat = catalog.open()
        _record_rows(cat, experiment, plan.trajectories.version, table)
        generated_now = sum(s.generated_this_run for s in summaries)
        gen_wall = sum(s.wall_s for s in summaries if s.generated_this_run)
        out_now = sum(s.output_tokens_per_s * s.wall_s for s in summaries if s.generated_this_run)
        lengths = np.array(table["output_tokens"].to_pylist())
        figures = {
            "documents": table.num_rows,
            "generated_this_run": generated_now,
            "prompt_tokens": sum(s.prompt_tokens for s in summaries),
            "output_tokens": sum(s.output_tokens for s in summaries),
            "output_tokens_per_s": round(out_now / gen_wall, 3) if gen_wall else 0.0,
            "finish_reasons": _sum_dicts(s.finish_reasons for s in summaries),
            "errors": sum(s.errors for s in summaries),
            "documents_cut": int(sum(table["document_cut"].to_pylist())),
            "thinking_tokens_p50": float(np.percentile(lengths, 50)),
            "thinking_tokens_p90": float(np.percentile(lengths, 90)),
            "thinking_tokens_max": int(lengths.max()),
            "engine": table["engine"][0].as_py(),
            "prompt_version": generation.prompt.version,
            "model": generation.model.name,
        }
        by_source = _lengths_by_source(table)
        extra = {
            "shards": markdown_table([s.as_dict() | {"finish_reasons": str(s.finish_reasons)} for s in summaries]),
            "thinking_length_by_source": png_markdown(
                histogram(by_source, title="Thinking length by document domain", xlabel="thinking tokens"),
                "thinking length by source",
            ),
        }
        return finish(
            context,
            cat,
            experiment.name,
            plan.trajectories,
            wall_s=time.perf_counter() - started,
            reused=reused,
            figures=figures,
            parents=[plan.corpus],
            extra_metadata=extra,
        )

    return thinking_trajectories


def _with_shard(table: pa.Table, shard: str) -> pa.Table:
    return table.append_column("shard", pa.array([shard] * table.num_rows, pa.string()))


def _record_rows(cat, experiment: Experiment, version: str, table: pa.Table) -> None:
    rows = [
        {
            "experiment": experiment.name,
            "trajectories_version": version,
            "doc_id": r["doc_id"],
            "shard": r["shard"],
            "finish_reason": r["finish_reason"],
            "prompt_tokens": r["prompt_tokens"],
            "output_tokens": r["output_tokens"],
            "document_cut": r["document_cut"],
            "engine": r["engine"],
            "prompt_version": experiment.generation.prompt.version,
            "model": experiment.generation.model.name,
            "error": r["error"],
        }
        for r in table.select(
            ["doc_id", "shard", "finish_reason", "prompt_tokens", "output_tokens", "document_cut", "engine", "error"]
        ).to_pylist()
    ]
    cat.upsert("trajectories", rows)


def _lengths_by_source(table: pa.Table) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for source, n in zip(table["source"].to_pylist(), table["output_tokens"].to_pylist(), strict=True):
        groups.setdefault(source, []).append(n)
    return groups


def _sum_dicts(dicts) -> dict[str, int]:
    return dict(sum((Counter(d) for d in dicts), Counter()))
