"""Every Optax flavour in the catalog against the real optax.losses function (float64).

Each flavour named in docs/losses.md ("Matches optax...", the framework table) is compared with
the Optax function it claims to reproduce, for every reduction and option it documents: value
and gradient (jax.grad of the Optax call) to 1e-10 relative, float32 kernels within tolerance.
The segmentation losses (dice_loss, binary_dice_loss, multiclass_generalized_dice_loss) take
one image per call: Optax gets it as a batch of one image, and lossdsl's `mean` is Optax's
value (`sum` is N times it, `none` N copies). Their gradients are also checked against finite
differences, sample weights against repeated pixels, and the Hessian diagonal either against
jax.hessian (binary) or as the documented DerivationError (softmax inside per-class totals).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import FD_ATOL, FD_RTOL, assert_close, fd_grad, fd_hess_diag
from real_flavours import Real, check, check_float32, param_id, params, reduce_, x64

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

import lossdsl  # noqa: E402
from lossdsl.errors import DerivationError  # noqa: E402

# -- references ------------------------------------------------------------------------------


def _per_sample(fn: Any) -> Any:
    """optax.losses.<fn>(*inputs, **options) reduced over the batch (the spec's parameters are
    Optax's keywords)."""

    def reference(*args: Any, reduction: str, **opts: Any) -> Any:
        return reduce_(fn(*args, **opts), reduction)

    return reference


def _cosine_similarity(p: Any, t: Any, reduction: str, eps: float = 1e-12) -> Any:
    # lossdsl's is Keras' sign (a loss): minus optax.losses.cosine_similarity.
    return reduce_(-optax.losses.cosine_similarity(p, t, epsilon=eps), reduction)


def _multiclass_hinge(s: Any, t: Any, reduction: str) -> Any:
    # Optax takes integer labels; the spec takes their one-hot rows.
    return reduce_(optax.losses.multiclass_hinge_loss(s, jnp.argmax(t, -1)), reduction)


def _image(value: Any, n: int, reduction: str) -> Any:
    """Optax's one value for the image, as lossdsl reduces a batch-total loss over N pixels."""
    if reduction == "none":
        return jnp.broadcast_to(value, (n,))
    return value if reduction == "mean" else n * value


def _dice(x: Any, t: Any, reduction: str, **opts: Any) -> Any:
    kw: dict[str, Any] = {"reduction": "sum" if opts.pop("sum_classes", 0) else "mean"}
    if "class_weights" in opts:
        kw["class_weights"] = jnp.asarray(opts.pop("class_weights"))
    kw["ignore_background"] = bool(opts.pop("ignore_background", 0))
    kw["apply_softmax"] = bool(opts.pop("apply_softmax", 1))
    value = optax.losses.dice_loss(x[None], t[None], **opts, **kw)[0]
    return _image(value, x.shape[0], reduction)


def _binary_dice(x: Any, t: Any, reduction: str, **opts: Any) -> Any:
    value = optax.losses.binary_dice_loss(x[None], t[None], **opts)
    return _image(value[0], x.shape[0], reduction)


def _generalized_dice(x: Any, t: Any, reduction: str, **opts: Any) -> Any:
    kw = {k: bool(opts.pop(k)) for k in ("ignore_background", "apply_softmax") if k in opts}
    value = optax.losses.multiclass_generalized_dice_loss(x[None], t[None], **opts, **kw)
    return _image(value, x.shape[0], reduction)


# -- inputs ----------------------------------------------------------------------------------


def _vectors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": (rng.normal(size=(4, 5)), rng.normal(size=(4, 5)))}


def _triplets(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": tuple(rng.normal(size=(4, 5)) for _ in range(3))}


def _one_hot_scores(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    return {"typical": (rng.normal(size=(6, 4)), np.eye(4)[rng.integers(0, 4, 6)])}


def _soft_classes(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x, p = rng.normal(scale=2.0, size=(5, 4)), rng.uniform(0.0, 1.0, (5, 4))
    return {"typical": (x, p / p.sum(-1, keepdims=True)),
            "one_hot": (x, np.eye(4)[rng.integers(0, 4, 5)])}  # fmt: skip


def _signed(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    # Off the kink at target * pred = 1, where jax splits the gradient.
    p = rng.normal(scale=2.0, size=7)
    p[np.abs(np.abs(p) - 1.0) < 1e-3] = 0.3
    return {"typical": (p, rng.choice([-1.0, 1.0], 7))}


def _pixels(rng: np.random.Generator, c: int = 4) -> dict[str, tuple[np.ndarray, ...]]:
    """One image of 12 pixels: logits and one-hot targets; one case lacks class 2 entirely."""
    x, labels = rng.normal(scale=2.0, size=(12, c)), rng.integers(0, c, 12)
    absent = np.where(labels == 2, 0, labels)
    return {"typical": (x, np.eye(c)[labels]), "absent_class": (x, np.eye(c)[absent])}


def _binary_pixels(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    x = rng.normal(scale=2.0, size=12)
    return {"typical": (x, rng.integers(0, 2, 12).astype(np.float64)),
            "soft_targets": (x, rng.uniform(0.0, 1.0, 12))}  # fmt: skip


_CW = np.array([0.5, 2.0, 1.0, 0.25])

OPTAX: tuple[Real, ...] = (
    Real("cosine_distance", _per_sample(optax.losses.cosine_distance), _vectors,
         ({}, {"epsilon": 1e-12}, {"epsilon": 0.5})),
    Real("cosine_similarity", _cosine_similarity, _vectors, ({}, {"eps": 0.5})),
    Real("multiclass_hinge", _multiclass_hinge, _one_hot_scores),
    Real("poly_cross_entropy", _per_sample(optax.losses.poly_loss_cross_entropy),
         _soft_classes, ({}, {"epsilon": -1.0}, {"epsilon": 0.0})),
    Real("triplet_margin_optax", _per_sample(optax.losses.triplet_margin_loss), _triplets,
         ({}, {"margin": 2.0, "eps": 0.0}, {"norm_degree": 4.0},
          {"norm_degree": 4.0, "eps": 1e-3, "margin": 0.2})),
    Real("hinge", _per_sample(optax.losses.hinge_loss), _signed),
    Real("dice_loss", _dice, _pixels,
         ({}, {"alpha": 0.3, "beta": 0.7, "smooth": 0.0}, {"class_weights": _CW},
          {"class_weights": _CW, "sum_classes": 1}, {"ignore_background": 1},
          {"class_weights": _CW, "ignore_background": 1, "sum_classes": 1, "smooth": 0.5})),
    Real("binary_dice_loss", _binary_dice, _binary_pixels, ({}, {"smooth": 0.0})),
    Real("multiclass_generalized_dice_loss", _generalized_dice, _pixels,
         ({}, {"smooth": 0.0}, {"ignore_background": 1})),
)  # fmt: skip


@pytest.mark.parametrize(("real", "option", "reduction"), params(OPTAX), ids=param_id)
def test_matches_optax_float64(real: Real, option: int, reduction: str) -> None:
    check(real, option, reduction)


@pytest.mark.parametrize("real", OPTAX, ids=param_id)
def test_matches_optax_float32(real: Real) -> None:
    check_float32(real)


def _optax_value(name: str, x: np.ndarray, t: np.ndarray, **opts: Any) -> float:
    # Eager: with apply_softmax=False Optax checks its input with a Python `if`.
    reference = _dice if name == "dice_loss" else _generalized_dice
    with x64():
        return float(reference(jnp.asarray(x), jnp.asarray(t), reduction="mean", **opts))


@pytest.mark.parametrize(
    ("name", "option"),
    [("dice_loss", {"apply_softmax": 0, "alpha": 0.3, "beta": 0.7}),
     ("dice_loss", {"apply_softmax": 0, "ignore_background": 1, "class_weights": _CW}),
     ("multiclass_generalized_dice_loss", {"apply_softmax": 0, "ignore_background": 1})],
    ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)),
)  # fmt: skip
def test_probability_inputs_match_optax_and_finite_differences(
    name: str, option: dict[str, Any], rng: np.random.Generator
) -> None:
    """apply_softmax = 0: Optax checks the rows sum to 1 with a Python `if`,
    so jax.grad cannot trace it; the gradient is checked against finite differences of
    Optax's own value instead."""
    p = rng.uniform(0.05, 1.0, (8, 4))
    x, t = p / p.sum(-1, keepdims=True), np.eye(4)[rng.integers(0, 4, 8)]
    loss = lossdsl.get(name)
    value, grad = loss.value_and_grad(x, t, **option)
    assert_close(value, _optax_value(name, x, t, **option))
    expected = fd_grad(lambda z: _optax_value(name, z, t, **option), x)
    assert_close(grad, expected, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize(
    "name", ["dice_loss", "binary_dice_loss", "multiclass_generalized_dice_loss"]
)
def test_gradients_match_finite_differences(name: str) -> None:
    real = next(r for r in OPTAX if r.spec == name)
    x, t = real.cases(np.random.default_rng(1))["typical"]
    loss = lossdsl.get(name)
    opts = real.options[-1]
    expected = fd_grad(lambda z: float(loss(z, t, **opts)), x)
    assert_close(loss.grad(x, t, **opts), expected, rtol=FD_RTOL, atol=FD_ATOL)


def test_sample_weights_are_repeated_pixels(rng: np.random.Generator) -> None:
    """An integer sample weight counts the pixel that many times in every per-class sum: Optax
    on the image with each pixel repeated, value and gradient."""
    x, t = _pixels(rng)["typical"]
    w = rng.integers(0, 3, x.shape[0])
    loss = lossdsl.get("dice_loss")
    opts = {"class_weights": _CW, "alpha": 0.2, "beta": 0.8}
    value, grad = loss.value_and_grad(x, t, sample_weight=w.astype(np.float64), **opts)
    xr, tr = np.repeat(x, w, axis=0), np.repeat(t, w, axis=0)
    with x64():
        ref = jax.value_and_grad(lambda z: _dice(z, jnp.asarray(tr), "mean", **opts))
        ref_value, ref_grad = ref(jnp.asarray(xr))
    # The gradient of a weighted pixel is the sum over its copies.
    summed = np.zeros_like(x)
    np.add.at(summed, np.repeat(np.arange(x.shape[0]), w), np.asarray(ref_grad))
    assert_close(value, ref_value)
    assert_close(grad, summed)


def test_one_class_applies_sigmoid(rng: np.random.Generator) -> None:
    """dice_loss with C = 1 is Optax's sigmoid branch (and binary_dice_loss)."""
    x, t = rng.normal(size=(9, 1)), rng.integers(0, 2, (9, 1)).astype(np.float64)
    loss = lossdsl.get("dice_loss")
    value, grad = loss.value_and_grad(x, t, ignore_background=1)
    with x64():
        f = jax.value_and_grad(lambda z: _dice(z, jnp.asarray(t), "mean", ignore_background=1))
        ref_value, ref_grad = f(jnp.asarray(x))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    assert_close(value, lossdsl.get("binary_dice_loss")(x[:, 0], t[:, 0]))


def test_binary_hessian_matches_jax_hessian(rng: np.random.Generator) -> None:
    x, t = _binary_pixels(rng)["soft_targets"]
    loss = lossdsl.get("binary_dice_loss")
    with x64():
        full = jax.hessian(lambda z: _binary_dice(z, jnp.asarray(t), "mean"))(jnp.asarray(x))
    hess = loss.hessian_diag(x, t)
    assert_close(hess, np.diag(np.asarray(full)))
    assert_close(hess, fd_hess_diag(lambda z: loss.grad(z, t), x), rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("name", ["dice_loss", "multiclass_generalized_dice_loss"])
def test_hessian_is_a_located_derivation_error(name: str, rng: np.random.Generator) -> None:
    x, t = _pixels(rng)["typical"]
    loss = lossdsl.get(name)
    for call in (loss.hessian_diag, loss.value_grad_hess, loss.grad_hess):
        with pytest.raises(
            DerivationError, match="Hessian diagonal through a per-class total"
        ) as e:
            call(x, t)
        assert e.value.span is not None
        assert f"{name}.loss" in str(e.value)
