"""Optimal constant scores: Newton's method on a loss's own totals, for the boosting adapters.

A `Totals` callable gives the summed value, gradient and Hessian of a loss at a constant score
(over NumPy labels, or chunk by chunk over a Dask cluster); the solvers here find the constant
that minimises the value. They see numbers only: no loss, library or array layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Totals = Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]


def newton_steps(totals: Totals, c: np.ndarray, steps: int) -> np.ndarray:
    """Plain Newton steps (XGBoost's intercept: one step from 0)."""
    for _ in range(steps):
        _, g, h = totals(c)
        c = c - g / h
    return c


def least_norm(totals: Totals, c: np.ndarray) -> np.ndarray:
    """The centred minimiser when shifting every score alike changes nothing (softmax)."""
    centred: np.ndarray = c - c.mean()
    v, g, _ = totals(c)
    v2, g2, _ = totals(centred)
    if abs(v2 - v) <= 1e-12 * max(1.0, abs(v)) and np.allclose(g2, g, atol=1e-9 * abs(v)):
        return centred
    return c


def solve_scalar(totals: Totals, c: float) -> float:
    """Newton's method on the summed gradient, kept inside a bracket of its sign change and
    backtracked while the value rises (non-convex losses, overshooting steps)."""
    lo, hi, width = -math.inf, math.inf, 1.0
    v, g, h = _at(totals, c)
    for _ in range(300):
        if g == 0 or not math.isfinite(g):
            return c
        if g < 0:
            lo = c
        else:
            hi = c
        new = c - g / h if h > 0 else math.nan
        if not lo < new < hi:  # no curvature, or Newton left the bracket
            if math.isinf(lo) or math.isinf(hi):
                width *= 2
                new = c + math.copysign(width * max(1.0, abs(c)), -g)
            else:
                new = 0.5 * (lo + hi)
        v2, g2, h2 = _at(totals, new)
        while v2 > v + 1e-13 * abs(v) and abs(new - c) > 1e-14 * max(1.0, abs(c)):
            new = 0.5 * (c + new)
            v2, g2, h2 = _at(totals, new)
        if abs(new - c) <= 1e-14 * max(1.0, abs(c)) or hi - lo <= 1e-13 * max(1.0, abs(c)):
            return new
        c, v, g, h = new, v2, g2, h2
    return c


def _at(totals: Totals, c: float) -> tuple[float, float, float]:
    v, g, h = totals(np.array([c]))
    return v, float(g[0]), float(h[0])


def solve_vector(totals: Totals, c: np.ndarray) -> np.ndarray:
    """Diagonal Newton steps with backtracking on the value (multiclass scores)."""
    v, g, h = totals(c)
    for _ in range(500):
        step = np.where(h > 0, -g / np.where(h > 0, h, 1.0), -g)
        t = 1.0
        while t > 1e-12:
            v2, g2, h2 = totals(c + t * step)
            # Near the optimum the value changes by rounding only: accept a step that does
            # not raise it by more than that.
            if v2 <= v + 1e-13 * abs(v):
                break
            t *= 0.5
        c = c + t * step
        v, g, h = v2, g2, h2
        if np.max(np.abs(t * step)) <= 1e-13 * max(1.0, float(np.max(np.abs(c)))):
            break
    return c
