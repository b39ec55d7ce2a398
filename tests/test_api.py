"""The public API: shapes, dtypes, broadcasting, reductions, weights, errors, NaN behaviour."""

from __future__ import annotations

import numpy as np
import pytest

import lossdsl
from lossdsl.errors import SpecDomainError, SpecShapeError


def test_batch_shape_and_dtype_are_preserved(rng: np.random.Generator) -> None:
    mse = lossdsl.get("mse")
    p, t = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    v, g = mse.value_and_grad(p, t)
    np.testing.assert_allclose(v, ((p - t) ** 2).mean(), rtol=1e-12)
    assert g.shape == p.shape
    assert g.dtype == p.dtype
    np.testing.assert_allclose(g, 2 * (p - t) / p.size, rtol=1e-12)
    per = mse(p, t, reduction="none")
    assert per.shape == p.shape


def test_class_axis_with_batch_dims(rng: np.random.Generator) -> None:
    ce = lossdsl.get("sparse_cross_entropy")
    x, y = rng.normal(size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
    v, g = ce.value_and_grad(x, y)
    flat_v, flat_g = ce.value_and_grad(x.reshape(6, 5), y.reshape(6))
    np.testing.assert_allclose(v, flat_v, rtol=1e-14)
    np.testing.assert_allclose(g.reshape(6, 5), flat_g, rtol=1e-14)


def test_broadcast_and_non_contiguous_inputs(rng: np.random.Generator) -> None:
    huber = lossdsl.get("huber")
    p = rng.normal(size=40)[::2]
    assert not p.flags.c_contiguous
    v, g = huber.value_and_grad(p, 0.0)
    v2, g2 = huber.value_and_grad(np.ascontiguousarray(p), np.zeros(20))
    np.testing.assert_allclose(v, v2, rtol=1e-14)
    np.testing.assert_allclose(g, g2, rtol=1e-14)
    logits = rng.normal(size=(5, 8)).T  # Fortran order
    target = np.full(5, 1 / 5)  # one distribution broadcast over the batch
    v3 = lossdsl.get("cross_entropy")(logits, target)
    v4 = lossdsl.get("cross_entropy")(np.ascontiguousarray(logits), np.tile(target, (8, 1)))
    np.testing.assert_allclose(v3, v4, rtol=1e-14)


def test_reductions_and_sample_weights(rng: np.random.Generator) -> None:
    mae = lossdsl.get("mae")
    p, t, w = rng.normal(size=30), rng.normal(size=30), rng.uniform(size=30)
    err = np.abs(p - t)
    np.testing.assert_allclose(mae(p, t, reduction="sum"), err.sum(), rtol=1e-12)
    np.testing.assert_allclose(mae(p, t, sample_weight=w), (w * err).sum() / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(mae(p, t, weight=w, reduction="none"), w * err, rtol=1e-12)
    g = mae.grad(p, t, sample_weight=w, reduction="sum")
    np.testing.assert_allclose(g, w * np.sign(p - t), rtol=1e-12)


def test_several_wrt_inputs_give_a_tuple(rng: np.random.Generator) -> None:
    trip = lossdsl.get("triplet_margin")
    a, p, n = (rng.normal(size=(4, 3)) for _ in range(3))
    _value, grads = trip.value_and_grad(a, p, n)
    assert isinstance(grads, tuple)
    assert len(grads) == 3
    assert all(g.shape == a.shape for g in grads)


def test_empty_batch() -> None:
    mse = lossdsl.get("mse")
    v, g = mse.value_and_grad(np.zeros(0), np.zeros(0))
    assert np.isnan(v)
    assert g.shape == (0,)
    assert mse(np.zeros(0), np.zeros(0), reduction="sum") == 0.0


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (
            lambda: lossdsl.get("mse")(np.ones(3, dtype=np.int64), np.ones(3)),
            SpecShapeError,
            "float32 or float64",
        ),
        (lambda: lossdsl.get("mse")(np.ones(3), np.ones(4)), SpecShapeError, "do not broadcast"),
        (
            lambda: lossdsl.get("mse")(np.ones(1), np.ones(4)),
            SpecShapeError,
            "must not be broadcast",
        ),
        (lambda: lossdsl.get("mse")(np.ones(3)), SpecShapeError, "missing input 'target'"),
        (
            lambda: lossdsl.get("huber")(np.ones(3), np.ones(3), delt=1),
            SpecShapeError,
            "did you mean 'delta'",
        ),
        (
            lambda: lossdsl.get("huber")(np.ones(3), np.ones(3), delta=-1),
            SpecDomainError,
            "outside its domain > 0",
        ),
        (
            lambda: lossdsl.get("huber")(np.ones(3), np.ones(3), reduction="avg"),
            SpecShapeError,
            "unknown reduction",
        ),
        (
            lambda: lossdsl.get("sparse_cross_entropy")(np.ones((3, 4)), np.array([0.5, 1, 2])),
            SpecShapeError,
            "integer labels",
        ),
        (
            lambda: lossdsl.get("sparse_cross_entropy")(np.ones((3, 4)), np.array([0, 4, 1])),
            SpecShapeError,
            "outside [0, 4)",
        ),
        (
            lambda: lossdsl.get("sparse_cross_entropy")(
                np.ones((3, 4)), np.zeros(3, int), weight=np.ones(5)
            ),
            SpecShapeError,
            "needs shape (4,)",
        ),
        (
            lambda: lossdsl.get("cross_entropy")(np.ones((3, 4)), np.ones((3, 5))),
            SpecShapeError,
            "disagree on the length",
        ),
        (
            lambda: lossdsl.get("triplet_margin")(
                np.ones((2, 3), np.float32), np.ones((2, 3)), np.ones((2, 3))
            ),
            SpecShapeError,
            "mix dtypes",
        ),
    ],
)
def test_call_errors_are_clear(call: object, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        call()  # type: ignore[operator]
    assert fragment in str(info.value)


def test_domain_error_points_at_the_declaration() -> None:
    with pytest.raises(SpecDomainError) as info:
        lossdsl.get("huber")(np.ones(2), np.ones(2), delta=0.0)
    text = str(info.value)
    assert "huber.loss:" in text
    assert "delta: real = 1.0 > 0" in text
    assert "^" in text


def test_nan_propagates_to_its_own_sample_only() -> None:
    mse = lossdsl.get("mse")
    p = np.array([1.0, np.nan, 3.0])
    v, g = mse.value_and_grad(p, np.zeros(3))
    assert np.isnan(v)
    assert np.isnan(g[1])
    assert np.all(np.isfinite(g[[0, 2]]))
    per = mse(p, np.zeros(3), reduction="none")
    assert np.isnan(per[1])
    assert per[0] == 1.0


def test_ignored_rows_contribute_nothing_even_if_nan() -> None:
    ce = lossdsl.get("sparse_cross_entropy")
    x = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0]])
    v, g = ce.value_and_grad(x, np.array([2, -100]))
    assert np.isfinite(v)
    assert np.all(g[1] == 0)
    all_ignored = ce(x, np.array([-100, -100]))
    assert np.isnan(all_ignored)  # 0 / 0, as torch


def test_select_never_leaks_nan_from_the_branch_not_taken() -> None:
    loss = lossdsl.compile("loss f(x):\n    return where(x > 0, log(x), 0) + sqrt(x^2)\n")
    x = np.array([-1.0, 0.0, 2.0])
    _v, g, h = loss.value_grad_hess(x, reduction="sum")
    assert np.all(np.isfinite(g))
    assert np.all(np.isfinite(h))
    np.testing.assert_allclose(g, [-1.0, 0.0, 1.5])


def test_norm_of_zero_vector_has_zero_gradient() -> None:
    loss = lossdsl.compile("loss n(x[D]):\n    return norm[D](x)\n")
    x = np.zeros((2, 3))
    x[1] = [3.0, 4.0, 0.0]
    v, g = loss.value_and_grad(x, reduction="sum")
    assert v == 5.0
    np.testing.assert_allclose(g, [[0, 0, 0], [0.6, 0.8, 0]])


def test_extreme_logits_stay_finite() -> None:
    bce = lossdsl.get("bce_with_logits")
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    for dtype in (np.float32, np.float64):
        v, g = bce.value_and_grad(x.astype(dtype), np.array([1.0, 1, 0, 0, 0]))
        assert np.isfinite(v)
        assert np.all(np.isfinite(g))
    ce = lossdsl.get("sparse_cross_entropy")
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 1e4]])
    v, g, h = ce.value_grad_hess(logits, np.array([1, 2]))
    assert np.isfinite(v)
    assert np.all(np.isfinite(g))
    assert np.all(np.isfinite(h))
    np.testing.assert_allclose(v, 2e4 / 2)


def test_explain_and_metadata() -> None:
    ce = lossdsl.get("sparse_cross_entropy")
    text = ce.explain()
    assert "gradient  dl/dlogits" in text
    assert "hessian" in text
    assert "Heaviside" not in text
    assert "max[C](logits)" in text
    assert ce.task == "multiclass"
    assert ce.activation == "identity"  # the model outputs logits; the loss applies softmax
    params = {p.name: p for p in ce.params}
    assert params["label_smoothing"].domain == "in [0, 1]"
    assert params["weight"].axis == "C"
    assert "\\" in ce.explain(latex=True)
