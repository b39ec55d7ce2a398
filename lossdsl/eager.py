"""The NumPy runner: a validated `Call` through the array module's functions, no compiler.

The same phases as the fused CPU kernels (`host.run`), vectorised over blocks of samples: batch
totals and the weight sum, the totals' adjoints, then value and derivatives; same weights,
masks, scale and cotangent, so results agree with the kernels within float rounding (the
differential tester checks both against torch). It serves calls while the kernels compile
(`lossdsl/background.py`). Blocks bound the temporaries: NumPy allocates a few arrays the size
of a block, never the size of the batch. Sums of blocks are taken in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from lossdsl import ir
from lossdsl.calls import Call, hessian_supported
from lossdsl.errors import SpecShapeError

# Elements per block: large enough that NumPy's per-call overhead is small, small enough that a
# block's temporaries stay in cache.
BLOCK_ELEMENTS = 65_536


def run(
    module: ModuleType,
    mode: str,
    call: Call,
    grads: list[np.ndarray],
    hess: list[np.ndarray],
    loss: ir.LossDef,
) -> Any:
    """Evaluate a validated call with the array module `module`; returns the value.

    `grads` and `hess` (shaped like the `wrt` inputs) receive the derivatives `mode` asks for.

    Raises:
        SpecShapeError: labels outside the class axis (with a non-zero weight).
    """
    dtype = call.dtype
    result = np.empty(call.batch, dtype) if call.mode == 2 else None
    if call.n == 0:
        for g in grads + hess:
            g.fill(0)
        return result if result is not None else dtype.type(np.nan if call.mode == 0 else 0.0)
    if mode == "hess":
        hessian_supported(loss, module)
    with np.errstate(all="ignore"):  # as the kernels: IEEE results, no warnings
        phases = _Phases(module, call, loss)
        total = phases.main(mode, result, grads + hess)
    return result if result is not None else dtype.type(total * phases.scale)


class _Phases:
    """One call's blocks, batch totals and scale, computed on construction."""

    def __init__(self, module: ModuleType, call: Call, loss: ir.LossDef) -> None:
        self.module, self.call, self.loss = module, call, loss
        self.dtype = call.dtype
        width = max(call.axis_len, 1)
        self.rows = max(1, BLOCK_ELEMENTS // width)
        self.params = [
            np.asarray(v).reshape(1, -1) if p.axis else v
            for p, v in zip(loss.params, call.params, strict=True)
        ]
        sums = [np.zeros((), np.float64) for _ in range(module.TOTALS)]
        weight_sum = 0.0
        for args, w in self.blocks():
            weight_sum += float(np.sum(w, dtype=np.float64))
            if module.TOTALS:
                for k, t in enumerate(module.totals(np, *args, w)):
                    sums[k] = sums[k] + np.asarray(t, np.float64)
        self.totals = [s.astype(self.dtype) for s in sums]
        weighted = call.sw is not None or loss.weight is not None
        count = weight_sum if weighted else float(call.n)
        # No weight at all: inf, and the value NaN (0/0), as the kernels give it.
        self.scale = float(np.float64(1.0) / count) if call.mode == 0 else 1.0
        self.scalef = self.dtype.type(self.scale)

    def blocks(self) -> Iterator[tuple[list[Any], np.ndarray]]:
        """Per block: the array module's arguments (inputs 2-D, then parameters) and the
        frequency weights, (rows, 1)."""
        call, module = self.call, self.module
        for lo in range(0, call.n, self.rows):
            hi = min(call.n, lo + self.rows)
            args: list[Any] = [
                a[lo:hi] if a.ndim == 2 else a[lo:hi].reshape(-1, 1) for a in call.arrays
            ]
            args += self.params
            w = np.asarray(module.weight(np, *args), self.dtype)
            if call.sw is not None:
                w = w * call.sw[lo:hi].reshape(-1, 1)
            yield args, w

    def coefficients(self) -> Iterator[tuple[int, int, list[Any], np.ndarray, np.ndarray]]:
        """Blocks with their bounds and reduction coefficients (weight x scale x cotangent)."""
        lo = 0
        for args, w in self.blocks():
            hi = lo + w.shape[0]
            coef = w * self.scalef
            if self.call.ct is not None:
                coef = coef * self.call.ct[lo:hi].reshape(-1, 1)
            yield lo, hi, args, w, coef
            lo = hi

    def adjoints(self, fn: Callable[..., Any]) -> list[np.ndarray]:
        sums: list[np.ndarray] | None = None
        for _, _, args, w, coef in self.coefficients():
            parts = [np.asarray(p, np.float64) for p in fn(np, *args, *self.totals, w, coef)]
            sums = parts if sums is None else [s + p for s, p in zip(sums, parts, strict=True)]
        return [s.astype(self.dtype) for s in sums or []]

    def main(self, mode: str, result: np.ndarray | None, outputs: list[np.ndarray]) -> float:
        """Values (into `result` for reduction 'none') and derivatives; returns the sum of
        the weighted values."""
        module, call = self.module, self.call
        adjoints = self.adjoints(getattr(module, f"adjoints_{mode}")) if outputs else []
        flat = [o.reshape(call.n, -1) for o in outputs]
        total, bad = 0.0, 0
        for lo, hi, args, w, coef in self.coefficients():
            keep = w != 0
            v = np.where(keep, w * module.value(np, *args, *self.totals), 0)
            total += float(np.sum(v, dtype=np.float64))
            if result is not None:
                result.reshape(-1)[lo:hi] = v.reshape(-1)
            if module.GATHERS:
                bad += int(np.count_nonzero(keep & module.badrows(np, *args, *self.totals)))
            if outputs:
                derivs = getattr(module, f"derivs_{mode}")(
                    np, *args, *self.totals, *adjoints, w, coef
                )
                for out, d in zip(flat, derivs, strict=True):
                    # A sample with zero weight gets exact zeros, whatever its inputs.
                    out[lo:hi] = np.where(keep, d, 0)
        if bad:
            raise SpecShapeError(
                f"{bad} sample(s) have a label outside [0, {call.axis_len}) "
                f"for loss '{self.loss.name}'",
                hint="labels index the class axis; mark ignored rows with a zero weight",
            )
        return total
