"""Phases as an API: a batch evaluated chunk by chunk, exactly.

A CPU kernel runs in phases (`codegen/cpu.py`): sums of the batch totals and of the weights,
then sums of the totals' adjoints, then the fused pass that writes the value and derivatives.
Here each phase runs on one chunk of a batch. The first two return `Partials`, which add up
(`+`, `sum`) over chunks to the sums over the whole batch; the fused pass of a chunk given
those sums returns the chunk's exact share of the value and its exact derivatives, whatever
the reduction, weights or totals. `integrations.dask` runs the same three steps on a cluster.
The public entry points are the `Loss` methods `partial_totals`, `partial_adjoints`, `finalize`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from lossdsl import host, ir
from lossdsl.calls import Call, bind, check_cotangent, check_outputs, one_or_tuple, unalias
from lossdsl.codegen.names import entry_name
from lossdsl.errors import SpecShapeError

MODES = ("value", "grad", "hess")
# The kernel module a validated call runs (the API's choice: generic or specialised).
Kernels = Callable[[Call], ModuleType]


@dataclass(frozen=True, eq=False)
class Partials:
    """Sums of one phase over some samples of a batch; `a + b` covers the samples of both.

    `kind` is "totals" (each batch total, per-class totals, and the weight sum) or "adjoints"
    (the totals' adjoints, which depend on the totals of the whole batch). `layout` names what
    the sums were computed for (kernel module, dtype, parameters and, for adjoints, the mode,
    reduction and cotangent): only sums of one layout add, and `finalize` checks it. `count` is
    the number of samples.
    """

    kind: str
    layout: tuple[Any, ...]
    sums: np.ndarray
    count: int

    @property
    def weight_sum(self) -> float:
        """The sum of the samples' weights (their count where nothing is weighted)."""
        if self.kind != "totals":
            raise SpecShapeError("only totals Partials hold the weight sum")
        return float(self.sums[self.layout[-1]])

    def __add__(self, other: Partials | int) -> Partials:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        if not isinstance(other, Partials):
            return NotImplemented
        if (other.kind, other.layout) != (self.kind, self.layout):
            raise SpecShapeError(
                f"cannot add {self.kind} Partials to {other.kind} Partials of another call",
                hint="add sums computed with the same loss, parameters, dtype and options",
            )
        return Partials(self.kind, self.layout, self.sums + other.sums, self.count + other.count)

    __radd__ = __add__

    def __repr__(self) -> str:
        return f"Partials({self.kind}, {self.count} samples, {self.sums.size} sums)"


def partial_totals(
    loss: ir.LossDef,
    kernels: Kernels,
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    weight: Any,
) -> Partials:
    """The totals phase of one chunk: sums of every batch total and of the weights."""
    call = bind(loss, args, kw, None, weight)
    module = kernels(call)
    entry = entry_name(_mode(mode), call.dtag)
    pre = next(p for p in module.PHASES[entry] if p[0] == "_pre")
    weighted = call.sw is not None or loss.weight is not None
    layout = ("totals", module.__name__, call.dtag, _digest(call.params), pre[1] - 1)
    if pre[3] or weighted:
        sums = host.phase_sums(module, mode, "_pre", call, loss)
    else:  # nothing weighted and no totals: the weight sum is the sample count
        sums = np.array([float(call.n)])
    return Partials("totals", layout, sums, call.n)


def partial_adjoints(
    loss: ir.LossDef,
    kernels: Kernels,
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    totals: Partials,
    reduction: str | None,
    weight: Any,
    cotangent: Any,
) -> Partials:
    """The adjoints phase of one chunk, given the totals of the whole batch (no sums where
    `mode` needs no adjoints)."""
    call = _bind(loss, args, kw, reduction, weight, cotangent)
    module = kernels(call)
    entry = entry_name(_mode(mode), call.dtag)
    _check_totals(module, entry, call, totals)
    layout = ("adjoints", totals.layout, mode, call.mode, call.ct is not None)
    if not any(p[0] == "_adj" for p in module.PHASES[entry]):
        return Partials("adjoints", layout, np.zeros(0), call.n)
    sums = host.phase_sums(module, mode, "_adj", call, loss, totals.sums[None, :])
    return Partials("adjoints", layout, sums, call.n)


def finalize(
    loss: ir.LossDef,
    kernels: Kernels,
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    totals: Partials,
    adjoints: Partials | None,
    reduction: str | None,
    weight: Any,
    cotangent: Any,
    out: Any,
) -> tuple[Any, Any, Any]:
    """The fused pass of one chunk given the sums of the whole batch: (value share or
    per-sample outputs, gradients, Hessian diagonals)."""
    call = _bind(loss, args, kw, reduction, weight, cotangent)
    module = kernels(call)
    entry = entry_name(_mode(mode), call.dtag)
    _check_totals(module, entry, call, totals)
    p1 = None
    if any(p[0] == "_adj" for p in module.PHASES[entry]):
        expected = ("adjoints", totals.layout, mode, call.mode, call.ct is not None)
        if adjoints is None or adjoints.layout != expected:
            raise SpecShapeError(
                f"loss '{loss.name}' has batch totals: its {mode} pass needs their adjoints "
                "over the whole batch, for the same totals, reduction and cotangent",
                hint="add up partial_adjoints(..., totals=totals) over every chunk first",
            )
        p1 = adjoints.sums[None, :]
    wrt = loss.wrt
    given = check_outputs(call, wrt, out) if out is not None and mode != "value" else None
    if given:
        call = unalias(call, given)
    fresh = [np.empty(call.shape_of(x), call.dtype) for x in wrt]
    grads = (given or fresh) if mode != "value" else []
    hess = [np.empty(call.shape_of(x), call.dtype) for x in wrt] if mode == "hess" else []
    value = host.run(module, mode, call, grads, hess, loss, (totals.sums[None, :], p1))
    return value, one_or_tuple(grads), one_or_tuple(hess)


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise SpecShapeError(f"unknown mode '{mode}'", hint=f"modes: {', '.join(MODES)}")
    return mode


def _bind(
    loss: ir.LossDef,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    reduction: str | None,
    weight: Any,
    cotangent: Any,
) -> Call:
    call = bind(loss, args, kw, reduction, weight)
    call.ct = check_cotangent(loss, call, cotangent)
    return call


def _check_totals(module: ModuleType, entry: str, call: Call, totals: Partials) -> None:
    if not isinstance(totals, Partials) or totals.kind != "totals":
        raise SpecShapeError(
            "totals= takes the Partials of partial_totals, added over the whole batch"
        )
    layout = ("totals", module.__name__, call.dtag, _digest(call.params))
    if totals.layout[:-1] != layout:
        raise SpecShapeError(
            "these totals were computed for other parameters or another dtype",
            hint="call partial_totals with the same parameters and input dtypes",
        )
    pre = next(p for p in module.PHASES[entry] if p[0] == "_pre")
    # Every mode's entry sums the same totals (those of the value), in table order.
    assert totals.sums.size == pre[1] + pre[2] * call.axis_len, "totals of another layout"


def _digest(params: list[Any]) -> str:
    """The parameter values, as bytes: totals depend on them."""
    h = hashlib.sha256()
    for p in params:
        h.update(np.asarray(p).tobytes())
    return h.hexdigest()[:16]
