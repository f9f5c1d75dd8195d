"""Sharded training checkpoints (``torch.distributed.checkpoint``) that a killed run can always resume from, on any
number of ranks, and that refuse to mix experiments.

Layout: ``<out_dir>/checkpoints/step-00000100/`` holds DCP's files (each rank writes its own shard of the weights and
AdamW moments, ``__<rank>_<n>.distcp``, and rank 0 the ``.metadata`` that maps them), ``trainer.pt`` (schedule, RNG,
step, loss curve) and ``meta.json`` (config and data fingerprints, world size, and the sha256 of every file, each rank
hashing the files it wrote). A checkpoint is written into a hidden temp directory and published by one rename once
every rank's shard and ``meta.json`` are on disk, so the newest visible checkpoint is always whole; an existing
step is never rewritten, and older ones are pruned only after a newer one is published.

Loading goes through ``get_state_dict``/``set_state_dict``, which key the weights and the optimizer state by
parameter name, so a checkpoint resumes under another world size or strategy (one process, DDP, FSDP): DCP reads
from every shard the slices the new layout needs. A damaged file is refused with a one-line error naming it (the
ranks share the checksum work), before any weight loads; the earlier checkpoint is left as it was and named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from tpt.atomic import write_json
from tpt.config import TrainingConfig
from tpt.errors import InputError
from tpt.versioning import content_hash, versioned_fields

FORMAT = "tpt-checkpoint/2"
TRAINER_FILE = "trainer.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be resumed from (other config, other data, damaged); the message is one line."""


def training_fingerprint(config: TrainingConfig) -> str:
    """Hash of the fields that change the result; operational ones (micro-batch size, checkpoint interval,
    activation checkpointing) may change between a run and its resumption."""
    return content_hash("training", versioned_fields(config))


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete (published) checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=lambda p: p.name)


def remove_partial(root: Path) -> None:
    """Temp directories that a killed run left behind; they were never renamed, so nothing refers to them."""
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


class Checkpointer:
    """Saves checkpoints of one run, every rank taking part; with ``async_save`` the shards are written by a
    background thread (over a gloo group of its own, so its collectives never interleave with training's) and
    published at the next save or at ``finish()``."""

    def __init__(self, root: Path, *, keep: int = 2, async_save: bool = False):
        self.root, self.keep, self.async_save = root, keep, async_save
        self.distributed = _distributed()
        self.no_dist = not self.distributed
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.group = dist.new_group(backend="gloo") if self.distributed else None
        self._pending: tuple[Future, Path, Path, dict] | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer: Any, trainer: dict, meta: dict) -> None:
        """Checkpoint ``step``: weights and optimizer state (each rank its shard), ``trainer`` (picklable torch
        objects, from rank 0) and ``meta`` (JSON, from rank 0). Every rank must call it."""
        self.finish()
        final, tmp = self.root / f"step-{step:08d}", self.root / f".tmp-step-{step:08d}"
        if self._agree(final.exists()):  # an earlier run of the same config saved this step: it is already whole
            return
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save(trainer, tmp / TRAINER_FILE)
        self._barrier()
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        meta = {**meta, "format": FORMAT, "step": step, "world_size": self.world}
        with _one_process_is_intended():
            if self.async_save:
                future = dcp.async_save(state, checkpoint_id=tmp, process_group=self.group, no_dist=self.no_dist)
                self._pending = (future, tmp, final, meta)
            else:
                dcp.save(state, checkpoint_id=tmp, process_group=self.group, no_dist=self.no_dist)
        if not self.async_save:
            self._publish(tmp, final, meta)

    def finish(self) -> None:
        """Publish the checkpoint still being written in the background, if any. Every rank must call it."""
        if self._pending is not None:
            future, tmp, final, meta = self._pending
            self._pending = None
            future.result()
            self._publish(tmp, final, meta)

    def _publish(self, tmp: Path, final: Path, meta: dict) -> None:
        mine = [p for p in tmp.iterdir() if p.name.startswith(f"__{self.rank}_")]
        if self.rank == 0:
            mine += [tmp / ".metadata", tmp / TRAINER_FILE]
        digests = {p.name: _sha256(p) for p in mine}
        for p in mine:
            _fsync(p)
        gathered = self._gather(digests)
        if self.rank == 0:
            files = {name: digest for part in gathered for name, digest in sorted(part.items())}
            write_json(tmp / "meta.json", {**meta, "files": dict(sorted(files.items()))})
            _fsync(tmp / "meta.json")
            _fsync(tmp)
            os.rename(tmp, final)
            _fsync(self.root)
            for old in checkpoint_dirs(self.root)[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()

    def _agree(self, flag: bool) -> bool:
        """Rank 0's answer, so every rank takes the same branch around the collectives."""
        if not self.distributed:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return bool(box[0])

    def _gather(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.group)
        return out

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)


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
    missing = [name for name in meta.get("files", {}) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is damaged: {missing[0]} is missing; {_earlier_hint(path)}")
    return meta


def verify(path: Path, meta: dict[str, Any]) -> None:
    """Check every file's sha256 against ``meta.json``, the ranks sharing the files; every rank raises the same
    one-line error for the first damaged file. Every rank must call it."""
    distributed = _distributed()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    files = sorted(meta["files"].items())
    damaged = [name for name, digest in files[rank::world] if _sha256_or_none(path / name) != digest]
    if distributed:
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, damaged)
        damaged = sorted(name for part in everyone for name in part)
    if damaged:
        raise CheckpointError(
            f"checkpoint {path} is damaged: {damaged[0]} checksum mismatch"
            f"{f' (and {len(damaged) - 1} more files)' if len(damaged) > 1 else ''}; {_earlier_hint(path)}"
        )


def load_checkpoint(path: Path, meta: dict[str, Any], model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer state into ``model``/``optimizer`` (whatever their sharding) after verifying every
    file; returns the trainer state (schedule, RNG, step, curve). Every rank must call it."""
    verify(path, meta)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    try:
        with _one_process_is_intended():
            dcp.load(state, checkpoint_id=path, no_dist=not _distributed())
        trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # files that hash right but do not load: written by something else
        raise CheckpointError(
            f"checkpoint {path} could not be loaded ({type(exc).__name__}); {_earlier_hint(path)}"
        ) from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return trainer


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The whole model's weights of a checkpoint as one process's ``state_dict()`` has them, read in this process
    (for inspection and tests; training loads through ``load_checkpoint``)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(path)
    tensors = {
        key: torch.empty(md.size, dtype=md.properties.dtype)
        for key, md in reader.read_metadata().state_dict_metadata.items()
        if key.startswith("model.") and isinstance(md, TensorStorageMetadata)
    }
    with _one_process_is_intended():
        dcp.load(tensors, storage_reader=reader, no_dist=True)
    return {key.removeprefix("model."): value for key, value in tensors.items()}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """DCP warns on every single-process save and load; here that is the intent, not a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


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


def _sha256_or_none(path: Path) -> str | None:
    try:
        return _sha256(path)
    except OSError:
        return None


def _fsync(path: Path) -> None:
    """Make a file or a rename durable, so a power loss cannot leave a named but empty checkpoint."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
