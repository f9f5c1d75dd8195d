import json
import math

import numpy as np
import pytest

from tpt.tokenization import (
    PackedShards,
    ShardError,
    TokenizerError,
    load_tokenizer,
    token_dtype,
    tokenize_and_pack,
)

TEXTS = [
    "The mitochondria is the powerhouse of the cell.",
    "",
    "Prove that √2 is irrational.\n\nAssume √2 = p/q in lowest terms; then p² = 2q², so p is even…",
    "  leading and trailing spaces, tabs\tand a literal <|im_end|> that must not become EOS  ",
    "",
    "def f(x):\n    return x * 2  # code survives too\n",
    "数学是科学的语言。 Emoji too: 🧮",
]


def _real_stream(reader: PackedShards) -> list[int]:
    out: list[int] = []
    for i in range(len(reader)):
        tokens, real = reader[i]
        out.extend(int(t) for t in tokens[:real])
    return out


def _split_at(stream: list[int], eos: int) -> list[list[int]]:
    docs, current = [], []
    for token in stream:
        if token == eos:
            docs.append(current)
            current = []
        else:
            current.append(token)
    assert current == [], "the stream must end with EOS"
    return docs


def test_round_trip_decodes_to_the_source_texts(tmp_path, tokenizer_dir):
    stats = tokenize_and_pack(TEXTS, tokenizer_dir, 16, tmp_path / "s.bin", batch_size=3)
    reader = PackedShards([stats.path])
    tokenizer = load_tokenizer(tokenizer_dir)
    docs = _split_at(_real_stream(reader), stats.eos_id)
    decoded = [tokenizer.decode(d, clean_up_tokenization_spaces=False) for d in docs]
    assert decoded == [t for t in TEXTS if t]
    assert (stats.n_documents, stats.n_empty_documents) == (5, 2)


def test_packing_arithmetic_and_index(tmp_path, tokenizer_dir):
    seq_len = 7
    stats = tokenize_and_pack(TEXTS, tokenizer_dir, seq_len, tmp_path / "s.bin")
    tokenizer = load_tokenizer(tokenizer_dir)
    total = sum(len(tokenizer(t, split_special_tokens=True)["input_ids"]) + 1 for t in TEXTS if t)
    assert stats.n_real_tokens == total
    assert stats.n_sequences == math.ceil(total / seq_len)
    assert stats.n_real_tokens + stats.n_padding_tokens == stats.n_sequences * seq_len
    assert stats.packing_efficiency == pytest.approx(total / (stats.n_sequences * seq_len))
    [span] = stats.sources
    assert span["name"] == "all" and span["n_documents"] == 5
    assert span["last_sequence_tokens"] == total - (stats.n_sequences - 1) * seq_len

    index = json.loads((tmp_path / "s.json").read_text())
    for key in (
        "n_sequences",
        "seq_len",
        "dtype",
        "n_documents",
        "n_real_tokens",
        "n_padding_tokens",
        "packing_efficiency",
        "eos_id",
        "pad_id",
        "vocab_size",
        "tokenizer",
    ):
        assert index[key] == getattr(stats, key)
    raw = np.fromfile(tmp_path / "s.bin", dtype=index["dtype"]).reshape(index["n_sequences"], index["seq_len"])
    flat = raw.reshape(-1)
    assert (flat[total:] == stats.pad_id).all()
    assert flat[total - 1] == stats.eos_id
    assert stats.vocab_size == 49152 and stats.dtype == "uint16"


def test_each_source_is_packed_on_its_own_and_decodes_back(tmp_path, tokenizer_dir):
    texts = [t for t in TEXTS if t]
    sources = ["web", "math", "web", "code", "web"]
    stats = tokenize_and_pack(texts, tokenizer_dir, 8, tmp_path / "s.bin", sources=sources)
    reader = PackedShards([stats.path])
    tokenizer = load_tokenizer(tokenizer_dir)
    by_source = reader.sequences_by_source()
    assert [s["name"] for s in stats.sources] == sorted(by_source) == ["code", "math", "web"]
    assert sum(ids.size for ids, _ in by_source.values()) == len(reader)
    for span in stats.sources:
        ids, lengths = by_source[span["name"]]
        assert ids.tolist() == list(range(span["first_sequence"], span["first_sequence"] + span["n_sequences"]))
        assert int(lengths.sum()) == span["n_real_tokens"]
        stream = [int(t) for i in ids for t in reader[int(i)][0][: reader[int(i)][1]]]
        decoded = [tokenizer.decode(d, clean_up_tokenization_spaces=False) for d in _split_at(stream, stats.eos_id)]
        assert decoded == [t for t, s in zip(texts, sources, strict=True) if s == span["name"]]
    assert stats.n_padding_tokens == sum(8 - s["last_sequence_tokens"] for s in stats.sources)


def test_dtype_follows_vocab_size():
    assert token_dtype(50_000) == np.uint16
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32
    assert token_dtype(128_256) == np.uint32
    with pytest.raises(ValueError):
        token_dtype(0)


def test_reader_spans_two_shards_lazily(tmp_path, tokenizer_dir):
    a = tokenize_and_pack(TEXTS[:3], tokenizer_dir, 8, tmp_path / "a.bin")
    b = tokenize_and_pack(TEXTS[3:], tokenizer_dir, 8, tmp_path / "b.bin")
    reader = PackedShards.from_dir(tmp_path)
    assert len(reader) == a.n_sequences + b.n_sequences
    assert reader.n_real_tokens == a.n_real_tokens + b.n_real_tokens

    a_rows = np.fromfile(a.path, dtype=np.uint16).reshape(-1, 8)
    b_rows = np.fromfile(b.path, dtype=np.uint16).reshape(-1, 8)
    first_b = a.n_sequences
    assert np.array_equal(reader[first_b][0], b_rows[0])
    assert reader[first_b - 1][1] == a.sources[0]["last_sequence_tokens"]
    assert reader[len(reader) - 1][1] == b.sources[0]["last_sequence_tokens"]
    assert reader[0][1] == 8

    tokens, lengths = reader.batch([first_b, 0])
    assert tokens.dtype == np.int64 and np.array_equal(tokens[1], a_rows[0])
    assert lengths.tolist() == [b.sources[0]["last_sequence_tokens"] if b.n_sequences == 1 else 8, 8]

    # Nothing was mapped up front: a reader built before a shard vanishes still serves the other shard.
    lazy = PackedShards([a.path, b.path])
    b.path.rename(tmp_path / "moved.bin")
    assert np.array_equal(lazy[0][0], a_rows[0])
    with pytest.raises(ShardError, match="token file"):
        lazy[first_b]
    with pytest.raises(IndexError):
        lazy[len(lazy)]


def test_reader_refuses_mismatched_or_truncated_shards(tmp_path, tokenizer_dir):
    a = tokenize_and_pack(TEXTS, tokenizer_dir, 8, tmp_path / "a.bin")
    c = tokenize_and_pack(TEXTS, tokenizer_dir, 16, tmp_path / "c.bin")
    with pytest.raises(ShardError, match="seq_len"):
        PackedShards([a.path, c.path])
    with pytest.raises(ShardError, match="no index"):
        PackedShards([tmp_path / "missing.bin"])
    a.path.write_bytes(a.path.read_bytes()[:-2])
    with pytest.raises(ShardError, match="bytes"):
        PackedShards([a.path])[0]


def test_bad_input_gets_a_one_line_error(tmp_path, tokenizer_dir):
    with pytest.raises(ValueError, match="no documents") as empty:
        tokenize_and_pack([], tokenizer_dir, 8, tmp_path / "e.bin")
    assert "\n" not in str(empty.value)
    with pytest.raises(ValueError, match="2 empty strings skipped"):
        tokenize_and_pack(["", ""], tokenizer_dir, 8, tmp_path / "e.bin")
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        tokenize_and_pack(TEXTS, tokenizer_dir, 1, tmp_path / "e.bin")
    with pytest.raises(TokenizerError, match="does not exist") as missing:
        tokenize_and_pack(TEXTS, tmp_path / "no-such-tokenizer", 8, tmp_path / "e.bin")
    assert "\n" not in str(missing.value)
    with pytest.raises(ValueError, match="expected str"):
        tokenize_and_pack(["ok", 3], tokenizer_dir, 8, tmp_path / "e.bin")
    with pytest.raises(ValueError, match="single str"):
        tokenize_and_pack("one string", tokenizer_dir, 8, tmp_path / "e.bin")
    assert not list(tmp_path.iterdir()), "a refused shard leaves no files behind"
