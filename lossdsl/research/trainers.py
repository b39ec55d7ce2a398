"""Small NumPy models trained with a loss's own gradient: linear / logistic / softmax regression
and a one-hidden-layer MLP, full-batch Adam, optional L1/L2 through `lossdsl.Penalized`.

The model outputs raw scores; `Link` turns them into what the loss expects, read from the
loss's metadata (`Loss.input_info`): logits pass through, probabilities get a sigmoid or
softmax, log-probabilities a log_softmax, ±1 targets are mapped from 0/1 labels, and the
gradient is chained back through the link. A `NAME@sigmoid` spelling forces a link (MSE on
probabilities). No metric or table here (`compare.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lossdsl
from lossdsl.research.datasets import Split

HIDDEN = 32


@dataclass(frozen=True)
class Link:
    """From raw model scores `z` to the loss's inputs, and the gradient back to `z`."""

    loss: lossdsl.Loss
    output: str  # "identity", "sigmoid", "softmax", "log_softmax"
    target: str  # the target input's encoding
    params: tuple[tuple[str, float], ...] = ()

    def inputs(self, z: np.ndarray, y: np.ndarray, classes: int) -> list[np.ndarray]:
        pred = _apply(self.output, z)
        if self.target == "pm1":
            t: np.ndarray = 2.0 * y - 1.0
        elif self.target in ("probability", "binary") and z.ndim == 2:
            t = np.eye(classes)[y]
        else:
            t = y.astype(np.int64) if self.target == "label" else y.astype(float)
        return [pred, t]

    def value_grad(
        self,
        z: np.ndarray,
        y: np.ndarray,
        classes: int,
        penalty: lossdsl.Penalized | None = None,
        theta: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """(objective, d/dz, d penalty/d theta): with a `Penalized` the objective adds the
        penalty of `theta` and its gradient comes back separately, as `Penalized` returns it."""
        pred, t = self.inputs(z, y, classes)
        kw: dict[str, Any] = dict(self.params)
        if penalty is not None:
            value, g, pg = penalty.value_and_grad(pred, t, theta=theta, reduction="mean", **kw)
            return float(value), _chain(self.output, pred, np.asarray(g)), np.asarray(pg)
        value, g = self.loss.value_and_grad(pred, t, reduction="mean", **kw)
        return float(value), _chain(self.output, pred, np.asarray(g)), None


def link_for(loss: lossdsl.Loss, task: str, force: str | None, params: dict[str, float]) -> Link:
    """The link a loss needs on a task's model scores.

    Raises:
        LossDSLError: the loss cannot take this task's scores (a per-sample loss on a multiclass
            task, a loss of several differentiated inputs).
    """
    info = loss.input_info
    if len(info) != 2 or not info[0].differentiated or len(loss.wrt) != 1:
        raise lossdsl.LossDSLError(
            f"loss '{loss.name}' is not a (prediction, target) loss", hint="compare trains those"
        )
    pred, target = info
    if (pred.axis is not None) != (task == "multiclass"):
        raise lossdsl.LossDSLError(
            f"loss '{loss.name}' ({loss.task}) does not fit a {task} model",
            hint=f"losses for {task}: {', '.join(lossdsl.available(task=task))}",
        )
    axis = pred.axis is not None
    output = force or {
        "probability": "softmax" if axis else "sigmoid",
        "log_probability": "log_softmax",
    }.get(pred.encoding, "identity")
    own = {p.name for p in loss.params}
    return Link(
        loss, output, target.encoding, tuple(sorted((k, v) for k, v in params.items() if k in own))
    )


def _apply(output: str, z: np.ndarray) -> np.ndarray:
    if output == "sigmoid":
        out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
        return out
    if output in ("softmax", "log_softmax"):
        shifted = z - z.max(axis=1, keepdims=True)
        log_p: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return np.exp(log_p) if output == "softmax" else log_p
    return z


def _chain(output: str, pred: np.ndarray, g: np.ndarray) -> np.ndarray:
    """d loss / d z from d loss / d pred through the link (Jacobian-vector products)."""
    dz: np.ndarray = g
    if output == "sigmoid":
        dz = g * pred * (1.0 - pred)
    elif output == "softmax":
        dz = pred * (g - (pred * g).sum(axis=1, keepdims=True))
    elif output == "log_softmax":
        dz = g - np.exp(pred) * g.sum(axis=1, keepdims=True)
    return dz


# -- models -----------------------------------------------------------------------------------


@dataclass
class Model:
    """Linear scores `x W + b`, or an MLP `tanh(x W1 + b1) W2 + b2` with `hidden > 0`."""

    weights: list[np.ndarray]
    hidden: int

    @classmethod
    def create(cls, inputs: int, outputs: int, hidden: int, rng: np.random.Generator) -> Model:
        if hidden == 0:
            return cls([np.zeros((inputs, outputs)), np.zeros(outputs)], 0)
        w1 = rng.normal(scale=1.0 / np.sqrt(inputs), size=(inputs, hidden))
        w2 = rng.normal(scale=1.0 / np.sqrt(hidden), size=(hidden, outputs))
        return cls([w1, np.zeros(hidden), w2, np.zeros(outputs)], hidden)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.hidden == 0:
            return x @ self.weights[0] + self.weights[1], None
        h = np.tanh(x @ self.weights[0] + self.weights[1])
        return h @ self.weights[2] + self.weights[3], h

    def backward(self, x: np.ndarray, h: np.ndarray | None, dz: np.ndarray) -> list[np.ndarray]:
        if h is None:
            return [x.T @ dz, dz.sum(axis=0)]
        dh = (dz @ self.weights[2].T) * (1.0 - h**2)
        return [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]


@dataclass
class Run:
    """One training run: the fitted model, the objective per epoch, convergence and time."""

    model: Model
    curve: list[float] = field(default_factory=list)
    converged_at: int = 0
    seconds: float = 0.0


def train(
    link: Link,
    data: Split,
    hidden: int = 0,
    epochs: int = 200,
    lr: float = 0.05,
    l1: float = 0.0,
    l2: float = 0.0,
    seed: int = 0,
) -> Run:
    """Full-batch Adam on the loss (plus an elastic-net penalty on the weight matrices)."""
    rng = np.random.default_rng(seed)
    outputs = data.classes if data.task == "multiclass" else 1
    model = Model.create(data.x_train.shape[1], outputs, hidden, rng)
    penalty = lossdsl.Penalized(link.loss, l1=l1, l2=l2) if (l1 or l2) else None
    moments = [(np.zeros_like(w), np.zeros_like(w)) for w in model.weights]
    run = Run(model)
    # Compile (or load) the kernels before the clock starts: time is training time only.
    z0 = model.scores(data.x_train[:2])
    theta0 = np.concatenate([w.ravel() for w in model.weights[::2]])
    link.value_grad(
        z0 if outputs > 1 else z0[:, 0], data.y_train[:2], data.classes, penalty, theta0
    )
    start = time.perf_counter()
    for step in range(1, epochs + 1):
        z, h = model.forward(data.x_train)
        scores = z if outputs > 1 else z[:, 0]
        # The penalty covers the weight matrices (even positions), not the biases.
        matrices = model.weights[::2]
        theta = np.concatenate([w.ravel() for w in matrices]) if penalty else None
        value, dz, dtheta = link.value_grad(scores, data.y_train, data.classes, penalty, theta)
        grads = model.backward(data.x_train, h, dz if outputs > 1 else dz[:, None])
        if dtheta is not None:
            offsets = np.cumsum([0] + [w.size for w in matrices])
            for k, w in enumerate(matrices):
                grads[2 * k] += dtheta[offsets[k] : offsets[k + 1]].reshape(w.shape)
        run.curve.append(value)
        _adam(model.weights, grads, moments, lr, step)
    run.seconds = time.perf_counter() - start
    run.converged_at = converged_at(run.curve)
    return run


def _adam(
    weights: list[np.ndarray],
    grads: list[np.ndarray],
    moments: list[tuple[np.ndarray, np.ndarray]],
    lr: float,
    step: int,
) -> None:
    b1, b2 = 0.9, 0.999
    for w, g, (m, v) in zip(weights, grads, moments, strict=True):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        w -= lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + 1e-8)


def converged_at(curve: list[float]) -> int:
    """The first epoch (1-based) after which 99% of the objective's total decrease is done."""
    a = np.asarray(curve)
    if a.size == 0 or not np.all(np.isfinite(a)):
        return len(curve)
    final, drop = a[-1], a[0] - a[-1]
    if drop <= 0:
        return 1
    # One past the last epoch that was still farther than 1% of the drop from the end.
    far = np.nonzero(np.abs(a - final) > 0.01 * drop)[0]
    return int(far[-1] + 2) if far.size else 1
