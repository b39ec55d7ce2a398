"""The array-namespace printer target: its NumPy evaluation against torch autograd of each
built-in's framework formula (per-sample values; gradients of losses without batch totals,
whose per-sample gradient at fixed totals is the whole gradient), the NaN-safe select guards,
and a module that imports no array library at generation time."""

from __future__ import annotations

import zlib
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import sympy as sp
from conftest import assert_close
from oracles import ORACLES, Oracle

import lossdsl
from lossdsl import primitives as P
from lossdsl.codegen.array import ArrayPrinter, generate


def _numpy_eval(
    module: ModuleType, loss: lossdsl.Loss, inputs: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-sample values and per-sample gradients (unit weights) from the printed module."""
    d = loss.definition
    n = inputs[0].shape[0]
    args = [
        a.reshape(n, -1) if i.axis else a.reshape(n, 1)
        for a, i in zip(inputs, d.inputs, strict=False)
    ]
    c = next((a.shape[1] for a, i in zip(args, d.inputs, strict=False) if i.axis), 1)
    params = [np.full((1, c), p.default) if p.axis else np.asarray(p.default) for p in d.params]
    full = (*args, *params)
    w = module.weight(np, *full)
    totals = module.totals(np, *full, np.ones((n, 1)))
    value = module.value(np, *full, *totals)
    grads = [getattr(module, f"grad_{k}")(np, *full, *totals) for k in range(len(d.wrt))]
    return (w * value).reshape(n), [
        (w * g).reshape(inputs[loss.inputs.index(name)].shape)
        for g, name in zip(grads, d.wrt, strict=True)
    ]


@pytest.mark.torch
@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.spec)
def test_numpy_namespace_matches_torch(oracle: Oracle) -> None:
    torch = pytest.importorskip("torch")
    loss = lossdsl.get(oracle.spec)
    inputs = oracle.cases(np.random.default_rng(zlib.crc32(oracle.spec.encode())))["typical"]
    module = loss.to("array").module()
    value, grads = _numpy_eval(module, loss, inputs)
    tensors = [
        torch.tensor(a, dtype=torch.float64, requires_grad=name in loss.wrt)
        if a.dtype.kind == "f"
        else torch.tensor(a)
        for name, a in zip(loss.inputs, inputs, strict=True)
    ]
    ref = oracle.reference(*tensors, reduction="none")
    assert_close(value, ref.detach().numpy())
    if module.TOTALS:
        return  # the gradient through totals is the adapter's job (tests/test_jax_adapter.py)
    wrt = [t for name, t in zip(loss.inputs, tensors, strict=True) if name in loss.wrt]
    ref_grads = torch.autograd.grad(ref.sum(), wrt, allow_unused=True)
    for ours, g in zip(grads, ref_grads, strict=True):
        assert_close(ours, np.zeros_like(ours) if g is None else g.numpy())


def test_singular_arguments_are_guarded_inside_selects() -> None:
    x, y = sp.symbols("x y", real=True)
    text = ArrayPrinter().doprint(P.Where(x > 0, sp.log(x) + 1 / y, sp.sqrt(y)))
    # Both the log's argument and the division's denominator are replaced where x <= 0.
    assert "xp.log(xp.where((v_x > 0.0), v_x, 1.0))" in text
    assert "xp.where((v_x > 0.0), v_y, 1.0)" in text
    assert "xp.sqrt(xp.where(xp.logical_not((v_x > 0.0)), v_y, 1.0))" in text
    # Outside a select nothing changes.
    assert ArrayPrinter().doprint(sp.log(x)) == "xp.log(v_x)"


def test_guards_keep_nan_out_of_second_derivatives() -> None:
    jax = pytest.importorskip("jax")
    x = sp.Symbol("x", real=True)
    text = ArrayPrinter().doprint(P.Where(x > 0, x * sp.log(x), sp.S.Zero))
    f: Any = eval(f"lambda xp, v_x: {text}")  # the printer's own output, a test-only eval
    grad2 = jax.grad(jax.grad(lambda z: f(jax.numpy, z)))
    assert float(grad2(0.0)) == 0.0
    assert float(grad2(2.0)) == pytest.approx(0.5)


def test_source_is_deterministic_and_needs_no_array_library() -> None:
    derived = lossdsl.get("sparse_cross_entropy").derived()
    first, second = generate(derived), generate(derived)
    assert first.text == second.text
    assert "import" not in first.text
    # The framework entry points, then the NumPy path's phases (lossdsl/eager.py).
    assert first.entry_points == (
        "weight", "totals", "value", "grad_0",
        "adjoints_grad", "derivs_grad", "adjoints_hess", "derivs_hess", "badrows",
    )  # fmt: skip
