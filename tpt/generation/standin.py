"""A stand-in thinking engine, named as such: its "thinking" is the first tokens of its prompt.

It is fast and deterministic, so tests of the stage's machinery (kill -9, actor restarts, resume) and scale
rehearsals run without paying for a model; the real engines keep their own tests. With ``EngineSpec.standin_gate``
set to a folder, each batch first takes one ticket file from that folder (waiting while there is none), and the
engine writes its process id there as ``pid-<pid>``: a test decides exactly how many batches finish before it kills
the worker. A prompt holding the word ``POISON`` makes it raise, as a request a real engine refuses would, and
``calls`` counts its ``generate`` calls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import AutoTokenizer

from tpt.config import SamplingConfig
from tpt.generation.engines import Completion, EngineSpec, engine_version


class StandInEngine:
    def __init__(self, spec: EngineSpec):
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.gate = Path(spec.standin_gate) if spec.standin_gate else None
        if self.gate is not None:
            (self.gate / f"pid-{os.getpid()}").touch()
        self.calls = 0

    @property
    def version(self) -> str:
        return engine_version("standin")

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[Completion]:
        self.calls += 1
        if self.gate is not None:
            self._take_ticket()
        if any("POISON" in p for p in prompts):
            raise ValueError("the stand-in refuses a POISON prompt")
        results = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            n = min(sampling.max_thinking_tokens, len(ids))
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            results.append(Completion(text, len(ids), n, "length"))
        return results

    def _take_ticket(self) -> None:
        while True:
            for ticket in sorted(self.gate.glob("ticket-*")):
                try:
                    ticket.unlink()
                    return
                except FileNotFoundError:  # another worker took it first
                    continue
            time.sleep(0.05)
