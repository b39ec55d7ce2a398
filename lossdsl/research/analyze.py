"""Properties of a loss, read off its derived gradient and Hessian and checked numerically.

`analyze` evaluates the loss's own value/gradient/Hessian kernels along its one-dimensional
view (`slices.slice_of`: residual, margin, logit, probability, true-class logit) on a dense
grid plus geometric grids out to the edges of the declared domain, and reports: convexity in
the prediction (a non-decreasing derivative and a non-negative second derivative), whether the
gradient is bounded (the influence of one sample) and its bound, the Lipschitz constant of the
gradient, jumps of the gradient, where the Hessian vanishes (Newton steps of a GBDT stall
there), and the optimal constant prediction on a skewed sample. `analysis_table` lines several
analyses up side by side. Numbers are only as good as the grid: this is a bench, not a proof.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import lossdsl
from lossdsl.research.optimum import optimal_constant
from lossdsl.research.slices import Slice, is_decomposable, slice_of

_GRID = 4001  # dense grid over the view's natural range (contains x = 0 where it is in range)
_WIDE = 400  # geometric points on each side out to the domain's edges
_TAIL = 40  # the outermost geometric points: growth there means "unbounded"


@dataclass(frozen=True)
class Analysis:
    """What `analyze` found; `None` bounds mean unbounded (or not Lipschitz)."""

    loss: str
    params: tuple[tuple[str, float], ...]
    variable: str
    activation: str
    model_output: str
    inputs: str
    convex: bool
    gradient_bound: float | None
    gradient_lipschitz: float | None
    gradient_jumps: tuple[float, ...]
    zero_hessian: tuple[tuple[float, float], ...]
    view: tuple[float, float]
    optimum: str


def analyze(loss: lossdsl.Loss | str, params: dict[str, float] | None = None) -> Analysis:
    """Analyse a loss (a `Loss` or a registered name) at the given parameter values.

    Raises:
        LossDSLError: the loss has no one-dimensional view, or depends on batch totals.
    """
    loss = lossdsl.get(loss) if isinstance(loss, str) else loss
    view = slice_of(loss, params)
    if not is_decomposable(view):
        raise lossdsl.LossDSLError(
            f"loss '{loss.name}' couples samples through batch totals; its per-sample "
            "properties are not defined",
            hint="analyze takes losses whose value is a sum or mean of per-sample terms",
        )
    x = np.unique(np.concatenate([np.linspace(view.low, view.high, _GRID), _wide(view)]))
    _, g, h = view.evaluate(x)
    dense = (x >= view.low) & (x <= view.high)
    jumps = _jumps(view, x[dense], g[dense], h[dense])
    scale = float(np.nanmax(np.abs(g[dense]))) + 1.0
    finite = np.isfinite(g) & np.isfinite(h)  # exp-like tails overflow far out
    convex = bool(
        np.min(np.diff(g[finite])) >= -1e-7 * scale
        and np.min(h[finite]) >= -1e-8 * (float(np.nanmax(np.abs(h[dense]))) + 1.0)
    )
    bound = _sup(x, g, view)
    smooth = _sup(x, h, view) if not jumps else None
    info = ", ".join(f"{i.name}: {i.encoding}" for i in loss.input_info)
    return Analysis(
        loss=loss.name,
        params=view.params,
        variable=view.label,
        activation=loss.activation,
        model_output=_model_output(loss),
        inputs=info,
        convex=convex,
        gradient_bound=bound,
        gradient_lipschitz=smooth,
        gradient_jumps=jumps,
        zero_hessian=_zero_runs(x[dense], h[dense]),
        view=(view.low, view.high),
        optimum=optimal_constant(loss, view),
    )


def _model_output(loss: lossdsl.Loss) -> str:
    first = next(i for i in loss.input_info if i.differentiated)
    if first.encoding == "logits":
        link = "softmax" if first.axis is not None else "the sigmoid"
        return f"logits; the loss applies {link}"
    return {
        "probability": f"probabilities ({loss.activation} last layer)",
        "log_probability": "log-probabilities (log_softmax last layer)",
        "nonnegative": "non-negative values",
    }.get(first.encoding, "real values")


def _wide(view: Slice) -> np.ndarray:
    center = 0.5 * (view.low + view.high)
    below = center - np.geomspace(1e-3, center - view.lowest, _WIDE)
    above = center + np.geomspace(1e-3, view.highest - center, _WIDE)
    return np.concatenate([below, above])


def _sup(x: np.ndarray, values: np.ndarray, view: Slice) -> float | None:
    """sup |values| if it stops growing towards the domain's edges, else None."""
    a = np.abs(values)
    if not np.all(np.isfinite(a)):
        return None
    center = 0.5 * (view.low + view.high)
    distance = np.abs(x - center)
    edge = np.sort(distance)[-2 * _TAIL]
    inner, outer = a[distance < edge], a[distance >= edge]
    top = float(np.max(inner))
    return float(max(top, np.max(outer))) if np.max(outer) <= 1.01 * top + 1e-9 else None


def _jumps(view: Slice, x: np.ndarray, g: np.ndarray, h: np.ndarray) -> tuple[float, ...]:
    """Points where the derivative jumps: suspicious grid steps bisected down to 1e-12."""
    step = np.diff(x)
    slope = np.maximum(np.abs(h[:-1]), np.abs(h[1:]))
    scale = float(np.nanmax(np.abs(g))) + 1.0
    jump = np.abs(np.diff(g)) > 10 * step * np.nan_to_num(slope, posinf=0) + 1e-6 * scale
    lo, hi = x[:-1][jump], x[1:][jump]
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        g_lo, g_mid, g_hi = (view.evaluate(v)[1] for v in (lo, mid, hi))
        left = np.abs(g_mid - g_lo) >= np.abs(g_hi - g_mid)
        lo, hi = np.where(left, lo, mid), np.where(left, mid, hi)
    gap = np.abs(view.evaluate(hi)[1] - view.evaluate(lo)[1])
    found = {round(float(v), 6) + 0.0 for v, d in zip(lo, gap, strict=True) if d > 1e-6 * scale}
    return tuple(sorted(found))


def _zero_runs(x: np.ndarray, h: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Intervals (of three grid points or more) where the second derivative is exactly zero."""
    zero = np.abs(h) <= 1e-12
    runs: list[tuple[float, float]] = []
    start = None
    for i, z in enumerate(np.append(zero, False)):
        if z and start is None:
            start = i
        elif not z and start is not None:
            if i - start >= 3:
                runs.append((float(x[start]), float(x[i - 1])))
            start = None
    return tuple(runs)


# -- presentation -----------------------------------------------------------------------------


def describe_zero(a: Analysis) -> str:
    if not a.zero_hessian:
        return "none"
    low, high = a.view
    parts = []
    for s, e in a.zero_hessian:
        if s <= low and e >= high:
            return "everywhere"
        if s <= low:
            parts.append(f"x ≤ {_num(e)}")
        elif e >= high:
            parts.append(f"x ≥ {_num(s)}")
        else:
            parts.append(f"{_num(s)} ≤ x ≤ {_num(e)}")
    return ", ".join(parts)


def rows(a: Analysis) -> dict[str, str]:
    """The table rows of one analysis, as text."""
    bound, smooth = a.gradient_bound, a.gradient_lipschitz
    jumps = ", ".join(_num(j) for j in a.gradient_jumps)
    return {
        "varies": a.variable,
        "model's last layer": a.activation,
        "model outputs": a.model_output,
        "inputs": a.inputs,
        "convex": "yes" if a.convex else "no",
        "gradient bounded (= Lipschitz constant)": "no"
        if bound is None
        else f"yes, ≤ {_num(bound)}",
        "gradient Lipschitz (smoothness)": "no" if smooth is None else _num(smooth),
        "gradient continuous": f"jumps at x = {jumps}" if jumps else "yes",
        "Hessian zero (GBDT)": describe_zero(a),
        "best constant": a.optimum,
    }


def analysis_table(analyses: Sequence[Analysis]) -> str:
    """A Markdown table: one column per loss, one row per property."""
    names = [a.loss + _param_text(a) for a in analyses]
    table = [rows(a) for a in analyses]
    lines = ["| property | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in table[0] if table else ():
        lines.append(f"| {key} | " + " | ".join(t[key] for t in table) + " |")
    return "\n".join(lines)


def as_dict(a: Analysis) -> dict[str, object]:
    """The analysis as JSON-ready data (`None` for unbounded)."""
    data = dataclasses.asdict(a)
    data["params"] = dict(a.params)
    return data


def _param_text(a: Analysis) -> str:
    return f" ({', '.join(f'{k}={_num(v)}' for k, v in a.params)})" if a.params else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "∞"
    return f"{v:.4g}"
