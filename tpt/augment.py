"""x = [d; t]: each document followed by its thinking, the text TPT pretrains on.

The join is Arrow's (a hash join on doc_id, then the strings joined column-wise), so no Python string is made per
document; ``augment_shard`` runs it where the shard lives (a Ray task per shard) and leaves the shard's figures
beside it, so a later run reads a few numbers instead of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tpt.atomic import read_json, write_json, write_parquet
from tpt.errors import InputError
from tpt.paths import as_path, read_metadata, read_table

AUGMENTED_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("has_thinking", pa.bool_())]
)
SUMMARIES = "_summaries"  # <shard>.json per augmented shard: its figures, written after the shard


def augment(documents: pa.Table, trajectories: pa.Table, separator: str) -> pa.Table:
    """One row per document, in document order. A document whose generation failed or came back empty keeps
    its text alone (``has_thinking`` false) rather than disappearing from the TPT variant."""
    docs = documents.select(["doc_id", "source", "text"])
    generated = trajectories["doc_id"].combine_chunks()
    missing = pc.invert(pc.is_in(docs["doc_id"], value_set=generated))
    n_missing = int(pc.sum(missing).as_py() or 0)
    if n_missing:
        first = docs.filter(missing)["doc_id"][0].as_py()
        raise ValueError(f"{n_missing} documents have no trajectory (first: {first}); generation is unfinished")
    reason, length = trajectories["finish_reason"], pc.utf8_length(trajectories["thinking"])
    usable = pc.and_(pc.not_equal(reason, "error"), pc.greater(length, 0))
    thinking = trajectories.filter(pc.fill_null(usable, False)).select(["doc_id", "thinking"])
    thinking = thinking.group_by("doc_id", use_threads=False).aggregate([("thinking", "last")])  # one per document
    thinking = thinking.rename_columns({"thinking_last": "thinking"})
    docs = docs.append_column("_order", pa.array(np.arange(docs.num_rows)))
    joined = docs.join(thinking, "doc_id", join_type="left outer", use_threads=False).sort_by("_order")
    has = pc.is_valid(joined["thinking"])
    text = pc.if_else(has, pc.binary_join_element_wise(joined["text"], joined["thinking"], separator), joined["text"])
    columns = {"doc_id": joined["doc_id"], "source": joined["source"], "text": text, "has_thinking": has}
    return pa.table(columns, schema=AUGMENTED_SCHEMA)


@dataclass(frozen=True)
class AugmentJob:
    corpus_shard: str  # the corpus's parquet
    thinking_dir: str  # the shard's finished trajectories (part files)
    out_path: str  # the augmented parquet; its summary goes to <folder>/_summaries/<shard>.json


def summary_path(out_path: str | Path) -> Path:
    out_path = as_path(out_path)
    return out_path.parent / SUMMARIES / f"{out_path.stem}.json"


def augment_shard(job: AugmentJob, separator: str) -> dict:
    """Join one shard and write it (and then its figures); an existing shard is only summarised."""
    out = as_path(job.out_path)
    if out.exists():
        table = read_table(out, columns=["has_thinking", "text"])
    else:
        parts = sorted(as_path(job.thinking_dir).glob("part-*.parquet"))
        columns = ["doc_id", "thinking", "finish_reason"]
        trajectories = pa.concat_tables([read_table(p, columns=columns) for p in parts])
        table = augment(read_table(job.corpus_shard, columns=["doc_id", "source", "text"]), trajectories, separator)
        write_parquet(out, table)
    with_thinking = int(pc.sum(table["has_thinking"]).as_py() or 0)
    figures = {
        "documents": table.num_rows,
        "documents_with_thinking": with_thinking,
        "documents_without_thinking": table.num_rows - with_thinking,
        "characters": int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0),
    }
    write_json(summary_path(out), figures)
    return figures


def finished_summary(out_path: str | Path) -> dict | None:
    """The figures of a finished augmented shard, if it and its summary are written."""
    path = summary_path(out_path)
    return read_json(path) if path.exists() and as_path(out_path).exists() else None


# What an augment task reserves: the corpus shard's text and the thinking read (1x each), the joined text (1x) and
# Arrow's join buffers; 4x the uncompressed text of both inputs, plus a pyarrow worker. An estimate from the
# copies made (the packing tasks' figure is measured), generous on purpose.
MEMORY_PER_TEXT_BYTE = 4.0
MEMORY_BASE_BYTES = 256 * 2**20


def task_memory(job: AugmentJob) -> int:
    """Bytes an augment task reserves, from the parquet footers alone."""
    files = [as_path(job.corpus_shard), *as_path(job.thinking_dir).glob("part-*.parquet")]
    return int(MEMORY_BASE_BYTES + MEMORY_PER_TEXT_BYTE * sum(_text_bytes(f) for f in files))


def _text_bytes(path: Path) -> int:
    meta = read_metadata(path)
    names = meta.schema.names
    wanted = [names.index(c) for c in ("text", "thinking") if c in names]
    return sum(meta.row_group(i).column(c).total_uncompressed_size for i in range(meta.num_row_groups) for c in wanted)


def augment_on_ray(jobs: dict[str, AugmentJob], separator: str) -> dict[str, dict]:
    """Each shard's figures, joined and written by one Ray task per shard; bad input keeps its one-line error."""
    import ray

    remote = ray.remote(num_cpus=1)(augment_shard)
    refs = {s: remote.options(memory=task_memory(j)).remote(j, separator) for s, j in jobs.items()}
    try:
        return dict(zip(refs, ray.get(list(refs.values())), strict=True))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ValueError):
            raise AugmentError(str(exc.cause)) from None
        raise


class AugmentError(InputError, ValueError):
    """A shard that cannot be joined (documents without a trajectory); one line."""
