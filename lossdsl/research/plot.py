"""Plots of losses and their derivatives against the variable their task is read by.

`plot_losses` draws the value, the gradient and optionally the Hessian diagonal of one or more
losses along their shared view (`slices.slice_of`: residual, margin, logit, probability, true-class
logit), one panel each, one line per loss, computed by the losses' own kernels. It returns a
matplotlib `Figure` built without pyplot (no global state, no display needed); `save_figure`
writes PNG, SVG or PDF. matplotlib is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import lossdsl
from lossdsl.research.slices import Slice, slice_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
_POINTS = 1201


def plot_losses(
    losses: Sequence[lossdsl.Loss | str],
    params: dict[str, float] | None = None,
    hessian: bool = False,
    x_range: tuple[float, float] | None = None,
) -> Figure:
    """One figure: value, gradient (and Hessian diagonal) of each loss along the shared view.

    Args:
        losses: `Loss` objects or registered names.
        params: parameter values; each loss takes those it declares.
        hessian: add a third panel with the second derivative.
        x_range: the range of the variable (default: the view's natural range).

    Raises:
        LossDSLError: no loss given, a loss without a one-dimensional view, or losses whose
            views differ (a residual and a probability cannot share an axis).
    """
    from matplotlib.figure import Figure

    resolved = [lossdsl.get(x) if isinstance(x, str) else x for x in losses]
    views = _shared_views(resolved, params or {})
    low, high = x_range or (views[0].low, views[0].high)
    x = np.linspace(low, high, _POINTS)
    titles = ["loss", "gradient", "Hessian diagonal"][: 3 if hessian else 2]
    fig = Figure(figsize=(4.2 * len(titles), 3.6), layout="constrained")
    axes = fig.subplots(1, len(titles), squeeze=False)[0]
    for view in views:
        curves = view.evaluate(x)
        label = view.loss.name + "".join(f", {k}={v:g}" for k, v in view.params)
        for ax, y in zip(axes, curves, strict=False):
            ax.plot(x, y, label=label)
    wrt = next(i.name for i in resolved[0].input_info if i.differentiated)
    ylabels = ["loss", f"d loss / d {wrt}", f"d² loss / d {wrt}²"]
    for ax, title, ylabel in zip(axes, titles, ylabels, strict=False):
        ax.set_title(title)
        ax.set_xlabel(views[0].label)
        ax.set_ylabel(ylabel)
        ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return fig


def _shared_views(losses: list[lossdsl.Loss], params: dict[str, float]) -> list[Slice]:
    if not losses:
        raise lossdsl.LossDSLError("nothing to plot", hint="name one or more losses")
    views = [slice_of(x, {k: v for k, v in params.items() if k in _names(x)}) for x in losses]
    if len({v.kind for v in views}) > 1:
        listing = ", ".join(f"{v.loss.name}: {v.kind}" for v in views)
        raise lossdsl.LossDSLError(
            f"these losses vary different things ({listing}) and cannot share an axis",
            hint="plot losses of one task together",
        )
    return views


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure; the format comes from the extension (png, svg, pdf).

    Raises:
        LossDSLError: another extension.
    """
    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise lossdsl.LossDSLError(
            f"cannot write '{out}': unknown image format '{fmt}'",
            hint="use a .png, .svg or .pdf file name",
        )
    fig.savefig(out, format=fmt, dpi=150)
    return out


def _names(loss: lossdsl.Loss) -> set[str]:
    return {p.name for p in loss.params}
