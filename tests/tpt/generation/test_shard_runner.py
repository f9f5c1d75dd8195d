import pyarrow as pa
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec, TransformersEngine
from tpt.generation.shard_runner import SUCCESS, WorkerPlacement, generate_shard, read_trajectories
from tpt.generation.worker import OUTPUT_COLUMNS, ThinkingWorker

DOCS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts.",
    "A binary search halves the interval each step, so it needs about log2(n) comparisons.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War and shaped the idea of sovereignty.",
    "Ohm's law says the current through a conductor is proportional to the voltage across it.",
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


def _documents(n: int = 4) -> pa.Table:
    return pa.table(
        {"doc_id": [f"doc{i}" for i in range(n)], "source": ["web", "code", "web", "science"][:n], "text": DOCS[:n]}
    )


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
    batch = {"doc_id": ["a", "b", "c"], "source": ["web"] * 3, "text": [DOCS[0], "POISON " + DOCS[1], DOCS[2]]}
    out = worker(batch)
    assert set(out) == set(OUTPUT_COLUMNS)
    assert out["finish_reason"][1] == "error" and "device-side assert" in out["error"][1]
    assert out["thinking"][1] is None and out["output_tokens"][1] == 0
    for i in (0, 2):
        assert out["error"][i] is None and out["finish_reason"][i] in ("stop", "length")
        assert 0 < out["output_tokens"][i] <= 6 and out["prompt_tokens"][i] > out["document_tokens"][i]


def test_shard_resumes_at_document_level_without_duplicates(local_ray, tmp_path, spec, generation):
    shard_dir = tmp_path / "shard-00000"
    lines: list[str] = []
    first = generate_shard(_documents(), shard_dir, spec, generation, WorkerPlacement(), lines.append)
    parts = sorted(shard_dir.glob("part-*.parquet"))
    assert first.documents == first.generated_this_run == 4 and len(parts) == 2  # one part per batch of 2
    assert first.output_tokens > 0 and first.errors == 0
    assert any("4/4 (100.0%)" in line and "ETA" in line for line in lines)

    # A run killed after one batch leaves one part: drop the other part and the success marker.
    kept = read_trajectories(shard_dir)
    parts[1].unlink()
    (shard_dir / SUCCESS).unlink()
    survivors = set(read_trajectories(shard_dir)["doc_id"].to_pylist())
    second = generate_shard(_documents(), shard_dir, spec, generation, WorkerPlacement(), lines.append)
    assert second.finished_before == 2 and second.generated_this_run == 2
    final = read_trajectories(shard_dir)
    ids = final["doc_id"].to_pylist()
    assert sorted(ids) == sorted(set(ids)) == [f"doc{i}" for i in range(4)]
    before = {r["doc_id"]: r["thinking"] for r in kept.to_pylist()}
    after = {r["doc_id"]: r["thinking"] for r in final.to_pylist()}
    assert all(after[d] == before[d] for d in survivors)  # finished work is kept, not regenerated

    third = generate_shard(_documents(), shard_dir, None, generation, WorkerPlacement(), lines.append)
    assert third == second  # finished shard: read from the marker, no engine needed
