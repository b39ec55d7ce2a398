"""NaN in an input propagates through clamps as in PyTorch (issue 9).

`max(x, c)`, `min(x, c)`, `clip` and `relu` once returned the constant for a NaN operand
(`hinge(NaN, 1) = 0`). For every built-in whose formula has such a clamp, the first element of
each differentiated input is set to NaN; the per-sample values and gradients are compared with
the framework reference of tests/oracles.py under torch autograd. That sample's value must be
NaN. Its gradient follows torch's op-level conventions (a clamp's gradient at NaN is 0, as
torch.clamp's backward), but torch's own losses compose them differently (some multiply the 0 by
a NaN upstream gradient, some select): its entries must be NaN or 0, never a finite number that
hides the NaN. Every other sample must match torch exactly.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from oracles import BY_SPEC
from test_catalog import _torch_reference

import lossdsl

REGRESSIONS = Path(__file__).resolve().parent / "regressions"

CLAMPED = (
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "multi_margin",
    "margin_ranking",
    "hinge_embedding",
    "cosine_embedding",
    "cosine_similarity",
    "triplet_margin",
    "gaussian_nll",
    "msle",
)


def _with_nan(inputs: tuple[np.ndarray, ...], position: int) -> tuple[np.ndarray, ...]:
    out = [a.copy() for a in inputs]
    flat = out[position].reshape(-1)
    flat[0] = np.nan
    return tuple(out)


@pytest.mark.torch
@pytest.mark.parametrize("name", CLAMPED)
def test_nan_input_propagates_as_in_torch(name: str) -> None:
    oracle = BY_SPEC[name]
    loss = lossdsl.get(name)
    cases = oracle.cases(np.random.default_rng(zlib.crc32(name.encode())))
    inputs = next(iter(cases.values()))
    for k, input_name in enumerate(loss.inputs):
        if input_name not in loss.wrt:
            continue
        bad = _with_nan(inputs, k)
        value, grads = loss.value_and_grad(*bad, reduction="none")
        ref_value, ref_grads = _torch_reference(oracle, loss, bad, "none", {})
        assert np.isnan(value[0]), "the NaN sample's value must be NaN"
        assert_close(value[1:], ref_value[1:])
        grads = grads if isinstance(grads, tuple) else (grads,)
        for ours, ref in zip(grads, ref_grads, strict=True):
            assert_close(ours[1:], ref[1:])
            first = ours[0].reshape(-1)
            assert np.all(np.isnan(first) | (first == 0)), first


def test_clip_with_an_infinite_bound_keeps_nan() -> None:
    """tests/regressions/miscompile-clip-open-low-nan.loss: torch.clamp(NaN) is NaN whatever
    its bounds; the other samples and the NaN sample's zero clamp gradient as torch gives."""
    torch = pytest.importorskip("torch")
    loss = lossdsl.load(REGRESSIONS / "miscompile-clip-open-low-nan.loss")
    x = np.random.default_rng(4).normal(size=(3, 4))
    x[1, 2] = np.nan
    value, grad = loss.value_and_grad(x, reduction="none")
    t = torch.tensor(x, requires_grad=True)
    ref = t.clamp(max=0.75).sum(-1)
    (ref_grad,) = torch.autograd.grad(ref.sum(), t)
    assert_close(value, ref.detach().numpy())  # NaN where torch has NaN
    assert_close(grad, ref_grad.numpy())


@pytest.mark.parametrize("mode", ["sync", "never"])
def test_not_of_a_comparison_is_true_for_nan(mode: str) -> None:
    """tests/regressions/miscompile-not-of-comparison-nan.loss: `not (x > y)` is true where x
    or y is NaN, as `~(x > y)` in NumPy and PyTorch, in the fused kernels and the NumPy path."""
    torch = pytest.importorskip("torch")
    spec = lossdsl.load(REGRESSIONS / "miscompile-not-of-comparison-nan.loss")
    loss = lossdsl.Loss(spec.definition, compile_mode=mode)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 1, 8), rng.uniform(0, 1, 8)
    x[0], y[1], x[2], y[2] = np.nan, np.nan, 0.5, 0.5  # NaN either side, and ties
    value, (gx, gy) = loss.value_and_grad(x, y, reduction="none")
    tx, ty = (torch.tensor(v, requires_grad=True) for v in (x, y))
    one, zero = torch.ones(()), torch.zeros(())
    ref = (
        torch.where(~(tx > ty), tx * ty, 2 * tx)
        + torch.where(~(tx >= 0.5), tx, zero)
        + torch.where(~(ty < tx), ty, one)
        + torch.where(~(ty <= 0.5), 3 * ty, zero)
    )
    rx, ry = torch.autograd.grad(ref.sum(), (tx, ty))
    assert_close(value, ref.detach().numpy())  # NaN where torch has NaN
    assert_close(gx[2:], rx[2:].numpy())  # the NaN samples' gradients are conventions
    assert_close(gy[2:], ry[2:].numpy())
