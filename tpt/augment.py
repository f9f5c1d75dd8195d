"""x = [d; t]: each document followed by its thinking, the text TPT pretrains on."""

from __future__ import annotations

import pyarrow as pa

AUGMENTED_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("has_thinking", pa.bool_())]
)


def augment(documents: pa.Table, trajectories: pa.Table, separator: str) -> pa.Table:
    """One row per document, in document order. A document whose generation failed or came back empty keeps
    its text alone (``has_thinking`` false) rather than disappearing from the TPT variant."""
    thinking = {
        doc_id: text
        for doc_id, text, reason in zip(
            trajectories["doc_id"].to_pylist(),
            trajectories["thinking"].to_pylist(),
            trajectories["finish_reason"].to_pylist(),
            strict=True,
        )
        if reason != "error" and text
    }
    doc_ids = documents["doc_id"].to_pylist()
    generated = set(trajectories["doc_id"].to_pylist())
    missing = [d for d in doc_ids if d not in generated]
    if missing:
        raise ValueError(f"{len(missing)} documents have no trajectory (first: {missing[0]}); generation is unfinished")
    texts, has = [], []
    for doc_id, text in zip(doc_ids, documents["text"].to_pylist(), strict=True):
        t = thinking.get(doc_id)
        texts.append(f"{text}{separator}{t}" if t else text)
        has.append(t is not None)
    columns = {"doc_id": doc_ids, "source": documents["source"].to_pylist(), "text": texts, "has_thinking": has}
    return pa.table(columns, schema=AUGMENTED_SCHEMA)
