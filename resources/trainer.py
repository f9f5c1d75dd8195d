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
    worker holding the whole model (``strategy: ddp``) or a shard of it (``strategy: fsdp``).

    Only the device is versioned (CUDA trains in bf16 autocast): the loop sums gradients over ranks, so launcher,
    worker count and strategy give the same curve (tested on CPU), and a run may resume under another of them."""

    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="versioned (resolved): cuda trains in bf16")
    launcher: Literal["local", "ray"] = operational("local", description="speed only: in-process or Ray Train")
    workers: int = operational(2, gt=0, description="speed only: Ray Train workers (launcher: ray)")
    threads_per_worker: int = operational(1, gt=0, description="speed only: CPUs and torch threads per Ray worker")
    strategy: Literal["ddp", "fsdp"] = operational(
        "ddp",
        description="speed only. launcher: ray. ddp: every worker holds the whole model, optimizer included "
        "(fastest when it fits one device); fsdp: weights, grads and AdamW moments sharded over the workers "
        "(FSDP2), for models that do not fit one device, at the cost of all-gathering each layer's weights every step",
    )
    memory_limit_gib: float | None = operational(
        None, gt=0, description="guard only: refuse configs estimated above this per device (per Ray worker)"
    )

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def output_settings(self) -> dict:
        return versioned_fields(self) | {"device": self.resolved_device()}

    @property
    def memory_limit_bytes(self) -> int | None:
        return int(self.memory_limit_gib * 2**30) if self.memory_limit_gib else None
