import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tpt.config import CorpusConfig, LocalFolder
from tpt.corpus.build import build_corpus, document_id, normalize, read_shard
from tpt.corpus.sources import SourceError

LONG = "An ordinary paragraph about tides and the moon, long enough to pass the filter. "


def _jsonl(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    good = [json.dumps({"text": f"{LONG} Document {i}."}).encode() for i in range(5)]
    (folder / "a.jsonl").write_bytes(
        _jsonl(
            good[:3]
            + [
                b'{"text": "bad \xff\xfe utf-8 ' + LONG.encode() + b'"}',  # bad UTF-8
                b'{"text": "unterminated',  # bad JSON
                json.dumps({"body": LONG}).encode(),  # no text field
                json.dumps({"text": "   "}).encode(),  # empty after normalisation
                json.dumps({"text": "too short"}).encode(),
                json.dumps({"text": f"  {LONG} Document 0.\r\n"}).encode(),  # duplicate after normalisation
            ]
        )
    )
    with gzip.open(folder / "b.jsonl.gz", "wb") as fh:
        fh.write(_jsonl(good[3:]))
    (folder / "c.jsonl.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")  # corrupt file
    pq.write_table(pa.table({"text": [f"{LONG} From parquet {i}." for i in range(2)]}), folder / "d.parquet")
    (folder / "e.jsonl").write_bytes(_jsonl(good) * 50)  # oversized for the limit below
    (folder / "f.jsonl").write_bytes(b"")  # empty file
    return folder


def _config(folder, **overrides) -> CorpusConfig:
    source = LocalFolder(name="local", path=str(folder))
    fields = {
        "sources": [source],
        "min_chars": 40,
        "max_chars": 2000,
        "documents_per_shard": 3,
        "max_file_bytes": 4000,
    } | overrides
    return CorpusConfig(**fields)


def test_bad_records_are_counted_skips_and_good_ones_survive(messy_folder, tmp_path):
    manifest, reused = build_corpus(_config(messy_folder), tmp_path / "out", "v1")
    assert not reused
    assert manifest.n_documents == 7  # 3 + 2 (gz) + 2 (parquet)
    counts = manifest.sources["local"]["counts"]
    assert counts == {
        "bad_utf8": 1,
        "bad_json": 1,
        "missing_text_field": 1,
        "empty": 1,
        "too_short": 1,
        "duplicate": 1,
        "unreadable_file": 1,
        "oversized_file": 1,
        "empty_file": 1,
    }
    assert "c.jsonl.gz" in manifest.sources["local"]["examples"]["unreadable_file"][0]
    assert [s["documents"] for s in manifest.shards] == [3, 3, 1]


def test_ids_are_content_hashes_and_rows_are_normalised(messy_folder, tmp_path):
    manifest, _ = build_corpus(_config(messy_folder), tmp_path / "out", "v1")
    rows = [r for s in manifest.shard_names for r in read_shard(tmp_path / "out", s).to_pylist()]
    assert len({r["doc_id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["doc_id"] == document_id(row["text"]) and row["text"] == normalize(row["text"])
    assert document_id(normalize(f"  {LONG}\r\n")) == document_id(LONG.strip())


def test_finished_corpus_is_reused_not_rewritten(messy_folder, tmp_path):
    out = tmp_path / "out"
    build_corpus(_config(messy_folder), out, "v1")
    stamp = os.stat(out / "shard-00000.parquet").st_mtime_ns
    manifest, reused = build_corpus(_config(messy_folder), out, "v1")
    assert reused and manifest.n_documents == 7
    assert os.stat(out / "shard-00000.parquet").st_mtime_ns == stamp
    _, reused_other_version = build_corpus(_config(messy_folder), out, "v2")
    assert not reused_other_version


def test_max_documents_caps_accepted_documents(messy_folder, tmp_path):
    source = LocalFolder(name="local", path=str(messy_folder), max_documents=4)
    manifest, _ = build_corpus(_config(messy_folder, sources=[source]), tmp_path / "out", "v1")
    assert manifest.n_documents == 4


def test_missing_folder_and_empty_result_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        build_corpus(_config(tmp_path / "nowhere"), tmp_path / "out", "v1")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jsonl").write_text(json.dumps({"text": "short"}) + "\n")
    with pytest.raises(ValueError, match="corpus is empty after filtering"):
        build_corpus(_config(empty), tmp_path / "out2", "v1")
    assert not (tmp_path / "out2" / "_manifest.json").exists()


def test_embedded_sources_read_real_text_from_the_registry_wheel(embedded, tmp_path):
    manifest, _ = build_corpus(embedded.corpus, tmp_path / "out", "v1")
    assert manifest.n_documents == 48
    assert {name: s["accepted"] for name, s in manifest.sources.items()} == {"openwebtext": 24, "wikipedia": 24}
    text = read_shard(tmp_path / "out", manifest.shard_names[0])["text"][0].as_py()
    assert len(text) >= embedded.corpus.min_chars and " " in text


def test_new_files_append_new_shards_and_leave_finished_ones_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    first = [json.dumps({"text": f"{LONG} First batch {i}."}) for i in range(4)]
    (folder / "a.jsonl").write_text("\n".join(first) + "\n")
    config = _config(folder)
    out = tmp_path / "out"
    manifest, reused = build_corpus(config, out, "v1")
    assert (manifest.shard_names, reused) == (["shard-00000", "shard-00001"], False)
    stamp = os.stat(out / "shard-00000.parquet").st_mtime_ns

    second = [json.dumps({"text": f"{LONG} Second batch {i}."}) for i in range(2)] + [first[0]]  # one repeat
    (folder / "b.jsonl").write_text("\n".join(second) + "\n")
    grown, reused = build_corpus(config, out, "v1")
    assert not reused and grown.shard_names == ["shard-00000", "shard-00001", "shard-00002"]
    assert grown.n_documents == 6 and grown.sources["local"]["counts"]["duplicate"] == 1
    assert os.stat(out / "shard-00000.parquet").st_mtime_ns == stamp  # finished shards are not rewritten
    assert read_shard(out, "shard-00002")["text"].to_pylist() == [f"{LONG} Second batch {i}." for i in (0, 1)]
    assert set(grown.inputs["local"]) == {str(folder / "a.jsonl"), str(folder / "b.jsonl")}
    assert build_corpus(config, out, "v1")[1] is True  # nothing new: reused
