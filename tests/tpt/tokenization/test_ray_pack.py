"""Packing as Ray tasks: finished shards are not redone, and a bad shard fails in one line without losing the rest."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tpt.tokenization.pack import PackError
from tpt.tokenization.ray_pack import PackJob, pack_on_ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _shard(path, texts):
    pq.write_table(pa.table({"source": ["web"] * len(texts), "text": texts}), path)
    return str(path)


def test_finished_shards_are_kept_and_skipped_and_a_bad_shard_fails_in_one_line(local_ray, tmp_path, tokenizer_dir):
    good = PackJob(_shard(tmp_path / "a.parquet", ["One document.", "Another one."]), str(tmp_path / "a.bin"))
    empty = PackJob(_shard(tmp_path / "b.parquet", ["", ""]), str(tmp_path / "b.bin"))
    indexes, packed = pack_on_ray([good], str(tokenizer_dir), 8, print)
    assert packed == 1 and indexes[0]["n_documents"] == 2
    with pytest.raises(PackError, match=r"^no documents to pack into b.bin \(2 empty strings skipped\)$"):
        pack_on_ray([good, empty], str(tokenizer_dir), 8, print)
    assert (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    again, packed = pack_on_ray([good], str(tokenizer_dir), 8, print)
    assert packed == 0 and again[0]["sha256"] == indexes[0]["sha256"]


def test_a_packing_task_reserves_memory_for_its_shards_text(tmp_path):
    """From the parquet footer: the measured bytes per text byte on top of the worker's own, so a shard ten times
    larger reserves about ten times the text part, and Ray starts no more tasks than a node's memory holds."""
    from tpt.tokenization.ray_pack import MEMORY_BASE_BYTES, MEMORY_PER_TEXT_BYTE, task_memory

    sizes = {}
    for n in (100, 1000):
        path = tmp_path / f"s{n}.parquet"
        pq.write_table(pa.table({"source": ["web"] * n, "text": [f"doc {i:06d} " * 50 for i in range(n)]}), path)
        sizes[n] = task_memory(str(path))
        text = sum(len(f"doc {i:06d} " * 50) for i in range(n))
        assert MEMORY_BASE_BYTES + MEMORY_PER_TEXT_BYTE * text <= sizes[n] <= MEMORY_BASE_BYTES + 7 * text
    assert 9 < (sizes[1000] - MEMORY_BASE_BYTES) / (sizes[100] - MEMORY_BASE_BYTES) < 11
