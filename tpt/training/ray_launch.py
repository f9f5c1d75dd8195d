"""Launching the same training loop data-parallel on a Ray cluster with Ray Train's ``TorchTrainer``.

Every worker initialises its part of the same model from the same seed, reads its share of each step's sequences
from the shared data (token shards and mixture order, or SFT's sequences), and sums gradients with the others
(gloo on CPUs, NCCL on GPUs), either holding the whole model (``strategy="ddp"``) or one shard of it (``"fsdp"``,
for models that do not fit one device). Every worker writes its shard of each checkpoint (``out_dir`` must be on
storage all workers share); rank 0 writes the loss curve and the final model exactly as a single-process run does,
so a run resumes the same way however it was launched, on any number of workers.

A lost worker (its process killed, its node gone) fails the worker group; Ray Train's ``FailureConfig`` then starts
a new group, up to ``max_failures`` times within the same ``fit``, and the loop resumes from the last published
checkpoint. Bad input is refused in the driver before any worker starts (``loop.preflight``), so it is not retried.
Rank 0's log lines go to ``train.log`` in the output folder, which the launcher tails into the caller's log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tpt.config import TrainingConfig
from tpt.errors import InputError
from tpt.paths import as_path
from tpt.tokenization import PackedShards
from tpt.tokenization.mixture import ResolvedMixture
from tpt.training.data import TokenSequences
from tpt.training.loop import DataParallel, StepCallback, train
from tpt.training.preflight import preflight

LOG_FILE = "train.log"

Data = Sequence[str | Path] | Callable[[], TokenSequences]
"""What the workers train on: token shard paths (pretraining), or a picklable callable that opens the sequences
from storage every worker reads (SFT: ``partial(SFTSequences.load, folder)``)."""


def opener(data: Data) -> Callable[[], TokenSequences]:
    """A picklable callable that opens ``data`` where it is called (the driver, each worker)."""
    return data if callable(data) else partial(PackedShards, [str(p) for p in data])


def train_on_ray(
    config: TrainingConfig,
    data: Data,
    out_dir: Path,
    *,
    tokenizer_dir: Path,
    mixture_dir: Path | None = None,
    workers: int,
    threads_per_worker: int = 1,
    strategy: Literal["ddp", "fsdp"] = "ddp",
    device: str = "cpu",
    log: Callable[[str], None] = print,
    memory_limit_bytes: int | None = None,
    max_failures: int = 3,
    on_step: StepCallback | None = None,
    init_dir: Path | None = None,
) -> None:
    """Run ``tpt.training.train`` on ``workers`` Ray Train workers on ``data``; results land in ``out_dir`` as usual.
    ``memory_limit_bytes``: per worker (default: what its device has free); under FSDP a worker needs its share.
    ``max_failures``: worker-group restarts (each resuming from the last checkpoint) before the run fails.
    ``on_step``: a picklable callable that every worker runs after each step, as ``train``'s ``on_step``.
    ``init_dir``: the checkpoint the student starts from (``train``'s), a path every worker can read."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    opens = opener(data)
    preflight(
        config,
        opens(),
        out_dir,
        tokenizer_dir=tokenizer_dir,
        order=ResolvedMixture.load(mixture_dir) if mixture_dir else None,
        world_size=workers,
        strategy=strategy,
        device=device,
        memory_limit_bytes=memory_limit_bytes,
        check_memory=memory_limit_bytes is not None,  # the workers' devices are not this process's
        verify_checkpoint=True,
        init_dir=init_dir,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    gpu = device.startswith("cuda")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "open_data": opens,
            "out_dir": str(out_dir),
            "tokenizer_dir": str(tokenizer_dir),
            "mixture_dir": str(mixture_dir) if mixture_dir else None,
            "threads": threads_per_worker,
            "strategy": strategy,
            "device": device,
            "memory_limit_bytes": memory_limit_bytes,
            "on_step": on_step,
            "init_dir": str(init_dir) if init_dir else None,
        },
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": threads_per_worker}
        ),
        run_config=RunConfig(
            name="train",
            storage_path=str((out_dir / "ray_train").resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    stop = threading.Event()
    tail = threading.Thread(target=_tail, args=(log_path, log, stop), daemon=True)
    tail.start()
    try:
        trainer.fit()
    except Exception as exc:  # a worker's bad input keeps its one-line message
        cause = _input_error(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        stop.set()
        tail.join()


def _worker_loop(cfg: dict[str, Any]) -> None:
    import ray.train
    import torch

    context = ray.train.get_context()
    torch.set_num_threads(cfg["threads"])
    parallel = DataParallel(context.get_world_rank(), context.get_world_size(), cfg["strategy"])
    order = ResolvedMixture.load(as_path(cfg["mixture_dir"])) if cfg["mixture_dir"] else None
    with open(Path(cfg["out_dir"]) / LOG_FILE, "a", encoding="utf-8", buffering=1) as fh:
        train(
            TrainingConfig.model_validate(cfg["config"]),
            cfg["open_data"](),
            cfg["out_dir"],
            tokenizer_dir=cfg["tokenizer_dir"],
            order=order,
            parallel=parallel,
            device=f"cuda:{torch.cuda.current_device()}" if cfg["device"].startswith("cuda") else "cpu",
            log=lambda line: print(line, file=fh),
            memory_limit_bytes=cfg["memory_limit_bytes"],
            on_step=cfg["on_step"],
            init_dir=cfg["init_dir"],
        )


def _tail(path: Path, log: Callable[[str], None], stop: threading.Event) -> None:
    position = 0
    while True:
        done = stop.is_set()
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                fh.seek(position)
                for line in fh:
                    log(line.rstrip("\n"))
                position = fh.tell()
        if done:
            return
        time.sleep(0.5)


def _input_error(exc: BaseException) -> InputError | None:
    """The bad-input error behind a failed run: Ray Train keeps each worker's error in ``worker_failures``, and
    Ray's task errors keep the original in ``cause``."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        failures = getattr(current, "worker_failures", None) or {}
        pending += [getattr(current, "cause", None), current.__cause__, *(failures[r] for r in sorted(failures))]
    return None
