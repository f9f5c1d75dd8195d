import os
from typing import Literal

import dagster as dg
from pydantic import Field

from tpt.config import GenerationConfig, operational
from tpt.devices import resolve_device
from tpt.generation.engines import EngineSpec
from tpt.generation.shard_runner import WorkerPlacement
from tpt.models import model_reference
from tpt.versioning import versioned_fields


class ThinkingGenerator(dg.ConfigurableResource):
    """Hardware for the thinking engines. Which engine and model is the experiment's (it changes the output);
    how many actors, on which devices, is this resource's. The device kind and the context cap change what is
    generated, so they are versioned with the trajectories; the rest changes only speed (requests are seeded one by
    one, so how they are spread over actors does not change them)."""

    workers: int = operational(1, gt=0, description="speed only: engine actors; on GPUs usually one per GPU")
    cpus_per_worker: float | None = operational(
        None,
        gt=0,
        description="speed only: default 1 with GPUs, else the worker's torch threads (so Ray's OMP_NUM_THREADS fits)",
    )
    gpus_per_worker: float = operational(
        0.0, ge=0, description="speed only: 1 on GPU clusters (tensor_parallel_size for TP > 1)"
    )
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="versioned (resolved): cpu and cuda differ")
    torch_threads: int | None = operational(
        None, gt=0, description="speed only: threads per transformers engine (default: this machine's cores / workers)"
    )
    max_num_seqs: int | None = operational(
        None,
        gt=0,
        description="speed only: sequences one replica runs at once, refilled as they finish (default: vLLM's for "
        "the device; transformers: the generation's batch size)",
    )
    max_model_len: int | None = Field(
        None, gt=0, description="versioned: vLLM context length cap (longer prompts fail and are recorded as errors)"
    )
    enforce_eager: bool | None = operational(
        None, description="speed only: vLLM skips graph compilation (default: only on CPU)"
    )
    memory_fraction: float | None = operational(
        None,
        gt=0,
        le=1,
        description="speed only: vLLM's share of GPU memory (host memory on CPU) (default 0.9/0.2)",
    )

    def output_settings(self) -> dict:
        return versioned_fields(self) | {"device": resolve_device(self.device)}

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
