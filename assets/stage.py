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


def stage_asset(
    experiment: Experiment,
    name: str,
    *,
    variant: str | None = None,
    deps: Sequence[dg.AssetKey] = (),
    code_version: str | None = None,
    kinds: set[str],
    description: str,
    partitions_def: dg.PartitionsDefinition | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
    automation_condition: dg.AutomationCondition | None = None,
):
    """Declare one stage of an experiment's graph: ``<experiment>/<name>[_<variant>]`` in the experiment's group."""

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
            tags={"variant": variant} if variant else None,
            description=description,
            partitions_def=partitions_def,
            backfill_policy=backfill_policy,
            automation_condition=automation_condition,
        )(user_facing_errors(compute))

    return decorate


def user_facing_errors(compute):
    """Bad input fails the step with its one-line message (no retries: retrying cannot fix a config)."""

    @functools.wraps(compute)
    def wrapper(*args, **kwargs):
        try:
            return compute(*args, **kwargs)
        except InputError as exc:
            raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc

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
) -> dg.MaterializeResult:
    """Record the stage in the catalog and return its materialization, versioned by the stage's content hash."""
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
        "wall_s": round(wall_s, 3),
        "reused_finished_output": reused,
        **{k: _metadata_value(v) for k, v in figures.items()},
        **(extra_metadata or {}),
    }
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(plan.version))


def _metadata_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dg.MetadataValue.json(value)
    return value
