"""Everything that can refuse a training run, checked before any tensor is allocated, so bad input fails in one
line (and, launched on Ray, in the driver, before the failure policy could retry it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpt.config import TrainingConfig
from tpt.errors import InputError
from tpt.tokenization.tokenizer import load_tokenizer, special_ids
from tpt.training.checkpoint import checkpoint_dirs, read_meta, training_fingerprint, verify
from tpt.training.data import DataOrder, SequenceOrder, TokenSequences
from tpt.training.init import Student, make_student
from tpt.training.memory import MemoryEstimate, check_fits, training_memory
from tpt.training.model import SpecialTokens
from tpt.versioning import content_hash


class TrainingInputError(InputError, ValueError):
    """Data, tokenizer or launch that does not match the training config; the message is one line."""


@dataclass(frozen=True)
class Preflight:
    """What a run will do, decided before any tensor is allocated (``preflight``)."""

    total_steps: int
    per_step: int
    order: SequenceOrder
    fingerprint: str
    data_fingerprint: str
    resume_from: Path | None
    meta: dict[str, Any] | None
    estimate: MemoryEstimate
    special: SpecialTokens
    student: Student


def preflight(
    config: TrainingConfig,
    shards: TokenSequences,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    order: SequenceOrder | None = None,
    world_size: int = 1,
    strategy: str = "ddp",
    device: str = "cpu",
    memory_limit_bytes: int | None = None,
    check_memory: bool = True,
    verify_checkpoint: bool = False,
    init_dir: str | Path | None = None,
) -> Preflight:
    """Every check that can refuse a run, with a one-line error, before any compute: shards vs config and
    tokenizer, the data order against the budget, the batch against the world size, the newest checkpoint
    against config and data (one written under another world size or strategy is accepted: it reshards; with
    ``verify_checkpoint`` also every file's checksum, which loading checks anyway), and the memory estimate against
    ``memory_limit_bytes`` (default: what ``device`` has free). The Ray launcher runs it in the driver too, so bad
    input fails once instead of being retried by the failure policy. ``init_dir``: the resolved ``config.init``
    checkpoint, refused here when it is not a causal LM or cannot embed the tokenizer's ids."""
    if shards.seq_len != config.seq_len:
        raise TrainingInputError(
            f"token shards are packed at seq_len {shards.seq_len}, the config trains at {config.seq_len}"
        )
    ids = special_ids(load_tokenizer(tokenizer_dir))
    if ids.vocab_size != shards.vocab_size:
        raise TrainingInputError(
            f"tokenizer {tokenizer_dir} has {ids.vocab_size} tokens, the shards {shards.vocab_size}"
        )
    total_steps = config.token_budget // config.batch_tokens
    per_step = config.batch_tokens // config.seq_len
    order = order or DataOrder(len(shards), config.seed)
    try:
        order.indices(total_steps * per_step - 1, 1)
    except IndexError as exc:
        raise TrainingInputError(
            f"the token budget needs {total_steps * per_step} sequences ({total_steps} steps) but the data order "
            f"ends before that: {exc}"
        ) from None
    if per_step % world_size:
        raise TrainingInputError(
            f"{per_step} sequences per step (batch_tokens / seq_len) do not split over {world_size} ranks; use a "
            f"world size that divides {per_step}"
        )
    fingerprint, data_fingerprint = training_fingerprint(config), content_hash(shards.fingerprint, order.fingerprint)
    existing = checkpoint_dirs(Path(out_dir) / "checkpoints")
    meta = read_meta(existing[-1], fingerprint, data_fingerprint) if existing else None
    if meta is not None and verify_checkpoint:
        verify(existing[-1], meta)
    special = SpecialTokens(eos_id=ids.eos_id, pad_id=ids.pad_id, bos_id=ids.bos_id)
    student = make_student(config, shards.vocab_size, special, init_dir=init_dir)
    estimate = training_memory(
        config, shards.vocab_size, device=device, world_size=world_size, strategy=strategy, student=student
    )
    if check_memory:
        check_fits(estimate, device, memory_limit_bytes, checkpointing=config.activation_checkpointing)
    return Preflight(
        total_steps=total_steps,
        per_step=per_step,
        order=order,
        fingerprint=fingerprint,
        data_fingerprint=data_fingerprint,
        resume_from=existing[-1] if existing else None,
        meta=meta,
        estimate=estimate,
        special=special,
        student=student,
    )
