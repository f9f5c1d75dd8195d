"""Training checkpoints that a killed run can always resume from, and that refuse to mix experiments.

Layout: ``<out_dir>/checkpoints/step-00000100/{state.pt, meta.json}``. A checkpoint is built in a hidden temp
directory and renamed into place only when complete, so the newest visible checkpoint is always whole; older
ones are pruned only after a newer one exists. ``meta.json`` carries the config fingerprint and the sha256 of
``state.pt``, so a different experiment or a damaged file is refused with a clear message before any weights load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tpt.atomic import write_json
from tpt.config import TrainingConfig
from tpt.errors import InputError
from tpt.versioning import content_hash, versioned_fields

FORMAT = "tpt-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be resumed from (other config, other data, damaged); the message is one line."""


def training_fingerprint(config: TrainingConfig) -> str:
    """Hash of the fields that change the result; operational ones (micro-batch size, checkpoint interval) may
    change between a run and its resumption."""
    return content_hash("training", versioned_fields(config))


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=lambda p: p.name)


def save_checkpoint(root: Path, step: int, state: dict[str, Any], meta: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` (torch objects) and ``meta`` (JSON) as checkpoint ``step``; keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    if final.exists():  # the same step was saved by an earlier run of the same config: it is already whole
        return final
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        torch.save(state, tmp / "state.pt")
        meta = {**meta, "format": FORMAT, "step": step, "state_sha256": _sha256(tmp / "state.pt")}
        write_json(tmp / "meta.json", meta)
        for p in (tmp / "state.pt", tmp / "meta.json", tmp):
            _fsync(p)
        os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial(root: Path) -> None:
    """Temp directories that a killed run left behind; they were never renamed, so nothing refers to them."""
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def read_meta(path: Path, fingerprint: str, data_fingerprint: str) -> dict[str, Any]:
    """The checkpoint's metadata, after checking it belongs to this config and this data."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is damaged: meta.json unreadable ({type(exc).__name__}); {_earlier_hint(path)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} checkpoint; {_earlier_hint(path)}")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path.parent.parent} holds a checkpoint from a different training config (fingerprint "
            f"{meta.get('fingerprint')} != {fingerprint}); use another out_dir or delete it to start over"
        )
    if meta.get("data_fingerprint") != data_fingerprint:
        raise CheckpointError(
            f"{path.parent.parent} holds a checkpoint trained on different token shards (data fingerprint "
            f"{meta.get('data_fingerprint')} != {data_fingerprint}); use another out_dir or delete it to start over"
        )
    return meta


def load_state(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``state.pt`` after verifying its checksum; a damaged file raises and nothing on disk is changed."""
    state_path = path / "state.pt"
    try:
        digest = _sha256(state_path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {exc.strerror}; {_earlier_hint(path)}") from None
    if digest != meta.get("state_sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged: state.pt checksum mismatch; {_earlier_hint(path)}")
    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that hashes right but does not unpickle: written by something else
        raise CheckpointError(
            f"checkpoint {path} could not be loaded ({type(exc).__name__}); {_earlier_hint(path)}"
        ) from None


def _earlier_hint(path: Path) -> str:
    earlier = [p for p in checkpoint_dirs(path.parent) if p.name < path.name]
    if earlier:
        return f"the earlier checkpoint {earlier[-1].name} is intact: delete {path.name} to resume from it"
    return f"delete {path.name} to start over"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Make a file or a rename durable, so a power loss cannot leave a named but empty checkpoint."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
