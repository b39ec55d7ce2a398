"""An independent NumPy interpreter of checked losses: the reference for kernel tests.

It evaluates `ir.LossDef` expressions directly with NumPy (axis reductions along the last
dimension, gathers with take_along_axis, batch totals as sums over the batch weighted by each
sample's frequency weight, keeping the axis; zero-weight samples left out), sharing nothing with the
SymPy lowering, the derivation or the code generator. Gradients are then taken from it by
finite differences, so a wrong symbolic derivative or a mis-printed kernel cannot hide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lossdsl import ir


def reference_value(
    loss: ir.LossDef,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any] | None = None,
    reduction: str | None = None,
    sample_weight: np.ndarray | None = None,
) -> Any:
    """The reduced loss (or per-sample losses for 'none') in float64."""
    # Per-sample values carry a trailing axis of length 1, so they broadcast against the axis.
    values: dict[tuple[str, str], Any] = {
        ("input", i.name): np.asarray(inputs[i.name], np.float64)[..., None]
        if i.axis is None
        else np.asarray(inputs[i.name], np.float64)
        for i in loss.inputs
    }
    given = dict(params or {})
    axis_len = next((np.shape(inputs[i.name])[-1] for i in loss.inputs if i.axis), None)
    for p in loss.params:
        v = np.asarray(given.get(p.name, p.default), np.float64)
        values[("param", p.name)] = v
    if loss.axis is not None:
        values[("axis", loss.axis)] = np.float64(axis_len)
    batch = np.broadcast_shapes(
        *(
            np.shape(inputs[i.name])[:-1] if i.axis else np.shape(inputs[i.name])
            for i in loss.inputs
        )
    )
    values[("batch", "")] = batch
    with np.errstate(all="ignore"):
        # Weights first: every batch total counts sample i w_i times.
        weight = _eval(loss.weight, values) if loss.weight is not None else 1.0
        w = np.broadcast_to(np.asarray(weight, np.float64), (*batch, 1))[..., 0]
        if sample_weight is not None:
            w = w * np.broadcast_to(np.asarray(sample_weight, np.float64), batch)
        values[("weight", "")] = w
        per_sample = np.broadcast_to(_eval(loss.value, values), (*batch, 1))[..., 0]
        mode = reduction or loss.reduction
        # Zero-weight samples are skipped, not multiplied (NaN in an ignored row stays out).
        contrib = np.where(w == 0, 0.0, w * per_sample)
        if mode == "none":
            return contrib
        if mode == "sum":
            return contrib.sum()
        weighted = loss.weight is not None or sample_weight is not None
        return contrib.sum() / (w.sum() if weighted else contrib.size)


def _eval(e: ir.Expr, env: Mapping[tuple[str, str], Any]) -> Any:
    if isinstance(e, ir.Const):
        return np.float64(e.value)
    if isinstance(e, ir.Ref):
        return env[(e.role, e.name)]
    if isinstance(e, ir.Apply):
        return _apply(e.fn, [_eval(a, env) for a in e.args])
    if isinstance(e, ir.AxisOp):
        return _axis(e.fn, _eval(e.arg, env), e.arg.axis is not None)
    if isinstance(e, ir.Gather):
        x = _eval(e.arg, env)
        idx = np.asarray(_eval(e.index, env)).astype(np.int64)
        x, idx = np.broadcast_arrays(x, idx)
        safe = np.clip(idx[..., :1], 0, x.shape[-1] - 1)
        return np.take_along_axis(x, safe, axis=-1)
    if isinstance(e, ir.Total):
        batch = env[("batch", "")]
        x = _eval(e.arg, env)
        x = np.broadcast_to(x, (*batch, np.shape(x)[-1] if np.ndim(x) else 1))
        w = env[("weight", "")][..., None]
        terms = np.where(w == 0, 0.0, w * x).reshape(-1, x.shape[-1])
        return terms.sum(axis=0)  # per position of the axis: shape (C,) or (1,)
    if isinstance(e, ir.Inline):
        inner: dict[tuple[str, str], Any] = {}
        for inp, arg in zip(e.loss.inputs, e.args, strict=True):
            inner[("input", inp.name)] = _eval(arg, env)
        given = dict(e.params)
        for p in e.loss.params:
            inner[("param", p.name)] = (
                _eval(given[p.name], env) if p.name in given else np.float64(p.default)
            )
        if e.loss.axis is not None:
            inner[("axis", e.loss.axis)] = next(v for k, v in env.items() if k[0] == "axis")
        inner[("batch", "")] = env[("batch", "")]
        inner[("weight", "")] = env[("weight", "")]
        return _eval(e.loss.value, inner)
    raise TypeError(type(e))


def _softplus(x: Any) -> Any:
    return np.logaddexp(0.0, x)


def _apply(fn: str, a: list[Any]) -> Any:
    table = {
        "add": lambda: a[0] + a[1],
        "sub": lambda: a[0] - a[1],
        "mul": lambda: a[0] * a[1],
        "div": lambda: a[0] / a[1],
        "pow": lambda: np.power(a[0], a[1]),
        "neg": lambda: -a[0],
        "lt": lambda: a[0] < a[1],
        "le": lambda: a[0] <= a[1],
        "gt": lambda: a[0] > a[1],
        "ge": lambda: a[0] >= a[1],
        "eq": lambda: a[0] == a[1],
        "ne": lambda: a[0] != a[1],
        "and": lambda: np.logical_and(a[0], a[1]),
        "or": lambda: np.logical_or(a[0], a[1]),
        "not": lambda: np.logical_not(a[0]),
        "abs": lambda: np.abs(a[0]),
        "sign": lambda: np.sign(a[0]),
        "sqrt": lambda: np.sqrt(a[0]),
        "square": lambda: a[0] ** 2,
        "exp": lambda: np.exp(a[0]),
        "log": lambda: np.log(a[0]),
        "log1p": lambda: np.log1p(a[0]),
        "expm1": lambda: np.expm1(a[0]),
        "tanh": lambda: np.tanh(a[0]),
        "cosh": lambda: np.cosh(a[0]),
        "sinh": lambda: np.sinh(a[0]),
        "sin": lambda: np.sin(a[0]),
        "cos": lambda: np.cos(a[0]),
        "logcosh": lambda: np.logaddexp(a[0], -a[0]) - np.log(2.0),
        "sigmoid": lambda: 0.5 * (1.0 + np.tanh(0.5 * a[0])),
        "softplus": lambda: _softplus(a[0]),
        "log_sigmoid": lambda: -_softplus(-a[0]),
        "relu": lambda: np.maximum(a[0], 0.0),
        "xlogy": lambda: np.where(a[0] == 0, 0.0, a[0] * np.log(np.where(a[0] == 0, 1.0, a[1]))),
        "min": lambda: np.minimum(a[0], a[1]),
        "max": lambda: np.maximum(a[0], a[1]),
        "clip": lambda: np.minimum(np.maximum(a[0], a[1]), a[2]),
        "where": lambda: np.where(a[0], a[1], a[2]),
        "stop_gradient": lambda: a[0],
        "binary_xent": lambda: (
            -(
                a[1] * np.maximum(np.log(a[0]), -100.0)
                + (1 - a[1]) * np.maximum(np.log1p(-a[0]), -100.0)
            )
        ),
    }
    if fn not in table:
        raise NotImplementedError(f"reference interpreter lacks '{fn}'")
    return table[fn]()


def _axis(fn: str, x: Any, along: bool) -> Any:
    if not along:
        raise NotImplementedError("axis function of a per-sample value")
    if fn == "sum":
        return x.sum(-1, keepdims=True)
    if fn == "mean":
        return x.mean(-1, keepdims=True)
    if fn == "max":
        return x.max(-1, keepdims=True)
    if fn == "min":
        return x.min(-1, keepdims=True)
    if fn == "norm":
        return np.sqrt((x * x).sum(-1, keepdims=True))
    m = x.max(-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(-1, keepdims=True))
    if fn == "logsumexp":
        return lse
    if fn == "log_softmax":
        return x - lse
    if fn == "softmax":
        return np.exp(x - lse)
    raise NotImplementedError(fn)
