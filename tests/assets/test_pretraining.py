"""The checkpoint asset with ``launcher: ray``: the same asset, through Ray Train with two gloo workers, data-parallel
and sharded (FSDP), reproduces the in-process launch's loss curve on the same mixture and records the same rows."""

import shutil

import dagster as dg
import pytest

from pipelines.graph import experiment_assets
from resources import RayCluster, Trainer
from tests.support import outputs, resources_at
from tpt.catalog import Catalog
from tpt.config import Experiment

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # as for train_on_ray itself: per-rank sums then one all-reduce, so equal to float rounding


def _experiment(embedded: Experiment) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "launch"
    raw["variants"] = ["vanilla"]
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    raw["training"] |= {
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64},
        "seq_len": 128,
        "batch_tokens": 512,  # 4 sequences a step: 2 per rank
        "token_budget": 2048,
        "warmup_steps": 1,
        "micro_batch_size": 2,
        "checkpoint_every": 2,
    }
    return Experiment.model_validate(raw)


def test_the_ray_launcher_reproduces_the_local_launch_through_the_asset(embedded, tmp_path):
    experiment = _experiment(embedded)
    base = resources_at(tmp_path, ray_cluster=RayCluster(num_cpus=2))
    assets = {a.key.path[-1]: a for a in experiment_assets(experiment, base)}
    instance = dg.DagsterInstance.ephemeral()

    def materialize(name: str, partition: str | None = None, **resources) -> dg.ExecuteInProcessResult:
        return dg.materialize([assets[name]], partition_key=partition, instance=instance, resources=base | resources)

    assert materialize("corpus").success
    for shard in instance.get_dynamic_partitions("launch__corpus_shards"):
        assert materialize("token_shards_vanilla", shard).success
    assert materialize("data_mixture_vanilla", "base").success

    local = materialize("checkpoint_vanilla", "base", trainer=Trainer(device="cpu"))
    stage = outputs(experiment, base).of("checkpoint", "vanilla", "base")
    catalog = Catalog(tmp_path / "catalog")
    curve_sql = "SELECT loss FROM loss_curve WHERE checkpoint_version = ? ORDER BY step"
    local_curve = [r["loss"] for r in catalog.query(curve_sql, [stage.version])]
    for strategy in ("ddp", "fsdp"):
        shutil.rmtree(stage.path)  # the same version again, now trained by the Ray launcher
        trainer = Trainer(device="cpu", launcher="ray", workers=2, strategy=strategy)
        ray_run = materialize("checkpoint_vanilla", "base", trainer=trainer)
        assert ray_run.success, strategy
        ray_curve = [r["loss"] for r in catalog.query(curve_sql, [stage.version])]
        assert len(ray_curve) == len(local_curve) == 4
        assert max(abs(a - b) for a, b in zip(ray_curve, local_curve, strict=True)) < TOLERANCE, strategy
        [event] = ray_run.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        assert metadata["tokens_seen"] == experiment.training.token_budget == _metadata(local)["tokens_seen"]
        assert metadata["reused_finished_output"] is False and "data:image/png;base64," in metadata["loss_curve"]
        logs = [e.user_message for e in instance.all_logs(ray_run.run_id) if e.user_message]
        assert any(m.startswith("trained 4 steps") for m in logs)  # rank 0's progress reached the Dagster run log


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}
