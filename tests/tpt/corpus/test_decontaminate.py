"""A benchmark problem planted in a corpus document is caught before any thinking is generated for it."""

import json

import pytest

from tpt.config import CorpusConfig, DecontaminationConfig, LocalFolder
from tpt.corpus.build import build_corpus, read_contamination
from tpt.corpus.decontaminate import NgramIndex, words
from tpt.evaluation.data import load_docs

PADDING = "A long ordinary paragraph about gardening, soil, compost and the seasons of planting vegetables. " * 3


@pytest.fixture(scope="module")
def index() -> NgramIndex:
    return NgramIndex.from_test_sets(["gsm8k", "humaneval"], 13)


def test_planted_gsm8k_problem_is_found_with_its_benchmark_and_item(index):
    item = 17
    question = load_docs("gsm8k").docs[item]["question"]
    # Case and punctuation differ from the test set; the words are what count.
    planted = f"{PADDING}\nHomework help!! {question.upper().replace(',', ' ;')} Thanks in advance.\n{PADDING}"
    match = index.find(planted)
    assert match is not None and (match.benchmark, match.item) == ("gsm8k", item)
    assert match.ngram in " ".join(words(question))


def test_planted_humaneval_solution_is_found(index):
    doc = load_docs("humaneval").docs[3]
    match = index.find(f"{PADDING}\n```python\n{doc['prompt']}{doc['canonical_solution']}```\n")
    assert match is not None and match.benchmark == "humaneval"


def test_twelve_shared_words_are_not_thirteen():
    text = " ".join(f"w{i}" for i in range(40))
    index = NgramIndex({"toy": [text]}, 13)
    shared = " ".join(f"w{i}" for i in range(10, 22))  # 12 words of the item
    assert index.find(f"{PADDING} {shared} {PADDING}") is None
    assert index.find(f"{PADDING} {shared} w22 {PADDING}") is not None
    assert index.find(PADDING) is None


def test_items_shorter_than_n_are_counted_as_unchecked():
    index = NgramIndex({"toy": ["only five words in here", " ".join(["word"] * 20)]}, 13)
    assert index.too_short == {"toy": 1} and index.items == {"toy": 2}


def test_corpus_build_drops_contaminated_documents_and_records_them(tmp_path):
    question = load_docs("gsm8k").docs[5]["question"]
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = [f"{PADDING} Clean document {i}." for i in range(3)] + [f"{PADDING} {question}"]
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = CorpusConfig(
        sources=[LocalFolder(name="web", path=str(folder))],
        decontamination=DecontaminationConfig(benchmarks=("gsm8k", "math")),
        min_chars=10,
    )
    manifest, _ = build_corpus(config, tmp_path / "out", "v1")
    assert manifest.n_documents == 3
    assert manifest.sources["web"]["counts"] == {"contaminated": 1}
    report = manifest.contamination
    assert (report["checked"], report["dropped"]) == (4, 1)
    assert report["by_benchmark"] == {"gsm8k": 1, "math": 0}
    [record] = read_contamination(tmp_path / "out").to_pylist()
    assert (record["source"], record["benchmark"], record["item"]) == ("web", "gsm8k", 5)


def test_decontamination_can_be_turned_off(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    question = load_docs("gsm8k").docs[5]["question"]
    (folder / "a.jsonl").write_text(json.dumps({"text": f"{PADDING} {question}"}) + "\n")
    config = CorpusConfig(sources=[LocalFolder(name="web", path=str(folder))], decontamination=None, min_chars=10)
    manifest, _ = build_corpus(config, tmp_path / "out", "v1")
    assert manifest.n_documents == 1 and manifest.contamination == {}
