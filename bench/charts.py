"""The report's PNG charts (matplotlib, Agg, no pyplot global state): each function returns bytes.

Japanese labels need a font with Japanese glyphs. cjk_font() looks for one the way each system
ships it: Noto Sans CJK (Linux: fonts-noto-cjk), Hiragino (macOS), Yu Gothic / Meiryo
(Windows, also seen from WSL2 under /mnt/c), IPA fonts; also any font fontconfig lists for
Japanese. Where none exists the report says so once and draws the charts with English labels,
instead of matplotlib's warning per missing glyph and boxes for every character.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.figure import Figure

# Japanese-capable families, preferred first (the names matplotlib reads from the font files).
CJK_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans JP", "Noto Serif CJK JP", "Source Han Sans JP",
    "Hiragino Sans", "Hiragino Kaku Gothic ProN", "Hiragino Kaku Gothic Pro",
    "Yu Gothic", "YuGothic", "Meiryo", "MS Gothic",
    "IPAexGothic", "IPAGothic", "IPAPGothic", "TakaoGothic", "VL Gothic",
)  # fmt: skip
# Where those families live as files. matplotlib only knows the fonts that were installed when
# it built its font cache; a file found here is added to it for this run.
CJK_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/System/Library/Fonts/ヒラギノ角ゴシック W3.ttc",  # macOS (Hiragino Sans)
    "C:/Windows/Fonts/YuGothR.ttc",  # Windows (Yu Gothic, Meiryo)
    "C:/Windows/Fonts/meiryo.ttc",
    "/mnt/c/Windows/Fonts/YuGothR.ttc",  # the same from WSL2
    "/mnt/c/Windows/Fonts/meiryo.ttc",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",  # Debian fonts-ipaexfont-gothic
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",  # Debian's alternatives link
)
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
PROJECTED_HATCH = "//"
NO_FONT_WARNING = (
    "bench report: warning: no Japanese font found (looked for Noto Sans CJK, Hiragino, "
    "Yu Gothic, Meiryo, IPA fonts); the charts keep English labels, the text is Japanese — "
    "install one (Debian/Ubuntu: apt-get install fonts-noto-cjk) for Japanese charts"
)


@dataclass(frozen=True)
class Series:
    """One bar colour: a target or a projected PC. None = no value for that model."""

    label: str
    values: list[float | None]
    low: list[float | None] | None = None  # range for error bars (projected series)
    high: list[float | None] | None = None
    projected: bool = False


def _installed() -> set[str]:
    return {f.name for f in font_manager.fontManager.ttflist}


def _fontconfig_files() -> list[str]:
    """Font files fontconfig lists as covering Japanese (Linux, and macOS with fontconfig)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    try:
        out = subprocess.run(
            [fc_list, ":lang=ja", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split(":")[0].strip() for line in out.splitlines() if line.strip()})


@functools.cache
def _discover() -> str | None:
    """The Japanese font family to draw with, or None (then one warning on stderr)."""
    installed = _installed()
    for family in CJK_FAMILIES:
        if family in installed:
            return family
    for path in [*CJK_FILES, *_fontconfig_files()]:
        if not Path(path).is_file():
            continue
        try:
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name()
        except (OSError, RuntimeError, ValueError):
            continue  # not a font matplotlib can read: try the next
    print(NO_FONT_WARNING, file=sys.stderr)
    return None


def cjk_font() -> str | None:
    """The installed font family for Japanese labels, or None (said once per run)."""
    return _discover()


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
