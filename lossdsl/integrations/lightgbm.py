"""LightGBM (>= 4) objectives and metrics from any lossdsl spec.

One `Objective` object serves `lgb.train(params={"objective": obj})` (called as `(preds,
train_data)`), the sklearn estimators (`LGBMRegressor(objective=obj)`, called as `(y_true,
y_pred, weight)`) and `lightgbm.dask` (it pickles). Gradients and Hessians come in LightGBM's
(n,) or (n, K) layout, sample weights applied.

LightGBM has no `base_score`, and an `init_score` is not stored in the model (predictions
would need it added by hand). So the objective starts where the built-in does by adding the
start score to the scores it is given, and its `callbacks` fold the same constant into the
first iteration's trees: the saved model predicts the same as a built-in objective's. LightGBM
is never imported at module level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossdsl import Loss, LossDSLError
from lossdsl.integrations.gbdt import Booster


class Objective(Booster):
    """A lossdsl loss as a LightGBM custom objective (native, sklearn and Dask APIs).

    Args:
        loss, hessian, hess_floor, max_delta_step, params: as for `gbdt.Booster`.
        start: "optimal" (the loss's optimal constant, from the training labels), a number (or
            one per class: compute it on the client for Dask, where each worker sees only its
            part), or None (start from 0, as LightGBM does for custom objectives). Unless None,
            pass `callbacks=obj.callbacks` to training.
    """

    def __init__(self, loss: Loss | str, *, start: Any = "optimal", **options: Any) -> None:
        super().__init__(loss, **options)
        self.start = start
        self._offset: Any = None
        self._armed = False

    def __call__(self, a: Any, b: Any, weight: Any = None) -> tuple[Any, Any]:
        if _is_dataset(b):  # native: (preds, train_data)
            score, label, weight = a, b.get_label(), b.get_weight()
        else:  # sklearn: (y_true, y_pred, weight)
            score, label = b, a
        offset = self.offset(label, weight, score)
        if offset is not None:
            score = self._shifted(score, offset)
        return self.gradients(score, label, weight)

    def _shifted(self, score: Any, offset: Any) -> Any:
        """score + offset (a host score in a buffer reused every round)."""
        if not isinstance(score, np.ndarray):
            return score + offset
        out = self.scratch("score", score)
        np.add(score, offset, out=out)
        return out

    def offset(self, label: Any, weight: Any, score: Any) -> Any:
        """The start score added to LightGBM's scores in this training, or None."""
        if self.start is None:
            return None
        if not self._armed:
            raise LossDSLError(
                f"LightGBM objective '{self.name}' starts at its optimal constant, which must "
                "be folded into the model",
                hint="pass callbacks=obj.callbacks to lgb.train / fit, or start=None",
            )
        if self._offset is None:
            if isinstance(self.start, str):
                k = score.shape[-1] if self.multiclass else None
                self._offset = self.start_score(label, weight, classes=k)
            else:
                self._offset = np.asarray(self.start, dtype=np.float64)
        return self._offset

    @property
    def callbacks(self) -> list[Any]:
        """The training callbacks that arm the start score and fold it into the model."""
        return [_Arm(self), _Fold(self)]

    @property
    def metric(self) -> Metric:
        """The same spec's value as `feval=` / sklearn `eval_metric=` (lower is better)."""
        return Metric(self)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_offset": None, "_armed": False}

    def __deepcopy__(self, memo: dict[int, Any]) -> Objective:
        # lgb.train deep-copies its params: the objective it calls must stay the one the
        # callbacks hold (pickling, for Dask, still copies).
        return self


class Metric:
    """The spec's reduced value of raw scores (plus the start score during training)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.__name__ = objective.name

    def __call__(self, a: Any, b: Any, weight: Any = None) -> tuple[str, float, bool]:
        if _is_dataset(b):
            score, label, weight = a, b.get_label(), b.get_weight()
        else:
            score, label = b, a
        o = self.objective
        if o._armed and o._offset is not None:
            score = score + o._offset
        w = None if weight is None or np.size(weight) == 0 else np.asarray(weight)
        if w is not None and score.ndim == 2 and not o.multiclass:
            w = w.reshape(-1, 1)
        value = o.loss(score, o.labels(label, score), sample_weight=w, **o.loss_params)
        return self.__name__, float(value), False


class _Arm:
    """Before the first iteration: a fresh start score for this training (none when
    continuing a model, whose trees already hold it)."""

    before_iteration = True
    order = 0

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def __call__(self, env: Any) -> None:
        if env.iteration != env.begin_iteration:
            return
        o = self.objective
        o._armed = True
        o._offset = np.zeros(()) if env.model.current_iteration() > 0 else None


class _Fold:
    """After the first iteration: the start score added to the leaves of its trees, so the
    model predicts it; after the last, training is over."""

    before_iteration = False
    order = 0

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def __call__(self, env: Any) -> None:
        o = self.objective
        if env.iteration == env.begin_iteration and np.any(o._offset):
            booster = env.model
            offsets = np.broadcast_to(o._offset, (booster.num_model_per_iteration(),))
            first = booster.current_iteration() - 1
            trees = booster.dump_model(start_iteration=first, num_iteration=1)["tree_info"]
            for tree, c in zip(trees, offsets, strict=True):
                t = tree["tree_index"]
                for leaf in range(tree["num_leaves"]):
                    booster.set_leaf_output(t, leaf, booster.get_leaf_output(t, leaf) + float(c))
        if env.iteration == env.end_iteration - 1:
            o._armed = False


def objective(loss: Any, **options: Any) -> Objective:
    """`Objective(loss, **options)`."""
    return Objective(loss, **options)


def _is_dataset(b: Any) -> bool:
    return hasattr(b, "get_label") and hasattr(b, "get_weight") and hasattr(b, "get_init_score")
