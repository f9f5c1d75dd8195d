"""Content-hash data versions: what is below an asset goes stale when the bytes it wrote change, and only then.
The mixture's data version hashes its order; a stand-in for the checkpoint (training costs minutes) reads it, and
Dagster's own stale-status resolver, the one the UI uses, judges the stand-in."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus

from assets.partitions import corpus_shards, scale_partitions
from pipelines.graph import experiment_assets
from tests.assets.staged import SCALE, VARIANT, Staged, shards
from tpt.tokenization.mixture import ResolvedMixture


def test_below_the_mixture_goes_stale_when_its_bytes_change_and_only_then(world: Staged, staged: Staged) -> None:
    experiment = world.experiment
    assets = experiment_assets(experiment, world.resources())
    mixture = next(a for a in assets if a.key.path[-1] == f"data_mixture_{VARIANT}")

    @dg.asset(key="checkpoint_stand_in", deps=[mixture.key], partitions_def=scale_partitions(experiment))
    def checkpoint_stand_in() -> None:
        pass

    defs = dg.Definitions(assets=[*assets, checkpoint_stand_in], resources=world.resources())
    graph = defs.resolve_asset_graph()

    def run(asset: dg.AssetsDefinition) -> str:
        result = dg.materialize(
            [mixture, checkpoint_stand_in],
            selection=[asset.key],
            partition_key=SCALE,
            instance=instance,
            resources=world.resources(),
        )
        [event] = result.get_asset_materialization_events()
        return event.event_specific_data.materialization.tags.get("dagster/data_version", "")

    def status() -> StaleStatus:
        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
            instance=instance,
            asset_graph=graph,
        )
        return CachingStaleStatusResolver(instance, graph, loading_context=view).get_status(
            checkpoint_stand_in.key, SCALE
        )

    folder = world.plan.of("data_mixture", VARIANT, SCALE).path
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(corpus_shards(experiment).name, shards(staged))
        first = run(mixture)
        assert first == ResolvedMixture.load(folder).fingerprint  # the order's bytes, not the stage version
        run(checkpoint_stand_in)
        assert status() == StaleStatus.FRESH

        assert run(mixture) == first  # rematerialized, same bytes: nothing below is stale
        assert status() == StaleStatus.FRESH

        order = ResolvedMixture.load(folder)
        ResolvedMixture(np.roll(order.order, 1), order.shares).save(folder)  # same sequences, another order
        changed = run(mixture)
        assert changed != first and changed == ResolvedMixture.load(folder).fingerprint
        assert world.plan.of("data_mixture", VARIANT, SCALE).path == folder  # same config, same stage version
        assert status() == StaleStatus.STALE
