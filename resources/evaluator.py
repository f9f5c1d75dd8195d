from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.devices import resolve_device


class Evaluator(dg.ConfigurableResource):
    """How lm-eval runs: the ``hf`` backend on CPU by default, ``vllm`` on GPUs. Generated code from HumanEval and
    MBPP always runs in the project's sandbox (separate process, limits, no network)."""

    backend: Literal["hf", "vllm"] = "hf"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    sandbox_workers: int = Field(2, gt=0, description="generated programs checked in parallel")

    def resolved_device(self) -> str:
        return resolve_device(self.device)
