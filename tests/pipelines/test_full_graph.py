"""The whole graph, materialized in-process on a micro config: real corpus text, real SmolLM2 thinking through
Ray, real tokenizer, real training, real lm-eval, real DuckDB. Then again, to show nothing is recomputed."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from transformers import AutoModelForCausalLM, AutoTokenizer

from assets.benchmarks import upstream_outputs
from assets.mixture import training_sequences
from pipelines.definitions import build_definitions
from pipelines.run import main, run_experiment
from resources import ArtifactStorage, DuckDBCatalog, Evaluator, RayCluster, ThinkingGenerator, Trainer
from tests.support import outputs
from tpt.catalog import Catalog
from tpt.config import Experiment
from tpt.stages import Outputs
from tpt.training import TrainResult

pytestmark = pytest.mark.slow


def micro(embedded: Experiment) -> Experiment:
    raw = embedded.model_dump(mode="json")
    raw["name"] = "micro"
    for source in raw["corpus"]["sources"]:
        source["max_documents"] = 4
    raw["corpus"]["documents_per_shard"] = 4
    raw["generation"]["sampling"]["max_thinking_tokens"] = 12
    raw["generation"] |= {"max_document_tokens": 64, "batch_size": 4}
    raw["training"] |= {
        "model": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "num_kv_heads": 1,
            "intermediate_size": 64,
            "tie_embeddings": True,
        },
        "seq_len": 128,
        "batch_tokens": 512,
        "token_budget": 2048,
        "warmup_steps": 1,
        "micro_batch_size": 4,
        "checkpoint_every": 2,
    }
    raw["evaluation"] |= {"limit": 1, "max_gen_toks": 8}
    wide = raw["training"]["model"] | {"hidden_size": 48, "num_heads": 2}
    raw["scales"] = [{"name": "base"}, {"name": "wide", "model": wide, "token_budget": 4096}]  # a 2-run matrix
    return Experiment.model_validate(raw)


@pytest.fixture(scope="module")
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def resources_at(root: Path) -> dict:
    return {
        "storage": ArtifactStorage(root=str(root / "artifacts")),
        "catalog": DuckDBCatalog(path=str(root / "catalog.duckdb")),
        "ray_cluster": RayCluster(num_cpus=2),
        "generator": ThinkingGenerator(torch_threads=2),
        "trainer": Trainer(device="cpu"),
        "evaluator": Evaluator(device="cpu"),
    }


def outputs_at(experiment: Experiment, root: Path) -> Outputs:
    return outputs(experiment, resources_at(root))


@pytest.fixture(scope="module")
def run(embedded, tmp_path_factory, instance):
    experiment = micro(embedded)
    root = tmp_path_factory.mktemp("graph")
    defs = build_definitions([experiment], resources_at(root))
    first = run_experiment(defs, experiment, instance)
    second = run_experiment(defs, experiment, instance)
    return experiment, root, first, second


def _events(results: list[dg.ExecuteInProcessResult]):
    return [e for r in results for e in r.get_asset_materialization_events()]


def _metadata(results: list[dg.ExecuteInProcessResult], name: str) -> dict:
    """Metadata of the last materialization of ``name`` (a per-shard asset's shards share one run's metadata)."""
    [*_, event] = [e for e in _events(results) if e.asset_key.path[-1] == name]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _summed(results: list[dg.ExecuteInProcessResult], name: str, key: str) -> int:
    """A per-shard figure added over the shard partitions of the run that materialized them (each partition's
    materialization carries its own shard's figures)."""
    [run] = [r for r in results if any(e.asset_key.path[-1] == name for e in r.get_asset_materialization_events())]
    events = [e for e in run.get_asset_materialization_events() if e.asset_key.path[-1] == name]
    assert len({e.partition for e in events}) == len(events) > 1
    return sum(e.materialization.metadata[key].value for e in events)


def test_every_asset_and_check_succeeds(run):
    experiment, _, first, _ = run
    benchmarks = list(experiment.evaluation.benchmarks)
    scales = experiment.scale_names
    each_run = ["training", *["benchmarks"] * len(benchmarks)]  # a run's cells right after its training
    jobs = ["corpus", "generation_estimate", "data", *each_run * len(scales), "report"]
    assert [r.job_def.name for r in first] == [f"micro_{j}" for j in jobs]
    assert all(r.success for r in first)
    per_asset = {}
    for event in _events(first):
        per_asset.setdefault(event.asset_key.path[-1], []).append(event.partition)
    shards = ["shard-00000", "shard-00001"]
    for name in ("thinking_trajectories_tpt", "augmented_documents_tpt", "token_shards_vanilla", "token_shards_tpt"):
        assert sorted(per_asset.pop(name)) == shards  # one materialization per shard partition
    for variant in experiment.variants:  # one run per scale, then per (scale, benchmark) cell
        assert per_asset.pop(f"data_mixture_{variant}") == per_asset.pop(f"checkpoint_{variant}") == scales
        assert per_asset.pop(f"benchmark_scores_{variant}") == [f"{b}|{s}" for s in scales for b in benchmarks]
    for name in ("corpus", "corpus_manifest", "thinking_model_tpt"):  # the corpus job, then the data run found them
        assert per_asset.pop(name) == [None, None]
    assert set(per_asset) == {"generation_cost_estimate_tpt", "report"}
    checks = [c for r in first for c in r.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]


def test_document_counts_agree_across_stages(run):
    _, _, first, _ = run
    corpus = _metadata(first, "corpus")
    assert corpus["documents"] == 8 and corpus["shards"] == 2
    assert _summed(first, "thinking_trajectories_tpt", "documents") == 8
    assert _summed(first, "augmented_documents_tpt", "documents") == 8
    for variant in ("vanilla", "tpt"):
        assert _summed(first, f"token_shards_{variant}", "documents") == 8


def test_token_counts_agree_across_stages(run, smollm2_dir):
    experiment, root, first, _ = run
    plan = outputs_at(experiment, root)
    catalog = Catalog(root / "catalog.duckdb")
    [row] = catalog.query(
        "SELECT sum(output_tokens) AS out, count(*) AS docs FROM trajectories WHERE thinking_trajectories_version = ?",
        [plan.of("thinking_trajectories", "tpt").version],
    )
    assert (row["out"], row["docs"]) == (_summed(first, "thinking_trajectories_tpt", "output_tokens"), 8)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    for variant, stage in (("vanilla", plan.of("corpus")), ("tpt", plan.of("augmented_documents", "tpt"))):
        texts = [t for p in sorted(stage.path.glob("shard-*.parquet")) for t in pq.read_table(p)["text"].to_pylist()]
        expected = sum(len(tokenizer(t, split_special_tokens=True)["input_ids"]) + 1 for t in texts)  # + EOS
        assert _summed(first, f"token_shards_{variant}", "real_tokens") == expected
        [packed] = catalog.query(
            "SELECT sum(real_tokens) AS n FROM token_shards WHERE token_shards_version = ?",
            [plan.of("token_shards", variant).version],
        )
        assert packed["n"] == expected


def test_thinking_adds_tokens_and_both_variants_train_on_the_same_budget(run):
    experiment, root, first, _ = run
    trajectories = _metadata(first, "thinking_trajectories_tpt")
    assert trajectories["output_tokens"] > 0 and trajectories["engine"].startswith("transformers-")
    vanilla, tpt = (_summed(first, f"token_shards_{v}", "real_tokens") for v in ("vanilla", "tpt"))
    assert tpt > vanilla
    ckpts = {
        (v, e.partition): {k: m.value for k, m in e.materialization.metadata.items()}
        for e in _events(first)
        for v in ("vanilla", "tpt")
        if e.asset_key.path[-1] == f"checkpoint_{v}"
    }
    assert len(ckpts) == 2 * len(experiment.scales)
    for (variant, scale), ckpt in ckpts.items():
        training = experiment.training_for(scale)
        assert ckpt["tokens_seen"] == ckpts["vanilla" if variant == "tpt" else "tpt", scale]["tokens_seen"]
        assert ckpt["tokens_seen"] == training.token_budget and ckpt["scale"] == scale
        assert ckpt["final_loss"] < ckpt["first_loss"]
        model = AutoModelForCausalLM.from_pretrained(ckpt["final_model"])
        assert model.config.hidden_size == training.model.hidden_size
    plan = outputs_at(experiment, root)
    augmented = pq.read_table(plan.of("augmented_documents", "tpt").path / "shard-00000.parquet").to_pylist()
    thinking = {
        r["doc_id"]: r["thinking"]
        for r in pq.read_table(
            next((plan.of("thinking_trajectories", "tpt").path / "shard-00000").glob("*.parquet"))
        ).to_pylist()
    }
    joined = [r for r in augmented if r["doc_id"] in thinking and thinking[r["doc_id"]]]
    assert joined and all(r["text"].endswith(experiment.join_separator + thinking[r["doc_id"]]) for r in joined)


def test_scores_for_every_benchmark_are_in_range_and_traceable(run):
    experiment, root, first, _ = run
    catalog = Catalog(root / "catalog.duckdb")
    plan = outputs_at(experiment, root)
    cells = {}
    for event in _events(first):
        if event.asset_key.path[-1].startswith("benchmark_scores_"):
            meta = {k: v.value for k, v in event.materialization.metadata.items()}
            cells[(meta["variant"], event.partition)] = meta
    assert len(cells) == len(experiment.variants) * len(experiment.evaluation.benchmarks) * len(experiment.scales)
    for (variant, cell), meta in cells.items():
        benchmark, scale = cell.split("|")
        assert meta["benchmark"] == benchmark and 0.0 <= meta["score"] <= 1.0 and meta["samples"] == 1
        assert meta["stage_version"] == plan.of("benchmark_scores", variant, scale, benchmark).version
        links = [f"checkpoint_{variant}", f"data_mixture_{variant}", f"token_shards_{variant}", "corpus_manifest"]
        assert all(f"[{asset}](/assets/micro/{asset})" in meta["lineage"] for asset in [*links, "corpus"])
        assert ("thinking_trajectories_tpt" in meta["lineage"]) is (variant == "tpt")
        samples = catalog.query(
            "SELECT count(*) AS n, sum(correct::INT) AS right FROM eval_samples "
            "WHERE variant = ? AND benchmark = ? AND benchmark_scores_version = ?",
            [variant, benchmark, meta["stage_version"]],
        )
        assert samples == [{"n": 1, "right": round(meta["score"])}]
    cell = plan.of("benchmark_scores", "tpt", "wide", "gsm8k")
    behind = catalog.lineage("micro", "benchmark_scores", cell.version)
    assert (behind[0]["stage"], behind[0]["version"], behind[0]["depth"]) == (
        "checkpoint",
        plan.of("checkpoint", "tpt", "wide").version,
        1,
    )
    expected = {  # every output behind the cell, as the declarations say, and nothing else
        (o.stage, o.version) for o, _ in upstream_outputs(plan, cell)
    }
    assert {(r["stage"], r["version"]) for r in behind} == expected
    assert {stage for stage, _ in expected} == {
        "checkpoint", "data_mixture", "token_shards", "corpus_manifest", "augmented_documents",
        "thinking_trajectories", "thinking_model", "corpus",
    }  # fmt: skip
    inputs = catalog.score_inputs("micro", "tpt", "gsm8k", cell.version)
    rows = {u["stage"]: u["rows"] for u in inputs["upstream"]}
    assert (
        Path(rows["checkpoint"][0]["path"]).resolve() == (plan.of("checkpoint", "tpt", "wide").path / "final").resolve()
    )
    assert rows["checkpoint"][0]["scale"] == "wide"
    shards = ["shard-00000", "shard-00001"]
    assert [r["shard"] for r in rows["token_shards"]] == [r["shard"] for r in rows["thinking_trajectories"]] == shards
    assert sum(r["documents"] for r in rows["corpus"]) == 8
    report = _metadata(first, "report")
    assert "gsm8k" in report["scores"] and "paper 8B 100B tok tpt" in report["scores"] and "wide" in report["scores"]
    assert "data:image/png;base64," in report["loss_curves"]


def test_lineage_command_lists_the_inputs_behind_one_score(run, tmp_path, monkeypatch, capsys):
    experiment, root, _, _ = run
    path = tmp_path / "micro.yaml"
    path.write_text(json.dumps(experiment.model_dump(mode="json")))  # JSON is YAML
    monkeypatch.setenv("TPT_ARTIFACT_ROOT", str(root / "artifacts"))
    monkeypatch.setenv("TPT_CATALOG", str(root / "catalog.duckdb"))
    assert main(["lineage", str(path), "--variant", "vanilla", "--benchmark", "mbpp"]) == 0
    found = json.loads(capsys.readouterr().out)
    plan = outputs_at(experiment, root)
    assert (
        found["version"] == plan.of("benchmark_scores", "vanilla", "base", "mbpp").version and found["scale"] == "base"
    )
    cell = plan.of("benchmark_scores", "vanilla", "base", "mbpp")
    assert [(u["stage"], u["version"]) for u in found["upstream"]][0] == (
        "checkpoint",
        plan.of("checkpoint", "vanilla", "base").version,
    )
    assert {(u["stage"], u["version"]) for u in found["upstream"]} == {
        (o.stage, o.version) for o, _ in upstream_outputs(plan, cell)
    }
    assert not {u["stage"] for u in found["upstream"]} & {"thinking_trajectories", "augmented_documents"}
    assert len(found["samples"]) == 1 and [s["metric"] for s in found["scores"] if s["primary_metric"]] == [
        "pass@1,create_test"
    ]


def test_tokens_seen_per_source_is_a_catalog_query_that_follows_the_mixture(run):
    experiment, root, first, _ = run
    catalog = Catalog(root / "catalog.duckdb")
    plan = outputs_at(experiment, root)
    for variant in experiment.variants:
        seen = catalog.tokens_seen("micro", plan.of("checkpoint", variant, "base").version)
        assert [r["source"] for r in seen] == ["openwebtext", "wikipedia"]
        half = training_sequences(experiment, "base") // 2  # weights 0.5 / 0.5
        assert [r["sequences"] for r in seen] == [half, half]
        packed = catalog.query(
            "SELECT source, sum(real_tokens) AS n FROM token_sources WHERE token_shards_version = ? GROUP BY source",
            [plan.of("token_shards", variant).version],
        )
        assert {r["source"] for r in packed} == {"openwebtext", "wikipedia"}
        assert all(0 < r["real_tokens"] <= half * experiment.training.seq_len for r in seen)
        report = _metadata(first, "report")["real_tokens_seen_by_source"]
        assert report[f"{variant}@base"] == {r["source"]: r["real_tokens"] for r in seen}


def test_second_run_recomputes_nothing(run):
    experiment, root, _, second = run
    assert all(r.success for r in second)
    events = _events(second)
    assert {e.asset_key.path[-1] for e in events} == {e.asset_key.path[-1] for e in _events(run[2])}
    for event in events:
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        if event.asset_key.path[-1] == "thinking_model_tpt":  # a lookup of an input, never a computation
            continue
        assert meta["reused_finished_output"] is True, event.asset_key
    for scale in experiment.scale_names:
        stage = outputs_at(experiment, root).of("checkpoint", "tpt", scale)
        assert TrainResult.load(stage.path).resumed_from_step == 0  # trained once, never again


def _changed(experiment: Experiment, section: str, **fields) -> Experiment:
    raw = experiment.model_dump(mode="json")
    raw[section] |= fields
    return Experiment.model_validate(raw)


def _stale(experiment: Experiment, root: Path, instance: dg.DagsterInstance) -> set[str]:
    """What the UI marks stale for this config against the runs in the instance, through Dagster's own resolver."""
    graph = build_definitions([experiment], resources_at(root)).resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, loading_context=view)
    stale = set()
    for key in graph.get_all_asset_keys():
        partitions_def = graph.get(key).partitions_def
        partitions = partitions_def.get_partition_keys(dynamic_partitions_store=instance) if partitions_def else [None]
        if any(resolver.get_status(key, p) == StaleStatus.STALE for p in partitions):
            stale.add(key.path[-1])
    return stale


TPT_BELOW_THINKING = {
    "generation_cost_estimate_tpt",
    "thinking_trajectories_tpt",
    "augmented_documents_tpt",
    "token_shards_tpt",
    "data_mixture_tpt",
    "checkpoint_tpt",
    "benchmark_scores_tpt",
    "report",
}


def test_staleness_follows_what_changed(run, instance):
    experiment, root, _, _ = run
    assert _stale(experiment, root, instance) == set()  # an unchanged graph after a full run: nothing stale
    prompt = experiment.generation.prompt.model_copy(update={"version": "tpt-paper-v2"})
    assert _stale(_changed(experiment, "generation", prompt=prompt.model_dump()), root, instance) == (
        TPT_BELOW_THINKING
    )
    evaluation = _changed(experiment, "evaluation", max_gen_toks=16)
    assert _stale(evaluation, root, instance) == {"benchmark_scores_vanilla", "benchmark_scores_tpt", "report"}


def test_a_new_checkpoint_asks_for_exactly_its_missing_cells(run, instance):
    experiment, root, _, _ = run

    def tick(config: Experiment, cursor: str | None):
        defs = build_definitions([config], resources_at(root))
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=resources_at(root)
        )
        with context:
            return defs.resolve_sensor_def("micro_new_checkpoints").evaluate_tick(context)

    scored = tick(experiment, None)  # every checkpoint already has all its scores
    assert scored.run_requests == [] and scored.cursor is not None
    unscored = tick(_changed(experiment, "evaluation", max_gen_toks=16), None)
    cells = sorted((r.asset_selection[0].path[-1], r.partition_key) for r in unscored.run_requests)
    assert cells == sorted(
        (f"benchmark_scores_{v}", f"{b}|{s}")
        for v in experiment.variants
        for s in experiment.scale_names
        for b in experiment.evaluation.benchmarks
    )  # once per cell, though each checkpoint was materialized twice
    assert tick(_changed(experiment, "evaluation", max_gen_toks=16), unscored.cursor).run_requests == []


def test_lineage_command_lists_the_scores_one_document_stands_behind(run, tmp_path, monkeypatch, capsys):
    experiment, root, _, _ = run
    path = tmp_path / "micro.yaml"
    path.write_text(json.dumps(experiment.model_dump(mode="json")))
    monkeypatch.setenv("TPT_ARTIFACT_ROOT", str(root / "artifacts"))
    monkeypatch.setenv("TPT_CATALOG", str(root / "catalog.duckdb"))
    catalog = Catalog(root / "catalog.duckdb")
    [doc] = catalog.query("SELECT doc_id, shard FROM documents ORDER BY doc_id LIMIT 1")
    assert main(["lineage", str(path), "--document", doc["doc_id"]]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [t["shard"] for t in found["trajectories"]] == [doc["shard"]]
    cells = {(r["variant"], r["scale"], r["benchmark"]) for r in found["scores"]}
    assert cells == {
        (v, s, b) for v in experiment.variants for s in experiment.scale_names for b in experiment.evaluation.benchmarks
    }
    assert {c["checkpoint_version"] for c in found["checkpoints"]} == {
        outputs_at(experiment, root).of("checkpoint", v, s).version
        for v in experiment.variants
        for s in experiment.scale_names
    }
    assert main(["lineage", str(path), "--document", "no-such-doc"]) == 2
    assert "not in the catalog" in capsys.readouterr().err
