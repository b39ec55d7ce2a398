"""No NaN or inf where the exact loss is finite (issue 3): extreme logits, probabilities of exactly
0 and 1, zero residuals, zero vectors in norms and cosines, C = 10000; float32 and float64.

Each case gives inputs and an independent NumPy value in float64 (stable closed forms); the
kernels must return a finite value equal to it (float32 within float32 tolerance) and finite
gradients and Hessian diagonals. A few cases also pin the gradient to its closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import ATOL32, RTOL32, assert_close

import lossdsl

BIG = 1e4


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _lse(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - _lse(x)[..., None]


@dataclass(frozen=True, eq=False)
class Case:
    spec: str
    inputs: tuple[np.ndarray, ...]
    expected: Callable[..., Any]  # float64 per-sample values from the float64 inputs
    params: dict[str, Any] = field(default_factory=dict)
    grad: Callable[..., Any] | None = None  # closed-form gradient of the summed loss


_X = np.array([BIG, -BIG, BIG, -BIG, 0.0, 50.0, -50.0])
_T = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.3, 0.7])
_P01 = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
_T01 = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5])
_WIDE_RNG = np.random.default_rng(3)
_WIDE = BIG * _WIDE_RNG.uniform(-1.0, 1.0, size=(3, 10000))
_WIDE_LABELS = np.array([0, 9999, 4321])
_EXTREME_ROWS = np.array([[BIG, -BIG, 0.0, 3.0], [-BIG, -BIG, -BIG, BIG], [-BIG, BIG, BIG, -BIG]])
_ZERO = np.zeros((3, 5))
_VEC = np.random.default_rng(4).normal(size=(3, 5))


def _bce_expected(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        lp, lq = np.maximum(np.log(p), -100.0), np.maximum(np.log1p(-p), -100.0)
    return -(t * lp + (1 - t) * lq)


def _sparse_ce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.take_along_axis(_log_softmax(x), y[:, None], -1)[:, 0]


def _kl_rows(lp: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q == 0, 0.0, q * (np.log(q) - lp)).sum(-1)


def _triplet(a: np.ndarray, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    d = lambda u, v: np.sqrt(((u - v + 1e-6) ** 2).sum(-1))  # noqa: E731
    return np.maximum(d(a, p) - d(a, n) + 1.0, 0.0)


CASES: dict[str, Case] = {
    "bce_with_logits-extreme": Case(
        "bce_with_logits", (_X, _T), lambda x, t: t * _softplus(-x) + (1 - t) * _softplus(x),
        grad=lambda x, t: 1 / (1 + np.exp(-x)) - t,
    ),
    "bce-probabilities_0_and_1": Case(
        "bce", (_P01, _T01), _bce_expected,
        # torch's backward: (p - t) / max(p (1 - p), 1e-12f), finite at p = 0 and 1.
        grad=lambda p, t: (p - t) / np.maximum(p * (1 - p), np.float32(1e-12)),
    ),
    "sigmoid_focal-extreme": Case(
        "sigmoid_focal", (_X, _T),
        lambda x, t: (0.25 * t + 0.75 * (1 - t))
        * (np.exp(-_softplus(-x)) * (1 - t) + np.exp(-_softplus(x)) * t) ** 2
        * (t * _softplus(-x) + (1 - t) * _softplus(x)),
    ),
    "soft_margin-extreme": Case(
        "soft_margin", (_X, np.where(_T > 0.5, 1.0, -1.0)), lambda x, t: _softplus(-t * x)
    ),
    "gan_generator-extreme": Case("gan_generator", (_X,), lambda x: _softplus(-x)),
    "gan_discriminator-extreme": Case(
        "gan_discriminator", (_X, -_X), lambda r, f: _softplus(-r) + _softplus(f)
    ),
    "cross_entropy-extreme": Case(
        "cross_entropy", (_EXTREME_ROWS, np.full((3, 4), 0.25)),
        lambda x, q: -(q * _log_softmax(x)).sum(-1),
    ),
    "cross_entropy-c10000": Case(
        "cross_entropy", (_WIDE, np.full((3, 10000), 1e-4)),
        lambda x, q: -(q * _log_softmax(x)).sum(-1),
    ),
    "sparse_cross_entropy-extreme": Case(
        "sparse_cross_entropy", (_EXTREME_ROWS, np.array([1, 3, 0])), _sparse_ce
    ),
    "sparse_cross_entropy-c10000": Case(
        "sparse_cross_entropy", (_WIDE, _WIDE_LABELS), _sparse_ce
    ),
    "nll-c10000": Case("nll", (_log_softmax(_WIDE), _WIDE_LABELS), _sparse_ce),
    "softmax_focal-extreme": Case(
        "softmax_focal", (_EXTREME_ROWS, np.array([1, 3, 0])),
        lambda x, y: -(1 - np.exp(-_sparse_ce(x, y))) ** 2 * -_sparse_ce(x, y),
    ),
    "poly1-c10000": Case(
        "poly1", (_WIDE, _WIDE_LABELS),
        lambda x, y: _sparse_ce(x, y) + (1 - np.exp(-_sparse_ce(x, y))),
    ),
    "multi_margin-c10000": Case(
        "multi_margin", (_WIDE / BIG, _WIDE_LABELS),
        lambda x, y: (np.maximum(0, 1 - np.take_along_axis(x, y[:, None], -1) + x).sum(-1) - 1)
        / x.shape[-1],
    ),
    "kl_div_batchmean-zero_targets": Case(
        "kl_div_batchmean", (_log_softmax(_EXTREME_ROWS), np.eye(4)[[0, 3, 1]]), _kl_rows
    ),
    "kl_div-zero_targets": Case(
        "kl_div", (np.array([-BIG, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        lambda lp, q: np.where(q == 0, 0.0, q * (np.log(np.where(q == 0, 1, q)) - lp)),
    ),
    "mae-zero_residual": Case("mae", (_T, _T.copy()), lambda p, t: np.abs(p - t)),
    "smooth_l1-beta_0": Case(
        "smooth_l1", (_T, np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.3, 0.0])),
        lambda p, t: np.abs(p - t), {"beta": 0.0},
    ),
    "log_cosh-extreme": Case(
        "log_cosh", (_X, np.zeros(7)), lambda p, t: np.logaddexp(p - t, t - p) - np.log(2.0)
    ),
    "rmse-zero_residuals": Case("rmse", (_T, _T.copy()), lambda p, t: np.zeros_like(p)),
    "mape-zero_target": Case(
        "mape", (np.array([0.0, 1.0, -2.0]), np.zeros(3)),
        lambda p, t: 100 * np.abs(t - p) / 1e-7,
    ),
    "msle-zeros": Case(
        "msle", (np.zeros(3), np.array([0.0, 1.0, 1e-9])),
        lambda p, t: (np.log1p(1e-7) - np.log1p(np.maximum(t, 1e-7))) ** 2,
    ),
    "gaussian_nll-zero_variance": Case(
        "gaussian_nll", (np.array([0.0, 1.0]), np.array([0.0, 0.5]), np.zeros(2)),
        lambda p, t, v: 0.5 * (np.log(1e-6) + (p - t) ** 2 / 1e-6),
    ),
    "poisson_nll-zero_rate": Case(
        "poisson_nll", (np.array([0.0, 0.0]), np.array([0.0, 3.0])),
        lambda p, t: p - t * np.log(p + 1e-8), {"log_input": 0},
    ),
    "cosine_similarity-zero_vectors": Case(
        "cosine_similarity", (_ZERO, np.vstack([_VEC[:2], _ZERO[:1]])),
        lambda p, t: np.zeros(3),
    ),
    "cosine_embedding-zero_vectors": Case(
        "cosine_embedding", (_ZERO, _VEC, np.array([1, -1, 1])),
        lambda a, b, y: np.where(y == 1, 1.0, 0.0),
    ),
    "triplet_margin-coincident": Case(
        "triplet_margin", (_VEC, _VEC.copy(), _VEC.copy()), _triplet
    ),
    "pairwise_distance-zero_distance": Case(
        "pairwise_distance", (_VEC, _VEC.copy()), lambda a, b: np.zeros(3), {"eps": 0.0}
    ),
    "dice-all_zero": Case(
        "dice", (np.zeros(4), np.zeros(4)), lambda p, t: np.zeros(4)
    ),
    "jaccard-all_zero": Case(
        "jaccard", (np.zeros(4), np.zeros(4)), lambda p, t: np.zeros(4)
    ),
    "tversky-all_one": Case(
        "tversky", (np.ones(4), np.ones(4)), lambda p, t: np.zeros(4)
    ),
    "box_iou-identical_and_degenerate": Case(
        "box_iou",
        (np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]),
         np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])),
        lambda a, b: np.array([1 - 1 / (1 + 1e-7), 1.0]),
    ),
}  # fmt: skip


def _as_tuple(g: object) -> tuple[np.ndarray, ...]:
    return g if isinstance(g, tuple) else (g,)  # type: ignore[return-value]


def _grid() -> list[Any]:
    rows = []
    for name in sorted(CASES):
        for dtype in (np.float64, np.float32):
            rows.append(pytest.param(name, dtype, id=f"{name}-{dtype.__name__}"))
    return rows


@pytest.mark.parametrize(("name", "dtype"), _grid())
def test_finite_and_exact_at_extremes(name: str, dtype: type) -> None:
    case = CASES[name]
    loss = lossdsl.get(case.spec)
    inputs = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in case.inputs)
    values, grads, hess = loss.value_grad_hess(*inputs, reduction="none", **case.params)
    exact = tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs)
    expected = case.expected(*exact)
    assert np.all(np.isfinite(values)), values
    for g in _as_tuple(grads) + _as_tuple(hess):
        assert np.all(np.isfinite(g)), g
    if dtype == np.float64:
        assert_close(values, expected)
    else:
        np.testing.assert_allclose(values, expected, rtol=RTOL32, atol=ATOL32)
    if case.grad is not None:
        rtol = 1e-10 if dtype == np.float64 else RTOL32
        np.testing.assert_allclose(_as_tuple(grads)[0], case.grad(*exact), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_naive_user_spec_is_rewritten_to_stable_form(dtype: type) -> None:
    # Written the way the formula reads; the compiler turns log(sigmoid), log(1 - sigmoid),
    # log(1 + exp) and log(softmax) into log_sigmoid, softplus and x - logsumexp.
    source = (
        "loss naive_bce(x, t):\n"
        "    return -(t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))\n"
        "loss naive_softplus(x, t):\n"
        "    return log(1 + exp(-t * x))\n"
        "loss naive_ce(x[C], q[C]):\n"
        "    return -sum[C](q * log(softmax[C](x)))\n"
    )
    bce, splus, ce = (
        lossdsl.compile(source, name=n) for n in ("naive_bce", "naive_softplus", "naive_ce")
    )
    x, t = _X.astype(dtype), _T.astype(dtype)
    for loss, expected in (
        (bce, t * _softplus(-_X) + (1 - t) * _softplus(_X)),
        (splus, _softplus(-_T * _X)),
    ):
        v, g = loss.value_and_grad(x, t, reduction="none")
        assert np.all(np.isfinite(v))
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(v, expected, rtol=RTOL32 if dtype == np.float32 else 1e-10)
    q = np.full((3, 4), 0.25, dtype)
    v, g = ce.value_and_grad(_EXTREME_ROWS.astype(dtype), q, reduction="none")
    assert np.all(np.isfinite(v))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(v, -(q * _log_softmax(_EXTREME_ROWS)).sum(-1), rtol=RTOL32)


def test_all_ignored_batch_is_nan_like_torch_with_zero_gradient() -> None:
    x = np.array([[1e4, -1e4, 0.0], [0.0, 1.0, 2.0]])
    v, g = lossdsl.get("sparse_cross_entropy").value_and_grad(x, np.array([-100, -100]))
    assert np.isnan(v)  # torch: 0 / 0 for the weighted mean
    assert np.all(g == 0)
