import os
from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.config import GenerationConfig
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement
from tpt.models import model_reference


class ThinkingGenerator(dg.ConfigurableResource):
    """Hardware for the thinking engines. Which engine and model is the experiment's (it changes the output);
    how many actors, on which devices, is this resource's (it changes only speed)."""

    workers: int = Field(1, gt=0, description="engine actors; on GPUs usually one per GPU")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="default: 1 with GPUs, else the worker's torch threads (so Ray's OMP_NUM_THREADS fits)"
    )
    gpus_per_worker: float = Field(0.0, ge=0, description="1 on GPU clusters (tensor_parallel_size for TP > 1)")
    device: Literal["cpu", "cuda", "auto"] = "auto"
    torch_threads: int | None = Field(
        None, gt=0, description="threads per transformers engine (default: this machine's cores / workers)"
    )
    max_model_len: int | None = Field(None, gt=0, description="vLLM context length cap")
    enforce_eager: bool | None = Field(None, description="vLLM: skip graph compilation (default: only on CPU)")
    max_num_seqs: int | None = Field(
        None, gt=0, description="vLLM: sequences one replica runs at once (default: vLLM's for the device)"
    )
    memory_fraction: float | None = Field(
        None, gt=0, le=1, description="vLLM: share of GPU memory (host memory on CPU) it may take (default 0.9/0.2)"
    )

    def engine_spec(self, generation: GenerationConfig) -> EngineSpec:
        return EngineSpec(
            engine=generation.engine,
            model=model_reference(generation.model),
            device=self.device,
            torch_threads=self._threads(),
            tensor_parallel_size=generation.tensor_parallel_size,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            memory_fraction=self.memory_fraction,
            max_num_seqs=self.max_num_seqs,
        )

    def _threads(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 1) // self.workers)

    def placement(self) -> WorkerPlacement:
        cpus = self.cpus_per_worker or (1.0 if self.gpus_per_worker else float(self._threads()))
        return WorkerPlacement(self.workers, cpus, self.gpus_per_worker)

    def gpus_in_use(self) -> int:
        return int(self.workers * self.gpus_per_worker)
