"""Generation from shard files: the workers read the documents and write the parts; resume and the request cache
behave as with tables."""

import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tpt.config import GenerationConfig, PromptConfig, SamplingConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_files import generate_shard_files, shard_ids
from tpt.generation.shard_runner import SUCCESS, WorkerPlacement, read_trajectories

DOCS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts.",
    "A binary search halves the interval each step, so it needs about log2(n) comparisons.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War and shaped the idea of sovereignty.",
    "Ohm's law says the current through a conductor is proportional to the voltage across it.",
    "Mitochondria make most of a cell's ATP through oxidative phosphorylation.",
]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _corpus(folder) -> dict[str, list[str]]:
    """Two shard files (3 + 2 documents), as the corpus writes them."""
    rows = [{"doc_id": f"doc{i}", "source": ["web", "code"][i % 2], "text": t} for i, t in enumerate(DOCS)]
    shards = {"shard-00000": rows[:3], "shard-00001": rows[3:]}
    folder.mkdir(parents=True)
    for name, part in shards.items():
        pq.write_table(pa.Table.from_pylist(part), folder / f"{name}.parquet")
    return {name: [r["doc_id"] for r in part] for name, part in shards.items()}


def test_workers_read_the_shards_write_the_parts_and_a_rerun_resumes(local_ray, tmp_path, smollm2_dir, embedded):
    generation = GenerationConfig(
        model=embedded.generation.model,
        prompt=PromptConfig(version="test"),
        sampling=SamplingConfig(max_thinking_tokens=4, seed=3),
        max_document_tokens=48,
        batch_size=2,
    )
    spec = EngineSpec("transformers", str(smollm2_dir), torch_threads=2)
    corpus, root = tmp_path / "corpus", tmp_path / "art"
    ids = _corpus(corpus)
    out = root / "exp" / "trajectories" / "v1"
    lines: list[str] = []
    first = generate_shard_files(corpus, list(ids), out, spec, generation, WorkerPlacement(), lines.append)
    assert [s.generated_this_run for s in first.values()] == [3, 2]
    assert "read and written on the workers" in lines[0]
    for shard, expected in ids.items():  # every document once, in its own shard's folder, with its thinking
        table = read_trajectories(out / shard)
        assert sorted(table["doc_id"].to_pylist()) == expected and (out / shard / SUCCESS).exists()
        assert all(r["thinking"] is not None and r["request_key"] for r in table.to_pylist())

    # Killed after some batches: one part of shard 0 gone with its marker; the rerun redoes exactly that part.
    parts = sorted((out / "shard-00000").glob("part-*.parquet"))
    lost = set(pq.read_table(parts[0])["doc_id"].to_pylist())
    kept = {p.name: p.stat().st_mtime_ns for p in parts[1:]}
    parts[0].unlink()
    (out / "shard-00000" / SUCCESS).unlink()
    second = generate_shard_files(corpus, list(ids), out, spec, generation, WorkerPlacement(), print)
    assert (second["shard-00000"].generated_this_run, second["shard-00000"].finished_before) == (
        len(lost),
        3 - len(lost),
    )
    assert second["shard-00001"] == first["shard-00001"]  # finished: read from its marker, no worker touched it
    assert sorted(shard_ids(out / "shard-00000")["doc_id"].to_pylist()) == ids["shard-00000"]  # none twice
    assert all((out / "shard-00000" / n).stat().st_mtime_ns == t for n, t in kept.items())  # finished parts kept

    # Another stage version with the same settings finds every request in the cache: nothing reaches Ray.
    cached = generate_shard_files(
        corpus,
        list(ids),
        root / "exp" / "trajectories" / "v2",
        spec,
        generation,
        WorkerPlacement(),
        print,
        cache_root=root,
    )
    assert [(s.cache_hits, s.generated_this_run) for s in cached.values()] == [(3, 0), (2, 0)]


def test_the_reads_and_writes_run_beside_engine_actors_that_hold_every_cpu(local_ray, tmp_path, smollm2_dir, embedded):
    """The embedded default's one actor takes both cores of this Ray (and the rehearsal's two actors both nodes'):
    a read or write that waited for a CPU would wait forever, so a hang fails here after five minutes."""
    generation = GenerationConfig(
        model=embedded.generation.model, prompt=PromptConfig(version="test"), max_document_tokens=48, batch_size=2
    )
    ids = _corpus(tmp_path / "corpus")

    def hung(*_):
        raise TimeoutError("generation from shard files still running after 300 s: a task waits for a CPU")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(300)
    try:
        summaries = generate_shard_files(
            tmp_path / "corpus",
            list(ids),
            tmp_path / "out",
            EngineSpec("standin", str(smollm2_dir)),
            generation,
            WorkerPlacement(cpus_per_worker=ray.cluster_resources()["CPU"]),
            print,
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert {s: summary.documents for s, summary in summaries.items()} == {s: len(d) for s, d in ids.items()}


def test_the_estimate_reads_the_same_sample_from_files_row_groups_only(tmp_path):
    """The same documents as ``sample_documents`` over whole tables, read from shard files of many row groups."""
    from tpt.generation.estimate import sample_documents, sample_shard_files

    tables = {}
    for s, n in (("shard-00000", 1000), ("shard-00001", 37), ("shard-00002", 500)):
        ids = [f"{s}-{i}" for i in range(n)]
        tables[s] = pa.table({"doc_id": ids, "source": ["web"] * n, "text": [f"text of {d}" for d in ids]})
        pq.write_table(tables[s], tmp_path / f"{s}.parquet", row_group_size=64)
    files = {s: (tmp_path / f"{s}.parquet", t.num_rows) for s, t in tables.items()}
    for n in (16, 1, 5000):
        assert sample_shard_files(files, n).equals(sample_documents(tables, n))
