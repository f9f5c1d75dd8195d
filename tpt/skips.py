"""Counted skips: bad input is tallied by reason, with a few examples, and reported instead of crashing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_REASON = 3


@dataclass
class Skips:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, detail: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        if detail:
            kept = self.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append(detail[:200])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples}
