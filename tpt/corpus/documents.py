"""What a corpus document is: normalised text, a content-hash id, the shard schema, and the hash bucket of its id.

A document's id is the hash of its normalised text, so the same text always gets the same id, whichever source or
run it came from; that id is what trajectories, token shards and the catalog join on.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tpt.paths import as_path

SHARD_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])
CONTAMINATION_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("source", pa.string()), ("benchmark", pa.string()), ("item", pa.int64())]
    + [("ngram", pa.string())]
)
PREFIXES = 256  # ids are spread over the values of their first byte; a dedup bucket takes every Bth of them


def normalize(text: str) -> str:
    """NFC, unified newlines, no surrounding whitespace, no NUL bytes: what two copies of a page agree on."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.strip()


def document_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def id_prefix(doc_ids: pa.Array) -> pa.Array:
    """The first byte of each (hex) id, 0..255: what ids are sorted and bucketed by."""
    head = pc.utf8_slice_codeunits(doc_ids, 0, 2)
    digits = {c: i for i, c in enumerate("0123456789abcdef")}
    values = [digits[h[0]] * 16 + digits[h[1]] for h in head.to_pylist()]
    return pa.array(values, pa.uint8())


def bucket_prefixes(bucket: int, buckets: int) -> list[int]:
    return [p for p in range(PREFIXES) if p % buckets == bucket]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with as_path(path).open("rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:16]
