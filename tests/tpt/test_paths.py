"""Artifact locations on a real S3-compatible server (moto's, on 127.0.0.1): URLs stay URLs, files are published
whole with no local leftovers, remote files are copied into the cache once, the request index of a remote root
lives in the local cache and still finds what was generated, and local paths stay plain paths."""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from upath import UPath

from tests.s3 import BUCKET, loopback_s3
from tpt.atomic import read_json, write_json, write_parquet
from tpt.generation import requests
from tpt.paths import as_path, is_remote, local_copy, read_table, remove_tree, resolved


@pytest.fixture(scope="module")
def bucket() -> Iterator[UPath]:
    with loopback_s3():
        yield as_path(f"s3://{BUCKET}/paths")


def test_local_paths_stay_paths_and_urls_stay_urls(tmp_path: Path) -> None:
    assert type(as_path(tmp_path)) is type(tmp_path) and not is_remote(as_path(tmp_path))
    assert as_path("~/x") == Path.home() / "x" and as_path(f"file://{tmp_path}") == tmp_path
    assert resolved("relative") == Path.cwd() / "relative"
    url = as_path("s3://bucket/a/b.parquet")
    assert is_remote(url) and str(url) == "s3://bucket/a/b.parquet" and str(resolved(url)) == str(url)
    assert str(url.parent / "c.json") == "s3://bucket/a/c.json"


def test_a_published_file_is_whole_and_leaves_nothing_behind(bucket: UPath, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local temporary files go
    table = pa.table({"doc_id": ["a", "b"], "n": [1, 2]})
    write_parquet(bucket / "t" / "x.parquet", table)
    write_json(bucket / "t" / "x.json", {"rows": 2})
    assert read_table(bucket / "t" / "x.parquet").equals(table) and read_json(bucket / "t" / "x.json") == {"rows": 2}
    assert list(tmp_path.iterdir()) == []  # uploaded, then the temporary file removed
    assert sorted(p.name for p in (bucket / "t").glob("*")) == ["x.json", "x.parquet"]  # no temp object either
    with pytest.raises(RuntimeError):  # a write that fails publishes nothing
        write_parquet(bucket / "t" / "y.parquet", _failing())
    assert not (bucket / "t" / "y.parquet").exists() and list(tmp_path.iterdir()) == []


def _failing():
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("the writer failed halfway")

    return Broken()


def test_a_remote_file_is_copied_into_the_cache_once(bucket: UPath, tmp_path: Path) -> None:
    remote = bucket / "blobs" / "tokens.bin"
    remote.write_bytes(b"\x01\x02" * 100)
    first = local_copy(remote, tmp_path)
    assert first.read_bytes() == b"\x01\x02" * 100 and first.is_relative_to(tmp_path)
    downloaded = first.stat().st_mtime_ns
    assert local_copy(remote, tmp_path) == first and first.stat().st_mtime_ns == downloaded  # not fetched again
    remote.write_bytes(b"\x03" * 50)  # the same URL written again (a rebuilt folder, another store): a new copy
    assert local_copy(remote, tmp_path).read_bytes() == b"\x03" * 50 and first.read_bytes() == b"\x01\x02" * 100
    local = tmp_path / "here.bin"
    local.write_bytes(b"x")
    assert local_copy(local, tmp_path / "cache") == local  # a local file is its own copy
    remove_tree(bucket / "blobs")
    remove_tree(bucket / "never-written")  # a folder that is not there is fine
    assert not (bucket / "blobs").exists()


def test_the_request_index_of_a_remote_root_lives_in_the_cache(bucket: UPath, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TPT_CACHE_DIR", str(tmp_path / "cache"))
    root = bucket / "art"
    part = root / "exp" / "thinking_trajectories" / "tpt-v1" / "shard-00000" / "part-1.parquet"
    rows = pa.table(
        {
            "request_key": ["k1", "k2"],
            "finish_reason": ["stop", "error"],
            "doc_id": ["d1", "d2"],
            "thinking": ["t1", ""],
        }
    )
    write_parquet(part, rows)  # written before the index existed: the first lookup backfills it from the bucket
    found = requests.cached_rows(root, ["k1", "k2", "k3"])
    assert found is not None and found["request_key"].to_pylist() == ["k1"]  # an error row is never a hit
    [index] = list((tmp_path / "cache" / "request-index").rglob(requests.INDEX))
    assert not any(p.name == requests.INDEX for p in root.glob("*"))  # nothing of DuckDB's in the bucket
    later = root / "exp" / "thinking_trajectories" / "tpt-v1" / "shard-00000" / "part-2.parquet"
    more = pa.table({"request_key": ["k3"], "finish_reason": ["length"], "doc_id": ["d3"], "thinking": ["t3"]})
    write_parquet(later, more)
    requests.record_part(root, later, more)  # as the driver records each part the workers wrote
    assert requests.cached_rows(root, ["k3"])["thinking"].to_pylist() == ["t3"]
    assert index.exists()
