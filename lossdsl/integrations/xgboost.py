"""XGBoost objectives and metrics from any lossdsl spec.

One `Objective` object serves `xgb.train(obj=...)` (called as `(predt, dtrain)`), the sklearn
estimators (`XGBRegressor(objective=...)`, called as `(y_true, y_pred, sample_weight=...)`) and
`xgboost.dask` (it pickles; workers load its kernels from the on-disk cache). It returns
per-sample gradients and Hessians in XGBoost's (n,) or (n, K) layout, sample weights applied.
`base_score` gives the loss's optimal constant in the space XGBoost reads it in. XGBoost is
never imported here: only its objects are inspected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossdsl.integrations.gbdt import Booster

# XGBoost reads `base_score` in the response space of the built-in objective configured beside
# a custom one (its ProbToMargin): XGBClassifier configures binary:logistic. A raw score c is
# passed as response(c).
_RESPONSE = {
    "binary:logistic": lambda c: 1.0 / (1.0 + math.exp(-c)),
    "reg:logistic": lambda c: 1.0 / (1.0 + math.exp(-c)),
    "count:poisson": math.exp,
    "reg:gamma": math.exp,
    "reg:tweedie": math.exp,
}


class Objective(Booster):
    """A lossdsl loss as an XGBoost custom objective (native, sklearn and Dask APIs).

    Arguments as for `gbdt.Booster`: `Objective("pseudo_huber", delta=2.0)`,
    `Objective("quantile", hessian="clip", q=0.9)`, `Objective("mse", hessian="xgboost")`.
    """

    def __call__(self, a: Any, b: Any, sample_weight: Any = None) -> tuple[Any, Any]:
        if _is_dmatrix(b):  # native: (predt, dtrain)
            return self.gradients(a, b.get_label(), b.get_weight())
        return self.gradients(b, a, sample_weight)  # sklearn: (y_true, y_pred)

    def base_score(
        self,
        label: Any,
        sample_weight: Any = None,
        objective: str = "reg:squarederror",
        classes: int | None = None,
        steps: int | None = None,
    ) -> Any:
        """The optimal constant score, as XGBoost's `base_score` beside the built-in
        `objective` configured with this one (XGBClassifier: "binary:logistic"; a multiclass
        loss gives a list, one per class). Labels may be NumPy or Dask arrays; `steps` as for
        `start_score`."""
        if self.multiclass:
            k = classes or _classes(label)
            return [float(c) for c in self.start_score(label, sample_weight, k, steps)]
        c = float(self.start_score(label, sample_weight, steps=steps))
        return _RESPONSE.get(objective, float)(c)

    def params(
        self,
        label: Any,
        sample_weight: Any = None,
        classes: int | None = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        """Parameters `xgb.train` needs beside this objective: base_score, num_class, and no
        default metric (XGBoost's default would score raw margins as squared error)."""
        out: dict[str, Any] = {"disable_default_eval_metric": True}
        if self.multiclass:
            out["num_class"] = classes or _classes(label)
        if self.hessian == "xgboost" and self.name == "poisson_nll":
            out["max_delta_step"] = self.max_delta_step  # count:poisson sets the tree's too
        k = out.get("num_class")
        out["base_score"] = self.base_score(label, sample_weight, classes=k, steps=steps)
        return out

    @property
    def metric(self) -> Metric:
        """The same spec's value as a metric (`custom_metric=` or sklearn's `eval_metric=`)."""
        return Metric(self)


class Metric:
    """The spec's reduced value (weighted by the sample weights) of raw margins."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.__name__ = objective.name

    def __call__(self, a: Any, b: Any, sample_weight: Any = None) -> Any:
        if _is_dmatrix(b):  # native: (predt, dmatrix) -> (name, value)
            return self.__name__, self.value(a, b.get_label(), b.get_weight())
        return self.value(b, a, sample_weight)  # sklearn: (y_true, y_score) -> value

    def value(self, score: Any, label: Any, weight: Any = None) -> float:
        o = self.objective
        w = None if weight is None or np.size(weight) == 0 else weight
        if w is not None and score.ndim == 2 and not o.multiclass:
            w = np.asarray(w).reshape(-1, 1)
        return float(o.loss(score, o.labels(label, score), sample_weight=w, **o.loss_params))


def objective(loss: Any, **options: Any) -> Objective:
    """`Objective(loss, **options)`."""
    return Objective(loss, **options)


def _is_dmatrix(b: Any) -> bool:
    return hasattr(b, "get_label") and hasattr(b, "get_weight")


def _classes(label: Any) -> int:
    return int(np.asarray(label.max())) + 1
