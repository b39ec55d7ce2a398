"""The gradient-and-Hessian-only entry point (`Loss.grad_hess`, issue 12).

Its kernels compute no per-sample value (their own entry point, `grad_hess_<dtype>`, with only
the derivative terms in the common subexpressions). For every built-in with a Hessian: the
same numbers as the full kernel (`value_grad_hess`) in float64 (and in float32 for one spec of
each kind of kernel), with sample weights (one of them zero, on a row holding a NaN), for every
reduction and the (n, K) layouts; and in
float64 against torch autograd (the gradient) and central differences of that autograd gradient
(the Hessian diagonal), which share nothing with the compiler.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RTOL32, assert_close, draw_inputs
from oracles import ORACLES, Oracle
from test_builtin_specs import SPECS

import lossdsl
from lossdsl.errors import DerivationError, SpecShapeError

BATCH, CLASSES = 7, 4
# float32 kernels (each a compile of its own) for one spec of each shape of kernel: elementwise,
# with a parameter, row sums and gathers (n, K), one-hot targets, batch totals, several inputs.
FLOAT32 = {
    "bce_with_logits", "tweedie_nll", "sparse_cross_entropy", "cross_entropy", "multi_margin",
    "dice", "triplet_margin",
}  # fmt: skip


def _as_tuple(g: Any) -> tuple[np.ndarray, ...]:
    return g if isinstance(g, tuple) else (g,)


def _has_hessian(loss: lossdsl.Loss, args: tuple[Any, ...]) -> bool:
    """Whether the loss has a Hessian entry; where it has none, grad_hess refuses alike."""
    try:
        loss.hessian_diag(*args)
    except DerivationError as exc:
        reason = exc.message
    else:
        return True
    with pytest.raises(DerivationError, match=re.escape(reason)):
        loss.grad_hess(*args)
    return False


@pytest.mark.parametrize("name", SPECS)
def test_grad_hess_equals_the_full_kernel(name: str) -> None:
    loss = lossdsl.get(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    drawn = draw_inputs(loss.definition, rng, batch=BATCH, classes=CLASSES)
    if not _has_hessian(loss, tuple(drawn.values())):
        return
    weight = rng.uniform(0.5, 2.0, BATCH)
    weight[2] = 0.0
    # A zero weight removes the sample, its NaN included: both entries give it zeros.
    drawn[loss.wrt[0]][2] = np.nan
    dtypes = [(np.float64, 1e-12)] + ([(np.float32, RTOL32)] if name in FLOAT32 else [])
    for dtype, rtol in dtypes:
        args = [a.astype(dtype) if a.dtype.kind == "f" else a for a in drawn.values()]
        w = weight.astype(dtype)
        for reduction in ("sum", "mean", "none"):
            g, h = loss.grad_hess(*args, sample_weight=w, reduction=reduction)
            _, g_full, h_full = loss.value_grad_hess(*args, sample_weight=w, reduction=reduction)
            for ours, full in zip(
                _as_tuple(g) + _as_tuple(h), _as_tuple(g_full) + _as_tuple(h_full), strict=True
            ):
                assert ours.dtype == dtype
                assert ours.shape == full.shape
                assert not np.isnan(ours).any()
                scale = max(1.0, float(np.abs(full).max()))
                np.testing.assert_allclose(ours, full, rtol=rtol, atol=rtol * scale)


def _torch_grads(oracle: Oracle, loss: lossdsl.Loss, inputs: list[np.ndarray]) -> Any:
    """x -> the autograd gradients of the reference's reduced value, per `wrt` input."""
    torch = pytest.importorskip("torch")
    reduction = "sum" if "sum" in oracle.reductions else oracle.reductions[0]

    def grads(values: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        tensors = [
            torch.tensor(a, dtype=torch.float64, requires_grad=name in loss.wrt)
            if a.dtype.kind == "f"
            else torch.tensor(a, dtype=torch.int64)
            for name, a in zip(loss.inputs, values, strict=True)
        ]
        value = oracle.reference(*tensors, reduction=reduction)
        wrt = [t for name, t in zip(loss.inputs, tensors, strict=True) if name in loss.wrt]
        out = torch.autograd.grad(value, wrt, allow_unused=True)
        return tuple(
            np.zeros(w.shape) if g is None else g.numpy() for g, w in zip(out, wrt, strict=True)
        )

    return grads, reduction


@pytest.mark.torch
@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.spec)
def test_grad_hess_matches_torch_autograd(oracle: Oracle) -> None:
    loss = lossdsl.get(oracle.spec)
    rng = np.random.default_rng(zlib.crc32(oracle.spec.encode()))
    inputs = list(oracle.cases(rng)["typical"])
    if not _has_hessian(loss, tuple(inputs)):
        return
    grads, reduction = _torch_grads(oracle, loss, inputs)
    g, h = loss.grad_hess(*inputs, reduction=reduction)
    for k, wrt in enumerate(loss.wrt):
        at = loss.inputs.index(wrt)
        assert_close(_as_tuple(g)[k], grads(inputs)[k])
        # The Hessian diagonal: central differences of the autograd gradient.
        x = inputs[at]
        fd = np.empty_like(x)
        for i in np.ndindex(x.shape):
            step = 1e-5 * max(1.0, abs(x[i]))
            up, down = x.copy(), x.copy()
            up[i] += step
            down[i] -= step
            g_up = grads([*inputs[:at], up, *inputs[at + 1 :]])[k][i]
            g_down = grads([*inputs[:at], down, *inputs[at + 1 :]])[k][i]
            fd[i] = (g_up - g_down) / (2 * step)
        np.testing.assert_allclose(_as_tuple(h)[k], fd, rtol=1e-5, atol=1e-6)


def test_grad_hess_reports_labels_its_derivatives_never_read() -> None:
    # The gradient of -x[y] is -[c == y]: no gather of its own. The entry still checks the
    # value's gather, so a label outside the axis is an error, not a silent zero gradient.
    loss = lossdsl.compile("loss pick(x[C], y: int):\n    return -x[y] + sum[C](x^2)\n")
    x = np.zeros((3, 4))
    g, h = loss.grad_hess(x, np.array([0, 3, 1]))
    assert_close(g, -np.eye(4)[[0, 3, 1]])
    assert_close(h, np.full((3, 4), 2.0))
    with pytest.raises(SpecShapeError, match=r"1 sample\(s\) have a label outside \[0, 4\)"):
        loss.grad_hess(x, np.array([0, 4, 1]))
    # A zero weight removes the row, its label included (as for every entry point).
    g, _ = loss.grad_hess(x, np.array([0, 4, 1]), sample_weight=np.array([1.0, 0.0, 1.0]))
    assert_close(g[1], np.zeros(4))


def test_grad_hess_entry_has_no_value_terms() -> None:
    # The binary cross-entropy's value is its log-sigmoids; its derivatives need none.
    text = lossdsl.get("bce_with_logits").source(defaults=True)
    for dtype in ("f32", "f64"):
        start = text.index(f"\ndef grad_hess_{dtype}(")
        body = text[start : text.index("\n\n\n", start)]
        assert "_sigmoid_" in body
        assert "_log_sigmoid_" not in body
        assert "_val" not in body
        assert "_out[" not in body


def test_grad_hess_refuses_where_there_is_no_hessian() -> None:
    # Softmax inside a per-class total has no Hessian diagonal: the same error as hessian_diag.
    loss = lossdsl.compile(
        "loss soft_dice(z[C], target[C]):\n"
        "    return mean[C](1 - 2 * total(softmax[C](z) * target) / "
        "(total(softmax[C](z)) + total(target)))\n"
    )
    z, t = np.zeros((5, 3)), np.eye(3)[[0, 1, 2, 0, 1]]
    assert not _has_hessian(loss, (z, t))
    with pytest.raises(DerivationError, match="Hessian diagonal through a per-class total"):
        loss.grad_hess(z, t, sample_weight=np.ones(5))


def test_element_loop_loads_the_sample_inputs_it_reads() -> None:
    """tests/regressions/miscompile-grad-hess-element-reads-sample-input.loss: a per-class
    derivative that compares with a per-sample input nothing else reads; against the closed
    form d/dx0 = 2 x0 or 1, d2/dx0^2 = 2 or 0."""
    path = (
        Path(__file__).parent
        / "regressions"
        / "miscompile-grad-hess-element-reads-sample-input.loss"
    )
    loss = lossdsl.load(path)
    rng = np.random.default_rng(9)
    x0, x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=(6, 4))
    grad, hess = loss.grad_hess(x0, x1, x2)
    above = x2 > x1[:, None]
    assert_close(grad, np.where(above, 2 * x0, 1.0))
    assert_close(hess, np.where(above, 2.0, 0.0))


def test_hessian_through_a_mixing_per_class_total_is_refused() -> None:
    """tests/regressions/miscompile-hessian-mixed-per-class-total.loss: the gradient against
    central differences of the value, and the Hessian diagonal refused (it was wrong)."""
    path = Path(__file__).parent / "regressions" / "miscompile-hessian-mixed-per-class-total.loss"
    loss = lossdsl.load(path)
    x = np.random.default_rng(3).normal(size=(3, 4))
    _, grad = loss.value_and_grad(x, reduction="sum")
    eps, numeric = 1e-6, np.zeros_like(x)
    for k in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[k] = eps
        numeric[k] = (loss(x + step, reduction="sum") - loss(x - step, reduction="sum")) / (2 * eps)
    assert_close(grad, numeric, rtol=1e-6, atol=1e-6)
    with pytest.raises(DerivationError, match="per-class total"):
        loss.value_grad_hess(x, reduction="sum")


def test_hessian_through_a_per_class_total_of_a_per_sample_input_is_refused() -> None:
    """tests/regressions/miscompile-hessian-per-sample-per-class-total.loss: the value and the
    gradient against the closed form (every sample's value is S^2, S = sum_i x_i r_i with
    r_i = sum_c t_ic, so the summed loss is B S^2 and its gradient 2 B S r), and the Hessian
    diagonal refused (it was wrong: it needs 2 B r_k^2, and counted sum_c t_kc^2)."""
    path = (
        Path(__file__).parent / "regressions" / "miscompile-hessian-per-sample-per-class-total.loss"
    )
    loss = lossdsl.load(path)
    rng = np.random.default_rng(5)
    x, t = rng.normal(size=5), rng.uniform(size=(5, 3))
    r = t.sum(axis=1)
    s = float(x @ r)
    value, grad = loss.value_and_grad(x, t, reduction="sum")
    assert_close(value, 5 * s**2)
    assert_close(grad, 2 * 5 * s * r)
    with pytest.raises(DerivationError, match="per-class total of a per-sample input"):
        loss.hessian_diag(x, t, reduction="sum")
    with pytest.raises(DerivationError, match="per-class total of a per-sample input"):
        loss.grad_hess(x, t, reduction="sum")


@pytest.mark.parametrize("p", [None, 1.25])
def test_power_of_a_square_at_a_known_exponent(p: float | None) -> None:
    """tests/regressions/miscompile-specialised-power-of-square.loss: at the default p (the
    kernel with p as a constant, which failed to generate) and at another p (the generic one),
    against the closed form 2 |x|^(2p) and its derivatives."""
    path = Path(__file__).parent / "regressions" / "miscompile-specialised-power-of-square.loss"
    loss = lossdsl.load(path)
    x = np.array([-2.0, -0.3, 0.4, 1.7])
    params = {} if p is None else {"p": p}
    q = 2 * (0.75 if p is None else p)
    value, grad, hess = loss.value_grad_hess(x, reduction="none", **params)
    assert_close(value, 2 * np.abs(x) ** q)
    assert_close(grad, 2 * q * np.abs(x) ** (q - 1) * np.sign(x))
    assert_close(hess, 2 * q * (q - 1) * np.abs(x) ** (q - 2))
