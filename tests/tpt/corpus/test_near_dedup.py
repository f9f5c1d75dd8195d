"""Near-duplicates (same page, a changed line) are dropped and counted, also against documents of earlier builds."""

import json
import random

from tpt.config import CorpusConfig, LocalFolder, NearDedupConfig
from tpt.corpus.build import build_corpus, read_shard
from tpt.corpus.near_dedup import NearDuplicates

VOCABULARY = [f"{a}{b}" for a in ("river", "delta", "flood", "silt", "tide", "bank") for b in "abcdefghijklmnopqrst"]


def _article(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(400))


ARTICLE = _article(0)


def _write(folder, name, texts):
    (folder / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_near_duplicate_is_dropped_and_distinct_document_kept():
    near = NearDuplicates(NearDedupConfig())
    assert near.duplicate_of("a", ARTICLE) is None
    edited = ARTICLE.split()
    edited[100:103] = ["an", "edited", "line"]
    assert near.duplicate_of("b", " ".join(edited)) == "a"
    assert near.duplicate_of("c", _article(1)) is None


def test_corpus_build_counts_near_duplicates_also_across_appends(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    _write(folder, "a.jsonl", [ARTICLE, ARTICLE + " Retrieved 2024-01-01."])
    config = CorpusConfig(
        sources=[LocalFolder(name="web", path=str(folder))],
        near_dedup=NearDedupConfig(),
        decontamination=None,
        min_chars=10,
    )
    out = tmp_path / "out"
    manifest, _ = build_corpus(config, out, "v1")
    assert manifest.n_documents == 1
    assert manifest.sources["web"]["counts"] == {"near_duplicate": 1}

    other = _article(1)
    _write(folder, "b.jsonl", [ARTICLE + " Retrieved 2025-06-30.", other])  # appended later
    grown, reused = build_corpus(config, out, "v1")
    assert not reused
    assert grown.sources["web"]["counts"] == {"near_duplicate": 2}
    texts = [t for s in grown.shard_names for t in read_shard(out, s)["text"].to_pylist()]
    assert texts == [ARTICLE, other]
