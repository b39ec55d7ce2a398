"""One-dimensional views of a loss: the variable its task is usually plotted and analysed against.

A `Slice` maps a grid of one variable (the residual, the margin, the logit, the probability,
the true-class logit) to full loss inputs, using each input's encoding from `Loss.input_info`,
and evaluates value, gradient and Hessian diagonal along it with the loss's own kernels
(`reduction="none"`: one grid point per sample). `analyze` and `plot` share these views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import lossdsl

# Classes used for the multiclass views; the true class is class 0.
CLASSES = 3
Build = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Slice:
    """A variable `x` along which the loss is viewed, and how to build inputs from it."""

    loss: lossdsl.Loss
    kind: str  # "residual", "margin", "logit", "probability", "class_logit", "log_probability"
    label: str
    low: float  # the natural plotting range of x
    high: float
    lowest: float  # the widest range the domain allows (for bounds of the gradient)
    highest: float
    build: Build
    params: tuple[tuple[str, float], ...] = ()

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-point value, derivative and second derivative along x."""
        kw: dict[str, Any] = dict(self.params)
        with np.errstate(all="ignore"):
            value, grad, hess = self.loss.value_grad_hess(*self.build(x), reduction="none", **kw)
        first = grad[0] if isinstance(grad, tuple) else grad
        second = hess[0] if isinstance(hess, tuple) else hess
        if first.ndim == 2:  # the true class's logit moves: its column is d/dx
            return value, first[:, 0], second[:, 0]
        return value, first, second

    def values(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out: np.ndarray = self.loss(*self.build(x), reduction="none", **dict(self.params))
        return out


def slice_of(loss: lossdsl.Loss, params: dict[str, float] | None = None) -> Slice:
    """The view that fits the loss's task and encodings.

    Raises:
        LossDSLError: a loss with no one-dimensional view (embeddings, boxes, batch totals).
    """
    info = loss.input_info
    first = next(i for i in info if i.differentiated)
    rest = [i for i in info if i is not first]
    target = rest[0].encoding if rest else None
    fixed = tuple(sorted((params or {}).items()))
    if first.axis is not None:
        if first.encoding in ("logits", "log_probability", "real") and target in (
            "label",
            "probability",
        ):
            return _class_slice(loss, first.encoding, fixed)
        raise _unsupported(loss, f"'{first.name}' varies along axis '{first.axis}'")
    if any(i.axis is not None for i in rest):
        raise _unsupported(loss, "an input varies along an axis")
    kind, label, ranges = _scalar_kind(first.encoding, target)
    fill = {"residual": 1.0, "log_probability": 0.5}.get(kind, 1.0)

    def build(x: np.ndarray) -> list[np.ndarray]:
        pred = x + 1.0 if kind == "residual" else x
        return inputs_for(loss, pred, np.full(x.shape, fill))

    return Slice(loss, kind, label, *ranges, build, fixed)


def inputs_for(loss: lossdsl.Loss, pred: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
    """Positional inputs: `pred` for the differentiated one, `target` for the next one (cast to
    int for int inputs), ones for any others (variances, scales)."""
    info = loss.input_info
    first = next(i for i in info if i.differentiated)
    second = next((i for i in info if i is not first), None)
    arrays: list[np.ndarray] = []
    for i in info:
        if i is first:
            arrays.append(pred)
        elif i is second:
            arrays.append(target.astype(np.int64) if i.kind == "int" else target)
        else:
            arrays.append(np.ones(target.shape))
    return arrays


def _scalar_kind(
    first: str, target: str | None
) -> tuple[str, str, tuple[float, float, float, float]]:
    if first in ("real", "nonnegative") and target in ("real", "nonnegative"):
        low = -1.0 if "nonnegative" in (first, target) else -3.0
        return "residual", "residual pred - target", (low, 3.0, low, 1e6)
    if target == "pm1":
        return "margin", "margin y * pred (y = +1)", (-3.0, 3.0, -1e6, 1e6)
    if first == "logits":
        return "logit", "logit (target 1)", (-6.0, 6.0, -1e4, 1e4)
    if first == "probability":
        return "probability", "predicted probability p (target 1)", (1e-3, 1 - 1e-3, 1e-12, 1.0)
    if first == "log_probability":
        return "log_probability", "log-probability (target 0.5)", (-6.0, 0.0, -1e4, 0.0)
    return "value", "pred", (-3.0, 3.0, -1e6, 1e6)


def _class_slice(loss: lossdsl.Loss, encoding: str, fixed: tuple[tuple[str, float], ...]) -> Slice:
    label_input = next(i for i in loss.input_info if not i.differentiated)

    def build(x: np.ndarray) -> list[np.ndarray]:
        rows = np.zeros((x.size, CLASSES))
        if encoding == "log_probability":  # the other classes share what the true one leaves
            rest = np.log(np.clip(-np.expm1(x), 1e-300, None) / (CLASSES - 1))
            rows[:, 1:] = rest[:, None]
        rows[:, 0] = x
        if label_input.encoding == "label":
            return [rows, np.zeros(x.size, np.int64)]
        onehot = np.zeros((x.size, CLASSES))
        onehot[:, 0] = 1.0
        return [rows, onehot]

    if encoding == "log_probability":
        return Slice(
            loss, "log_probability", "log-probability of the true class", -6.0, -1e-3, -700.0,
            -1e-12, build, fixed,
        )  # fmt: skip
    label = f"logit of the true class (others 0, C = {CLASSES})"
    return Slice(loss, "class_logit", label, -6.0, 6.0, -1e4, 1e4, build, fixed)


def _unsupported(loss: lossdsl.Loss, why: str) -> lossdsl.LossDSLError:
    return lossdsl.LossDSLError(
        f"loss '{loss.name}' has no one-dimensional view: {why}",
        hint="analyze and plot take losses of one prediction per sample, or logits per class",
    )


def is_decomposable(view: Slice) -> bool:
    """Whether each sample's loss depends on that sample only (no batch totals)."""
    x = np.linspace(view.low, view.high, 5)[1:4]
    together = view.values(x)
    alone = np.array([view.values(x[i : i + 1])[0] for i in range(x.size)])
    return bool(np.allclose(together, alone, rtol=1e-9, atol=1e-12, equal_nan=True))
