import os
from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.config import GenerationConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement


class ThinkingGenerator(dg.ConfigurableResource):
    """Hardware for the thinking engines. Which engine and model is the experiment's (it changes the output);
    how many actors, on which devices, is this resource's (it changes only speed)."""

    workers: int = Field(1, gt=0, description="engine actors; on GPUs usually one per GPU")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    torch_threads: int | None = Field(
        None, gt=0, description="threads per transformers engine (default: this machine's cores / workers)"
    )
    max_model_len: int | None = Field(None, gt=0, description="vLLM context length cap")

    def engine_spec(self, generation: GenerationConfig, model_dir: str) -> EngineSpec:
        return EngineSpec(
            engine=generation.engine,
            model_dir=model_dir,
            device=self.device,
            torch_threads=self.torch_threads or max(1, (os.cpu_count() or 1) // self.workers),
            tensor_parallel_size=generation.tensor_parallel_size,
            max_model_len=self.max_model_len,
        )

    def placement(self) -> WorkerPlacement:
        return WorkerPlacement(self.workers, self.cpus_per_worker, self.gpus_per_worker)
