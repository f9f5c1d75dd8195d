from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.config import operational
from tpt.devices import resolve_device
from tpt.versioning import versioned_fields


class Evaluator(dg.ConfigurableResource):
    """How lm-eval runs: the ``hf`` backend on CPU by default, ``vllm`` on GPUs. Generated code from HumanEval and
    MBPP always runs in the project's sandbox (separate process, limits, no network). The backend and the device
    change the numbers, so they are part of every score's version; switching either re-scores every cell."""

    backend: Literal["hf", "vllm"] = Field("hf", description="versioned: the two backends batch and round differently")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="versioned (resolved): cpu and cuda differ")
    sandbox_workers: int = operational(2, gt=0, description="speed only: generated programs checked in parallel")

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def output_settings(self) -> dict:
        return versioned_fields(self) | {"device": self.resolved_device()}
