"""Chat conversations from their sources, normalised to ``[{"role", "content"}, ...]`` with an assistant turn.

The evals registry's samples are ``input`` (a message list or a prompt string) and ``ideal`` (the answer, or a list
of acceptable answers: the first is taken), so the answer becomes the closing assistant turn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tpt.config import ChatHubDataset, ChatLocalFolder, ChatSource, ChatWheelFile
from tpt.errors import InputError
from tpt.offline import read_member
from tpt.skips import Skips

ROLES = {"system", "user", "assistant"}


class SFTDataError(InputError, ValueError):
    pass


def iter_conversations(source: ChatSource, skips: Skips) -> Iterator[list[dict[str, str]]]:
    """Usable conversations of one source, up to its ``max_samples``; unusable records are counted skips."""
    taken = 0
    for record in _records(source, skips):
        messages = to_messages(record, getattr(source, "messages_field", "messages"))
        if messages is None:
            skips.add("not_a_conversation", str(record)[:120])
        elif not any(m["role"] == "assistant" for m in messages):
            skips.add("no_assistant_turn", str(record)[:120])
        else:
            yield messages
            taken += 1
            if source.max_samples and taken >= source.max_samples:
                return


def to_messages(record: Any, field: str) -> list[dict[str, str]] | None:
    """A normalised message list, or None when the record is not a conversation."""
    if not isinstance(record, dict):
        return None
    key = field if field in record else "input"
    raw = record.get(key)
    if isinstance(raw, str) and key == "input":  # an evals prompt string is the user's turn
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        return None
    messages = []
    for m in raw:
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            return None
        messages.append({"role": m["role"], "content": m["content"]})
    ideal = record.get("ideal")
    if isinstance(ideal, list):
        ideal = ideal[0] if ideal and isinstance(ideal[0], str) else None
    if isinstance(ideal, str) and (not messages or messages[-1]["role"] != "assistant"):
        messages.append({"role": "assistant", "content": ideal})
    return messages


def _records(source: ChatSource, skips: Skips) -> Iterator[Any]:
    if isinstance(source, ChatWheelFile):
        for member in source.members:
            yield from _jsonl(read_member(source.wheel, member).decode("utf-8").splitlines(), member, skips)
    elif isinstance(source, ChatLocalFolder):
        folder = Path(source.path).expanduser()
        files = sorted(folder.glob("**/*.jsonl"))
        if not files:
            raise SFTDataError(f"sft source {source.name!r}: no *.jsonl files under {folder}")
        for path in files:
            with open(path, encoding="utf-8") as fh:
                yield from _jsonl(fh, str(path), skips)
    elif isinstance(source, ChatHubDataset):
        yield from _hub(source)


def _jsonl(lines, where: str, skips: Skips) -> Iterator[Any]:
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            skips.add("bad_json", f"{where}: {line[:80]}")


def _hub(source: ChatHubDataset) -> Iterator[Any]:
    import datasets

    try:
        stream = datasets.load_dataset(source.dataset, source.subset, split=source.split, streaming=True)
    except Exception as exc:  # datasets raises many types for a missing or unreachable dataset
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SFTDataError(f"hub dataset {source.dataset!r} could not be opened: {first}") from None
    yield from stream
