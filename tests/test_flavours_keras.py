"""Every Keras flavour in the catalog against the real Keras 3 loss (jax backend, float64).

Each flavour named in docs/losses.md ("Matches keras...", the framework table) is compared
with the Keras loss object it claims to reproduce, for every reduction and option it documents:
value and gradient (jax.grad of the Keras call) to 1e-10 relative, and its float32 kernels
within tolerance. Keras' `sum_over_batch_size` is lossdsl's `mean`, its `None` our `none`.
On the jax backend, with Keras' promotion of float64 to float32 (`keras.backend.result_type`,
which makes `ops.mean` of float64 values round through float32 off TensorFlow) switched off per
test. jax splits the gradient at an exact clip bound where lossdsl, TensorFlow and torch pass it
whole, so no input sits exactly on one (a probability of 1 in KLDivergence).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from real_flavours import Real, check, check_float32, param_id, params

import lossdsl

os.environ["KERAS_BACKEND"] = "jax"  # read when keras is first imported
pytest.importorskip("jax")
keras = pytest.importorskip("keras")
assert keras.backend.backend() == "jax", "keras was imported earlier with another backend"

from keras.src.backend.common import dtypes  # noqa: E402


@pytest.fixture(autouse=True)
def _float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras computes float64 in float64, as on TensorFlow (restored after each test)."""
    monkeypatch.setitem(dtypes.BIT64_TO_BIT32_DTYPE, "float64", "float64")


_KERAS_REDUCTION = {"mean": "sum_over_batch_size", "sum": "sum", "none": None}


def _loss(cls: str, **fixed: Any) -> Any:
    """keras.losses.<cls>(**fixed, **options)(y_true, y_pred): the spec's parameters are
    Keras' keyword arguments of the same names."""

    def reference(pred: Any, target: Any, reduction: str, **opts: Any) -> Any:
        kw = dict(fixed, **opts)
        obj = getattr(keras.losses, cls)(
            reduction=_KERAS_REDUCTION[reduction], dtype="float64", **kw
        )
        return obj(target, pred)

    reference.__name__ = cls
    return reference


def _column(cls: str, **fixed: Any) -> Any:
    """Element-wise Keras losses on (N, 1) inputs: Keras averages the last axis first."""
    inner = _loss(cls, **fixed)

    def reference(pred: Any, target: Any, reduction: str, **opts: Any) -> Any:
        return inner(pred[:, None], target[:, None], reduction, **opts)

    reference.__name__ = cls

    return reference


def _rmse(pred: Any, target: Any, reduction: str) -> Any:
    # keras.metrics.RootMeanSquaredError, stateless so jax can differentiate it.
    metric = keras.metrics.RootMeanSquaredError(dtype="float64")
    state = [v.value for v in metric.variables]
    state = metric.stateless_update_state(state, target, pred)
    return metric.stateless_result(state)


def _dice(pred: Any, target: Any, reduction: str, **opts: Any) -> Any:
    # keras.losses.Dice(axis=None) returns one number for the batch: lossdsl's mean.
    assert opts == {"smooth": 0.0, "eps": 1e-7}
    return keras.losses.Dice(dtype="float64")(target, pred)


def _tversky(pred: Any, target: Any, reduction: str, **opts: Any) -> Any:
    # Keras' `fp` sums (1 - y_pred) * y_true (missed positives), so its alpha is our beta.
    alpha, beta = opts.pop("alpha"), opts.pop("beta")
    assert opts == {"smooth": 0.0, "eps": 1e-7}
    return keras.losses.Tversky(alpha=beta, beta=alpha, dtype="float64")(target, pred)


# -- inputs ----------------------------------------------------------------------------------


def _rows(rng: np.random.Generator, n: int = 5, c: int = 4) -> np.ndarray:
    p = rng.uniform(0.02, 1.0, size=(n, c))
    return p / p.sum(-1, keepdims=True)


def _probability_rows(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    # Edges: exact zeros (clipped to 1e-7) and an unnormalised row (Keras renormalises); soft
    # and one-hot targets.
    edge = np.array([[0.7, 0.3, 0.0, 0.0], [0.2, 0.3, 0.1, 0.9]])
    return {
        "typical": (_rows(rng), _rows(rng)),
        "one_hot": (_rows(rng), np.eye(4)[rng.integers(0, 4, 5)]),
        "edges": (edge, np.array([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])),
    }


def _probability_labels(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    cases = _probability_rows(rng)
    return {k: (p, np.argmax(t, -1)) for k, (p, t) in cases.items()}


def _probs(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    p = rng.uniform(0.02, 0.98, 7)
    return {
        "typical": (p, rng.integers(0, 2, 7).astype(np.float64)),
        "soft_targets": (p, rng.uniform(0.0, 1.0, 7)),
    }


def _logits(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x = rng.normal(scale=2.0, size=7)
    return {"typical": (x, rng.integers(0, 2, 7).astype(np.float64)),
            "soft_targets": (x, rng.uniform(0.0, 1.0, 7))}  # fmt: skip


def _multilabel(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x = rng.normal(scale=2.0, size=(5, 4))
    return {"typical": (x, rng.integers(0, 2, (5, 4)).astype(np.float64)),
            "soft_targets": (x, rng.uniform(0.0, 1.0, (5, 4)))}  # fmt: skip


def _logit_rows(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x = rng.normal(scale=2.0, size=(5, 4))
    return {"typical": (x, _rows(rng)), "one_hot": (x, np.eye(4)[rng.integers(0, 4, 5)])}


def _logit_labels(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x = rng.normal(scale=2.0, size=(5, 4))
    return {"typical": (x, rng.integers(0, 4, 5))}


def _pairs(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": (rng.normal(size=7), rng.normal(size=7))}


def _positive_pairs(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    # msle clamps at eps = 1e-7: values on both sides of it (away from the tie).
    p, t = rng.uniform(0.0, 3.0, 7), rng.uniform(0.0, 3.0, 7)
    return {"typical": (p, t), "below_eps": (np.array([0.0, -0.5, 2.0]), np.array([0.3, 0.0, 0.0]))}


def _percent_pairs(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    p, t = rng.normal(size=7), rng.normal(size=7)
    return {"typical": (p, t), "zero_target": (np.array([0.5, -2.0]), np.array([0.0, 0.0]))}


def _signed(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    # Scores off the kink at target * pred = 1 (Keras and jax split a tie there).
    p = rng.normal(scale=2.0, size=7)
    p[np.abs(np.abs(p) - 1.0) < 1e-3] = 0.3
    return {"typical": (p, rng.choice([-1.0, 1.0], 7))}


def _scores(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": (rng.normal(size=(5, 4)), np.eye(4)[rng.integers(0, 4, 5)])}


def _vectors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": (rng.normal(size=(4, 5)), rng.normal(size=(4, 5)))}


def _masks(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    p = rng.uniform(0.02, 0.98, 9)
    return {"typical": (p, rng.integers(0, 2, 9).astype(np.float64)),
            "soft_targets": (p, rng.uniform(0.0, 1.0, 9))}  # fmt: skip


_FIXED = {"smooth": 0.0, "eps": 1e-7}

KERAS: tuple[Real, ...] = (
    Real("categorical_crossentropy", _loss("CategoricalCrossentropy"), _probability_rows,
         ({}, {"label_smoothing": 0.1})),
    Real("sparse_categorical_crossentropy", _loss("SparseCategoricalCrossentropy"),
         _probability_labels),
    Real("kl_divergence", _loss("KLDivergence"), _probability_rows),
    Real("categorical_focal_crossentropy", _loss("CategoricalFocalCrossentropy"),
         _probability_rows,
         ({}, {"alpha": 1.0, "gamma": 0.0}, {"label_smoothing": 0.1, "gamma": 1.5})),
    Real("binary_focal_crossentropy", _column("BinaryFocalCrossentropy"), _probs,
         ({}, {"apply_class_balancing": 1, "alpha": 0.4},
          {"gamma": 0.0, "label_smoothing": 0.1}, {"gamma": 1.5, "apply_class_balancing": 1})),
    Real("bce", _column("BinaryCrossentropy"), _probs, ({}, {"label_smoothing": 0.1})),
    Real("bce_with_logits", _column("BinaryCrossentropy", from_logits=True), _logits,
         ({}, {"label_smoothing": 0.2})),
    Real("multilabel_soft_margin", _loss("BinaryCrossentropy", from_logits=True), _multilabel),
    Real("cross_entropy", _loss("CategoricalCrossentropy", from_logits=True), _logit_rows,
         ({}, {"label_smoothing": 0.1})),
    Real("sparse_cross_entropy", _loss("SparseCategoricalCrossentropy", from_logits=True),
         _logit_labels),
    Real("categorical_hinge", _loss("CategoricalHinge"), _scores),
    Real("hinge", _column("Hinge"), _signed),
    Real("squared_hinge", _column("SquaredHinge"), _signed),
    Real("cosine_similarity", _loss("CosineSimilarity"), _vectors),
    Real("log_cosh", _column("LogCosh"), _pairs),
    Real("mape", _column("MeanAbsolutePercentageError"), _percent_pairs),
    Real("msle", _column("MeanSquaredLogarithmicError"), _positive_pairs),
    Real("rmse", _rmse, _pairs, reductions=("mean",)),
    Real("dice", _dice, _masks, (_FIXED,), reductions=("mean",)),
    Real("tversky", _tversky, _masks,
         (dict(_FIXED, alpha=0.5, beta=0.5), dict(_FIXED, alpha=0.3, beta=0.7)),
         reductions=("mean",)),
)  # fmt: skip


@pytest.mark.parametrize(("real", "option", "reduction"), params(KERAS), ids=param_id)
def test_matches_keras_float64(real: Real, option: int, reduction: str) -> None:
    check(real, option, reduction)


@pytest.mark.parametrize("real", KERAS, ids=param_id)
def test_matches_keras_float32(real: Real) -> None:
    check_float32(real)


def test_element_wise_reductions_on_rows(rng: np.random.Generator) -> None:
    """On (N, C) inputs Keras averages each row first: its sum_over_batch_size is our mean
    over the N * C elements, its sum our sum divided by C (the catalog's Keras reductions)."""
    import jax
    import jax.numpy as jnp
    from real_flavours import x64

    p, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    loss = lossdsl.get("log_cosh")
    for reduction, scale in (("mean", 1.0), ("sum", 1.0 / 3)):
        value, grad = loss.value_and_grad(p.ravel(), t.ravel(), reduction=reduction)
        keras_loss = keras.losses.LogCosh(reduction=_KERAS_REDUCTION[reduction], dtype="float64")
        with x64():
            ref = jax.value_and_grad(lambda z, f=keras_loss: f(jnp.asarray(t), z))
            ref_value, ref_grad = ref(jnp.asarray(p))
        assert_close(scale * value, ref_value)
        assert_close(scale * grad, np.asarray(ref_grad).ravel())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ignore_class_is_a_zero_sample_weight(reduction: str, rng: np.random.Generator) -> None:
    """SparseCategoricalCrossentropy(ignore_class=k) is sample_weight (label != k): Keras'
    mean also divides by the rows kept."""
    import jax
    import jax.numpy as jnp
    from real_flavours import x64

    p, y = _probability_labels(rng)["typical"]
    y[:2] = 1  # at least two ignored rows
    loss = lossdsl.get("sparse_categorical_crossentropy")
    value, grad = loss.value_and_grad(p, y, reduction=reduction, sample_weight=(y != 1) * 1.0)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        ignore_class=1, reduction=_KERAS_REDUCTION[reduction], dtype="float64"
    )
    with x64():
        ref_value, ref_grad = jax.value_and_grad(lambda z: keras_loss(jnp.asarray(y), z))(
            jnp.asarray(p)
        )
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
