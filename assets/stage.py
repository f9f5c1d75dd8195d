"""How a stage declaration (``tpt.stages.Stage``) becomes a Dagster asset, and how every stage reports.

Everything Dagster needs is derived here from the declaration: the key, the partitions and the partition mapping of
each dependency, the code version, the pool and retries; a stage's body only says what it computes. Its body gets a
``StageRun`` (this run's outputs and inputs, resolved from the same declarations) and returns a ``StageResult``,
which this module turns into catalog rows, lineage (the outputs it read), metadata (per partition where a run covers
several) and the data version.
"""

import base64
import functools
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from assets.partitions import (
    SCALE,
    check_shards,
    corpus_shards,
    scale_partitions,
    score_cells,
    shard_backfill_policy,
    split_cell,
)
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.errors import InputError
from tpt.stages import Instance, Output, Outputs, Stage

ACCELERATOR_POOL = "accelerator"
"""The Dagster concurrency pool of the stages that hold a GPU (generation, training, evaluation): its limit, in the
instance's dagster.yaml, keeps two such stages of different runs off one device at the same time."""

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)
"""For the stages that run on Ray: a lost worker or node fails the step, and the retry resumes from the shards and
checkpoints already finished. Bad input is never retried (see ``user_facing_errors``)."""

SETTINGS_RESOURCES = ("generator", "trainer", "evaluator")
"""Resources with output-changing fields (``output_settings()``): every stage needs them to resolve versions."""

ROW_BATCH = 65_536  # rows per catalog write: a merge's memory follows the size of its delta


def asset_key(experiment: Experiment, stage: str, variant: str | None = None) -> dg.AssetKey:
    """``<experiment>/<stage>[_<variant>]``: the stage's name is the asset's, the catalog's and the artifacts'."""
    return dg.AssetKey([experiment.name, f"{stage}_{variant}" if variant else stage])


def ui_link(experiment: Experiment, output: Output) -> str:
    """The asset's page in the Dagster UI, relative to the server, for links in metadata."""
    return "/assets/" + "/".join(asset_key(experiment, output.stage, output.variant).path)


def settings_of(resources: Any) -> dict[str, dict]:
    """The output-changing settings of the resources (a Dagster resources object or a plain mapping)."""
    get = _getter(resources)
    return {name: get(name).output_settings() for name in SETTINGS_RESOURCES}


def outputs_in(experiment: Experiment, resources: Any) -> Outputs:
    """The experiment's outputs under the storage resource's roots, with the resources' settings."""
    from assets.registry import outputs_for

    storage = _getter(resources)("storage")
    return outputs_for(experiment, storage.root, settings_of(resources), storage.posix_root)


def _getter(resources: Any) -> Callable[[str], Any]:
    return resources.get if isinstance(resources, Mapping) else functools.partial(getattr, resources)


@dataclass
class StageRun:
    """What one run of a stage's body sees: its experiment, every output's version and location, this run's
    instance (variant, scale, benchmark from the partition) and its shards, the resources and the log."""

    context: dg.AssetExecutionContext
    experiment: Experiment
    outputs: Outputs
    stage: str
    instance: Instance
    shards: list[str]

    @property
    def output(self) -> Output:
        return self.outputs.output(self.stage, self.instance)

    def inputs(self) -> list[Output]:
        """Every output this run reads, in the order of the declaration's reads."""
        return [
            self.outputs.output(read.stage, parent) for read, parent in self.outputs.upstream(self.stage, self.instance)
        ]

    def input(self, stage: str) -> Output:
        """The one output of ``stage`` this run reads."""
        found = [parent for read, parent in self.outputs.upstream(self.stage, self.instance) if read.stage == stage]
        if len(found) != 1:
            raise ValueError(f"{self.stage} reads {len(found)} outputs of {stage}, not one")
        return self.outputs.output(stage, found[0])

    @property
    def resources(self) -> Any:
        return self.context.resources

    def log(self, line: str) -> None:
        self.context.log.info(line)


@dataclass
class StageResult:
    """What a stage's body returns. ``rows``: catalog table -> rows (Arrow-friendly dicts; where there is a row per
    document, an Arrow table, or an iterator of them, written one at a time so the rows are never all in memory),
    written in bulk;
    ``per_partition``: each partition's own figures where one run covers several (a range of shards)."""

    reused: bool
    figures: Mapping[str, Any]
    rows: Mapping[str, Sequence[Mapping[str, Any]] | pa.Table | Iterator[pa.Table]] = field(default_factory=dict)
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    per_partition: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    content_version: str | None = None
    record: bool = True  # False for stages that are views of another's output (nothing to add to the catalog)


def stage_assets(experiment: Experiment, spec: Stage, outputs: Outputs) -> list[dg.AssetsDefinition]:
    """One asset per variant of a per-variant stage, else one."""
    return [_asset(experiment, spec, outputs, variant) for variant in outputs.variants_of(spec.name)]


def _asset(experiment: Experiment, spec: Stage, outputs: Outputs, variant: str | None) -> dg.AssetsDefinition:
    with warnings.catch_warnings():  # backfill policies and multi-to-single mappings are beta in Dagster 1.13
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        return dg.asset(
            key=asset_key(experiment, spec.name, variant),
            deps=_deps(experiment, spec, outputs, variant),
            group_name=experiment.name,
            code_version=outputs.code_version(spec.name, variant),
            kinds=set(spec.kinds(experiment) if callable(spec.kinds) else spec.kinds),
            tags={"experiment": experiment.name} | ({"variant": variant} if variant else {}),
            description=spec.description.format(variant=variant or ""),
            partitions_def=partitions_of(experiment, spec),
            backfill_policy=shard_backfill_policy(experiment) if spec.partitioning == "shards" else None,
            automation_condition=_eager(experiment, spec, outputs) if spec.eager else None,
            pool=ACCELERATOR_POOL if spec.accelerator else None,
            retry_policy=TRANSIENT_RETRY if spec.retried else None,
            required_resource_keys={"storage", "catalog", *SETTINGS_RESOURCES, *spec.resources},
        )(_body(experiment, spec, variant))


def _eager(experiment: Experiment, spec: Stage, outputs: Outputs) -> dg.AutomationCondition:
    """Rebuilt when a direct input changes and none is missing; a content ancestor's change (a grown corpus) is
    ignored here, since it reaches the stage through its direct inputs once those have been recomputed."""
    ancestors = [
        asset_key(experiment, name, v)
        for name in outputs.content_ancestors(spec.name)
        for v in outputs.variants_of(name)
    ]
    return dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(*ancestors))


def partitions_of(experiment: Experiment, spec: Stage) -> dg.PartitionsDefinition | None:
    return {
        "shards": corpus_shards(experiment),
        "scales": scale_partitions(experiment),
        "cells": score_cells(experiment),
        None: None,
    }[spec.partitioning]


def _deps(experiment: Experiment, spec: Stage, outputs: Outputs, variant: str | None) -> list[dg.AssetDep]:
    """Each read as a dependency with the mapping its partitions need, then every content-versioned ancestor
    directly, so that its new data version marks this asset stale (Dagster does not pass staleness along)."""
    deps: dict[dg.AssetKey, dg.AssetDep] = {}
    for read in outputs.reads(spec.name, variant):
        parent = outputs.stages[read.stage]
        for parent_variant in [variant] if parent.per_variant and variant else outputs.variants_of(read.stage):
            key = asset_key(experiment, read.stage, parent_variant)
            deps[key] = dg.AssetDep(key, partition_mapping=_mapping(spec, parent, read.every_partition))
    for name in outputs.content_ancestors(spec.name):
        for parent_variant in outputs.variants_of(name):
            key = asset_key(experiment, name, parent_variant)
            deps.setdefault(key, dg.AssetDep(key))
    return list(deps.values())


def _mapping(reader: Stage, parent: Stage, every_partition: bool) -> dg.PartitionMapping | None:
    if parent.partitioning is None or reader.partitioning is None:
        return None
    if every_partition:
        return dg.AllPartitionMapping()
    if reader.partitioning == "cells" and parent.partitioning == "scales":
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCALE)
    return None  # same partitioning: identity


def _instance(experiment: Experiment, spec: Stage, variant: str | None, partition: str | None) -> Instance:
    if spec.partitioning == "scales":
        return Instance(variant, partition)
    if spec.partitioning == "cells":
        return Instance(variant, *split_cell(experiment, partition))
    return Instance(variant)


def _body(experiment: Experiment, spec: Stage, variant: str | None) -> Callable:

    @user_facing_errors
    def compute(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = time.perf_counter()
        outputs = outputs_in(experiment, context.resources)
        partition = context.partition_key if spec.partitioning in ("scales", "cells") else None
        instance = _instance(experiment, spec, variant, partition)
        shards = check_shards(outputs, list(context.partition_keys)) if spec.partitioning == "shards" else []
        run = StageRun(context, experiment, outputs, spec.name, instance, shards)
        result = spec.compute(run)
        output = outputs.output(spec.name, instance)
        wall_s = time.perf_counter() - started
        if result.record:
            catalog: Catalog = context.resources.catalog.open()
            for table, rows in result.rows.items():
                for batch in _row_batches(rows):
                    catalog.upsert(table, batch)
            catalog.record_stage(
                experiment.name,
                spec.name,
                output.version,
                variant=variant,
                run_id=context.run.run_id,
                wall_s=wall_s,
                reused=result.reused,
                metrics=dict(result.figures),
                parents=[(p.stage, p.version) for p in outputs.parents(spec.name, instance)],
            )
        for shard, figures in result.per_partition.items():
            context.add_asset_metadata({k: _metadata_value(v) for k, v in figures.items()}, partition_key=shard)
        metadata: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(output.path)),
            "stage_version": output.version,
            **({"content_version": result.content_version} if result.content_version else {}),
            "wall_s": round(wall_s, 3),
            "reused_finished_output": result.reused,
            **{k: _metadata_value(v) for k, v in result.figures.items()},
            **result.extra_metadata,
        }
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(result.content_version or output.version)
        )

    compute.__name__ = spec.name
    return compute


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


def _row_batches(rows) -> Iterator:
    """Catalog writes of at most ``ROW_BATCH`` rows: a merge's memory follows its delta, so one run's 800k
    trajectory rows in one upsert would grow the Dagster process by ~200 MB (``bench_catalog_memory.py``)."""
    if isinstance(rows, pa.Table):
        for start in range(0, rows.num_rows, ROW_BATCH):  # zero-copy slices
            yield rows.slice(start, ROW_BATCH)
    elif isinstance(rows, Iterator):
        for table in rows:
            yield from _row_batches(table) if isinstance(table, pa.Table) else [table]
    else:
        yield list(rows)


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


def _metadata_value(value: Any) -> Any:
    value = _python(value)
    return dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value


def _python(value: Any) -> Any:
    """Numpy scalars (from the engines' arithmetic) as Python ones, which Dagster's event log can store."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_python(v) for v in value]
    return value
