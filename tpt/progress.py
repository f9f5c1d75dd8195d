"""Progress lines for long work: done of total, rate, time left, at most one line per interval."""

from __future__ import annotations

import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Reports ``what: done/total (pct), <rate> <unit>/s, <extra>, ETA`` through ``log``.

    ``rate_of`` lets a caller report a rate of something other than the items counted (tokens while counting
    documents), which is what users of generation and training want to see.
    """

    def __init__(
        self,
        what: str,
        total: int,
        log: Callable[[str], None],
        *,
        unit: str = "items",
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.log, self.unit, self.interval_s = what, total, log, unit, interval_s
        self.clock = clock
        self.start = clock()
        self.last_report = -float("inf")
        self.done = 0
        self.amount = 0.0

    def advance(self, items: int = 1, amount: float | None = None, extra: str = "") -> None:
        """Count ``items`` finished and ``amount`` of the rate unit (defaults to ``items``)."""
        self.done += items
        self.amount += items if amount is None else amount
        now = self.clock()
        if self.done >= self.total or now - self.last_report >= self.interval_s:
            self.last_report = now
            self.log(self.line(now, extra))

    def line(self, now: float | None = None, extra: str = "") -> str:
        elapsed = max((self.clock() if now is None else now) - self.start, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.amount / elapsed
        left = (self.total - self.done) * elapsed / self.done if self.done else float("nan")
        eta = format_duration(left) if self.done else "unknown"
        parts = [f"{self.what}: {self.done}/{self.total} ({pct:.1f}%)", f"{rate:.1f} {self.unit}/s"]
        if extra:
            parts.append(extra)
        parts.append(f"elapsed {format_duration(elapsed)}, ETA {eta}")
        return ", ".join(parts)
