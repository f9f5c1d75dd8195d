"""What every stage shares: how it is declared (key, group, code version, input errors) and how it reports
(metadata for Dagster, rows for the catalog, one version for both)."""

from __future__ import annotations

import base64
import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from assets import keys
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.errors import InputError
from tpt.plan import StagePlan

ACCELERATOR_POOL = "accelerator"
"""The Dagster concurrency pool of the stages that hold a GPU (generation, training, evaluation): its limit, in the
instance's dagster.yaml, keeps two such stages of different runs off one device at the same time."""

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)
"""For the stages that run on Ray: a lost worker or node fails the step, and the retry resumes from the shards and
checkpoints already finished. Bad input is never retried (see ``user_facing_errors``)."""


def stage_asset(
    experiment: Experiment,
    name: str,
    *,
    variant: str | None = None,
    deps: Sequence[dg.AssetKey | dg.AssetDep] = (),
    code_version: str | None = None,
    kinds: set[str],
    description: str,
    partitions_def: dg.PartitionsDefinition | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
    automation_condition: dg.AutomationCondition | None = None,
    pool: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
):
    """Declare one stage of an experiment's graph: ``<experiment>/<name>[_<variant>]`` in the experiment's group,
    tagged with its experiment (and variant) so runs and assets can be filtered by them in the UI."""

    def decorate(compute):
        with warnings.catch_warnings():  # backfill policies are beta in Dagster 1.13; we rely on them knowingly
            warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
            return _asset(compute)

    def _asset(compute):
        return dg.asset(
            key=keys.key(experiment, name, variant),
            deps=list(deps),
            group_name=experiment.name,
            code_version=code_version,
            kinds=kinds,
            tags={"experiment": experiment.name} | ({"variant": variant} if variant else {}),
            description=description,
            partitions_def=partitions_def,
            backfill_policy=backfill_policy,
            automation_condition=automation_condition,
            pool=pool,
            retry_policy=retry_policy,
        )(user_facing_errors(compute))

    return decorate


def user_facing_errors(compute):
    """Bad input and missing upstream work fail the step with their one-line message and are not retried:
    retrying cannot fix a config or materialize an upstream asset. Anything else may be transient."""

    @functools.wraps(compute)
    def wrapper(*args, **kwargs):
        try:
            return compute(*args, **kwargs)
        except InputError as exc:
            raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
        except dg.Failure as exc:
            if not exc.allow_retries:
                raise
            raise dg.Failure(description=exc.description, metadata=exc.metadata, allow_retries=False) from exc

    return wrapper


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    columns = list(dict.fromkeys(c for row in rows for c in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def finish(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    experiment: str,
    plan: StagePlan,
    *,
    wall_s: float,
    reused: bool,
    figures: Mapping[str, Any],
    parents: Sequence[StagePlan] = (),
    variant: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    content_version: str | None = None,
) -> dg.MaterializeResult:
    """Record the stage in the catalog and return its materialization. Its data version is a hash of the output's
    content where one is given (so downstream goes stale only when the bytes changed, e.g. after retraining on a
    nondeterministic GPU), else the stage version that names the output."""
    catalog.record_stage(
        experiment,
        plan.stage,
        plan.version,
        variant=variant,
        run_id=context.run.run_id,
        wall_s=wall_s,
        reused=reused,
        metrics=dict(figures),
        parents=[(p.stage, p.version) for p in parents],
    )
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(plan.path)),
        "stage_version": plan.version,
        **({"content_version": content_version} if content_version else {}),
        "wall_s": round(wall_s, 3),
        "reused_finished_output": reused,
        **{k: _metadata_value(v) for k, v in figures.items()},
        **(extra_metadata or {}),
    }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(content_version or plan.version))


def _metadata_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dg.MetadataValue.json(value)
    return value
