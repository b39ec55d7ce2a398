"""lossdsl objectives in LightGBM reproduce its built-in objectives (issue 12).

Each case trains the same few rounds with LightGBM's built-in objective and with the lossdsl
spec (native `lgb.train(params={"objective": obj})` and the sklearn estimators, with and without
sample weights) and compares the predictions (class probabilities for softmax, whose raw scores
are defined up to a constant per row). The objective's callbacks fold the start score into the
model, as the built-ins' boost-from-average does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import boosting_data

lgb = pytest.importorskip("lightgbm")

from lossdsl import LossDSLError  # noqa: E402
from lossdsl.integrations import lightgbm as ll  # noqa: E402

N, ROUNDS = 300, 4
PARAMS = {
    "num_leaves": 7,
    "learning_rate": 0.3,
    "verbose": -1,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
}


DATA = boosting_data(13, N)
# LightGBM's huber and fair start from the label mean (L2's boost-from-average), not from
# their own optimum: those cases pass it.
MEAN = "mean"

# (built-in params, spec, objective options, labels, start)
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any], str, str]] = {
    "squared_error": ({"objective": "regression"}, "mse", {"hessian": "lightgbm"}, "real", ""),
    "huber": (
        {"objective": "huber", "alpha": 0.9},
        "huber",
        {"hessian": "lightgbm", "delta": 0.9},
        "real",
        MEAN,
    ),
    "fair": ({"objective": "fair", "fair_c": 1.5}, "fair", {"c": 1.5}, "real", MEAN),
    "logistic": ({"objective": "binary"}, "bce_with_logits", {}, "binary", ""),
    "multiclass": (
        {"objective": "multiclass", "num_class": 3},
        "sparse_cross_entropy",
        {"hessian": "lightgbm"},
        "classes",
        "",
    ),
    "poisson": ({"objective": "poisson"}, "poisson_nll", {"hessian": "lightgbm"}, "counts", ""),
    "gamma": ({"objective": "gamma"}, "gamma_nll", {}, "positive", ""),
    "tweedie": (
        {"objective": "tweedie", "tweedie_variance_power": 1.3},
        "tweedie_nll",
        {"variance_power": 1.3},
        "counts",
        "",
    ),
}


def _predictions(model: Any, x: np.ndarray) -> np.ndarray:
    raw = np.asarray(model.predict(x, raw_score=True))
    if raw.ndim == 2:  # softmax: compare probabilities
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
    return raw


def _objective(case: str, y: np.ndarray, w: np.ndarray | None) -> ll.Objective:
    _, spec, options, _, start = CASES[case]
    begin = np.average(y, weights=w) if start == MEAN else "optimal"
    return ll.Objective(spec, start=begin, **options)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_native_objective_reproduces_builtin(case: str, weighted: bool) -> None:
    builtin, _, _, labels, _ = CASES[case]
    x, y = DATA["x"], DATA[labels]
    w = DATA["w"] if weighted else None
    reference = lgb.train({**PARAMS, **builtin}, lgb.Dataset(x, y, weight=w), ROUNDS)
    obj = _objective(case, y, w)
    params = {**PARAMS, "objective": obj, "num_class": builtin.get("num_class", 1)}
    model = lgb.train(params, lgb.Dataset(x, y, weight=w), ROUNDS, callbacks=obj.callbacks)
    np.testing.assert_allclose(_predictions(model, x), _predictions(reference, x), atol=1e-6)


def test_metric_is_the_weighted_spec_value() -> None:
    x, y, w = DATA["x"], DATA["counts"], DATA["w"]
    obj = _objective("poisson", y, w)
    history: dict[str, Any] = {}
    train = lgb.Dataset(x, y, weight=w)
    model = lgb.train(
        {**PARAMS, "objective": obj, "metric": "None"},
        train,
        ROUNDS,
        valid_sets=[train],
        feval=obj.metric,
        callbacks=[*obj.callbacks, lgb.record_evaluation(history)],
    )
    # The final model holds the start score: the metric of its raw predictions.
    expected = obj.loss(model.predict(x, raw_score=True), y, sample_weight=w)
    # (LightGBM's running training scores and the model's leaf sums round differently.)
    np.testing.assert_allclose(history["training"]["poisson_nll"][-1], expected, rtol=1e-7)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sklearn_regressor_reproduces_builtin(weighted: bool) -> None:
    x, y = DATA["x"], DATA["counts"]
    w = DATA["w"] if weighted else None
    kw = {k: v for k, v in PARAMS.items() if k != "num_threads"}
    kw.update(n_estimators=ROUNDS, n_jobs=1)
    reference = lgb.LGBMRegressor(objective="poisson", **kw).fit(x, y, sample_weight=w)
    obj = _objective("poisson", y, w)
    model = lgb.LGBMRegressor(objective=obj, **kw).fit(
        x, y, sample_weight=w, eval_set=[(x, y)], eval_metric=obj.metric, callbacks=obj.callbacks
    )
    np.testing.assert_allclose(_predictions(model, x), _predictions(reference, x), atol=1e-6)


@pytest.mark.parametrize("case", ["logistic", "multiclass"])
def test_sklearn_classifier_reproduces_builtin(case: str) -> None:
    x, y, w = DATA["x"], DATA[CASES[case][3]].astype(np.int64), DATA["w"]
    kw = {k: v for k, v in PARAMS.items() if k != "num_threads"}
    kw.update(n_estimators=ROUNDS, n_jobs=1)
    reference = lgb.LGBMClassifier(**kw).fit(x, y, sample_weight=w)
    obj = _objective(case, y, w)
    model = lgb.LGBMClassifier(objective=obj, **kw).fit(
        x, y, sample_weight=w, callbacks=obj.callbacks
    )
    np.testing.assert_allclose(_predictions(model, x), _predictions(reference, x), atol=1e-6)


def test_quantile_with_clip_gives_the_builtin_gradients() -> None:
    # LightGBM's quantile sends (1 - q) w or -q w with Hessian w, then renews each leaf to a
    # quantile of its residuals, which a custom objective cannot do: the derivatives match.
    y, w, q = DATA["real"], DATA["w"], 0.3
    obj = ll.Objective("quantile", hessian="clip", q=q, start=None)
    score = np.linspace(-1.0, 4.0, N) + 1e-3
    grad, hess = obj(score, lgb.Dataset(DATA["x"], y, weight=w).construct())
    w32 = w.astype(np.float32)  # LightGBM stores weights in float32
    np.testing.assert_allclose(grad, np.where(score > y, 1 - q, -q) * w32, rtol=1e-12)
    np.testing.assert_allclose(hess, w32, rtol=1e-12)


def test_missing_callbacks_is_an_error_not_a_shifted_model() -> None:
    obj = ll.Objective("mse")
    with pytest.raises(LossDSLError, match=r"callbacks=obj\.callbacks"):
        lgb.train({**PARAMS, "objective": obj}, lgb.Dataset(DATA["x"], DATA["real"]), 1)
