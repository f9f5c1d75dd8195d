"""Near-duplicate removal with MinHash LSH (datasketch).

Two crawls of a page that differ by a date or a footer line have different content hashes, so exact dedup keeps
both and the model sees the text twice. Signatures of kept documents are saved beside the corpus, so documents
appended later are compared against everything already kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from datasketch import MinHash, MinHashLSH

from tpt.atomic import write_parquet
from tpt.config import NearDedupConfig
from tpt.corpus.decontaminate import words
from tpt.paths import read_table

SCHEME = "affine32"  # datasketch's hashing scheme, named so saved signatures are read back under the same one


class NearDuplicates:
    def __init__(self, config: NearDedupConfig):
        self.config = config
        self.lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
        self.kept: dict[str, np.ndarray] = {}

    def signature(self, text: str) -> MinHash:
        tokens, k = words(text), self.config.shingle_words
        shingles = {" ".join(tokens[i : i + k]) for i in range(max(len(tokens) - k + 1, 1))}
        signature = MinHash(num_perm=self.config.num_perm, seed=self.config.seed, scheme=SCHEME)
        signature.update_batch([s.encode() for s in shingles])
        return signature

    def duplicate_of(self, doc_id: str, text: str) -> str | None:
        """The id of a kept document ``text`` nearly duplicates; otherwise keep it and return None."""
        signature = self.signature(text)
        found = self.lsh.query(signature)
        if found:
            return min(found)
        self._keep(doc_id, signature)
        return None

    def _keep(self, doc_id: str, signature: MinHash) -> None:
        self.lsh.insert(doc_id, signature)
        self.kept[doc_id] = signature.hashvalues

    def save(self, path: Path) -> None:
        table = pa.table(
            {"doc_id": list(self.kept), "hashvalues": [v.tolist() for v in self.kept.values()]},
            schema=pa.schema([("doc_id", pa.string()), ("hashvalues", pa.list_(pa.uint64()))]),
        )
        write_parquet(path, table)

    @classmethod
    def load(cls, config: NearDedupConfig, path: Path) -> NearDuplicates:
        index = cls(config)
        if path.exists():
            table = read_table(path)
            for doc_id, values in zip(table["doc_id"].to_pylist(), table["hashvalues"].to_pylist(), strict=True):
                hashvalues = np.asarray(values, dtype=np.uint64)
                signature = MinHash(num_perm=config.num_perm, seed=config.seed, hashvalues=hashvalues, scheme=SCHEME)
                index._keep(doc_id, signature)
        return index
