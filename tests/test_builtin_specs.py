"""Every built-in spec, table-driven (ids = file stems): new specs need no new tests.

References are independent of the compiler: `reference.py` interprets the checked IR with
NumPy, gradients come from central finite differences of that interpreter, Hessian diagonals
from finite differences of the (already checked) gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    ATOL32,
    FD_ATOL,
    FD_RTOL,
    RTOL32,
    assert_close,
    draw_inputs,
    fd_grad,
    fd_hess_diag,
    has_hessian,
)
from reference import reference_value

import lossdsl
from lossdsl.registry import specs_dir

SPECS = sorted(p.stem for p in specs_dir().glob("*.loss"))


def _setup(name: str, rng: np.random.Generator) -> tuple[lossdsl.Loss, dict[str, np.ndarray]]:
    loss = lossdsl.get(name)
    return loss, draw_inputs(loss.definition, rng)


def _as_tuple(g: object) -> tuple[np.ndarray, ...]:
    return g if isinstance(g, tuple) else (g,)  # type: ignore[return-value]


def test_every_spec_file_defines_the_loss_it_is_named_after() -> None:
    for name in SPECS:
        loss = lossdsl.get(name)
        assert loss.name == name
        assert loss.definition.doc, f"{name}: no header comment or docstring"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", SPECS)
def test_value_matches_numpy_interpreter(
    name: str, reduction: str, rng: np.random.Generator
) -> None:
    loss, inputs = _setup(name, rng)
    ours = loss(*inputs.values(), reduction=reduction)
    ref = reference_value(loss.definition, inputs, reduction=reduction)
    assert_close(ours, ref)


@pytest.mark.parametrize("name", SPECS)
def test_gradient_matches_finite_differences(name: str, rng: np.random.Generator) -> None:
    loss, inputs = _setup(name, rng)
    _, grads = loss.value_and_grad(*inputs.values())
    for wrt, g in zip(loss.wrt, _as_tuple(grads), strict=True):

        def f(x: np.ndarray, wrt: str = wrt) -> float:
            return float(reference_value(loss.definition, {**inputs, wrt: x}))

        assert g.shape == inputs[wrt].shape
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, fd_grad(f, inputs[wrt]), rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("name", SPECS)
def test_hessian_diagonal_matches_finite_differences_of_gradient(
    name: str, rng: np.random.Generator
) -> None:
    loss, inputs = _setup(name, rng)
    if not has_hessian(loss, *inputs.values()):
        return
    hess = _as_tuple(loss.hessian_diag(*inputs.values()))
    for k, (wrt, h) in enumerate(zip(loss.wrt, hess, strict=True)):

        def grad(x: np.ndarray, wrt: str = wrt, k: int = k) -> np.ndarray:
            return _as_tuple(loss.grad(*{**inputs, wrt: x}.values()))[k]

        np.testing.assert_allclose(h, fd_hess_diag(grad, inputs[wrt]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", SPECS)
def test_value_grad_hess_agree_with_separate_calls(name: str, rng: np.random.Generator) -> None:
    loss, inputs = _setup(name, rng)
    if not has_hessian(loss, *inputs.values()):
        return
    v, g, h = loss.value_grad_hess(*inputs.values())
    assert_close(v, loss(*inputs.values()))
    for a, b in zip(_as_tuple(g), _as_tuple(loss.grad(*inputs.values())), strict=True):
        assert_close(a, b)
    for a, b in zip(_as_tuple(h), _as_tuple(loss.hessian_diag(*inputs.values())), strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("name", SPECS)
def test_float32_kernels_agree_with_float64(name: str, rng: np.random.Generator) -> None:
    loss, inputs = _setup(name, rng)
    as32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    v64, g64 = loss.value_and_grad(*inputs.values())
    v32, g32 = loss.value_and_grad(*as32.values())
    assert isinstance(v32, np.float32)
    np.testing.assert_allclose(v32, v64, rtol=RTOL32, atol=ATOL32)
    for a, b in zip(_as_tuple(g32), _as_tuple(g64), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=RTOL32 * 10, atol=ATOL32 * 10)
