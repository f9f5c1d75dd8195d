from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.devices import resolve_device


class Trainer(dg.ConfigurableResource):
    """Where pretraining runs. The embedded default trains in the Dagster process on the CPU; the same loop
    runs on a GPU with ``device: cuda`` (bf16 autocast), or data-parallel on the Ray cluster with
    ``launcher: ray`` (Ray Train ``TorchTrainer``, one worker per GPU or per ``threads_per_worker`` CPUs), each
    worker holding the whole model (``strategy: ddp``) or a shard of it (``strategy: fsdp``); a lost worker restarts
    the group from the last checkpoint up to ``max_failures`` times."""

    device: Literal["cpu", "cuda", "auto"] = "auto"
    launcher: Literal["local", "ray"] = "local"
    workers: int = Field(2, gt=0, description="Ray Train workers (launcher: ray)")
    threads_per_worker: int = Field(1, gt=0, description="CPUs and torch threads per Ray Train worker")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="launcher: ray. ddp: every worker holds the whole model, optimizer included (fastest when it "
        "fits one device); fsdp: weights, grads and AdamW moments sharded over the workers (FSDP2), for models "
        "that do not fit one device, at the cost of all-gathering each layer's weights every step",
    )
    max_failures: int = Field(
        3,
        ge=0,
        description="launcher: ray. Times a lost worker (killed process, lost node) restarts the worker group "
        "within the same run, resuming from the last checkpoint (Ray Train FailureConfig)",
    )
    memory_limit_gib: float | None = Field(
        None, gt=0, description="refuse configs estimated above this per device (per Ray worker with launcher: ray)"
    )

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    @property
    def memory_limit_bytes(self) -> int | None:
        return int(self.memory_limit_gib * 2**30) if self.memory_limit_gib else None
