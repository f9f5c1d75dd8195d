"""The data stages with an ``s3://`` artifact root and catalog, against a real S3-compatible server on 127.0.0.1:
corpus -> thinking (the stand-in engine) -> [d; t] -> token shards -> mixture through Dagster, Ray workers reading
and writing the bucket, the same versions and bytes as a local root, the training reader mapping the shards from
it; a second run reuses everything; a store that does not answer or refuses the key fails in one line first."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from upath import UPath

from assets.partitions import corpus_shards
from assets.stage import asset_key
from pipelines.definitions import build_definitions
from pipelines.private import partition_range_tags
from resources import ArtifactStorage, DuckDBCatalog, RayCluster, Trainer
from tests.s3 import BUCKET, free_port, loopback_s3, refusing_s3, s3_environment
from tests.support import outputs, resources_at
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.corpus.build import load_manifest
from tpt.paths import StorageError, check_writable
from tpt.tokenization.reader import PackedShards

pytestmark = pytest.mark.slow

TEXT = "Tides follow the moon, and the sea keeps its own slow calendar of them; this is note {} of many."


def _experiment(embedded: Experiment, inbox: Path) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "objects"
    raw["corpus"] |= {
        "sources": [{"kind": "local", "name": "inbox", "path": str(inbox)}],
        "min_chars": 20,
        "documents_per_shard": 4,
        "shards_per_run": 2,
        "near_dedup": None,  # the documents differ by a number only: near-duplicates by design
        "decontamination": None,
        "build_on_ray": True,  # the corpus tasks read and write the bucket on the workers
    }
    raw["generation"] |= {"engine": "standin"}  # a STAND-IN for the thinking: the data path is what is tested
    raw["mixture"] = {}
    raw["training"] |= {"seq_len": 64, "batch_tokens": 256, "token_budget": 1024}
    return Experiment.model_validate(raw)


def _run_data_stages(experiment: Experiment, resources: dict) -> dict[str, list[dict]]:
    """Corpus, estimate, the shards in runs of ``shards_per_run``, both mixtures; each run's materializations."""
    mixture = dg.define_asset_job(
        "mixtures",
        selection=dg.AssetSelection.assets(*(asset_key(experiment, "data_mixture", v) for v in experiment.variants)),
    )
    defs = dg.Definitions.merge(build_definitions([experiment], resources), dg.Definitions(jobs=[mixture]))
    instance = dg.DagsterInstance.ephemeral()
    found: dict[str, list[dict]] = {}

    def run(job: str, **kwargs) -> None:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            found.setdefault(materialization.asset_key.path[-1], []).append(
                {k: v.value for k, v in materialization.metadata.items()}
            )

    run(f"{experiment.name}_corpus")
    run(f"{experiment.name}_generation_estimate")
    shards = instance.get_dynamic_partitions(corpus_shards(experiment).name)
    for first in range(0, len(shards), experiment.corpus.shards_per_run):
        last = shards[min(first + experiment.corpus.shards_per_run, len(shards)) - 1]
        run(f"{experiment.name}_shards", tags=partition_range_tags(shards[first], last))
    run("mixtures", partition_key=experiment.scale_names[0])
    return found


def _files(folder) -> dict[str, bytes]:
    """Every published file under a folder (local or remote) by relative name, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_data_stages_on_s3_write_what_a_local_root_writes(embedded: Experiment, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = [json.dumps({"text": TEXT.format(i) * 3}) for i in range(10)]
    (inbox / "notes.jsonl").write_text("\n".join(lines) + "\n")
    experiment = _experiment(embedded, inbox)
    cluster = {"ray_cluster": RayCluster(num_cpus=2)}
    local = resources_at(tmp_path / "local", **cluster)
    _run_data_stages(experiment, local)

    with loopback_s3():
        root = f"s3://{BUCKET}/tpt"
        remote = resources_at(tmp_path / "remote", **cluster) | {
            "storage": ArtifactStorage(root=root),
            "catalog": DuckDBCatalog(path=f"{root}/catalog"),
        }
        first = _run_data_stages(experiment, remote)
        assert not any(m["reused_finished_output"] for m in first["corpus"]), first["corpus"]
        plan, local_plan = outputs(experiment, remote), outputs(experiment, local)
        assert isinstance(plan.root, UPath) and str(plan.root) == f"{root}/{experiment.name}"

        manifest = load_manifest(plan.of("corpus").path, plan.of("corpus").version)
        assert manifest is not None and manifest.n_documents == 10 and len(manifest.shard_names) == 3
        for stage, variant in [
            ("corpus", None),
            ("thinking_trajectories", "tpt"),
            ("augmented_documents", "tpt"),
            ("token_shards", "vanilla"),
            ("token_shards", "tpt"),
            ("data_mixture", "vanilla"),
            ("data_mixture", "tpt"),
        ]:
            scale = experiment.scale_names[0] if stage == "data_mixture" else None
            there, here = plan.of(stage, variant, scale), local_plan.of(stage, variant, scale)
            assert there.version == here.version, stage  # the root is a location, never part of a version
            if stage == "thinking_trajectories":  # the parts carry their own timestamps: compare the documents
                assert sorted(p.name for p in there.path.glob("shard-*/_SUCCESS.json")) == sorted(
                    p.name for p in here.path.glob("shard-*/_SUCCESS.json")
                )
                continue
            written, expected = _files(there.path), _files(here.path)
            deterministic = {n for n in expected if not n.endswith((".json", "_manifest.json"))}
            assert set(written) == set(expected), stage
            assert {n: written[n] for n in deterministic} == {n: expected[n] for n in deterministic}, stage

        tokens = PackedShards.from_dir(plan.of("token_shards", "tpt").path)  # mapped from a local cache copy
        local_tokens = PackedShards.from_dir(local_plan.of("token_shards", "tpt").path)
        everything = list(range(len(local_tokens)))
        assert tokens.fingerprint == local_tokens.fingerprint
        np.testing.assert_array_equal(tokens.batch(everything)[0], local_tokens.batch(everything)[0])

        catalog = Catalog(f"{root}/catalog")
        [counted] = catalog.query("SELECT count(*) AS n FROM documents")
        assert counted["n"] == 10
        upstream = catalog.lineage(experiment.name, "token_shards", plan.of("token_shards", "tpt").version)
        assert {"stage": "corpus", "version": plan.of("corpus").version} in [
            {"stage": r["stage"], "version": r["version"]} for r in upstream
        ]
        assert not (Path.cwd() / "s3:").exists()  # the old bug: a URL taken for a local folder name

        # Training (Ray Train) reads the mixture and token shards from the bucket; checkpoints go to the POSIX root.
        job, scale = f"{experiment.name}_training", experiment.scale_names[0]
        unset = build_definitions([experiment], remote | {"storage": ArtifactStorage(root=root, posix_root=None)})
        with pytest.raises(Exception, match="set the storage resource's posix_root"):
            unset.resolve_job_def(job).execute_in_process(partition_key=scale)
        posix = tmp_path / "posix"
        trained = remote | {  # two Ray Train workers, each mapping the shards from its own cache copy
            "storage": ArtifactStorage(root=root, posix_root=str(posix)),
            "trainer": Trainer(launcher="ray", workers=2),
        }
        result = build_definitions([experiment], trained).resolve_job_def(job).execute_in_process(partition_key=scale)
        for variant in experiment.variants:
            folder = outputs(experiment, trained).of("checkpoint", variant, scale).path
            assert isinstance(folder, Path) and folder.is_relative_to(posix) and (folder / "final").is_dir()
        steps = [
            e.event_specific_data.materialization.metadata["steps"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key.path[-1].startswith("checkpoint")
        ]
        assert steps == [4, 4], steps

        again = _run_data_stages(experiment, remote)
        reused = {name: [m["reused_finished_output"] for m in found] for name, found in again.items()}
        assert all(all(flags) for name, flags in reused.items() if name != "thinking_model_tpt"), reused


def test_an_unreachable_store_fails_in_one_line_before_any_work() -> None:
    with s3_environment(f"http://127.0.0.1:{free_port()}"), pytest.raises(StorageError) as caught:  # no listener
        check_writable(f"s3://{BUCKET}/tpt")
    assert "\n" not in str(caught.value) and f"s3://{BUCKET}/tpt" in str(caught.value), caught.value


def test_refused_credentials_and_a_missing_bucket_fail_in_one_line(tmp_path: Path) -> None:
    with refusing_s3():
        with pytest.raises(StorageError, match="cannot be written") as caught:
            check_writable(f"s3://{BUCKET}/tpt")
        assert "\n" not in str(caught.value), caught.value
        # through Dagster: the run fails at its first step's resources, before the step's body reads anything
        storage = ArtifactStorage(root=f"s3://{BUCKET}/tpt")

        @dg.asset
        def touched(storage: ArtifactStorage) -> None:
            raise AssertionError("the step ran with a store that refuses its key")

        with pytest.raises(Exception) as failed:
            dg.materialize([touched], resources={"storage": storage})
        assert "cannot be written" in str(failed.value) or "cannot be written" in str(failed.value.__cause__)
    with loopback_s3():
        with pytest.raises(StorageError, match="cannot be written") as caught:
            check_writable("s3://no-such-bucket/tpt")
        assert "\n" not in str(caught.value), caught.value
