"""The report's PNG charts (matplotlib, Agg, no pyplot global state): each function returns bytes.

Japanese labels need a CJK font. Debian's fonts-noto-cjk is used when installed; otherwise the
charts are still drawn (Japanese glyphs may show as boxes) and one warning says so.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.figure import Figure

CJK_FAMILIES = ("Noto Sans CJK JP", "Noto Serif CJK JP", "IPAexGothic", "IPAGothic", "TakaoGothic")
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
PROJECTED_HATCH = "//"
_warned = False


@dataclass(frozen=True)
class Series:
    """One bar colour: a target or a projected PC. None = no value for that model."""

    label: str
    values: list[float | None]
    low: list[float | None] | None = None  # range for error bars (projected series)
    high: list[float | None] | None = None
    projected: bool = False


def cjk_font() -> str | None:
    """The first installed CJK font family, or None (with one warning on stderr)."""
    global _warned
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            return family
    if not _warned:
        print(
            "bench report: warning: no CJK font found (Debian: apt-get install fonts-noto-cjk); "
            "Japanese chart labels may show as boxes",
            file=sys.stderr,
        )
        _warned = True
    return None


def _figure(width: float = 9.0, height: float = 4.8) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _font(lang: str) -> dict[str, str]:
    """Text keyword arguments: a CJK family for Japanese labels, when one is installed."""
    family = cjk_font() if lang == "ja" else None
    return {"family": family} if family else {}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _error_bars(s: Series) -> list[list[float]] | None:
    if s.low is None or s.high is None:
        return None
    below = [
        max(0.0, (v or 0) - (lo if lo is not None else v or 0))
        for v, lo in zip(s.values, s.low, strict=True)
    ]
    above = [
        max(0.0, (hi if hi is not None else v or 0) - (v or 0))
        for v, hi in zip(s.values, s.high, strict=True)
    ]
    return [below, above]


def grouped_bars(
    categories: list[str], series: list[Series], title: str, ylabel: str, lang: str = "en"
) -> bytes:
    """Bars per category (model), one colour per series; projected series hatched with ranges."""
    width = max(9.0, 1.2 + 0.35 * len(categories) * max(1, len(series)))
    fig = _figure(min(width, 22.0), 5.2)
    ax = fig.add_subplot()
    font = _font(lang)
    n = max(1, len(series))
    bar = 0.8 / n
    for i, s in enumerate(series):
        xs = [c + (i - (n - 1) / 2) * bar for c in range(len(categories))]
        ys = [v or 0.0 for v in s.values]
        err = _error_bars(s)
        ax.bar(
            xs, ys, bar, label=s.label, color=COLORS[i % len(COLORS)],
            hatch=PROJECTED_HATCH if s.projected else None, edgecolor="white",
            yerr=err, capsize=3 if err else 0, ecolor="#333333",
        )  # fmt: skip
    ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right", **font)
    ax.set_ylabel(ylabel, **font)
    ax.set_title(title, **font)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(prop={**font, "size": 8})
    return _png(fig)


def scatter(
    points: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    lang: str = "en",
) -> bytes:
    """One marker colour per series: (x, y) points, e.g. prompt tokens vs TTFT."""
    fig = _figure()
    ax = fig.add_subplot()
    font = _font(lang)
    for i, (label, pts) in enumerate(points.items()):
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, label=label, color=COLORS[i % len(COLORS)], alpha=0.8, s=24)
    ax.set_xlabel(xlabel, **font)
    ax.set_ylabel(ylabel, **font)
    ax.set_title(title, **font)
    ax.grid(alpha=0.3)
    if any(points.values()):
        ax.legend(prop={**font, "size": 8})
    return _png(fig)
