"""The progress chart of a loop, in the style of autoresearch's progress.png, written as a PNG file.

x is the experiment number, y the metric: every experiment is a dot (discarded ones light grey, kept
ones green, with their short descriptions), the running best of the kept ones is a step line, and
experiments with no value (crashes, interrupted or running ones) are marked along the top edge, off the
scale. Renders with matplotlib's Agg canvas directly, never through pyplot: no display is needed, no
global figure state is kept, and a GUI backend chosen elsewhere in the process is left alone.
Must not import: git, torch, matplotlib.pyplot, or nightlab.server modules other than `types`.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from nightlab.server.core.types import Experiment, ExperimentStatus

KEEP_COLOUR = "#2ca02c"
DISCARD_COLOUR = "#c8c8c8"
CRASH_COLOUR = "#d62728"
PENDING_COLOUR = "#9e9e9e"
LABEL_CHARS = 40
KEPT_MARKER_SIZE = 9  # points
LABEL_DEGREES = 30.0  # the slant of the kept experiments' labels
# A discard this many kept-spans worse than the worst kept value is drawn at the edge instead, so one
# diverged run does not squash the frontier into a flat line (autoresearch's chart clips them too).
OUTLIER_SPANS = 3.0


def plot_progress(
    experiments: list[Experiment],
    out: Path,
    metric_name: str = "val_bpb",
    direction: str = "lower",
    title: str | None = None,
    *,
    dpi: int = 120,
) -> Path:
    """Draws the loop's progress to `out` (PNG, replaced atomically; the title also in its metadata)
    and returns `out`."""
    return _save(progress_figure(experiments, metric_name, direction, title, dpi=dpi), Path(out))


def progress_figure(
    experiments: list[Experiment],
    metric_name: str = "val_bpb",
    direction: str = "lower",
    title: str | None = None,
    *,
    dpi: int = 120,
) -> Figure:
    """The chart as a laid-out Agg figure (the legend below the axes, the labels that fit)."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")
    exps = _last_per_number(experiments)
    fig = Figure(figsize=(14, 7), dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: savefig renders with Agg
    ax = fig.add_subplot(1, 1, 1)

    valued = [
        e for e in exps if _value(e) is not None and e.status in (ExperimentStatus.KEEP, ExperimentStatus.DISCARD)
    ]
    kept = [e for e in valued if e.status == ExperimentStatus.KEEP]
    _label_axes(ax, exps, kept, metric_name, direction, title)

    if not exps:
        _centre_note(ax, "no experiments yet", fontsize=16)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        return fig

    numbers = [e.number for e in exps]
    ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    limits = _y_limits(valued, kept, direction)
    _set_y_range(ax, limits, metric_name)

    legend = _draw_points(ax, exps, limits, direction)
    if kept:
        legend.insert(1, _draw_frontier(ax, kept, max(numbers), direction))
    # Below the axes, in one row: a legend inside them would hide points wherever it went.
    ax.legend(
        handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=len(legend), fontsize=9, frameon=False
    )
    fig.tight_layout()  # before the labels: they are placed in the final layout's pixels
    if kept:
        _label_kept(ax, kept, direction)
    return fig


def _label_axes(
    ax, exps: list[Experiment], kept: list[Experiment], metric_name: str, direction: str, title: str | None
) -> None:
    """The title (counts of experiments, kept and crashes, and the best value), axis labels and grid."""
    best = _best(kept, direction)
    heading = title or "Nightlab progress"
    counts = f"{len(exps)} experiment{'s' * (len(exps) != 1)}, {len(kept)} kept"
    crashes = sum(e.status == ExperimentStatus.CRASH for e in exps)
    if crashes:
        counts += f", {crashes} crash{'es' * (crashes != 1)}"
    best_text = f"best {metric_name} {best:.6f}" if best is not None else f"no {metric_name} yet"
    ax.set_title(f"{heading}: {counts}; {best_text}", fontsize=13)
    ax.set_xlabel("Experiment #")
    ax.set_ylabel(f"{metric_name} ({direction} is better)")
    ax.grid(True, alpha=0.3)


def _centre_note(ax, text: str, fontsize: float) -> None:
    """A grey note in the middle of the axes, for a chart with nothing to draw."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=fontsize, color=PENDING_COLOUR)


def _set_y_range(ax, limits: tuple[float, float] | None, metric_name: str) -> None:
    """The y range from `_y_limits`; with no values at all, a blank 0..1 scale and a note saying so."""
    if limits is None:
        ax.set_ylim(0.0, 1.0)
        ax.set_yticks([])
        _centre_note(ax, f"no experiment has a {metric_name} yet", fontsize=14)
    else:
        ax.set_ylim(*limits)


def _value(exp: Experiment) -> float | None:
    value = exp.metric
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _last_per_number(experiments: list[Experiment]) -> list[Experiment]:
    # The ledger's rule: the last record of a number wins (a 'running' record, then its outcome).
    latest = {exp.number: exp for exp in experiments}
    return [latest[number] for number in sorted(latest)]


def _known(exp: Experiment) -> float:
    """The value of an experiment already filtered to those that have one."""
    value = _value(exp)
    assert value is not None
    return value


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "lower" else a > b


def _best(kept: list[Experiment], direction: str) -> float | None:
    best: float | None = None
    for exp in kept:
        value = _known(exp)
        if best is None or _better(value, best, direction):
            best = value
    return best


def _y_limits(valued: list[Experiment], kept: list[Experiment], direction: str) -> tuple[float, float] | None:
    values = [_known(e) for e in valued]
    if not values:
        return None
    kept_values = [_known(e) for e in kept] or values
    span = max(kept_values) - min(kept_values)
    scale = span or abs(kept_values[0]) * 0.05 or 1.0
    # The range ends at the worst value within OUTLIER_SPANS of the kept ones (the near misses); what
    # lies beyond is drawn as a mark at the edge, so one diverged run cannot stretch the scale.
    if direction == "lower":  # worse is higher: cap the top, keep every value below
        cap = max(kept_values) + OUTLIER_SPANS * scale
        low, high = min(values), max(v for v in values if v <= cap)
    else:
        cap = min(kept_values) - OUTLIER_SPANS * scale
        low, high = min(v for v in values if v >= cap), max(values)
    margin = (high - low) * 0.08 or scale * 0.5
    # The top margin is wider: crash marks sit on the top edge and must not hide the highest dots.
    return low - margin, high + margin * 1.5


def _draw_points(ax, exps: list[Experiment], limits: tuple[float, float] | None, direction: str) -> list[Line2D]:
    """Dots for every experiment; returns the legend's handles for the kinds present."""
    edge = ax.get_xaxis_transform()  # x in data, y in axes fractions: "along the top edge"
    kinds = _point_kinds(exps, limits, direction)
    styles = _point_styles(direction)
    handles = []
    for kind in ("discard", "keep", "outlier", "crash", "pending"):
        points = kinds[kind]
        if not points:
            continue
        style: dict[str, Any] = dict(styles[kind], linestyle="none")
        on_edge = points[0][2]
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            clip_on=not on_edge,
            **({"transform": edge} if on_edge else {}),
            **style,
        )
        handles.append(Line2D([], [], **style))
    return handles


def _point_kinds(
    exps: list[Experiment], limits: tuple[float, float] | None, direction: str
) -> dict[str, list[tuple[float, float, bool]]]:
    """Each experiment's dot as (x, y, on the top edge), sorted by kind: discard, keep, outlier (a
    discard off the scale), crash, pending (no value). Edge dots have y in axes fractions."""
    kinds: dict[str, list[tuple[float, float, bool]]] = {
        "discard": [],
        "keep": [],
        "outlier": [],
        "crash": [],
        "pending": [],
    }
    for exp in exps:
        value = _value(exp)
        if exp.status == ExperimentStatus.CRASH:
            kinds["crash"].append((exp.number, 1.0, True))
        elif value is None or exp.status not in (ExperimentStatus.KEEP, ExperimentStatus.DISCARD):
            kinds["pending"].append((exp.number, 1.0, True))  # interrupted, running, or no value
        elif limits is not None and not limits[0] <= value <= limits[1]:
            kinds["outlier"].append((exp.number, 0.97 if direction == "lower" else 0.03, True))
        else:
            kinds[str(exp.status)].append((exp.number, value, False))
    return kinds


def _point_styles(direction: str) -> dict[str, dict[str, Any]]:
    """The marker style and legend label of each kind of dot (outliers point the way they are off)."""
    return {
        "discard": dict(marker="o", color=DISCARD_COLOUR, markersize=6, label="Discarded"),
        "keep": dict(
            marker="o",
            color=KEEP_COLOUR,
            markersize=KEPT_MARKER_SIZE,
            markeredgecolor="black",
            markeredgewidth=0.6,
            label="Kept",
            zorder=4,
        ),
        "outlier": dict(
            marker="^" if direction == "lower" else "v",
            color=DISCARD_COLOUR,
            markersize=7,
            label="Discarded, off the scale",
        ),
        "crash": dict(marker="x", color=CRASH_COLOUR, markersize=9, markeredgewidth=2, label="Crash"),
        "pending": dict(
            marker="o",
            color=PENDING_COLOUR,
            markerfacecolor="none",
            markersize=8,
            label="No value (interrupted, running)",
        ),
    }


def _draw_frontier(ax, kept: list[Experiment], last_number: int, direction: str) -> Line2D:
    xs: list[float] = []
    ys: list[float] = []
    best: float | None = None
    for exp in kept:
        value = _known(exp)
        if best is None or _better(value, best, direction):
            best = value
        xs.append(exp.number)
        ys.append(best)
    xs.append(last_number)  # the frontier holds until the latest experiment
    ys.append(best if best is not None else float("nan"))
    style: dict[str, Any] = dict(color=KEEP_COLOUR, linewidth=2, alpha=0.7, label="Running best")
    ax.step(xs, ys, where="post", zorder=3, **style)
    return Line2D([], [], **style)


def _short(text: str) -> str:
    lines = (text or "").strip().splitlines()
    line = " ".join(lines[0].split()) if lines else ""
    return line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1].rstrip() + "\u2026"


def _label_kept(ax, kept: list[Experiment], direction: str) -> None:
    """The kept experiments' short descriptions, slanted, the most telling first (the baseline, the
    best, then by how much each improved); a label that would overlap one already placed or leave the
    axes is tried on the other side of its dot, then left out: fewer labels, never unreadable ones."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    r = KEPT_MARKER_SIZE * ax.figure.dpi / 72 / 2 + 1  # a kept dot's half width in pixels
    dots = [ax.transData.transform((e.number, _known(e))) for e in kept]
    placed = [[(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)] for x, y in dots]  # no label on a dot
    for exp in _by_importance(kept, direction):
        label = _short(exp.description)
        if not label:
            continue
        for side in (1, -1):  # up and to the right of the dot, else up and to the left
            ann = ax.annotate(
                label,
                (exp.number, _known(exp)),
                xytext=(6 * side, 6),
                textcoords="offset points",
                fontsize=7.5,
                rotation=LABEL_DEGREES * side,
                rotation_mode="anchor",
                color="#1a6e1a",
                alpha=0.9,
                ha="left" if side == 1 else "right",
                va="bottom",
            )
            ann.set_in_layout(False)
            corners = _corners(ann, renderer, side)
            inside = all(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in corners)
            if inside and not any(_overlap(corners, other) for other in placed):
                placed.append(corners)
                break
            ann.remove()


def _by_importance(kept: list[Experiment], direction: str) -> list[Experiment]:
    """The baseline (the first kept), the best, then the others by the gain each made, largest first."""
    gains: list[tuple[float, Experiment]] = []
    best: float | None = None
    for exp in kept:
        value = _known(exp)
        gains.append((0.0 if best is None else (best - value) * (1 if direction == "lower" else -1), exp))
        if best is None or _better(value, best, direction):
            best = value
    top = [kept[0], *(e for e in kept if _known(e) == best and e is not kept[0])][:2]
    rest = sorted((g for g in gains if g[1] not in top), key=lambda g: (-g[0], g[1].number))
    return top + [e for _, e in rest]


def _corners(ann, renderer, side: int) -> list[tuple[float, float]]:
    """The four corners, in display pixels, of a label slanted about its anchor (`side` -1: it ends
    at the anchor), with a pixel of room around it."""
    rotation = ann.get_rotation()
    ann.set_rotation(0)
    flat = ann.get_window_extent(renderer)
    ann.set_rotation(rotation)
    ax0, ay0 = (flat.x0, flat.y0) if side == 1 else (flat.x1, flat.y0)
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    left, right = (-1.0, flat.width + 1) if side == 1 else (-flat.width - 1, 1.0)
    return [
        (ax0 + a * cos - b * sin, ay0 + a * sin + b * cos)
        for a, b in ((left, -1.0), (right, -1.0), (right, flat.height + 1), (left, flat.height + 1))
    ]


def _overlap(p: list[tuple[float, float]], q: list[tuple[float, float]]) -> bool:
    """Whether two convex polygons intersect (separating axis test over both polygons' edges)."""
    for poly in (p, q):
        for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1], strict=True):
            nx, ny = y1 - y2, x2 - x1
            a = [nx * x + ny * y for x, y in p]
            b = [nx * x + ny * y for x, y in q]
            if max(a) < min(b) or max(b) < min(a):
                return False
    return True


def _save(fig: Figure, out: Path) -> Path:
    # Written beside the target and renamed over it, so a viewer that reloads the file never sees half.
    out.parent.mkdir(parents=True, exist_ok=True)
    title = fig.axes[0].get_title() if fig.axes else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", metadata={"Title": title})
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: a chart is for others to read too
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
