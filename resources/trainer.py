from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.devices import resolve_device


class Trainer(dg.ConfigurableResource):
    """Where pretraining runs. The embedded default trains in the Dagster process on the CPU; the same loop
    runs on a GPU with ``device: cuda`` (bf16 autocast)."""

    device: Literal["cpu", "cuda", "auto"] = "auto"
    memory_limit_gib: float | None = Field(None, gt=0, description="refuse configs estimated above this")

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    @property
    def memory_limit_bytes(self) -> int | None:
        return int(self.memory_limit_gib * 2**30) if self.memory_limit_gib else None
