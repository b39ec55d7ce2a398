"""A small gradient-boosted tree model trained with a loss as its XGBoost objective.

`boost` trains `xgboost.train` with `lossdsl.integrations.xgboost.Objective` of the loss: the
booster's raw score goes straight into the loss (no link), so the loss must take raw scores
(logits, real values). The exact Hessian is used where it is positive on the training data at
the start score, else the `clip` policy (MAE, hinge, Huber's tails: a zero Hessian never splits).
The training objective per round comes from the objective's own metric. xgboost is imported
inside the functions; metrics and tables live in `compare.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import lossdsl
from lossdsl.research.datasets import Split
from lossdsl.research.trainers import Link, converged_at

if TYPE_CHECKING:
    from lossdsl.integrations.xgboost import Objective

# Small trees; row subsampling makes the seed matter beyond the split; one thread is plenty
# for these data sets (and spares a loaded machine).
TREES = {"max_depth": 3, "subsample": 0.8, "tree_method": "hist", "nthread": 1}


@dataclass
class Boosted:
    """One boosting run: the booster, the objective per round, convergence and time."""

    booster: Any  # xgboost.Booster
    curve: list[float] = field(default_factory=list)
    converged_at: int = 0
    seconds: float = 0.0

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (n, outputs)."""
        import xgboost

        margin = self.booster.predict(xgboost.DMatrix(x), output_margin=True)
        return np.asarray(margin, dtype=np.float64).reshape(x.shape[0], -1)


def boost(
    link: Link,
    data: Split,
    rounds: int = 200,
    eta: float = 0.05,
    l1: float = 0.0,
    l2: float = 0.0,
    seed: int = 0,
) -> Boosted:
    """`rounds` of boosting with learning rate `eta` on the loss of `link`.

    `l1`, `l2` penalise the leaf weights as `lossdsl.Penalized` does the weights of the mean
    loss (XGBoost's alpha and lambda penalise the summed loss: alpha = l1 N, lambda = 2 l2 N).

    Raises:
        LossDSLError: as `objective_for`.
    """
    xgboost = _xgboost()
    obj = objective_for(link, data)
    y = _labels(link, data.y_train)
    n = y.shape[0]
    classes = data.classes if obj.multiclass else None
    params = {**TREES, "eta": eta, "alpha": l1 * n, "lambda": 2 * l2 * n, "seed": seed}
    params.update(obj.params(y, classes=classes))  # base_score: the loss's best constant
    dtrain = xgboost.DMatrix(data.x_train, label=y)
    # The metric's kernel is compiled before the clock starts (the objective's already is).
    obj.metric.value(np.zeros((2, classes) if classes else 2, np.float32), y[:2])
    history: dict[str, Any] = {}
    start = time.perf_counter()
    booster = xgboost.train(
        params, dtrain, rounds, obj=obj, custom_metric=obj.metric, evals=[(dtrain, "train")],
        evals_result=history, verbose_eval=False,
    )  # fmt: skip
    run = Boosted(booster, [float(v) for v in history["train"][obj.metric.__name__]])
    run.seconds = time.perf_counter() - start
    run.converged_at = converged_at(run.curve)
    return run


def objective_for(link: Link, data: Split) -> Objective:
    """The loss of `link` as an XGBoost objective on `data`'s training labels.

    Raises:
        LossDSLError: xgboost is not installed, the loss needs a link on the raw score
            (probabilities), or it couples samples through batch totals.
    """
    from lossdsl.integrations.xgboost import Objective

    _xgboost()

    loss = link.loss
    params: dict[str, Any] = dict(link.params)  # loss parameters only, by keyword
    if link.output != "identity":
        raise lossdsl.LossDSLError(
            f"loss '{loss.name}' needs a {link.output} on the model's score; a GBDT's raw "
            "score goes into the loss as it is",
            hint="use a loss on raw scores or logits (bce_with_logits rather than bce)",
        )
    obj = Objective(loss, **params)
    classes = data.classes if obj.multiclass else None
    y = _labels(link, data.y_train)
    if not _per_sample(obj, y[:3], classes):
        raise lossdsl.LossDSLError(
            f"loss '{loss.name}' couples samples through batch totals, so it cannot be a "
            "boosting objective (a tree needs each sample's own gradient and Hessian)",
            hint="compare it with model linear or mlp",
        )
    score = np.empty((y.shape[0], classes) if classes else y.shape[0], np.float32)
    score[...] = obj.start_score(y, classes=classes)
    if np.all(obj.gradients(score, y)[1] > 0):
        return obj
    return Objective(loss, hessian="clip", **params)


def _per_sample(obj: Objective, y: np.ndarray, classes: int | None) -> bool:
    """Whether each sample's gradient is the same alone as in a batch (no batch totals)."""
    score = np.linspace(-1.0, 1.0, y.shape[0] * (classes or 1), dtype=np.float32)
    score = score.reshape(y.shape[0], -1) if classes else score
    together = np.copy(obj.gradients(score, y)[0])  # the adapter reuses its output arrays
    alone = [np.copy(obj.gradients(score[i : i + 1], y[i : i + 1])[0]) for i in range(y.size)]
    return bool(np.allclose(together, np.concatenate(alone), rtol=1e-5, atol=1e-7))


def _labels(link: Link, y: np.ndarray) -> np.ndarray:
    """The labels as the loss's target reads them (±1 for a pm1 target), in float32 as
    XGBoost hands them (and its scores) to the objective: the kernels compiled before training
    are those it runs."""
    return (2.0 * y - 1.0 if link.target == "pm1" else y).astype(np.float32)


def _xgboost() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise lossdsl.LossDSLError(
            "model 'gbdt' needs xgboost, which is not installed",
            hint='pip install "lossdsl[xgboost]", or use model linear or mlp',
        ) from exc
    return xgboost
