"""The oracle table: every built-in spec -> a framework reference and the cases to compare.

A reference takes torch tensors (inputs in the spec's order) plus `reduction=` and the spec's
parameters, and returns the reduced loss, so torch autograd gives the reference gradient. Where
torch has the loss the reference calls it; where only Keras, Optax, torchvision, kornia or a
paper defines it, the reference transcribes that published formula in torch ops (`source` says
which). Nothing here imports lossdsl: the references are independent of the compiler.

Each `Oracle` lists option dicts (parameter values: kernel arguments, so no recompiles), the
reductions to check and named input cases: a typical draw plus edge cases (ties at kinks, exact
zeros, probabilities 0 and 1, extreme logits, ignored rows, a batch of one, C = 10000).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REDUCTIONS = ("mean", "sum", "none")
Inputs = tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class Oracle:
    """How to check one spec against its framework definition (hashed by identity)."""

    spec: str
    source: str
    reference: Callable[..., Any]
    cases: Callable[[np.random.Generator], dict[str, Inputs]]
    options: tuple[dict[str, Any], ...] = ({},)
    reductions: tuple[str, ...] = REDUCTIONS
    # Options only valid for some cases: (option index, case name) pairs to skip.
    skip: frozenset[tuple[int, str]] = field(default_factory=frozenset)


# -- input makers ------------------------------------------------------------------------------

N = 7


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.normal(scale=scale, size=shape)


def _prob(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.02, 0.98, size=shape)


def _pm1(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-1, 1], size=n).astype(np.int64)


def _log_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    x = rng.normal(size=(n, c))
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _simplex(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    p = rng.uniform(0.0, 1.0, size=(n, c))
    return p / p.sum(-1, keepdims=True)


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    lo = rng.uniform(0.0, 4.0, size=(n, 2))
    size = rng.uniform(0.5, 3.0, size=(n, 2))
    return np.concatenate([lo, lo + size], axis=1)


def _pair(rng: np.random.Generator) -> dict[str, Inputs]:
    """Regression pairs: typical, exact zero residuals, a batch of one, large values."""
    p, t = _normal(rng, N), _normal(rng, N)
    return {
        "typical": (p, t),
        "zero_residual": (t.copy(), t),
        "batch_of_one": (p[:1], t[:1]),
        "large": (1e3 * p, 1e3 * t),
    }


# -- reduction helpers for transcribed formulas ------------------------------------------------


def _reduce(per_sample: Any, reduction: str) -> Any:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _batch_value(value: Any, n: int, reduction: str) -> Any:
    """A non-decomposable loss: every sample carries the batch value (mean gives it back)."""
    if reduction == "mean":
        return value
    if reduction == "sum":
        return value * n
    return value.expand(n)


def _torch() -> Any:
    import torch

    return torch


def _F() -> Any:
    import torch.nn.functional as F

    return F


# -- references: regression --------------------------------------------------------------------


def _mse(p: Any, t: Any, reduction: str, sample_weight: Any = None) -> Any:
    # torch's element-wise weight= divides the mean by sum(weight): lossdsl's sample_weight.
    return _F().mse_loss(p, t, reduction=reduction, weight=sample_weight)


def _l1(p: Any, t: Any, reduction: str, sample_weight: Any = None) -> Any:
    return _F().l1_loss(p, t, reduction=reduction, weight=sample_weight)


def _weighted_huber(p: Any, t: Any, w: Any, reduction: str, delta: float = 1.0) -> Any:
    # huber_loss(weight=) divides its mean by the element count, not by sum(weight).
    return _F().huber_loss(p, t, reduction=reduction, delta=delta, weight=w)


def _huber(p: Any, t: Any, reduction: str, delta: float = 1.0) -> Any:
    return _F().huber_loss(p, t, reduction=reduction, delta=delta)


def _smooth_l1(p: Any, t: Any, reduction: str, beta: float = 1.0) -> Any:
    return _F().smooth_l1_loss(p, t, reduction=reduction, beta=beta)


def _rmse(p: Any, t: Any, reduction: str) -> Any:
    return _batch_value(_torch().sqrt(_F().mse_loss(p, t)), p.shape[0], reduction)


def _log_cosh(p: Any, t: Any, reduction: str) -> Any:
    # keras.losses.log_cosh: x + softplus(-2x) - log(2).
    x = p - t
    return _reduce(x + _F().softplus(-2.0 * x) - math.log(2.0), reduction)


def _quantile(p: Any, t: Any, reduction: str, q: float = 0.5) -> Any:
    # tfa PinballLoss: max(q r, (q - 1) r), r = t - p; tf.maximum sends a tie to q r.
    r = t - p
    return _reduce(_torch().where(q * r >= (q - 1) * r, q * r, (q - 1) * r), reduction)


def _msle(p: Any, t: Any, reduction: str, eps: float = 1e-7) -> Any:
    # keras.losses.mean_squared_logarithmic_error (log(x + 1) written as log1p).
    torch = _torch()
    d = torch.log1p(torch.clamp(p, min=eps)) - torch.log1p(torch.clamp(t, min=eps))
    return _reduce(d * d, reduction)


def _mape(p: Any, t: Any, reduction: str, eps: float = 1e-7) -> Any:
    # keras.losses.mean_absolute_percentage_error.
    torch = _torch()
    return _reduce(100.0 * torch.abs((t - p) / torch.clamp(torch.abs(t), min=eps)), reduction)


def _poisson_nll(
    p: Any, t: Any, reduction: str, log_input: int = 1, full: int = 0, eps: float = 1e-8
) -> Any:
    return _F().poisson_nll_loss(
        p, t, log_input=bool(log_input), full=bool(full), eps=eps, reduction=reduction
    )


def _gaussian_nll(
    p: Any, t: Any, var: Any, reduction: str, full: int = 0, eps: float = 1e-6
) -> Any:
    return _F().gaussian_nll_loss(p, t, var, full=bool(full), eps=eps, reduction=reduction)


def _pseudo_huber(p: Any, t: Any, reduction: str, delta: float = 1.0) -> Any:
    # XGBoost reg:pseudohubererror (huber_slope = delta).
    r = (p - t) / delta
    return _reduce(delta**2 * (_torch().sqrt(1.0 + r * r) - 1.0), reduction)


def _gamma_nll(p: Any, t: Any, reduction: str) -> Any:
    # XGBoost reg:gamma / LightGBM gamma: y exp(-s) + s.
    return _reduce(t * _torch().exp(-p) + p, reduction)


def _tweedie_nll(p: Any, t: Any, reduction: str, variance_power: float = 1.5) -> Any:
    # XGBoost reg:tweedie / LightGBM tweedie.
    torch, rho = _torch(), variance_power
    a = -t * torch.exp((1.0 - rho) * p) / (1.0 - rho)
    return _reduce(a + torch.exp((2.0 - rho) * p) / (2.0 - rho), reduction)


def _fair(p: Any, t: Any, reduction: str, c: float = 1.0) -> Any:
    # LightGBM fair (fair_c = c).
    a = _torch().abs(p - t) / c
    return _reduce(c * c * (a - _torch().log1p(a)), reduction)


def _squared_log_error(p: Any, t: Any, reduction: str, eps: float = 1e-6) -> Any:
    # XGBoost reg:squaredlogerror: predictions clamped at -1 + eps.
    torch = _torch()
    d = torch.log1p(torch.clamp(p, min=-1.0 + eps)) - torch.log1p(t)
    return _reduce(0.5 * d * d, reduction)


# -- references: probabilistic and classification ----------------------------------------------


def _kl_div(p: Any, t: Any, reduction: str, log_target: int = 0) -> Any:
    return _F().kl_div(p, t, reduction=reduction, log_target=bool(log_target))


def _kl_div_batchmean(p: Any, t: Any, reduction: str, log_target: int = 0) -> Any:
    F = _F()
    if reduction == "none":
        return F.kl_div(p, t, reduction="none", log_target=bool(log_target)).sum(-1)
    torch_reduction = "batchmean" if reduction == "mean" else "sum"
    return F.kl_div(p, t, reduction=torch_reduction, log_target=bool(log_target))


def _smoothed(t: Any, label_smoothing: float) -> Any:
    # Keras BinaryCrossentropy(label_smoothing=): t * (1 - ls) + ls / 2.
    return t * (1.0 - label_smoothing) + 0.5 * label_smoothing


def _bce(
    p: Any, t: Any, reduction: str, label_smoothing: float = 0.0, sample_weight: Any = None
) -> Any:
    t = _smoothed(t, label_smoothing)
    return _F().binary_cross_entropy(p, t, weight=sample_weight, reduction=reduction)


def _bce_with_logits(
    x: Any,
    t: Any,
    reduction: str,
    pos_weight: float = 1.0,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
) -> Any:
    torch = _torch()
    t = _smoothed(t, label_smoothing)
    pw = torch.tensor(pos_weight, dtype=x.dtype)
    return _F().binary_cross_entropy_with_logits(
        x, t, weight=sample_weight, pos_weight=pw, reduction=reduction
    )


def _class_weight(weight: Any, like: Any) -> Any:
    if weight is None:
        return None
    return _torch().as_tensor(np.broadcast_to(weight, like.shape[-1:]).copy(), dtype=like.dtype)


def _cross_entropy(
    x: Any, t: Any, reduction: str, weight: Any = None, label_smoothing: float = 0.0
) -> Any:
    w = _class_weight(weight, x)
    return _F().cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=label_smoothing)


def _sparse_cross_entropy(
    x: Any,
    y: Any,
    reduction: str,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Any:
    w = _class_weight(weight, x)
    return _F().cross_entropy(
        x, y, weight=w, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing,
    )  # fmt: skip


def _liger_cross_entropy(
    x: Any,
    y: Any,
    reduction: str,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    lse_square_scale: float = 0.0,
    softcap: float = 0.0,
) -> Any:
    # liger_kernel/ops/cross_entropy.py (no class weights), transcribed: logits soft-capped
    # before the softmax, torch's cross-entropy of them, plus the z-loss.
    torch = _torch()
    if softcap > 0:
        x = softcap * torch.tanh(x / softcap)
    ce = _sparse_cross_entropy(x, y, reduction, None, ignore_index, label_smoothing)
    # Liger's z-loss without class weights: lse_square_scale * lse^2 per kept token, its mean
    # over the kept tokens (ignored rows add nothing).
    keep = (y != ignore_index).to(x.dtype)
    z = lse_square_scale * torch.logsumexp(x, -1) ** 2 * keep
    if reduction == "mean":
        # All rows ignored: torch's mean is NaN with zero gradients, and so is Liger's.
        return ce if keep.sum() == 0 else ce + z.sum() / keep.sum()
    return ce + _reduce(z, reduction)


def _nll(
    lp: Any,
    y: Any,
    reduction: str,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Any:
    # torch.nn.functional.nll_loss, plus the label-smoothing term exactly as torch's
    # cross_entropy adds it to the nll of its log-probabilities (aten cross_entropy_loss).
    torch, F = _torch(), _F()
    w = _class_weight(weight, lp)
    nll = F.nll_loss(lp, y, weight=w, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing == 0.0:
        return nll
    cw = w if w is not None else torch.ones(lp.shape[-1], dtype=lp.dtype)
    keep = y != ignore_index
    smooth = torch.where(keep, -(lp * cw).sum(-1), torch.zeros((), dtype=lp.dtype))
    if reduction == "mean":
        smooth = smooth.sum() / cw[y[keep]].sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1.0 - label_smoothing) * nll + smooth * (label_smoothing / lp.shape[-1])


def _sigmoid_focal(x: Any, t: Any, reduction: str, alpha: float = 0.25, gamma: float = 2.0) -> Any:
    # torchvision.ops.sigmoid_focal_loss, transcribed.
    torch, F = _torch(), _F()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction)


def _softmax_focal(x: Any, y: Any, reduction: str, alpha: float = 1.0, gamma: float = 2.0) -> Any:
    # kornia.losses.focal_loss with a one-hot target, transcribed.
    torch = _torch()
    lp = torch.log_softmax(x, -1).gather(-1, y[..., None])[..., 0]
    return _reduce(-alpha * (1 - lp.exp()) ** gamma * lp, reduction)


def _poly1(x: Any, y: Any, reduction: str, epsilon: float = 1.0) -> Any:
    # PolyLoss reference: cross_entropy + epsilon * (1 - p_t).
    torch, F = _torch(), _F()
    pt = torch.softmax(x, -1).gather(-1, y[..., None])[..., 0]
    return _reduce(F.cross_entropy(x, y, reduction="none") + epsilon * (1 - pt), reduction)


def _multilabel_soft_margin(
    x: Any, t: Any, reduction: str, weight: Any = None, pos_weight: Any = None
) -> Any:
    w = _class_weight(weight, x)
    if pos_weight is None:
        return _F().multilabel_soft_margin_loss(x, t, weight=w, reduction=reduction)
    # torch's BCEWithLogitsLoss(pos_weight=vector, weight=vector) on (N, C): its mean is the
    # mean of the row means; the per-sample value is the row mean.
    pw = _class_weight(pos_weight, x)
    per = _F().binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw, reduction="none")
    if reduction == "mean":
        return _F().binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw)
    return _reduce(per.mean(-1), reduction)


def _poly_cross_entropy(x: Any, t: Any, reduction: str, epsilon: float = 2.0) -> Any:
    # optax.losses.poly_loss_cross_entropy, transcribed (softmax_cross_entropy plus
    # epsilon * sum(labels * (1 - softmax))).
    torch = _torch()
    ce = -(t * torch.log_softmax(x, -1)).sum(-1)
    return _reduce(ce + epsilon * (t * (1 - torch.softmax(x, -1))).sum(-1), reduction)


# Keras transcriptions (keras/src/losses/losses.py and backend nn.py, from_logits=False): the
# prediction is renormalised along the class axis and clipped to [eps, 1 - eps] before the log.


def _keras_probs(p: Any, eps: float) -> Any:
    return _torch().clamp(p / p.sum(-1, keepdim=True), eps, 1.0 - eps)


def _keras_smooth(t: Any, label_smoothing: float) -> Any:
    return t * (1.0 - label_smoothing) + label_smoothing / t.shape[-1]


def _categorical_crossentropy(
    p: Any, t: Any, reduction: str, label_smoothing: float = 0.0, eps: float = 1e-7
) -> Any:
    t = _keras_smooth(t, label_smoothing)
    return _reduce(-(t * _torch().log(_keras_probs(p, eps))).sum(-1), reduction)


def _sparse_categorical_crossentropy(p: Any, y: Any, reduction: str, eps: float = 1e-7) -> Any:
    lp = _torch().log(_keras_probs(p, eps))
    return _reduce(-lp.gather(-1, y[..., None])[..., 0], reduction)


def _kl_divergence(p: Any, t: Any, reduction: str, eps: float = 1e-7) -> Any:
    torch = _torch()
    t, p = torch.clamp(t, eps, 1.0), torch.clamp(p, eps, 1.0)
    return _reduce((t * torch.log(t / p)).sum(-1), reduction)


def _binary_focal_crossentropy(
    p: Any,
    t: Any,
    reduction: str,
    gamma: float = 2.0,
    alpha: float = 0.25,
    apply_class_balancing: int = 0,
    label_smoothing: float = 0.0,
    eps: float = 1e-7,
) -> Any:
    torch = _torch()
    t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    q = torch.clamp(p, eps, 1.0 - eps)
    bce = -(t * torch.log(q) + (1.0 - t) * torch.log(1.0 - q))
    focal = (1.0 - (t * p + (1 - t) * (1 - p))) ** gamma * bce
    if apply_class_balancing:
        focal = (t * alpha + (1 - t) * (1 - alpha)) * focal
    return _reduce(focal, reduction)


def _categorical_focal_crossentropy(
    p: Any,
    t: Any,
    reduction: str,
    alpha: float = 0.25,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
    eps: float = 1e-7,
) -> Any:
    t = _keras_smooth(t, label_smoothing)
    q = _keras_probs(p, eps)
    return _reduce((alpha * (1.0 - q) ** gamma * -t * _torch().log(q)).sum(-1), reduction)


# -- references: margin and embedding ----------------------------------------------------------


def _hinge(p: Any, t: Any, reduction: str) -> Any:
    # keras.losses.hinge: maximum(1 - t p, 0); a tie sends the gradient to 1 - t p (clamp).
    return _reduce(_torch().clamp(1 - t * p, min=0), reduction)


def _squared_hinge(p: Any, t: Any, reduction: str) -> Any:
    return _reduce(_torch().clamp(1 - t * p, min=0) ** 2, reduction)


def _categorical_hinge(p: Any, t: Any, reduction: str) -> Any:
    # keras.losses.categorical_hinge; amax shares a tie's gradient evenly, like tf.reduce_max.
    torch = _torch()
    pos = (t * p).sum(-1)
    neg = ((1 - t) * p).amax(-1)
    return _reduce(torch.clamp(neg - pos + 1, min=0), reduction)


def _multi_margin(
    x: Any, y: Any, reduction: str, p: int = 1, margin: float = 1.0, weight: Any = None
) -> Any:
    w = _class_weight(weight, x)
    return _F().multi_margin_loss(x, y, p=p, margin=margin, weight=w, reduction=reduction)


def _multiclass_hinge(s: Any, t: Any, reduction: str) -> Any:
    # optax.losses.multiclass_hinge_loss with its one_hot(labels) given: max(s + 1 - onehot)
    # - dot(s, onehot). amax shares a tie's gradient evenly, as jnp.max does.
    return _reduce((s + 1.0 - t).amax(-1) - (s * t).sum(-1), reduction)


def _soft_margin(p: Any, t: Any, reduction: str) -> Any:
    return _F().soft_margin_loss(p, t.to(p.dtype), reduction=reduction)


def _margin_ranking(a: Any, b: Any, t: Any, reduction: str, margin: float = 0.0) -> Any:
    return _F().margin_ranking_loss(a, b, t.to(a.dtype), margin=margin, reduction=reduction)


def _hinge_embedding(p: Any, t: Any, reduction: str, margin: float = 1.0) -> Any:
    return _F().hinge_embedding_loss(p, t.to(p.dtype), margin=margin, reduction=reduction)


def _cosine_embedding(a: Any, b: Any, t: Any, reduction: str, margin: float = 0.0) -> Any:
    return _F().cosine_embedding_loss(a, b, t.to(a.dtype), margin=margin, reduction=reduction)


def _cosine_similarity(p: Any, t: Any, reduction: str, eps: float = 1e-12) -> Any:
    # keras.losses.cosine_similarity with tf.math.l2_normalize: x * rsqrt(max(sum x^2, eps)).
    torch = _torch()

    def unit(v: Any) -> Any:
        return v * torch.rsqrt(torch.clamp((v * v).sum(-1, keepdim=True), min=eps))

    return _reduce(-(unit(p) * unit(t)).sum(-1), reduction)


def _pairwise_distance(a: Any, b: Any, reduction: str, p: float = 2.0, eps: float = 1e-6) -> Any:
    return _reduce(_F().pairwise_distance(a, b, p=p, eps=eps), reduction)


def _triplet_margin(
    a: Any,
    pos: Any,
    neg: Any,
    reduction: str,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: int = 0,
) -> Any:
    return _F().triplet_margin_loss(
        a, pos, neg, margin=margin, p=p, eps=eps, swap=bool(swap), reduction=reduction
    )


def _cosine_distance(p: Any, t: Any, reduction: str, epsilon: float = 0.0) -> Any:
    # optax.losses.cosine_distance: 1 - sum(a / sqrt(clip(|a|^2, eps)) * b / ...), transcribed.
    torch = _torch()
    a = p / torch.sqrt(torch.clamp((p * p).sum(-1, keepdim=True), min=epsilon))
    b = t / torch.sqrt(torch.clamp((t * t).sum(-1, keepdim=True), min=epsilon))
    return _reduce(1.0 - (a * b).sum(-1), reduction)


def _triplet_margin_optax(
    a: Any,
    pos: Any,
    neg: Any,
    reduction: str,
    margin: float = 1.0,
    norm_degree: float = 2.0,
    eps: float = 1e-6,
) -> Any:
    # optax.losses.triplet_margin_loss, transcribed: (sum (a - b)^q + eps)^(1 / q).
    torch = _torch()
    dp = (((a - pos) ** norm_degree).sum(-1) + eps) ** (1.0 / norm_degree)
    dn = (((a - neg) ** norm_degree).sum(-1) + eps) ** (1.0 / norm_degree)
    return _reduce(torch.clamp(dp - dn + margin, min=0.0), reduction)


# -- references: segmentation and detection ----------------------------------------------------


def _dice(p: Any, t: Any, reduction: str, smooth: float = 1.0, eps: float = 0.0) -> Any:
    # With smooth = 0, eps = 1e-7: keras.losses.Dice(axis=None), 1 - 2I / (T + P + epsilon).
    value = 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth + eps)
    return _batch_value(value, p.shape[0], reduction)


def _tversky(
    p: Any,
    t: Any,
    reduction: str,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    eps: float = 0.0,
) -> Any:
    # segmentation_models_pytorch TverskyLoss (one channel), transcribed; with smooth = 0 and
    # eps = 1e-7, keras.losses.Tversky(axis=None).
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    value = 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + eps)
    return _batch_value(value, p.shape[0], reduction)


def _jaccard(p: Any, t: Any, reduction: str, smooth: float = 1.0) -> Any:
    inter = (p * t).sum()
    value = 1 - (inter + smooth) / (p.sum() + t.sum() - inter + smooth)
    return _batch_value(value, p.shape[0], reduction)


def _optax_dice(
    x: Any,
    t: Any,
    reduction: str,
    smooth: float = 1.0,
    alpha: float = 0.5,
    beta: float = 0.5,
    class_weights: Any = None,
    sum_classes: int = 0,
    ignore_background: int = 0,
    apply_softmax: int = 1,
    weights: Any = None,
) -> Any:
    # optax.losses.dice_loss of one image (the batch is its pixels), transcribed; `weights`
    # replaces class_weights (multiclass_generalized_dice_loss passes its own).
    torch = _torch()
    c = x.shape[-1]
    p = x if not apply_softmax else torch.sigmoid(x) if c == 1 else torch.softmax(x, -1)
    inter, total_p, total_t = (p * t).sum(0), p.sum(0), t.sum(0)
    d = 1 - (inter + smooth) / (
        inter + alpha * (total_p - inter) + beta * (total_t - inter) + smooth
    )
    w = weights if weights is not None else _class_weight(class_weights, x)
    d = d if w is None else d * w
    d = d[1:] if ignore_background and c > 1 else d
    return _batch_value(d.sum() if sum_classes else d.mean(), x.shape[0], reduction)


def _optax_binary_dice(x: Any, t: Any, reduction: str, smooth: float = 1.0) -> Any:
    # optax.losses.binary_dice_loss of one image: dice_loss with one sigmoid channel.
    return _optax_dice(x[:, None], t[:, None], reduction, smooth=smooth)


def _optax_generalized_dice(
    x: Any,
    t: Any,
    reduction: str,
    smooth: float = 1.0,
    ignore_background: int = 0,
    apply_softmax: int = 1,
) -> Any:
    # optax.losses.multiclass_generalized_dice_loss of one image, transcribed: weights from
    # the inverse squared class frequencies, normalised to sum to C.
    v = 1.0 / (t.sum(0) ** 2 + 1e-7)
    w = v / v.sum() * x.shape[-1]
    return _optax_dice(x, t, reduction, smooth=smooth, ignore_background=ignore_background,
                       apply_softmax=apply_softmax, weights=w)  # fmt: skip


def _box_iou(b1: Any, b2: Any, reduction: str, generalized: int = 1, eps: float = 1e-7) -> Any:
    # torchvision.ops.generalized_box_iou_loss and its _loss_inter_union, transcribed
    # (boolean-mask assignment written as where: the same values and gradients).
    torch = _torch()
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    xk1, yk1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xk2, yk2 = torch.min(x2, x2g), torch.min(y2, y2g)
    mask = (yk2 > yk1) & (xk2 > xk1)
    inter = torch.where(mask, (xk2 - xk1) * (yk2 - yk1), torch.zeros_like(x1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    if not generalized:
        return _reduce(1 - iou, reduction)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return _reduce(1 - (iou - (area_c - union) / (area_c + eps)), reduction)


# -- references: generative --------------------------------------------------------------------


def _wasserstein(real: Any, fake: Any, reduction: str) -> Any:
    return _reduce(fake - real, reduction)


def _wasserstein_generator(fake: Any, reduction: str) -> Any:
    return _reduce(-fake, reduction)


def _gan_generator(fake: Any, reduction: str) -> Any:
    torch = _torch()
    return _F().binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction=reduction)


def _gan_discriminator(real: Any, fake: Any, reduction: str) -> Any:
    torch, F = _torch(), _F()
    r = F.binary_cross_entropy_with_logits(real, torch.ones_like(real), reduction="none")
    f = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none")
    return _reduce(r + f, reduction)


# -- input cases -------------------------------------------------------------------------------


def _positive_pair(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = rng.uniform(0.0, 3.0, N), rng.uniform(0.0, 3.0, N)
    return {
        "typical": (p, t),
        "zero_residual": (t.copy(), t),
        "zeros_and_eps": (np.array([0.0, 1e-7, -0.5, 2.0]), np.array([0.0, 0.3, 1e-7, 0.0])),
        "batch_of_one": (p[:1], t[:1]),
    }


def _huber_pair(rng: np.random.Generator) -> dict[str, Inputs]:
    cases = _pair(rng)
    # Residuals exactly at +-0.5 and +-1 (the kinks of the option grid) and 0.
    t = np.array([0.25, -1.0, 2.0, 0.0, 3.5])
    cases["kinks"] = (t + np.array([1.0, -0.5, 0.5, -1.0, 0.0]), t)
    return cases


def _counts(rng: np.random.Generator) -> dict[str, Inputs]:
    p = rng.uniform(0.1, 3.0, N)
    t = rng.integers(0, 6, N).astype(np.float64)
    return {
        "typical": (p, t),
        "target_0_1_2": (np.array([0.5, 1.5, 2.0, 0.0]), np.array([0.0, 1.0, 2.0, 1.0])),
        "batch_of_one": (p[:1], t[:1]),
    }


def _positive_targets(rng: np.random.Generator) -> dict[str, Inputs]:
    """Log-link scores against positive targets (Gamma)."""
    p, t = _normal(rng, N), rng.uniform(0.05, 4.0, N)
    return {"typical": (p, t), "large_score": (10.0 * p, t), "batch_of_one": (p[:1], t[:1])}


def _tweedie_targets(rng: np.random.Generator) -> dict[str, Inputs]:
    """Log-link scores against non-negative targets with exact zeros (Tweedie)."""
    p = _normal(rng, N)
    t = np.where(rng.uniform(size=N) < 0.3, 0.0, rng.uniform(0.1, 4.0, N))
    return {"typical": (p, t), "all_zero": (p, np.zeros(N)), "batch_of_one": (p[:1], t[:1])}


def _gaussian(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = _normal(rng, N), _normal(rng, N)
    var = rng.uniform(0.1, 2.0, N)
    return {
        "typical": (p, t, var),
        "var_below_eps": (p[:4], t[:4], np.array([0.0, 1e-7, 1e-6, 0.5])),
        "zero_residual": (t.copy(), t, var),
    }


def _kl(rng: np.random.Generator, c: int = 5) -> dict[str, Inputs]:
    lp, q = _log_probs(rng, 4, c), _simplex(rng, 4, c)
    q0 = q.copy()
    q0[:, 0] = 0.0  # zero target probabilities: xlogy(0, 0) = 0
    return {"typical": (lp, q), "zero_target": (lp, q0), "batch_of_one": (lp[:1], q[:1])}


def _kl_flat(rng: np.random.Generator) -> dict[str, Inputs]:
    return {k: (v[0].reshape(-1), v[1].reshape(-1)) for k, v in _kl(rng).items()}


def _probs(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = _prob(rng, N), rng.integers(0, 2, N).astype(np.float64)
    return {
        "typical": (p, t),
        "soft_targets": (p, _prob(rng, N)),
        "exact_0_and_1": (
            np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1e-50]),
            np.array([0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 1.0]),
        ),
        "batch_of_one": (p[:1], t[:1]),
    }


def _logits(rng: np.random.Generator) -> dict[str, Inputs]:
    x, t = _normal(rng, N, scale=2.0), rng.integers(0, 2, N).astype(np.float64)
    return {
        "typical": (x, t),
        "soft_targets": (x, _prob(rng, N)),
        "extreme": (
            np.array([1e4, -1e4, 1e4, -1e4, 40.0, -40.0]),
            np.array([1.0, 0, 0, 1, 0.3, 1]),
        ),
        "batch_of_one": (x[:1], t[:1]),
    }


def _focal_logits(rng: np.random.Generator) -> dict[str, Inputs]:
    # |x| <= 3: torchvision forms 1 - p_t by cancellation, exact enough only away from 0.
    x, t = rng.uniform(-3.0, 3.0, N), rng.integers(0, 2, N).astype(np.float64)
    return {"typical": (x, t), "soft_targets": (x, _prob(rng, N)), "batch_of_one": (x[:1], t[:1])}


def _dense_classes(rng: np.random.Generator) -> dict[str, Inputs]:
    x = _normal(rng, 5, 4, scale=2.0)
    big = np.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, 1e4]])
    return {
        "typical": (x, _simplex(rng, 5, 4)),
        "one_hot": (x, np.eye(4)[rng.integers(0, 4, 5)]),
        "extreme": (big, _simplex(rng, 2, 4)),
        "batch_of_one": (x[:1], _simplex(rng, 1, 4)),
        "c10000": (_normal(rng, 3, 10000, scale=3.0), _simplex(rng, 3, 10000)),
    }


def _labels(rng: np.random.Generator, log_probs: bool = False) -> dict[str, Inputs]:
    x = _normal(rng, 6, 4, scale=2.0)
    y = rng.integers(0, 4, 6)
    ignored = y.copy()
    ignored[[1, 4]] = -100
    big = np.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, 1e4], [0.0, 0.0, 0.0, 0.0]])
    wide = _normal(rng, 3, 10000, scale=3.0)
    cases = {
        "typical": (x, y),
        "ignored_rows": (x, ignored),
        "extreme": (big, np.array([1, 3, 2])),
        "batch_of_one": (x[:1], y[:1]),
        "c10000": (wide, rng.integers(0, 10000, 3)),
        "all_ignored": (x[:2], np.array([-100, -100])),
    }
    if not log_probs:
        return cases
    return {k: (v[0] - _logsumexp(v[0]), v[1]) for k, v in cases.items()}


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))


def _labels_ls(rng: np.random.Generator) -> dict[str, Inputs]:
    return _labels(rng, log_probs=True)


def _small_labels(rng: np.random.Generator) -> dict[str, Inputs]:
    # Moderate logits only: torch's 1 - p_t cancels as p_t -> 1 (compare extremes in stability).
    x, y = _normal(rng, 6, 4), rng.integers(0, 4, 6)
    return {"typical": (x, y), "batch_of_one": (x[:1], y[:1]), "c10000": (
        _normal(rng, 2, 10000), rng.integers(0, 10000, 2))}  # fmt: skip


def _signed(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = _normal(rng, N, scale=2.0), _pm1(rng, N).astype(np.float64)
    return {
        "typical": (p, t),
        "kinks": (np.array([1.0, -1.0, 0.5, -0.5]), np.array([1.0, -1.0, 2.0, -2.0])),
        "batch_of_one": (p[:1], t[:1]),
    }


def _categorical(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = _normal(rng, 5, 4), np.eye(4)[rng.integers(0, 4, 5)]
    ties = np.array([[0.5, 0.5, 0.2, 0.5], [2.0, 0.0, 1.0, 2.0]])
    return {"typical": (p, t), "ties": (ties, np.eye(4)[[2, 1]]), "batch_of_one": (p[:1], t[:1])}


def _margins(rng: np.random.Generator) -> dict[str, Inputs]:
    x, y = _normal(rng, 6, 4), rng.integers(0, 4, 6)
    # Row 0: x_0 - x_1 + 1 = 0 exactly (a kink for margin 1).
    kinks = np.array([[0.0, 1.0, 0.5, -2.0], [3.0, 3.0, 3.0, 3.0]])
    return {"typical": (x, y), "kinks": (kinks, np.array([1, 0])), "batch_of_one": (x[:1], y[:1])}


def _ranking(rng: np.random.Generator) -> dict[str, Inputs]:
    a, b, t = _normal(rng, N), _normal(rng, N), _pm1(rng, N).astype(np.float64)
    return {
        "typical": (a, b, t),
        "ties": (np.array([1.0, 2.0, 0.5]), np.array([1.0, 2.0, 0.5]), np.array([1.0, -1.0, 1.0])),
        "batch_of_one": (a[:1], b[:1], t[:1]),
    }


def _distances(rng: np.random.Generator) -> dict[str, Inputs]:
    d, t = rng.uniform(0.0, 2.0, N), _pm1(rng, N)
    return {
        "typical": (d, t),
        "at_margin": (np.array([1.0, 0.0, 1.0, 0.5]), np.array([-1, -1, 1, -1])),
        "batch_of_one": (d[:1], t[:1]),
    }


def _vector_pairs(rng: np.random.Generator, d: int = 5) -> dict[str, Inputs]:
    a, b = _normal(rng, 4, d), _normal(rng, 4, d)
    zero = np.zeros((2, d))
    return {"typical": (a, b), "zero_vectors": (zero, np.vstack([b[:1], zero[:1]])),
            "batch_of_one": (a[:1], b[:1])}  # fmt: skip


def _cosine_pairs(rng: np.random.Generator) -> dict[str, Inputs]:
    cases = _vector_pairs(rng)
    targets = {"typical": np.array([1, -1, 1, -1]), "zero_vectors": np.array([1, -1]),
               "batch_of_one": np.array([-1])}  # fmt: skip
    return {k: (*v, targets[k]) for k, v in cases.items()}


def _triplets(rng: np.random.Generator, d: int = 5) -> dict[str, Inputs]:
    a, p, n = _normal(rng, 4, d), _normal(rng, 4, d), _normal(rng, 4, d)
    return {"typical": (a, p, n), "batch_of_one": (a[:1], p[:1], n[:1])}


def _masks(rng: np.random.Generator) -> dict[str, Inputs]:
    p, t = _prob(rng, N), rng.integers(0, 2, N).astype(np.float64)
    return {
        "typical": (p, t),
        "empty_target": (p, np.zeros(N)),
        "exact_0_and_1": (np.array([0.0, 1.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0])),
        "batch_of_one": (p[:1], t[:1]),
    }


def _weighted_pairs(rng: np.random.Generator) -> dict[str, Inputs]:
    cases = _huber_pair(rng)
    w = rng.uniform(0.0, 2.0, 7)
    out = {k: (p, t, w[: p.shape[0]].copy()) for k, (p, t) in cases.items()}
    zero = out["typical"][2].copy()
    zero[[0, 3]] = 0.0
    out["zero_weights"] = (*out["typical"][:2], zero)
    return out


def _multilabel(rng: np.random.Generator) -> dict[str, Inputs]:
    x = _normal(rng, 5, 4, scale=2.0)
    t = rng.integers(0, 2, (5, 4)).astype(np.float64)
    big = np.array([[1e4, -1e4, 40.0, -40.0], [0.0, 3.0, -3.0, 1e3]])
    return {"typical": (x, t), "soft_targets": (x, _prob(rng, 5, 4)),
            "extreme": (big, np.array([[1.0, 0, 0, 1], [1, 0.5, 0, 0]])),
            "batch_of_one": (x[:1], t[:1])}  # fmt: skip


def _one_hot_scores(rng: np.random.Generator) -> dict[str, Inputs]:
    s, t = _normal(rng, 6, 4), np.eye(4)[rng.integers(0, 4, 6)]
    # Row 0: the true class wins by exactly the margin; row 1: a tie between two others.
    kinks = np.array([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 3.0, 1.0]])
    return {"typical": (s, t), "kinks": (kinks, np.eye(4)[[0, 0]]),
            "batch_of_one": (s[:1], t[:1])}  # fmt: skip


def _soft_classes(rng: np.random.Generator) -> dict[str, Inputs]:
    x = _normal(rng, 5, 4, scale=2.0)
    return {"typical": (x, _simplex(rng, 5, 4)), "one_hot": (x, np.eye(4)[rng.integers(0, 4, 5)]),
            "batch_of_one": (x[:1], _simplex(rng, 1, 4))}  # fmt: skip


def _probability_rows(rng: np.random.Generator) -> dict[str, Inputs]:
    """Keras probability inputs: softmax-like rows (some not normalised), exact 0 and 1."""
    p, t = _simplex(rng, 5, 4), _simplex(rng, 5, 4)
    edge = np.array([[1.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.1, 0.9]])  # one-hot; sums to 1.5
    return {"typical": (p, t), "one_hot": (p, np.eye(4)[rng.integers(0, 4, 5)]),
            "edges": (edge, np.array([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])),
            "batch_of_one": (p[:1], t[:1])}  # fmt: skip


def _probability_labels(rng: np.random.Generator) -> dict[str, Inputs]:
    cases = _probability_rows(rng)
    return {k: (p, np.argmax(t, -1) if k != "edges" else np.array([0, 3]))
            for k, (p, t) in cases.items()}  # fmt: skip


def _pixels(rng: np.random.Generator) -> dict[str, Inputs]:
    """One image's pixels: logits and one-hot targets; one case lacks class 2."""
    x, labels = _normal(rng, 8, 4, scale=2.0), rng.integers(0, 4, 8)
    absent = np.where(labels == 2, 0, labels)
    return {"typical": (x, np.eye(4)[labels]), "absent_class": (x, np.eye(4)[absent]),
            "batch_of_one": (x[:1], np.eye(4)[labels[:1]])}  # fmt: skip


def _binary_pixels(rng: np.random.Generator) -> dict[str, Inputs]:
    x = _normal(rng, N, scale=2.0)
    return {"typical": (x, rng.integers(0, 2, N).astype(np.float64)),
            "soft_targets": (x, _prob(rng, N)), "batch_of_one": (x[:1], np.ones(1))}  # fmt: skip


def _box_pairs(rng: np.random.Generator) -> dict[str, Inputs]:
    b1, b2 = _boxes(rng, 5), _boxes(rng, 5)
    same = b1[:2].copy()
    disjoint = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    apart = np.array([[2.0, 2.0, 3.0, 4.0], [1.0, 0.0, 2.0, 1.0]])  # second one touches
    return {"typical": (b1, b2), "identical": (same, same.copy()), "disjoint": (disjoint, apart),
            "batch_of_one": (b1[:1], b2[:1])}  # fmt: skip


def _scores(rng: np.random.Generator) -> dict[str, Inputs]:
    a, b = _normal(rng, N, scale=3.0), _normal(rng, N, scale=3.0)
    return {"typical": (a, b), "extreme": (np.array([1e4, -1e4]), np.array([-1e4, 1e4])),
            "batch_of_one": (a[:1], b[:1])}  # fmt: skip


def _one_score(rng: np.random.Generator) -> dict[str, Inputs]:
    return {k: v[1:] for k, v in _scores(rng).items()}


def _drop(cases: dict[str, Inputs], name: str) -> dict[str, Inputs]:
    return {k: v for k, v in cases.items() if k != name}


# -- the table ---------------------------------------------------------------------------------

_W4 = np.array([0.5, 2.0, 1.0, 0.0])  # class weights, one class switched off
# Class weights have 4 entries (not 10000); labels of -100 are out of range once
# ignore_index = 2 (torch raises there too).
_skip_wide_and_ignored = frozenset(
    {(2, "c10000"), (3, "c10000"), (4, "ignored_rows"), (4, "all_ignored")}
)

ORACLES: tuple[Oracle, ...] = (
    Oracle("mse", "torch.nn.functional.mse_loss", _mse, _pair),
    Oracle("mae", "torch.nn.functional.l1_loss", _l1, _pair),
    Oracle("l1", "torch.nn.functional.l1_loss", _l1, _pair),
    Oracle(
        "huber",
        "torch.nn.functional.huber_loss",
        _huber,
        _huber_pair,
        ({}, {"delta": 0.5}, {"delta": 2.0}),
    ),
    Oracle(
        "smooth_l1",
        "torch.nn.functional.smooth_l1_loss",
        _smooth_l1,
        _huber_pair,
        ({}, {"beta": 0.5}, {"beta": 0.0}),
    ),
    Oracle(
        "rmse",
        "torch.sqrt(mse_loss)",
        _rmse,
        lambda rng: {k: v for k, v in _pair(rng).items() if k != "zero_residual"},
    ),
    Oracle("log_cosh", "keras.losses.log_cosh", _log_cosh, _pair),
    Oracle("quantile", "tfa.losses.PinballLoss", _quantile, _pair, ({}, {"q": 0.1}, {"q": 0.9})),
    Oracle("msle", "keras.losses.mean_squared_logarithmic_error", _msle, _positive_pair),
    Oracle(
        "pseudo_huber",
        "xgboost reg:pseudohubererror",
        _pseudo_huber,
        _huber_pair,
        ({}, {"delta": 0.5}, {"delta": 2.0}),
    ),
    Oracle("gamma_nll", "xgboost reg:gamma", _gamma_nll, _positive_targets),
    Oracle(
        "tweedie_nll",
        "xgboost reg:tweedie",
        _tweedie_nll,
        _tweedie_targets,
        ({}, {"variance_power": 1.2}, {"variance_power": 1.8}),
    ),
    Oracle("fair", "lightgbm fair", _fair, _huber_pair, ({}, {"c": 0.5})),
    Oracle("squared_log_error", "xgboost reg:squaredlogerror", _squared_log_error, _positive_pair),
    Oracle("mape", "keras.losses.mean_absolute_percentage_error", _mape, _positive_pair),
    Oracle(
        "poisson_nll",
        "torch.nn.functional.poisson_nll_loss",
        _poisson_nll,
        _counts,
        ({}, {"full": 1}, {"log_input": 0}, {"log_input": 0, "full": 1, "eps": 1e-4}),
    ),
    Oracle(
        "gaussian_nll",
        "torch.nn.functional.gaussian_nll_loss",
        _gaussian_nll,
        _gaussian,
        ({}, {"full": 1}, {"eps": 1e-3}),
    ),
    Oracle("kl_div", "torch.nn.functional.kl_div", _kl_div, _kl_flat, ({}, {"log_target": 1})),
    Oracle(
        "kl_div_batchmean",
        "torch.nn.functional.kl_div(reduction='batchmean')",
        _kl_div_batchmean,
        _kl,
        ({}, {"log_target": 1}),
    ),
    Oracle(
        "bce",
        "torch.nn.functional.binary_cross_entropy",
        _bce,
        _probs,
        ({}, {"label_smoothing": 0.1}),
    ),
    Oracle(
        "bce_with_logits",
        "torch.nn.functional.binary_cross_entropy_with_logits",
        _bce_with_logits,
        _logits,
        ({}, {"pos_weight": 2.5}, {"label_smoothing": 0.2, "pos_weight": 0.5}),
    ),
    Oracle(
        "cross_entropy",
        "torch.nn.functional.cross_entropy (probabilities)",
        _cross_entropy,
        _dense_classes,
        ({}, {"label_smoothing": 0.1}, {"weight": _W4, "label_smoothing": 0.05}),
        skip=frozenset({(2, "c10000")}),
    ),
    Oracle(
        "sparse_cross_entropy",
        "torch.nn.functional.cross_entropy (indices)",
        _sparse_cross_entropy,
        _labels,
        (
            {},
            {"label_smoothing": 0.1},
            {"weight": _W4 + 0.25, "label_smoothing": 0.2},
            {"weight": _W4},
            {"ignore_index": 2},
        ),
        skip=_skip_wide_and_ignored,
    ),
    Oracle(
        "liger_cross_entropy",
        "liger_kernel LigerCrossEntropyLoss (transcribed)",
        _liger_cross_entropy,
        _labels,
        (
            {},
            {"lse_square_scale": 1e-2},
            {"softcap": 3.0, "label_smoothing": 0.1, "lse_square_scale": 1e-3},
            {"softcap": 30.0, "ignore_index": 2},
        ),
        skip=frozenset({(3, "ignored_rows"), (3, "all_ignored")}),
    ),
    Oracle(
        "nll",
        "torch.nn.functional.nll_loss",
        _nll,
        _labels_ls,
        (
            {},
            {"label_smoothing": 0.1},
            {"weight": _W4 + 0.25, "label_smoothing": 0.2},
            {"weight": _W4},
            {"ignore_index": 2},
        ),
        skip=_skip_wide_and_ignored,
    ),
    Oracle(
        "sigmoid_focal",
        "torchvision.ops.sigmoid_focal_loss",
        _sigmoid_focal,
        _focal_logits,
        ({}, {"alpha": -1.0}, {"gamma": 0.0}, {"alpha": 0.5, "gamma": 1.5}),
    ),
    Oracle(
        "softmax_focal",
        "kornia.losses.focal_loss",
        _softmax_focal,
        _small_labels,
        ({}, {"alpha": 0.25, "gamma": 0.5}, {"gamma": 0.0}),
    ),
    Oracle(
        "poly1",
        "PolyLoss (Leng et al. 2022)",
        _poly1,
        _small_labels,
        ({}, {"epsilon": -1.0}, {"epsilon": 5.0}),
    ),
    Oracle("hinge", "keras.losses.hinge", _hinge, _signed),
    Oracle("squared_hinge", "keras.losses.squared_hinge", _squared_hinge, _signed),
    Oracle("categorical_hinge", "keras.losses.categorical_hinge", _categorical_hinge, _categorical),
    Oracle(
        "multi_margin",
        "torch.nn.functional.multi_margin_loss",
        _multi_margin,
        _margins,
        ({}, {"p": 2}, {"margin": 0.5, "weight": _W4 + 0.5}, {"p": 2, "weight": _W4}),
    ),
    Oracle("soft_margin", "torch.nn.functional.soft_margin_loss", _soft_margin, _signed),
    Oracle(
        "margin_ranking",
        "torch.nn.functional.margin_ranking_loss",
        _margin_ranking,
        _ranking,
        ({}, {"margin": 0.5}),
    ),
    Oracle(
        "hinge_embedding",
        "torch.nn.functional.hinge_embedding_loss",
        _hinge_embedding,
        _distances,
        ({}, {"margin": 0.5}),
    ),
    Oracle(
        "cosine_embedding",
        "torch.nn.functional.cosine_embedding_loss",
        _cosine_embedding,
        _cosine_pairs,
        ({}, {"margin": 0.3}, {"margin": -0.5}),
    ),
    Oracle(
        "cosine_similarity", "keras.losses.cosine_similarity", _cosine_similarity, _vector_pairs
    ),
    Oracle(
        "pairwise_distance",
        "torch.nn.functional.pairwise_distance",
        _pairwise_distance,
        _vector_pairs,
        ({}, {"p": 1.0}, {"p": 3.0, "eps": 0.0}),
        skip=frozenset({(2, "zero_vectors")}),
    ),
    Oracle(
        "triplet_margin",
        "torch.nn.functional.triplet_margin_loss",
        _triplet_margin,
        _triplets,
        ({}, {"swap": 1}, {"p": 1.0, "margin": 2.0}, {"p": 3.0, "swap": 1}),
    ),
    Oracle(
        "dice",
        "smp DiceLoss (one channel); keras.losses.Dice",
        _dice,
        _masks,
        ({}, {"smooth": 0.0}, {"smooth": 0.0, "eps": 1e-7}),
        skip=frozenset({(1, "empty_target")}),
    ),
    Oracle(
        "tversky",
        "smp TverskyLoss (one channel)",
        _tversky,
        _masks,
        (
            {},
            {"alpha": 0.3, "beta": 0.7},
            {"smooth": 0.0, "alpha": 1.0, "beta": 1.0},
            {"smooth": 0.0, "eps": 1e-7, "alpha": 0.3, "beta": 0.7},
        ),
        skip=frozenset({(2, "empty_target")}),
    ),
    Oracle("jaccard", "smp JaccardLoss (one channel)", _jaccard, _masks, ({}, {"smooth": 0.5})),
    Oracle(
        "dice_loss",
        "optax.losses.dice_loss (one image)",
        _optax_dice,
        _pixels,
        (
            {},
            {"alpha": 0.3, "beta": 0.7, "smooth": 0.0},
            {"class_weights": np.array([0.5, 2.0, 1.0, 0.25]), "ignore_background": 1},
            {"sum_classes": 1, "ignore_background": 1},
        ),
    ),
    Oracle(
        "binary_dice_loss",
        "optax.losses.binary_dice_loss (one image)",
        _optax_binary_dice,
        _binary_pixels,
        ({}, {"smooth": 0.0}),
    ),
    Oracle(
        "multiclass_generalized_dice_loss",
        "optax.losses.multiclass_generalized_dice_loss (one image)",
        _optax_generalized_dice,
        _pixels,
        ({}, {"smooth": 0.0, "ignore_background": 1}),
    ),
    Oracle(
        "box_iou",
        "torchvision.ops.generalized_box_iou_loss",
        _box_iou,
        _box_pairs,
        ({}, {"generalized": 0}, {"eps": 0.0}),
        skip=frozenset({(2, "disjoint")}),
    ),
    Oracle(
        "weighted_huber",
        "torch.nn.functional.huber_loss(weight=)",
        _weighted_huber,
        _weighted_pairs,
        ({}, {"delta": 0.5}),
    ),
    Oracle(
        "multilabel_soft_margin",
        "torch.nn.functional.multilabel_soft_margin_loss / bce_with_logits(pos_weight=vector)",
        _multilabel_soft_margin,
        _multilabel,
        (
            {},
            {"weight": _W4 + 0.5},
            {"pos_weight": np.array([0.5, 1.0, 3.0, 2.0])},
            {"pos_weight": np.array([2.0, 0.25, 1.0, 4.0]), "weight": _W4},
        ),
    ),
    Oracle(
        "poly_cross_entropy",
        "optax.losses.poly_loss_cross_entropy",
        _poly_cross_entropy,
        _soft_classes,
        ({}, {"epsilon": -1.0}, {"epsilon": 0.0}),
    ),
    Oracle(
        "multiclass_hinge",
        "optax.losses.multiclass_hinge_loss",
        _multiclass_hinge,
        _one_hot_scores,
    ),
    Oracle(
        "cosine_distance",
        "optax.losses.cosine_distance",
        _cosine_distance,
        _vector_pairs,
        ({}, {"epsilon": 1e-12}, {"epsilon": 0.5}),
        skip=frozenset({(0, "zero_vectors")}),
    ),
    Oracle(
        "triplet_margin_optax",
        "optax.losses.triplet_margin_loss",
        _triplet_margin_optax,
        _triplets,
        (
            {},
            {"margin": 2.0, "eps": 0.0},
            {"norm_degree": 4.0},
            {"norm_degree": 4.0, "eps": 1e-3, "margin": 0.2},
        ),
    ),
    Oracle(
        "categorical_crossentropy",
        "keras.losses.CategoricalCrossentropy(from_logits=False)",
        _categorical_crossentropy,
        _probability_rows,
        ({}, {"label_smoothing": 0.1}, {"eps": 1e-3}),
    ),
    Oracle(
        "sparse_categorical_crossentropy",
        "keras.losses.SparseCategoricalCrossentropy(from_logits=False)",
        _sparse_categorical_crossentropy,
        _probability_labels,
        ({}, {"eps": 1e-3}),
    ),
    Oracle(
        "kl_divergence",
        "keras.losses.KLDivergence",
        _kl_divergence,
        _probability_rows,
        ({}, {"eps": 1e-3}),
    ),
    Oracle(
        "binary_focal_crossentropy",
        "keras.losses.BinaryFocalCrossentropy",
        _binary_focal_crossentropy,
        _probs,
        (
            {},
            {"apply_class_balancing": 1, "alpha": 0.4},
            {"gamma": 0.0, "label_smoothing": 0.1},
            {"gamma": 1.5, "eps": 1e-3, "apply_class_balancing": 1},
        ),
    ),
    Oracle(
        "categorical_focal_crossentropy",
        "keras.losses.CategoricalFocalCrossentropy",
        _categorical_focal_crossentropy,
        _probability_rows,
        ({}, {"alpha": 1.0, "gamma": 0.0}, {"label_smoothing": 0.1, "gamma": 1.5}),
    ),
    Oracle("wasserstein", "WGAN critic (Arjovsky et al. 2017)", _wasserstein, _scores),
    Oracle("wasserstein_generator", "WGAN generator", _wasserstein_generator, _one_score),
    Oracle(
        "gan_generator", "binary_cross_entropy_with_logits(fake, 1)", _gan_generator, _one_score
    ),
    Oracle(
        "gan_discriminator",
        "bce_with_logits(real, 1) + bce_with_logits(fake, 0)",
        _gan_discriminator,
        _scores,
    ),
)

BY_SPEC: dict[str, Oracle] = {o.spec: o for o in ORACLES}

# torch's per-element `weight=` of the BCE losses is lossdsl's sample_weight; torch's mean
# divides by the element count, the weighted mean by the weight sum, so only sum/none agree.
WEIGHTED: tuple[Oracle, ...] = (
    # A batch of one gets weight 0: torch's mean is 0 / 0 there, lossdsl drops the sample.
    Oracle("mse", "mse_loss(weight=)", _mse, lambda rng: _drop(_pair(rng), "batch_of_one")),
    Oracle("l1", "l1_loss(weight=)", _l1, lambda rng: _drop(_pair(rng), "batch_of_one")),
    Oracle(
        "bce",
        "binary_cross_entropy(weight=)",
        _bce,
        _probs,
        ({}, {"label_smoothing": 0.1}),
        ("sum", "none"),
    ),
    Oracle(
        "bce_with_logits",
        "binary_cross_entropy_with_logits(weight=)",
        _bce_with_logits,
        _logits,
        ({}, {"pos_weight": 3.0}),
        ("sum", "none"),
    ),
)
