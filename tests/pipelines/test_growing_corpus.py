"""Versions name content, judged by Dagster's own stale-status resolver (the UI's): a corpus folder that grows gives
the mixture and everything below it new versions, shown stale before anything reruns, while the per-shard work on
the old shards stays fresh and is reused; the rerun then trains on the new shards. A ranged run records each shard's
own figures; a mixture asked for while a shard is unpacked is refused in one line; switching the evaluator's
backend marks exactly the scores and the report stale."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus

from assets.stage import asset_key
from pipelines.definitions import build_definitions
from pipelines.private import partition_range_tags
from resources import Evaluator, RayCluster, Trainer
from tests.support import outputs, resources_at
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.tokenization.mixture import ResolvedMixture

pytestmark = pytest.mark.slow

TEXT = "A paragraph about tides, the moon and the sea, long enough for the length filter; note {}."


def _experiment(embedded: Experiment, folder: Path) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "growing"
    raw["variants"] = ["vanilla"]
    raw["corpus"] |= {
        "sources": [{"kind": "local", "name": "inbox", "path": str(folder)}],
        "min_chars": 20,
        "documents_per_shard": 2,
        "near_dedup": None,  # the documents differ by a number only: near-duplicates by design
        "decontamination": None,
    }
    raw["mixture"] = {}
    raw["training"] |= {
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64},
        "seq_len": 64,
        "batch_tokens": 256,
        "token_budget": 1024,
        "warmup_steps": 1,
        "micro_batch_size": 4,
        "checkpoint_every": 2,
    }
    raw["evaluation"] |= {"benchmarks": ["gsm8k"], "limit": 1, "max_gen_toks": 4}
    return Experiment.model_validate(raw)


def _write(folder: Path, name: str, start: int, n: int) -> None:
    lines = [json.dumps({"text": TEXT.format(i) * 3}) for i in range(start, start + n)]
    (folder / name).write_text("\n".join(lines) + "\n")


def _stale(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, set[str | None]]:
    """Per asset, the partitions Dagster's resolver marks stale."""
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, loading_context=view)
    found: dict[str, set[str | None]] = {}
    for key in graph.get_all_asset_keys():
        partitions_def = graph.get(key).partitions_def
        partitions = partitions_def.get_partition_keys(dynamic_partitions_store=instance) if partitions_def else [None]
        stale = {p for p in partitions if resolver.get_status(key, p) == StaleStatus.STALE}
        if stale:
            found[key.path[-1]] = stale
    return found


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description


def test_a_growing_corpus_reaches_training_and_nothing_old_is_redone(embedded, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    _write(folder, "a.jsonl", 0, 5)  # shards of 2, 2 and 1 documents
    experiment = _experiment(embedded, folder)
    resources = resources_at(
        tmp_path, ray_cluster=RayCluster(num_cpus=2), trainer=Trainer(device="cpu"), evaluator=Evaluator(device="cpu")
    )
    defs = build_definitions([experiment], resources)
    instance = dg.DagsterInstance.ephemeral()

    def run(job: str, **kwargs) -> dg.ExecuteInProcessResult:
        return defs.resolve_job_def(f"growing_{job}").execute_in_process(
            instance=instance, raise_on_error=False, **kwargs
        )

    def everything_after_the_corpus() -> list[dg.ExecuteInProcessResult]:
        shards = instance.get_dynamic_partitions("growing__corpus_shards")
        return [
            run("data", tags=partition_range_tags(shards[0], shards[-1])),
            run("training", partition_key="base"),
            run("benchmarks", partition_key="gsm8k|base"),
            run("report"),
        ]

    assert run("corpus").success
    data, *rest = everything_after_the_corpus()
    assert data.success and all(r.success for r in rest)
    assert _stale(defs, instance) == {}

    # a three-shard ranged run: each partition carries its own figures, not the run's total
    tokens = outputs(experiment, resources).of("token_shards", "vanilla")
    per_shard = {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in data.get_asset_materialization_events()
        if e.asset_key == asset_key(experiment, "token_shards", "vanilla")
    }
    assert sorted(per_shard) == ["shard-00000", "shard-00001", "shard-00002"]
    assert [per_shard[s]["documents"] for s in sorted(per_shard)] == [2, 2, 1]
    for shard, meta in per_shard.items():
        index = json.loads((tokens.path / f"{shard}.json").read_text())
        assert meta["real_tokens"] == index["n_real_tokens"] and meta["sequences"] == index["n_sequences"]
    old_checkpoint = outputs(experiment, resources).of("checkpoint", "vanilla", "base")

    # the folder grows: the corpus run appends a shard, and before anything else runs Dagster shows what changed
    _write(folder, "b.jsonl", 5, 2)
    assert run("corpus").success
    assert instance.get_dynamic_partitions("growing__corpus_shards")[-1] == "shard-00003"
    stale = _stale(defs, instance)
    assert stale == {
        "data_mixture_vanilla": {"base"},
        "checkpoint_vanilla": {"base"},
        "benchmark_scores_vanilla": {"gsm8k|base"},
        "report": {None},
    }  # and not the per-shard stages of the old shards, nor the corpus itself

    # a mixture asked for before the new shard is packed: one line, nothing written
    mixture_dir = outputs(experiment, resources).of("data_mixture", "vanilla", "base").path
    refused = run("training", partition_key="base")
    assert not refused.success
    message = _failure(refused)
    assert message.startswith("UnpackedShardsError: 1 of 4 corpus shards are not packed yet (shard-00003)")
    assert "\n" not in message and not mixture_dir.exists()

    # the rerun packs only the new shard, and the new checkpoint trains on it
    data, *rest = everything_after_the_corpus()
    assert data.success and all(r.success for r in rest)
    packed = {e.partition: e for e in data.get_asset_materialization_events() if "token_shards" in str(e.asset_key)}
    assert {p: e.materialization.metadata["reused_finished_output"].value for p, e in packed.items()} == {
        "shard-00000": True,
        "shard-00001": True,
        "shard-00002": True,
        "shard-00003": False,
    }
    assert all(e.materialization.metadata["stage_version"].value == tokens.version for e in packed.values())
    new = outputs(experiment, resources)
    checkpoint = new.of("checkpoint", "vanilla", "base")
    assert checkpoint.version != old_checkpoint.version and old_checkpoint.path.exists()  # nothing overwritten
    assert _stale(defs, instance) == {}
    catalog = Catalog(tmp_path / "catalog")
    inputs = catalog.score_inputs(
        "growing", "vanilla", "gsm8k", new.of("benchmark_scores", "vanilla", "base", "gsm8k").version
    )
    rows = {u["stage"]: u["rows"] for u in inputs["upstream"]}
    assert [r["shard"] for r in rows["token_shards"]] == [f"shard-0000{i}" for i in range(4)]
    [row] = catalog.query("SELECT tokens_seen FROM checkpoints WHERE checkpoint_version = ?", [checkpoint.version])
    assert row["tokens_seen"] == experiment.training.token_budget
    order = ResolvedMixture.finished(new.of("data_mixture", "vanilla", "base").path).order
    old_sequences = sum(json.loads((tokens.path / f"shard-0000{i}.json").read_text())["n_sequences"] for i in range(3))
    assert np.any(order >= old_sequences)  # the new shard's sequences are in what the checkpoint read

    # switching the evaluator's backend changes exactly the scores and the report
    vllm = build_definitions([experiment], resources | {"evaluator": Evaluator(device="cpu", backend="vllm")})
    assert _stale(vllm, instance) == {"benchmark_scores_vanilla": {"gsm8k|base"}, "report": {None}}
