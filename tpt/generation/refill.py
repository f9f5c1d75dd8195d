"""Continuous batching for the transformers engine: at most ``rows`` sequences decode at once over one KV cache; a
finished sequence leaves the batch at once and the next waiting request takes its place (prefilled on its own,
then merged into the cache), so the batch keeps its width while requests wait, instead of decoding every row until
the longest one ends as ``model.generate`` does.

Rows are left-padded in the cache; the attention mask marks each row's real entries and positions come from it,
so rows of different lengths share one forward. Each row samples from its own seeded generator, so a document's
sample does not depend on its batch mates. Full-attention caches only (``DynamicLayer``: LLaMA, Qwen2, SmolLM...);
``supports`` tells the engine when to keep ``model.generate`` instead (sliding-window or hybrid caches).

``RefillDecoder`` is a state machine (``add`` requests, ``step`` until ``idle``), so one loop can serve several
callers' requests at once (``tpt.generation.decode_loop``); ``run`` is the one-caller form.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tpt.config import SamplingConfig

STOP_WINDOW = 16  # tokens decoded at the end of a row to look for a stop string (longer than any stop marker)


@dataclass(frozen=True)
class Request:
    prompt: Sequence[int]
    sampling: SamplingConfig
    seed: int
    limit: int | None = None  # new tokens; None: the sampling's maximum
    stop: bool = True  # False: end tokens and stop strings are ignored (a benchmark forcing exact lengths)
    tag: Any = None  # the caller's, handed back with the result


@dataclass
class Decoded:
    tokens: list[int]
    stopped: bool  # ended on an end-of-sequence token or a stop string (else it reached its length)
    started_at: float  # wall clock: admitted into the batch (its prefill)
    finished_at: float  # wall clock: left the batch


@dataclass
class _Row:
    request: Request
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    stopped: bool = False
    started_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        limit = self.request.limit or self.request.sampling.max_thinking_tokens
        return self.stopped or len(self.tokens) >= limit


def supports(model) -> bool:
    """Whether every layer of this model's cache is a plain full-attention one this decoder can merge."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


class RefillDecoder:
    def __init__(self, model, pad_id: int, end_ids: set[int], decode: Callable[[list[int]], str], device: str):
        self.model, self.pad_id, self.end_ids, self.decode, self.device = model, pad_id, end_ids, decode, device
        self.waiting: deque[Request] = deque()
        self._reset()

    def _reset(self) -> None:
        self.active: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask = self.last = None

    def clear(self) -> None:
        """Drop every waiting and active request."""
        self.waiting.clear()
        self._reset()

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.active

    def add(self, requests: Sequence[Request]) -> None:
        self.waiting.extend(requests)

    def run(self, requests: Sequence[Request], rows: int) -> list[Decoded]:
        """Every request's continuation, in order (nothing else may be queued on this decoder)."""
        self.add([replace(r, tag=i) for i, r in enumerate(requests)])
        done: dict[int, Decoded] = {}
        while not self.idle:
            done |= {request.tag: decoded for request, decoded in self.step(rows)}
        return [done[i] for i in range(len(requests))]

    def step(self, rows: int) -> list[tuple[Request, Decoded]]:
        """One forward: a prefill of waiting requests when rows are free, else one token for every active row.
        Returns the requests that finished. A failing prefill raises with the decoder as it was before (its
        requests are dropped); a failing decode drops every active row."""
        if self.waiting and len(self.active) < rows:
            admitted = [self.waiting.popleft() for _ in range(min(rows - len(self.active), len(self.waiting)))]
            stepped = [_Row(r, _generator(r.sampling, r.seed, self.device)) for r in admitted]
            new_cache, new_mask, logits = self._prefill([r.prompt for r in admitted])
            picks = self._sample(logits, stepped)
            if self.cache is None:
                self.cache, self.mask, self.last = new_cache, new_mask, picks
            else:
                self.mask = _merge(self.cache, self.mask, new_cache, new_mask)
                self.last = torch.cat([self.last, picks])
            self.active += stepped
        else:
            try:
                picks = self._decode()
            except Exception:
                self._reset()
                raise
            stepped = self.active
        for row, token in zip(stepped, picks.tolist(), strict=True):
            row.tokens.append(token)
            row.stopped = row.request.stop and (token in self.end_ids or self._has_stop(row))
        return self._release()

    def _decode(self) -> torch.Tensor:
        mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        logits = self.model(
            input_ids=self.last[:, None],
            attention_mask=mask,
            position_ids=mask.sum(dim=1, keepdim=True) - 1,
            past_key_values=self.cache,
            use_cache=True,
        ).logits[:, -1, :]
        self.mask, self.last = mask, self._sample(logits, self.active)
        return self.last

    def _release(self) -> list[tuple[Request, Decoded]]:
        """Finished rows leave the batch (and the cache columns no remaining row uses)."""
        now = time.time()
        finished = [
            (row.request, Decoded(row.tokens, row.stopped, row.started_at, now)) for row in self.active if row.finished
        ]
        if not finished:
            return []
        keep = [j for j, row in enumerate(self.active) if not row.finished]
        if not keep:
            self._reset()
            return finished
        at = torch.tensor(keep, device=self.device)
        self.active = [self.active[j] for j in keep]
        self.cache.batch_select_indices(at)
        self.mask, self.last = _trim(self.cache, self.mask[at]), self.last[at]
        return finished

    def _prefill(self, prompts: list[Sequence[int]]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1, :]
        return cache, mask, logits

    @staticmethod
    def _sample(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """One token per row: greedy at temperature 0, else temperature and top-p from the row's own generator."""
        picks = []
        for i, row in enumerate(rows):
            s = row.request.sampling
            if s.temperature <= 0:
                picks.append(logits[i].argmax().view(1))
            else:
                picks.append(top_p_sample(logits[i], s.temperature, s.top_p, row.generator))
        return torch.cat(picks)

    def _has_stop(self, row: _Row) -> bool:
        stops = row.request.sampling.stop
        return bool(stops) and any(s in self.decode(row.tokens[-STOP_WINDOW:]) for s in stops)


def top_p_sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token id (shape ``[1]``) from one row of logits, by temperature and nucleus (top-p) sampling: the rule
    both transformers paths (this decoder and ``model.generate``'s seeded sampler) sample by."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < top_p)
    return order[torch.multinomial(sorted_p, 1, generator=generator)]


def _generator(sampling: SamplingConfig, seed: int, device: str) -> torch.Generator | None:
    return None if sampling.temperature <= 0 else torch.Generator(device=device).manual_seed(seed)


def _merge(cache: DynamicCache, mask: torch.Tensor, new: DynamicCache, new_mask: torch.Tensor) -> torch.Tensor:
    """Append ``new``'s rows to ``cache`` (both left-padded to the longer one); returns the merged mask."""
    width = max(mask.shape[1], new_mask.shape[1])
    for layer, added in zip(cache.layers, new.layers, strict=True):
        layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(added.keys, width)])
        layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(added.values, width)])
    return torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(new_mask, (width - new_mask.shape[1], 0))])


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(states, (0, 0, width - states.shape[2], 0))  # (batch, heads, length, head dim): pad the length


def _trim(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading cache columns that no remaining row uses (left padding of rows that left)."""
    first = int(mask.any(dim=0).int().argmax())
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return mask[:, first:]
