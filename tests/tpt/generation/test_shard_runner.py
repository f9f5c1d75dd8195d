import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tpt.atomic import read_json
from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.errors import InputError
from tpt.generation.engines import EngineSpec, TransformersEngine
from tpt.generation.estimate import estimate, sample_documents, worker_rate
from tpt.generation.requests import INDEX
from tpt.generation.shard_runner import (
    SUCCESS,
    EngineFailedError,
    ModelNotFoundError,
    PlacementError,
    WorkerPlacement,
    generate_shards,
    read_trajectories,
)
from tpt.generation.worker import OUTPUT_COLUMNS, ThinkingWorker

DOCS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts.",
    "A binary search halves the interval each step, so it needs about log2(n) comparisons.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War and shaped the idea of sovereignty.",
    "Ohm's law says the current through a conductor is proportional to the voltage across it.",
    "Mitochondria make most of a cell's ATP through oxidative phosphorylation.",
    "Merge sort splits a list in halves, sorts each half and merges them in linear time.",
]


@pytest.fixture(scope="module")
def generation(embedded) -> GenerationConfig:
    return GenerationConfig(
        model=embedded.generation.model,
        prompt=PromptConfig(version="test"),
        sampling=SamplingConfig(max_thinking_tokens=6, seed=3),
        max_document_tokens=64,
        batch_size=2,
    )


@pytest.fixture(scope="module")
def spec(smollm2_dir) -> EngineSpec:
    return EngineSpec("transformers", str(smollm2_dir), torch_threads=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _shards() -> dict[str, pa.Table]:
    """Two shards of three documents, as the corpus writes them."""
    rows = [{"doc_id": f"doc{i}", "source": ["web", "code"][i % 2], "text": t} for i, t in enumerate(DOCS)]
    return {"shard-00000": pa.Table.from_pylist(rows[:3]), "shard-00001": pa.Table.from_pylist(rows[3:])}


class PoisonEngine:
    """The real engine, except that any batch holding the word POISON raises, as a broken request would."""

    def __init__(self, real: TransformersEngine):
        self.real, self.tokenizer = real, real.tokenizer

    @property
    def version(self) -> str:
        return self.real.version

    def generate(self, prompts, sampling, seeds):
        if any("POISON" in p for p in prompts):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return self.real.generate(prompts, sampling, seeds)


def test_worker_generates_and_records_a_poison_document_without_failing_the_batch(spec, generation):
    worker = ThinkingWorker(spec, generation, engine=PoisonEngine(TransformersEngine(spec)))
    batch = {
        "doc_id": ["a", "b", "c"],
        "shard": ["s"] * 3,
        "request_key": ["ka", "kb", "kc"],
        "source": ["web"] * 3,
        "text": [DOCS[0], "POISON " + DOCS[1], DOCS[2]],
    }
    out = worker(batch)
    assert set(out) == set(OUTPUT_COLUMNS)
    assert out["finish_reason"][1] == "error" and "device-side assert" in out["error"][1]
    assert out["thinking"][1] is None and out["output_tokens"][1] == 0
    assert out["request_key"] == ["ka", "kb", "kc"] and out["from_cache"] == [False] * 3
    for i in (0, 2):
        assert out["error"][i] is None and out["finish_reason"][i] in ("stop", "length")
        assert 0 < out["output_tokens"][i] <= 6 and out["prompt_tokens"][i] > out["document_tokens"][i]


def test_one_pool_covers_many_shards_and_resumes_at_document_level(local_ray, tmp_path, spec, generation):
    out = tmp_path / "trajectories" / "v1"
    lines: list[str] = []
    first = generate_shards(_shards(), out, spec, generation, WorkerPlacement(), lines.append)
    assert [s.generated_this_run for s in first.values()] == [3, 3]
    assert all((out / shard / SUCCESS).exists() for shard in first)
    assert any(line.startswith("thinking: 6/6 (100.0%)") and "ETA" in line for line in lines)
    for shard, table in _shards().items():  # every document landed in its own shard's folder, once
        assert sorted(read_trajectories(out / shard)["doc_id"].to_pylist()) == table["doc_id"].to_pylist()

    # A run killed after some batches leaves some parts: drop one part of shard 0 and its success marker.
    parts = sorted((out / "shard-00000").glob("part-*.parquet"))
    kept = {r["doc_id"]: r["thinking"] for r in read_trajectories(out / "shard-00000").to_pylist()}
    lost = set(pq.read_table(parts[0])["doc_id"].to_pylist())
    parts[0].unlink()
    (out / "shard-00000" / SUCCESS).unlink()
    second = generate_shards(_shards(), out, spec, generation, WorkerPlacement(), lines.append)
    assert second["shard-00000"].generated_this_run == len(lost)
    assert second["shard-00000"].finished_before == 3 - len(lost)
    assert second["shard-00001"] == first["shard-00001"]  # finished shard: read from its marker
    again = {r["doc_id"]: r["thinking"] for r in read_trajectories(out / "shard-00000").to_pylist()}
    assert sorted(again) == ["doc0", "doc1", "doc2"]
    assert all(again[d] == kept[d] for d in kept if d not in lost)  # finished work kept, not regenerated


def test_request_cache_reuses_identical_requests_and_regenerates_changed_ones(local_ray, tmp_path, spec, generation):
    root = tmp_path / "artifacts"
    first = generate_shards(
        _shards(), root / "exp" / "trajectories" / "v1", spec, generation, WorkerPlacement(), print, cache_root=root
    )
    assert sum(s.cache_hits for s in first.values()) == 0

    # Another stage version with the same generation settings (say, the corpus grew): every request is a hit.
    cached = generate_shards(
        _shards(), root / "exp" / "trajectories" / "v2", spec, generation, WorkerPlacement(), print, cache_root=root
    )
    assert [(s.cache_hits, s.generated_this_run) for s in cached.values()] == [(3, 0), (3, 0)]
    v1, v2 = (read_trajectories(root / "exp" / "trajectories" / v / "shard-00000") for v in ("v1", "v2"))
    by_id = {r["doc_id"]: r for r in v1.to_pylist()}
    for row in v2.to_pylist():
        assert row["from_cache"] and row["thinking"] == by_id[row["doc_id"]]["thinking"]

    # Changed sampling: every request key changes, so everything is generated again.
    hotter = generation.model_copy(update={"sampling": generation.sampling.model_copy(update={"temperature": 0.9})})
    changed = generate_shards(
        _shards(), root / "exp" / "trajectories" / "v3", spec, hotter, WorkerPlacement(), print, cache_root=root
    )
    assert [(s.cache_hits, s.generated_this_run) for s in changed.values()] == [(0, 3), (0, 3)]


def test_cost_estimate_scales_a_timed_sample(local_ray, tmp_path, spec, generation):
    sample = sample_documents(_shards(), 4)
    assert sample["doc_id"].to_pylist() == ["doc0", "doc2", "doc3", "doc5"]  # evenly spread, deterministic
    out = tmp_path / "estimate"
    generate_shards({"shard-sample": sample}, out, spec, generation, WorkerPlacement(), print)
    rate = worker_rate(out / "shard-sample")
    telemetry = read_json(out / "shard-sample" / SUCCESS)["telemetry"]
    assert rate == telemetry["output_tokens_per_s_per_replica"] > 0  # the engine's rate while generating
    assert rate > telemetry["output_tokens"] / read_json(out / "shard-sample" / SUCCESS)["wall_s"]  # start excluded


def test_estimate_matches_values_worked_out_by_hand():
    sample = pa.table(
        {
            "output_tokens": [10, 20, 30, 40, 0],
            "prompt_tokens": [100, 100, 200, 200, 0],
            "finish_reason": ["stop", "stop", "length", "stop", "error"],  # the error row is left out
        }
    )
    result = estimate(sample, 5.0, 1000, WorkerPlacement(workers=2, gpus_per_worker=1))
    # mean 25 tokens x 1000 documents = 25,000 tokens; at 5 tok/s on each of 2 workers: 2,500 s = 0.6944 h.
    assert result.sample_documents == 4 and result.mean_output_tokens == 25.0 and result.mean_prompt_tokens == 150.0
    assert result.estimated_output_tokens == 25_000
    assert result.estimated_wall_hours == 0.6944 and result.estimated_gpu_hours == 1.3889
    assert result.estimated_worker_hours == 1.3889 and result.p90_output_tokens == 37.0
    assert result.stopped_share == 0.75
    assert estimate(sample, 5.0, 1000, WorkerPlacement()).estimated_gpu_hours is None  # CPU workers
    with pytest.raises(ValueError, match="no timed, successful generations"):
        estimate(sample, 0.0, 1000, WorkerPlacement())


def test_asking_for_more_gpus_than_the_cluster_has_fails_before_waiting(local_ray, tmp_path, spec, generation):
    with pytest.raises(PlacementError, match="asks for 1 GPU per worker, the Ray cluster has 0"):
        generate_shards(_shards(), tmp_path / "t", spec, generation, WorkerPlacement(gpus_per_worker=1), print)
    assert not list(tmp_path.rglob("part-*.parquet"))


def test_a_missing_model_folder_is_bad_input_and_a_broken_one_a_retriable_engine_failure(
    local_ray, tmp_path, generation
):
    missing = EngineSpec("transformers", str(tmp_path / "no-such-model"), torch_threads=2)
    with pytest.raises(ModelNotFoundError, match="no-such-model does not exist"):
        generate_shards(_shards(), tmp_path / "t", missing, generation, WorkerPlacement(), print)
    (tmp_path / "broken-model").mkdir()  # there, but no model in it: the workers fail to start
    broken = EngineSpec("transformers", str(tmp_path / "broken-model"), torch_threads=2)
    with pytest.raises(EngineFailedError) as err:
        generate_shards(_shards(), tmp_path / "t", broken, generation, WorkerPlacement(), print)
    message = str(err.value)
    assert message.startswith("the transformers workers failed (") and "tokenizer" in message
    assert "\n" not in message and "a rerun resumes after them" in message
    assert isinstance(ModelNotFoundError("x"), InputError) and not isinstance(err.value, InputError)


class EngineDeadError(RuntimeError):
    """Named as vLLM names the error of an engine that cannot serve again."""


class DeadEngine(PoisonEngine):
    def generate(self, prompts, sampling, seeds):
        raise EngineDeadError("EngineCore encountered an issue")


def test_a_dead_engine_fails_the_batch_instead_of_blaming_its_documents(spec, generation):
    worker = ThinkingWorker(spec, generation, engine=DeadEngine(TransformersEngine(spec)))
    batch = {
        "doc_id": ["a", "b"],
        "shard": ["s"] * 2,
        "request_key": ["ka", "kb"],
        "source": ["web"] * 2,
        "text": DOCS[:2],
    }
    with pytest.raises(EngineDeadError):
        worker(batch)  # Ray then replaces the actor; no document is recorded as poison


def test_a_request_regenerated_gives_the_same_text_whatever_its_batch(spec):
    engine = TransformersEngine(spec)
    sampling = SamplingConfig(max_thinking_tokens=12, seed=0, temperature=1.0, top_p=0.95)
    alone = engine.generate([DOCS[0]], sampling, [11])[0].text
    assert engine.generate([DOCS[0]], sampling, [11])[0].text == alone  # same seed, same sample
    assert engine.generate([DOCS[3], DOCS[0]], sampling, [5, 11])[1].text == alone  # its own seed, not its mates'
    assert engine.generate([DOCS[0]], sampling, [12])[0].text != alone  # and the seed matters


def test_the_estimate_sample_is_found_by_the_real_run(local_ray, tmp_path, spec, generation):
    """The cost estimate's sample lands in the request index under the artifact root, whatever the stage folders
    are called, so the real stage copies those documents instead of generating them again; an index rebuilt from
    the parts (deleted, say) finds them too."""
    root = tmp_path / "artifacts"
    sample = sample_documents(_shards(), 2)
    estimate_dir = root / "exp" / "generation_cost_estimate" / "tpt-e1"
    generate_shards({"shard-sample": sample}, estimate_dir, spec, generation, WorkerPlacement(), print, cache_root=root)
    for index in root.glob(f"{INDEX}*"):
        index.unlink()
    real = generate_shards(
        _shards(), root / "exp" / "thinking_trajectories" / "tpt-t1", spec, generation, WorkerPlacement(), print,
        cache_root=root,
    )  # fmt: skip
    assert sum(s.cache_hits for s in real.values()) == 2
    assert sum(s.generated_this_run for s in real.values()) == 6 - 2
