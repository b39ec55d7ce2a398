"""The best constant prediction of a loss on a skewed sample, and what statistic it is.

Regression losses are minimised over a constant on an exponential sample (mean 1, median
log 2: skewed, so mean, median and quantiles differ); binary losses on labels with a base rate
of 0.3; class losses on labels with frequencies (0.5, 0.3, 0.2). The minimiser is found by a
grid search refined twice (one-dimensional views) or by gradient descent on the constant
logits (class views), then named: the mean, the median, a q-quantile, the logit of the base
rate, the class frequencies, or a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lossdsl
from lossdsl.research.slices import CLASSES, Slice, inputs_for

_SAMPLES = 1001  # odd: the median is one sample
_BASE_RATE = 0.3
_FREQUENCIES = np.array([0.5, 0.3, 0.2])


def optimal_constant(loss: lossdsl.Loss, view: Slice) -> str:
    """The constant minimising the mean loss, named when it is a known statistic."""
    if len(loss.wrt) > 1 or len(loss.input_info) < 2:
        return "n/a"  # no (prediction, target) pair: a GAN or ranking objective
    rng = np.random.default_rng(0)
    params = dict(view.params)
    if view.kind == "residual":
        t = rng.exponential(size=_SAMPLES)
        c = _minimise(loss, t, float(t.min()), float(t.max()), params)
        return _name_statistic(c, t)
    if view.kind in ("logit", "probability", "margin"):
        y = (rng.random(_SAMPLES) < _BASE_RATE).astype(float)
        labels = 2 * y - 1 if view.kind == "margin" else y
        low, high = (1e-6, 1 - 1e-6) if view.kind == "probability" else (-10.0, 10.0)
        c = _minimise(loss, labels, low, high, params)
        rate = float(y.mean())
        if view.kind == "probability" and abs(c - rate) < 1e-4:
            return f"the base rate ({rate:.3g})"
        if view.kind != "probability" and abs(c - np.log(rate / (1 - rate))) < 1e-3:
            return f"logit of the base rate ({c:.4g})"
        return f"{c:.4g} (base rate {rate:.3g})"
    if view.kind == "class_logit":
        return _class_optimum(loss, rng, params)
    return "n/a"


def _mean_losses(
    loss: lossdsl.Loss, c: np.ndarray, t: np.ndarray, params: dict[str, float]
) -> np.ndarray:
    pred = np.repeat(c[:, None], t.size, axis=1)
    target = np.broadcast_to(t, pred.shape)
    with np.errstate(all="ignore"):
        values = loss(*inputs_for(loss, pred, target), reduction="none", **params)
    means: np.ndarray = np.asarray(values).mean(axis=1)
    return means


def _minimise(
    loss: lossdsl.Loss, t: np.ndarray, low: float, high: float, params: dict[str, float]
) -> float:
    best = low
    for _ in range(3):
        c = np.linspace(low, high, 401)
        means = _mean_losses(loss, c, t, params)
        k = int(np.nanargmin(means))
        best = float(c[k])
        step = c[1] - c[0]
        low, high = max(best - 2 * step, c[0]), min(best + 2 * step, c[-1])
    return best


def _name_statistic(c: float, t: np.ndarray) -> str:
    tol = 1e-3 * float(t.std())
    mean, median = float(t.mean()), float(np.median(t))
    if abs(c - mean) < tol:
        return "the mean"
    if abs(c - median) < tol:
        return "the median"
    if mean > 0 and abs(c - np.log(mean)) < tol:
        return "log of the mean"
    q = round(float(np.mean(t <= c + tol)), 2)
    if 0 < q < 1 and abs(float(np.quantile(t, q, method="inverted_cdf")) - c) < tol:
        return f"the {q:g}-quantile"
    where = (
        " (between the median and the mean)" if min(mean, median) < c < max(mean, median) else ""
    )
    return f"{c:.4g}{where}"


def _class_optimum(loss: lossdsl.Loss, rng: np.random.Generator, params: dict[str, float]) -> str:
    labels = rng.choice(CLASSES, size=_SAMPLES, p=_FREQUENCIES)
    freq = np.bincount(labels, minlength=CLASSES) / labels.size
    target = labels.astype(float)
    if next(i for i in loss.input_info if not i.differentiated).encoding != "label":
        target = np.eye(CLASSES)[labels]
    c = np.zeros(CLASSES)
    for _ in range(500):
        pred = np.tile(c, (labels.size, 1))
        kw: dict[str, Any] = dict(params)
        grad = loss.grad(*inputs_for(loss, pred, target), reduction=None, **kw)
        c -= 2.0 * np.asarray(grad).sum(axis=0)
    p = np.exp(c - c.max())
    p /= p.sum()
    if np.max(np.abs(p - freq)) < 1e-3:
        return "logits of the class frequencies"
    return (
        "softmax = ("
        + ", ".join(f"{v:.3g}" for v in p)
        + f"); frequencies ({', '.join(f'{v:.3g}' for v in freq)})"
    )
