from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.config import operational
from tpt.devices import resolve_device
from tpt.versioning import versioned_fields


class Trainer(dg.ConfigurableResource):
    """Where pretraining runs. The embedded default trains in the Dagster process on the CPU; the same loop
    runs on a GPU with ``device: cuda`` (bf16 autocast), or data-parallel on the Ray cluster with
    ``launcher: ray`` (Ray Train ``TorchTrainer``, one worker per GPU or per ``threads_per_worker`` CPUs), each
    worker holding the whole model (``strategy: ddp``) or a shard of it (``strategy: fsdp``); a lost worker restarts
    the group from the last checkpoint up to ``max_failures`` times.

    The device is versioned (CUDA trains in bf16), and so is the strategy on CUDA (FSDP's mixed precision reduces in
    bf16 there). On the CPU the loop sums gradients over ranks in fp32, so launcher, worker count and strategy give
    the same curve (tested), and a run may resume under another of them."""

    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="versioned (resolved): cuda trains in bf16")
    launcher: Literal["local", "ray"] = operational("local", description="speed only: in-process or Ray Train")
    workers: int = operational(2, gt=0, description="speed only: Ray Train workers (launcher: ray)")
    threads_per_worker: int = operational(1, gt=0, description="speed only: CPUs and torch threads per Ray worker")
    strategy: Literal["ddp", "fsdp"] = operational(
        "ddp",
        description="speed only on CPU, versioned on CUDA (FSDP reduces in bf16 there). launcher: ray. ddp: every "
        "worker holds the whole model, optimizer included "
        "(fastest when it fits one device); fsdp: weights, grads and AdamW moments sharded over the workers "
        "(FSDP2), for models that do not fit one device, at the cost of all-gathering each layer's weights every step",
    )
    max_failures: int = operational(
        3,
        ge=0,
        description="guard only: launcher: ray. Times a lost worker (killed process, lost node) restarts the worker "
        "group within the same run, resuming from the last checkpoint (Ray Train FailureConfig)",
    )
    memory_limit_gib: float | None = operational(
        None, gt=0, description="guard only: refuse configs estimated above this per device (per Ray worker)"
    )

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def output_settings(self) -> dict:
        device = self.resolved_device()
        return versioned_fields(self) | {"device": device} | ({"strategy": self.strategy} if device == "cuda" else {})

    @property
    def memory_limit_bytes(self) -> int | None:
        return int(self.memory_limit_gib * 2**30) if self.memory_limit_gib else None
