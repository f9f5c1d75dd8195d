"""The training loop: nanoGPT's loop around a transformers causal LM (a fresh LLaMA, or a checkpoint's model for
mid-training and SFT: ``init.py``), resumable bit-for-bit on CPU.

One step reads ``batch_tokens / seq_len`` packed sequences (see ``data.DataOrder``), accumulates gradients over
micro-batches of ``micro_batch_size`` sequences, clips the global grad norm and takes one AdamW step. The loss is
the mean over real target tokens of the whole batch (padding masked), so it does not depend on the micro-batch
split. Each packed sequence of T tokens gives T - 1 predictions; attention runs across document boundaries
inside a sequence (EOS marks them), as in GPT and LLaMA pretraining.

Memory: the model is built on the meta device and materialised only as this rank's part (``model.init_weights``:
the same weights for any world size; or ``init.load_weights``: a checkpoint's, one tensor at a time);
``activation_checkpointing`` recomputes each decoder layer in the backward; ``loss_chunk_tokens`` never holds the
whole micro-batch's logits (``loss.py``); ``memory.py`` refuses, before any allocation, a config whose estimate
exceeds the device.

Reproducibility: on CPU the run enables ``torch.use_deterministic_algorithms`` (restored afterwards), and every
input to a step is restored from the checkpoint (weights, AdamW moments, schedule, RNG, data position), so a
resumed run repeats the uninterrupted loss curve exactly, given the same torch build, the same thread count
(``torch.get_num_threads()``: reductions split differently across threads), the same micro-batch size and the same
world size and strategy. A checkpoint resumes under another world size or strategy too (``checkpoint.py``), then
equal to rounding. On CUDA, bf16 and non-deterministic kernels make curves equal only to rounding.
"""

from __future__ import annotations

import contextlib
import csv
import io
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tpt.atomic import read_json, write_atomic, write_json
from tpt.config import TrainingConfig
from tpt.progress import Progress
from tpt.training.checkpoint import Checkpointer, checkpoint_dirs, load_checkpoint, remove_partial
from tpt.training.data import SequenceOrder, TokenSequences
from tpt.training.export import export_hf
from tpt.training.loss import IGNORE, CausalLMLoss
from tpt.training.model import empty_model, init_buffers
from tpt.training.optim import make_optimizer, make_scheduler
from tpt.training.planner import peak_flops
from tpt.training.preflight import preflight
from tpt.training.sharding import export_sharded, gradient_sync, replicate, shard_model

RESULT_FILE = "train_result.json"  # written last: its presence means the run finished
StepCallback = Callable[[int, float, float, int, float], None]


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run whose ``torch.distributed`` group is already up (Ray Train
    starts it). Each rank takes every ``world_size``-th sequence of a step; gradients and losses are summed over
    ranks, so the step equals the single-process step on the same global batch up to float summation order.

    ``strategy``: ``ddp`` keeps a whole model per rank (``DistributedDataParallel``); ``fsdp`` shards weights,
    gradients and AdamW moments over the ranks (FSDP2), for models that do not fit one device, at the cost of
    all-gathering each layer's weights in every forward and backward (``sharding.py``)."""

    rank: int
    world_size: int
    strategy: Literal["ddp", "fsdp"] = "ddp"

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens_seen: int
    epochs: float
    data_passes: float
    losses: list[float]
    final_loss: float
    wall_s: float
    tokens_per_s: float
    n_params: int
    flops_per_token: int
    checkpoint: Path
    final_model: Path
    loss_curve: Path
    resumed_from_step: int
    device: str
    world_size: int = 1
    strategy: str = "single"
    device_name: str = ""
    tokens_per_s_per_device: float = 0.0
    peak_flops: float | None = None  # the device's dense bf16 peak (data sheet), read where the run ran
    mfu: float | None = None  # model FLOPs (no recomputation counted) per second per device / peak_flops
    estimated_memory_bytes: int = 0

    def as_metadata(self) -> dict[str, Any]:
        """Scalars only (the per-step curve lives in ``loss_curve``), for asset metadata and the catalog."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k != "losses"}
        out["model_flops_per_s"] = self.tokens_per_s * self.flops_per_token
        return out

    def save(self, out_dir: str | Path) -> Path:
        """Written last, after the final model and the curve: its presence means the run finished."""
        return write_json(Path(out_dir) / RESULT_FILE, {**self.as_metadata(), "losses": self.losses})

    @classmethod
    def load(cls, out_dir: str | Path) -> TrainResult | None:
        """The finished training in ``out_dir``, or None: the one notion of done for a training run (the result
        file is written last, after the final model)."""
        path = Path(out_dir) / RESULT_FILE
        if not path.exists():
            return None
        raw = read_json(path)
        known = {f.name for f in fields(cls)}
        paths = {k: Path(raw[k]) for k in ("checkpoint", "final_model", "loss_curve")}
        return cls(**({k: v for k, v in raw.items() if k in known} | paths))

    def read_curve(self) -> list[dict[str, float]]:
        with open(self.loss_curve, newline="") as fh:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def train(
    config: TrainingConfig,
    shards: TokenSequences,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    order: SequenceOrder | None = None,
    parallel: DataParallel | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    on_step: StepCallback | None = None,
    memory_limit_bytes: int | None = None,
    keep_checkpoints: int = 2,
    log_interval_s: float = 10.0,
    init_dir: str | Path | None = None,
) -> TrainResult | None:
    """Train (or resume training) the student (a fresh LLaMA, or ``init_dir``'s model) on ``shards`` for
    ``config.token_budget`` tokens, reading sequences in ``order`` (a resolved mixture; by default every sequence
    once per epoch). ``parallel``: this process's rank in
    a data-parallel run; every rank writes its shard of each checkpoint, only the chief writes the results and the
    final model, and only it returns the result.

    ``on_step(step, loss, lr, tokens_seen, tokens_per_s)`` runs after each step (and after that step's checkpoint,
    so raising from it stops a run that can resume). Writes ``out_dir/checkpoints/``, ``out_dir/final/`` (HF
    format), ``out_dir/loss_curve.csv`` and ``out_dir/train_result.json``.

    ``init_dir``: the resolved ``config.init`` checkpoint the student starts from (any transformers causal LM): built
    from its config on the meta device like a fresh model, then filled with its weights instead of ``init_weights``.
    ``shards.batch`` may return a third array, a per-token loss mask (SFT: assistant tokens only).
    """
    started = time.monotonic()
    out_dir, cuda = Path(out_dir), device.startswith("cuda")
    chief = parallel is None or parallel.is_chief
    world = parallel.world_size if parallel is not None else 1
    sharded = parallel is not None and parallel.sharded
    if not chief:
        log = _silent
    plan = preflight(
        config,
        shards,
        out_dir,
        tokenizer_dir=tokenizer_dir,
        order=order,
        world_size=world,
        strategy=parallel.strategy if parallel is not None else "ddp",
        device=device,
        memory_limit_bytes=memory_limit_bytes,
        init_dir=init_dir,
    )
    total_steps, per_step, order, meta = plan.total_steps, plan.per_step, plan.order, plan.meta
    ckpt_root = out_dir / "checkpoints"
    if chief:
        remove_partial(ckpt_root)
    student = plan.student
    n_params, fpt = student.n_params, student.flops_per_token
    log(
        f"model: {n_params / 1e6:.2f}M params, {fpt / 1e6:.2f} MFLOPs/token, ~{plan.estimate.total / 2**30:.2f} GiB"
        f"{f' per rank (FSDP over {world})' if sharded else ''}"
        f"{', activation checkpointing' if config.activation_checkpointing else ''}; "
        f"{total_steps} steps x {per_step} sequences of {config.seq_len}, "
        f"{order.epochs(total_steps * per_step):.2f} epoch(s) over {len(shards)} sequences on {device}"
        f"{f', from {student.init_dir}' if student.init_dir else ''}"
    )

    with _deterministic(device):
        torch.manual_seed(config.seed)
        lm = empty_model(student.hf_config)
        if config.activation_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        net: torch.nn.Module = CausalLMLoss(lm, config.loss_chunk_tokens)
        if sharded:
            shard_model(net, device)
        else:
            net.to_empty(device=device)
            lm.tie_weights()  # to_empty gave the tied LM head a tensor of its own
        init_buffers(lm)
        if meta is None:  # a resumed run loads its own checkpoint below
            student.initialise(lm, config.seed)
        optimizer = make_optimizer(lm, config, device)
        scheduler = make_scheduler(optimizer, config, total_steps)
        checkpointer = Checkpointer(ckpt_root, keep=keep_checkpoints, async_save=config.async_checkpoint)
        start_step, curve = 0, []
        if meta is not None:
            state = load_checkpoint(plan.resume_from, meta, lm, optimizer)
            scheduler.load_state_dict(state["scheduler"])
            _set_rng(state["rng"], cuda)
            start_step, curve = int(state["step"]), list(state["curve"])
            saved_world = int(meta.get("world_size", 1))
            reshard = f" (written by {saved_world} rank(s), resharded to {world})" if saved_world != world else ""
            log(f"resuming from {plan.resume_from} at step {start_step}/{total_steps}{reshard}")
        if parallel is not None and not sharded:
            net = replicate(net, device)
        net.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and not sharded else contextlib.nullcontext()
        progress = Progress("training steps", total_steps - start_step, log, unit="tokens", interval_s=log_interval_s)
        loop_start, session_tokens, tokens_per_s = time.monotonic(), 0, float(meta["tokens_per_s"]) if meta else 0.0

        for step in range(start_step, total_steps):
            indices = order.indices(step * per_step, per_step)
            if parallel is not None:
                indices = indices[parallel.rank :: parallel.world_size]
            tokens, lengths, *loss_mask = shards.batch(indices)
            lr = optimizer.param_groups[0]["lr"]
            mask = loss_mask[0] if loss_mask else None
            loss, grad_norm = _train_step(net, lm, tokens, lengths, config, device, autocast, parallel, mask)
            optimizer.step()
            scheduler.step()
            done, session_tokens = step + 1, session_tokens + config.batch_tokens
            tokens_per_s = session_tokens / max(time.monotonic() - loop_start, 1e-9)
            curve.append(dict(step=done, loss=loss, lr=lr, grad_norm=grad_norm, tokens_seen=done * config.batch_tokens))
            if done % config.checkpoint_every == 0 or done == total_steps:
                trainer_state = {
                    "scheduler": scheduler.state_dict(),
                    "rng": _get_rng(cuda),
                    "step": done,
                    "data_position": done * per_step,
                    "curve": curve,
                }
                run_meta = dict(
                    fingerprint=plan.fingerprint,
                    data_fingerprint=plan.data_fingerprint,
                    tokens_per_s=tokens_per_s,
                    config=config.model_dump(mode="json"),
                    strategy=parallel.strategy if parallel is not None else "single",
                    loss=loss,
                )
                checkpointer.save(done, lm, optimizer, trainer_state, run_meta)
            progress.advance(1, amount=config.batch_tokens, extra=f"loss {loss:.4f}, lr {lr:.2e}")
            if on_step is not None:
                on_step(done, loss, lr, done * config.batch_tokens, tokens_per_s)
        checkpointer.finish()

        if sharded:  # every rank takes part in gathering the weights
            final_model = export_sharded(lm, tokenizer_dir, out_dir / "final")
        elif chief:
            final_model = export_hf(lm, tokenizer_dir, out_dir / "final")
        if not chief:  # the chief (rank 0) writes everything
            return None

    losses = [float(row["loss"]) for row in curve]
    device_name = torch.cuda.get_device_name(torch.device(device)) if cuda else (platform.processor() or "cpu")
    peak = peak_flops(device_name) if cuda else None
    per_device = tokens_per_s / world
    result = TrainResult(
        steps=total_steps,
        tokens_seen=total_steps * config.batch_tokens,
        epochs=order.epochs(total_steps * per_step),
        data_passes=total_steps * per_step / len(shards),
        losses=losses,
        final_loss=losses[-1],
        wall_s=time.monotonic() - started,
        tokens_per_s=tokens_per_s,
        n_params=n_params,
        flops_per_token=fpt,
        checkpoint=checkpoint_dirs(ckpt_root)[-1],
        final_model=final_model,
        loss_curve=write_curve(out_dir / "loss_curve.csv", curve),
        resumed_from_step=start_step,
        device=device,
        world_size=world,
        strategy=parallel.strategy if parallel is not None else "single",
        device_name=device_name,
        tokens_per_s_per_device=per_device,
        peak_flops=peak,
        mfu=round(fpt * per_device / peak, 4) if peak else None,
        estimated_memory_bytes=plan.estimate.total,
    )
    result.save(out_dir)
    log(
        f"trained {result.steps} steps, {result.tokens_seen} tokens, final loss {result.final_loss:.4f}, "
        f"{result.tokens_per_s:.0f} tokens/s{f', MFU {result.mfu:.1%}' if result.mfu else ''}; model in {final_model}"
    )
    return result


def _train_step(
    net: torch.nn.Module,
    lm: torch.nn.Module,
    tokens: np.ndarray,
    lengths: np.ndarray,
    config: TrainingConfig,
    device: str,
    autocast: Any,
    parallel: DataParallel | None = None,
    loss_mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """Gradients of the batch loss (the caller takes the optimizer step); returns (loss, grad norm before clipping).

    Distributed, ``tokens`` is this rank's share of the batch: the loss is normalised by the targets of the whole
    batch and gradients and loss are summed over ranks, which is the full batch's gradient and loss. Gradients are
    reduced once, on the last micro-batch (DDP's bucketed all-reduce overlapping the backward, or FSDP's
    reduce-scatter into each rank's shard); the norm that clipping uses is over the whole gradient.
    ``loss_mask`` (sequences x tokens, bool): only the tokens it marks are targets (through the chunked loss too)."""
    lm.zero_grad(set_to_none=True)
    real_targets = np.arange(tokens.shape[1] - 1)[None, :] < lengths[:, None] - 1
    if loss_mask is not None:
        real_targets &= loss_mask[:, 1:]
    n_targets = torch.tensor(int(real_targets.sum()), device=device)
    if parallel is not None:
        torch.distributed.all_reduce(n_targets)
    n_targets = max(int(n_targets), 1)
    total = torch.zeros((), device=device)
    starts = range(0, len(tokens), config.micro_batch_size)
    for lo in starts:
        hi = lo + config.micro_batch_size
        # Trailing padding is never a target and no real token attends to it (causal), so each micro-batch is cut
        # to its longest sequence (dynamic padding: SFT's padded conversations cost their real length, not seq_len).
        width = max(int(lengths[lo:hi].max()), 2)
        x = torch.from_numpy(tokens[lo:hi, :width]).to(device)
        real = torch.from_numpy(lengths[lo:hi]).to(device)
        inputs, targets = x[:, :-1], x[:, 1:].clone()
        position = torch.arange(targets.shape[1], device=device)
        targets[position[None, :] >= real[:, None] - 1] = IGNORE  # target j is token j + 1: real if j + 1 < length
        if loss_mask is not None:
            targets[~torch.from_numpy(loss_mask[lo:hi, 1:width]).to(device)] = IGNORE
        with gradient_sync(net, last=lo == starts[-1]):
            with autocast:
                loss = net(inputs, targets)
            (loss / n_targets).backward()
        total += loss.detach()
    if parallel is not None:
        torch.distributed.all_reduce(total)
    grad_norm = torch.nn.utils.clip_grad_norm_(lm.parameters(), config.grad_clip)
    return (total / n_targets).item(), float(grad_norm)


def _silent(line: str) -> None:
    """Ranks other than the chief do not log: one rank's lines tell the whole run."""


@contextlib.contextmanager
def _deterministic(device: str) -> Iterator[None]:
    if device.startswith("cuda"):
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _get_rng(cuda: bool) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else []}


def _set_rng(rng: dict[str, Any], cuda: bool) -> None:
    torch.set_rng_state(rng["torch"])
    if cuda and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])


def write_curve(path: Path, curve: list[dict[str, Any]]) -> Path:
    """The per-step curve a training run leaves beside its result (``TrainResult.read_curve`` reads it)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", "loss", "lr", "grad_norm", "tokens_seen"])
    writer.writeheader()
    writer.writerows(curve)
    text = buffer.getvalue()
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
