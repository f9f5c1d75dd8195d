"""Content hashing that decides what reruns (marin's idea): a stage's version is a hash of the config fields
that change its output, plus the versions of the stages it reads (``tpt.stages``). Same version, same output path,
no rework."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tpt.atomic import write_atomic


def versioned_fields(model: BaseModel) -> dict[str, Any]:
    """The model's fields as plain data, without those marked ``operational``."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("operational"):
            continue
        out[name] = _plain(getattr(model, name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return versioned_fields(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def content_hash(*parts: Any, length: int = 12) -> str:
    """Stable short hash of JSON-serialisable parts (key order does not matter)."""
    payload = json.dumps([_plain(p) for p in parts], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def folder_digest(folder: Path, cache: Path) -> str:
    """Content hash of every file in ``folder`` (names and bytes), kept in ``cache`` beside it: a model's weights
    are read once, however often its finished output is found again."""
    if cache.exists():
        return cache.read_text().strip()
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    value = digest.hexdigest()[:16]
    write_atomic(cache, lambda tmp: tmp.write_text(value + "\n"))
    return value
