"""PNG figures for Dagster metadata: people would rather look at a loss curve than read one."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str, ylabel: str
) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _png(fig)


def histogram(groups: Mapping[str, Sequence[float]], *, title: str, xlabel: str, bins: int = 20) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in groups.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set(title=title, xlabel=xlabel, ylabel="documents")
    ax.legend()
    return _png(fig)


def grouped_bars(
    values: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str,
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> bytes:
    """``values[group][series]``: e.g. scores by benchmark (groups) for each variant (series); ``errors`` in the
    same shape draws error bars (e.g. 1.96 standard errors)."""
    groups = list(values)
    series = sorted({s for g in values.values() for s in g})
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, name in enumerate(series):
        xs = [g + i * width for g in range(len(groups))]
        yerr = [errors.get(g, {}).get(name, 0.0) for g in groups] if errors else None
        ax.bar(xs, [values[g].get(name, 0.0) for g in groups], width=width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set(title=title, ylabel=ylabel)
    ax.legend()
    return _png(fig)
