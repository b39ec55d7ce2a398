"""L1 / L2 penalties on a parameter vector added to any loss (lossdsl.penalty)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import lossdsl


def test_penalty_value_and_gradient_follow_keras_l1l2(rng: np.random.Generator) -> None:
    theta = np.array([0.5, -2.0, 0.0, 3.0])
    pen = lossdsl.Penalized(lossdsl.get("mse"), l1=0.1, l2=0.01)
    # keras.regularizers.L1L2(l1, l2): l1 * sum|w| + l2 * sum w^2; d|w| = sign(w), 0 at 0.
    assert_close(pen.penalty(theta), 0.1 * np.abs(theta).sum() + 0.01 * (theta**2).sum())
    p, t = rng.normal(size=6), rng.normal(size=6)
    value, grads, g_theta = pen.value_and_grad(p, t, theta=theta)
    v_mse, g_mse = lossdsl.get("mse").value_and_grad(p, t)
    assert_close(value, v_mse + pen.penalty(theta))
    assert_close(grads, g_mse)
    assert_close(g_theta, 0.1 * np.sign(theta) + 0.02 * theta)


def test_penalty_works_with_any_loss_and_its_options(rng: np.random.Generator) -> None:
    logits, labels = rng.normal(size=(5, 3)), rng.integers(0, 3, 5)
    theta = rng.normal(size=10).astype(np.float32)
    pen = lossdsl.Penalized(lossdsl.get("sparse_cross_entropy"), l2=0.5)
    value = pen(logits, labels, theta=theta, label_smoothing=0.1, reduction="sum")
    base = lossdsl.get("sparse_cross_entropy")(logits, labels, label_smoothing=0.1, reduction="sum")
    assert_close(value, base + 0.5 * float((theta.astype(np.float64) ** 2).sum()), rtol=1e-6)


def test_negative_penalty_weight_is_rejected_at_construction() -> None:
    with pytest.raises(lossdsl.SpecDomainError):
        lossdsl.Penalized(lossdsl.get("mse"), l1=-1.0)
