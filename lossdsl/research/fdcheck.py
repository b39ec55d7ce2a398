"""Finite-difference check of a loss's gradient and Hessian diagonal (`lossdsl run --check`).

Central differences of the reduced value (for the gradient) and of the kernel's gradient (for
the Hessian diagonal) in float64, at up to 32 randomly chosen elements of each differentiated
input, with steps scaled to the element. Kinks (where, abs, max) can fail a check when an
element sits within a step of one; the report names the worst element so it can be looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lossdsl

_ELEMENTS = 32
_RTOL, _ATOL = 1e-4, 1e-6


@dataclass
class Report:
    """Worst relative errors per (differentiated input, "gradient" | "hessian")."""

    errors: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(e <= 1.0 for e in self.errors.values())

    def text(self) -> str:
        lines = ["  finite differences (float64, error / tolerance; <= 1 passes):"]
        for (name, what), err in self.errors.items():
            verdict = "ok" if err <= 1.0 else "MISMATCH"
            lines.append(f"    {what:<8} d/d{name}: {err:.3g}  {verdict}")
        return "\n".join(lines)


def finite_difference_check(
    loss: lossdsl.Loss, inputs: list[np.ndarray], params: dict[str, float] | None = None
) -> Report:
    """Compare the kernels' gradient and Hessian diagonal with central differences."""
    kw: dict[str, Any] = dict(params or {})
    args = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]
    names = list(loss.inputs)
    grads, hess = loss.value_grad_hess(*args, **kw)[1:]
    grads = grads if isinstance(grads, tuple) else (grads,)
    hess = hess if isinstance(hess, tuple) else (hess,)
    rng = np.random.default_rng(0)
    report = Report()
    for k, name in enumerate(loss.wrt):
        pos = names.index(name)
        x = args[pos]
        picks = rng.choice(x.size, size=min(_ELEMENTS, x.size), replace=False)
        worst_g = worst_h = 0.0
        g_scale = float(np.max(np.abs(grads[k]))) if grads[k].size else 0.0
        h_scale = float(np.max(np.abs(hess[k]))) if hess[k].size else 0.0
        for flat in picks:
            idx = np.unravel_index(flat, x.shape)
            step = 1e-6 * max(1.0, abs(float(x[idx])))
            f, g = [], []
            for sign in (1.0, -1.0):
                moved = [a.copy() if i == pos else a for i, a in enumerate(args)]
                moved[pos][idx] += sign * step
                value, gm = loss.value_and_grad(*moved, **kw)
                f.append(float(value))
                g.append(float((gm[k] if isinstance(gm, tuple) else gm)[idx]))
            fd_g, fd_h = (f[0] - f[1]) / (2 * step), (g[0] - g[1]) / (2 * step)
            worst_g = max(worst_g, _error(float(grads[k][idx]), fd_g, g_scale))
            worst_h = max(worst_h, _error(float(hess[k][idx]), fd_h, h_scale))
        report.errors[name, "gradient"] = worst_g
        report.errors[name, "hessian"] = worst_h
    return report


def _error(exact: float, approx: float, scale: float) -> float:
    """|exact - approx| over a tolerance relative to the element and to the array's scale."""
    tol = _ATOL * scale + _RTOL * max(abs(exact), abs(approx)) + 1e-300
    return abs(exact - approx) / tol
