"""Comparing a lossdsl flavour with the real library function it claims to match.

A `Real` names a built-in spec, the library call it reproduces (a function of jax arrays in
the spec's input order, `reduction=` and the spec's parameters, returning the reduced value),
the inputs to draw and the options and reductions the flavour documents. `check` compares
value and gradient in float64 (gradients of the library function from jax.grad, per-sample
outputs through a vector-Jacobian product), `check_float32` the float32 kernels against it.
Nothing here imports lossdsl internals: only the public `Loss` API is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from conftest import RTOL32, assert_close

import lossdsl

Inputs = tuple[np.ndarray, ...]
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True, eq=False)
class Real:
    """One flavour against its library function (hashed by identity)."""

    spec: str
    reference: Callable[..., Any]
    cases: Callable[[np.random.Generator], dict[str, Inputs]]
    options: tuple[dict[str, Any], ...] = ({},)
    reductions: tuple[str, ...] = REDUCTIONS


def params(table: tuple[Real, ...]) -> list[tuple[Real, int, str]]:
    """(flavour, option index, reduction) for every combination a flavour documents."""
    return [(r, k, red) for r in table for k in range(len(r.options)) for red in r.reductions]


def param_id(value: object) -> str:
    return value.spec if isinstance(value, Real) else str(value)


@contextmanager
def x64() -> Iterator[None]:
    """float64 in jax for the duration only: pytest-xdist shares worker processes."""
    import jax

    with jax.enable_x64(True):
        yield


def reduce_(x: Any, reduction: str) -> Any:
    """lossdsl's reduction applied to per-sample values (jax arrays)."""
    return x.mean() if reduction == "mean" else x.sum() if reduction == "sum" else x


def _reference(
    real: Real, loss: lossdsl.Loss, inputs: Inputs, reduction: str, opts: dict[str, Any], ct: Any
) -> tuple[np.ndarray, list[np.ndarray]]:
    import jax
    import jax.numpy as jnp

    wrt = [k for k, name in enumerate(loss.inputs) if name in loss.wrt]
    with x64():
        args = [jnp.asarray(a) for a in inputs]

        def scalar(*diff: Any) -> tuple[Any, Any]:
            full = list(args)
            for k, d in zip(wrt, diff, strict=True):
                full[k] = d
            out = real.reference(*full, reduction=reduction, **opts)
            return (jnp.sum(out * ct) if reduction == "none" else out), out

        run = jax.value_and_grad(scalar, argnums=tuple(range(len(wrt))), has_aux=True)
        (_, value), grads = run(*[args[k] for k in wrt])
        return np.asarray(value), [np.asarray(g) for g in grads]


def _ours(
    loss: lossdsl.Loss, inputs: Inputs, reduction: str, opts: dict[str, Any], ct: Any
) -> tuple[np.ndarray, list[np.ndarray]]:
    kw = dict(opts, reduction=reduction)
    if reduction == "none":
        kw["cotangent"] = ct
    value, grads = loss.value_and_grad(*inputs, **kw)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return np.asarray(value), [np.asarray(g) for g in grads]


def cotangent(inputs: Inputs) -> np.ndarray:
    n = inputs[0].shape[0]
    return np.linspace(0.5, 2.0, n)


def check(real: Real, option: int, reduction: str, seed: int = 0) -> None:
    """Value and gradient of every case in float64 against the library: 1e-10 relative."""
    loss = lossdsl.get(real.spec)
    opts = real.options[option]
    for name, inputs in real.cases(np.random.default_rng(seed)).items():
        ct = cotangent(inputs)
        ref_value, ref_grads = _reference(real, loss, inputs, reduction, opts, ct)
        value, grads = _ours(loss, inputs, reduction, opts, ct)
        assert value.shape == ref_value.shape, name
        assert_close(value, ref_value)
        for g, r in zip(grads, ref_grads, strict=True):
            assert_close(g, r)


def check_float32(real: Real, seed: int = 0) -> None:
    """float32 kernels against the float64 library value and gradient (mean, typical case)."""
    loss = lossdsl.get(real.spec)
    opts = real.options[0]
    inputs = real.cases(np.random.default_rng(seed))["typical"]
    ref_value, ref_grads = _reference(real, loss, inputs, "mean", opts, None)
    low = tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in inputs)
    value, grads = _ours(loss, low, "mean", opts, None)
    assert value.dtype == np.float32
    scale = max(1.0, float(np.abs(ref_value)))
    assert_close(value, ref_value, rtol=RTOL32, atol=RTOL32 * scale)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == np.float32
        assert_close(g, r, rtol=RTOL32, atol=RTOL32 * max(1.0, float(np.abs(r).max())))
