"""What every plot shares: figures without pyplot, the value colour scale, parameter axes, thinned labels.

Figures are made with ``matplotlib.figure.Figure`` and the Agg canvas, never pyplot: no
global state, no display needed, and a report can be made inside a running program.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

from .data import Axis, TrialTable

#: Colour map of the objective value; the better end (low when minimising) is the bright one.
VALUE_CMAP = "viridis"
FAILED_COLOUR = "#d62728"
BEST_COLOUR = "#e41a1c"

#: Markers and colours of the strategies, shared by every plot that tells them apart.
STRATEGY_STYLE: dict[str, tuple[str, str]] = {
    "explicit": ("D", "#8c564b"),
    "grid": ("s", "#1f77b4"),
    "random": ("o", "#2ca02c"),
    "sobol": ("^", "#17becf"),
    "bayes": ("*", "#d62728"),
}
STATUS_COLOURS = {"done": "#4c9a2a", "pruned": "#9467bd", "failed": "#d62728", "timeout": "#ff7f0e",
                  "running": "#1f77b4"}


DPI = 110
#: Values that are all positive and span more than this factor get a log scale (colours and axes).
LOG_SPAN = 100.0
#: From this many successful trials on, the colour scale may leave out the worst tenth (see value_scale).
ROBUST_FROM = 10


def strategy_style(strategy: str) -> tuple[str, str]:
    return STRATEGY_STYLE.get(strategy, ("o", "#7f7f7f"))


def figure(width: float = 8.0, height: float = 5.0) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: Path) -> Path:
    """Write the PNG under a temporary name, then rename it: a browser or viewer never sees half a file."""
    temporary = path.with_name(f".{path.name}.writing")
    fig.savefig(temporary, dpi=DPI, format="png")
    temporary.replace(path)
    return path


def value_scale(table: TrialTable, values: np.ndarray | None = None, robust: bool = True):
    """(cmap, norm) for colouring by value, the better values bright; log when positive over ``LOG_SPAN``.

    ``robust``: when the worst tenth of the trials stretches the scale over more than half its
    range (a diverged run among good ones), the colours end at that tenth, so that the good
    trials are told apart; worse values take the end colour.
    """
    values = table.value[table.done] if values is None else values[np.isfinite(values)]
    cmap = VALUE_CMAP if not table.minimize else f"{VALUE_CMAP}_r"
    if not len(values):
        return cmap, Normalize(0, 1)
    log = wants_log(values)
    scaled = np.log(values) if log else values
    low, high = float(np.min(scaled)), float(np.max(scaled))
    if robust and len(scaled) >= ROBUST_FROM:
        worst = float(np.quantile(scaled, 0.9 if table.minimize else 0.1))
        if table.minimize and worst - low < 0.5 * (high - low):
            high = worst
        elif not table.minimize and high - worst < 0.5 * (high - low):
            low = worst
    if log:
        return cmap, LogNorm(float(np.exp(low)), float(np.exp(high)))
    if high == low:
        low, high = low - 0.5, high + 0.5
    return cmap, Normalize(low, high)


def value_colorbar(fig, mappable, ax, table: TrialTable, **kw) -> None:
    """The colour bar of the value, with an arrow at the end where worse values were left out of the scale."""
    values = table.value[table.done]
    norm = mappable.norm
    clipped_low = len(values) and float(np.min(values)) < norm.vmin
    clipped_high = len(values) and float(np.max(values)) > norm.vmax
    extend = "both" if clipped_low and clipped_high else "min" if clipped_low else "max" if clipped_high else "neither"
    fig.colorbar(mappable, ax=ax, extend=extend, **kw)


def wants_log(values: np.ndarray) -> bool:
    """Whether these values read better on a log scale: all positive, spanning more than ``LOG_SPAN``."""
    finite = values[np.isfinite(values)]
    return bool(len(finite)) and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN


def value_axis_scale(ax, values: np.ndarray, which: str = "y") -> None:
    """A log value axis when the values want one (see :func:`wants_log`)."""
    if wants_log(values):
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")


def better_last(table: TrialTable, mask: np.ndarray) -> np.ndarray:
    """Rows of ``mask``, worst value first: drawn in this order, the best points end up on top."""
    rows = np.flatnonzero(mask)
    return rows[np.argsort(-table.value[rows] if table.minimize else table.value[rows], kind="stable")]


def direction_word(table: TrialTable) -> str:
    return "lower is better" if table.minimize else "higher is better"


def param_axis(ax, axis: Axis, which: str = "x") -> None:
    """Scale, limits and ticks of a parameter axis: log where the space is log, the choices for a categorical."""
    set_scale = ax.set_xscale if which == "x" else ax.set_yscale
    set_lim = ax.set_xlim if which == "x" else ax.set_ylim
    set_ticks = ax.set_xticks if which == "x" else ax.set_yticks
    set_label = ax.set_xlabel if which == "x" else ax.set_ylabel
    if axis.categorical:
        k = len(axis.choices)
        set_ticks(range(k), [shorten(str(c), 14) for c in axis.choices],
                  **({"rotation": 30, "ha": "right"} if which == "x" and k > 4 else {}))
        set_lim(-0.5, k - 0.5)
    elif axis.log:
        set_scale("log")
        pad = math.log(axis.high / axis.low) * 0.03
        set_lim(axis.low / math.exp(pad), axis.high * math.exp(pad))
        # Five ticks spread in log space, as the parallel coordinates have; no minor labels.
        ticks = log_ticks(axis)
        set_ticks([v for v, _ in ticks], [text for _, text in ticks])
        (ax.xaxis if which == "x" else ax.yaxis).set_minor_formatter(NullFormatter())
    else:
        pad = (axis.high - axis.low) * 0.03
        set_lim(axis.low - pad, axis.high + pad)
    set_label(axis.label())


def log_ticks(axis: Axis, count: int = 5) -> list[tuple[float, str]]:
    """(value, label) of ``count`` ticks spread evenly over a log parameter's range."""
    values = np.geomspace(axis.low, axis.high, count)
    if axis.type == "int":
        values = np.unique(np.round(values))
    return [(float(v), f"{v:.3g}") for v in values]


def jitter(axis: Axis, values: np.ndarray, seed: int = 0) -> np.ndarray:
    """Categorical positions spread a little, so that points on one choice do not hide each other."""
    if not axis.categorical or not len(values):
        return values
    rng = np.random.default_rng(seed)
    return values + rng.uniform(-0.18, 0.18, size=len(values))


def failed_rug(ax, x: np.ndarray, label: str | None = None, which: str = "bottom") -> None:
    """Failed trials as red crosses along the bottom (or top) edge: shown, but never plotted as values."""
    if not len(x):
        return
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    y = 0.02 if which == "bottom" else 0.98
    ax.scatter(x, np.full(len(x), y), marker="x", s=22 if len(x) < 200 else 8, color=FAILED_COLOUR,
               linewidths=1.0, transform=transform, label=label, clip_on=False, zorder=4)


def label_stride(n: int, most: int = 40) -> int:
    """Label every k-th of n items so that at most ``most`` labels are drawn."""
    return max(1, math.ceil(n / most))


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def marker_size(n: int) -> float:
    """Marker area for n points: large for a few, small for thousands."""
    return float(np.clip(900 / max(n, 1) ** 0.75, 6, 60))
