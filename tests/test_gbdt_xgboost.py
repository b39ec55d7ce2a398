"""lossdsl objectives in XGBoost reproduce its built-in objectives (issue 12).

Each case trains the same few rounds twice on the same data, once with XGBoost's built-in
objective and once with the lossdsl spec (native `xgb.train(obj=...)` and the sklearn
estimators, with and without sample weights), and compares raw margins. Features take few
distinct values, so histogram cuts are exact and the two runs see identical splits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import boosting_data

xgb = pytest.importorskip("xgboost")

from lossdsl.integrations import xgboost as lx  # noqa: E402

N, ROUNDS = 300, 4
PARAMS = {"max_depth": 3, "eta": 0.3, "tree_method": "hist", "nthread": 1}


DATA = boosting_data(12, N)

# (built-in params, spec, objective options, labels, start: None = optimal, 1 = one Newton step)
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any], str, int | None]] = {
    "squared_error": ({}, "mse", {"hessian": "xgboost"}, "real", None),
    "pseudo_huber": (
        {"objective": "reg:pseudohubererror", "huber_slope": 1.5},
        "pseudo_huber",
        {"delta": 1.5},
        "real",
        1,
    ),
    "logistic": ({"objective": "binary:logistic"}, "bce_with_logits", {}, "binary", None),
    "softprob": (
        {"objective": "multi:softprob", "num_class": 3},
        "sparse_cross_entropy",
        {"hessian": "xgboost"},
        "classes",
        None,
    ),
    "poisson": (
        {"objective": "count:poisson"},
        "poisson_nll",
        {"hessian": "xgboost"},
        "counts",
        None,
    ),
    "gamma": ({"objective": "reg:gamma"}, "gamma_nll", {}, "positive", None),
    "tweedie": (
        {"objective": "reg:tweedie", "tweedie_variance_power": 1.3},
        "tweedie_nll",
        {"variance_power": 1.3},
        "counts",
        None,
    ),
    "squared_log_error": (
        {"objective": "reg:squaredlogerror"},
        "squared_log_error",
        {"hessian": "xgboost"},
        "positive",
        1,
    ),
}


def _margins(booster: Any, x: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(x), output_margin=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_native_objective_reproduces_builtin(case: str, weighted: bool) -> None:
    builtin, spec, options, labels, steps = CASES[case]
    x, y = DATA["x"], DATA[labels]
    w = DATA["w"] if weighted else None
    dtrain = xgb.DMatrix(x, label=y, weight=w)
    reference = xgb.train({**PARAMS, **builtin}, dtrain, ROUNDS)
    obj = lx.Objective(spec, **options)
    ours = xgb.train({**PARAMS, **obj.params(y, w, steps=steps)}, dtrain, ROUNDS, obj=obj)
    np.testing.assert_allclose(_margins(ours, x), _margins(reference, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["squared_error", "softprob"])
def test_metric_is_the_weighted_spec_value(case: str) -> None:
    _, spec, options, labels, _ = CASES[case]
    x, y, w = DATA["x"], DATA[labels], DATA["w"]
    dtrain = xgb.DMatrix(x, label=y, weight=w)
    obj = lx.Objective(spec, **options)
    history: dict[str, Any] = {}
    ours = xgb.train(
        {**PARAMS, **obj.params(y, w)},
        dtrain,
        ROUNDS,
        obj=obj,
        custom_metric=obj.metric,
        evals=[(dtrain, "train")],
        evals_result=history,
        verbose_eval=False,
    )
    # The metric is the spec's weighted mean of the final margins.
    margins = ours.predict(dtrain, output_margin=True)
    expected = obj.loss(margins, obj.labels(y, margins), sample_weight=w, **obj.loss_params)
    np.testing.assert_allclose(history["train"][spec][-1], expected, rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sklearn_regressor_reproduces_builtin(weighted: bool) -> None:
    x, y = DATA["x"], DATA["real"]
    w = DATA["w"] if weighted else None
    kw = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1}
    reference = xgb.XGBRegressor(objective="reg:pseudohubererror", **kw).fit(x, y, sample_weight=w)
    obj = lx.Objective("pseudo_huber")
    ours = xgb.XGBRegressor(
        objective=obj, base_score=obj.base_score(y, w, steps=1), eval_metric=obj.metric, **kw
    ).fit(x, y, sample_weight=w, eval_set=[(x, y)], sample_weight_eval_set=[w], verbose=False)
    np.testing.assert_allclose(
        ours.predict(x, output_margin=True), reference.predict(x, output_margin=True), atol=1e-6
    )
    assert "pseudo_huber" in ours.evals_result()["validation_0"]


@pytest.mark.parametrize(
    ("labels", "spec", "options"),
    [
        ("binary", "bce_with_logits", {}),
        ("classes", "sparse_cross_entropy", {"hessian": "xgboost"}),
    ],
    ids=["logistic", "softprob"],
)
def test_sklearn_classifier_reproduces_builtin(
    labels: str, spec: str, options: dict[str, Any]
) -> None:
    x, y, w = DATA["x"], DATA[labels].astype(np.int64), DATA["w"]
    kw = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": 1}
    reference = xgb.XGBClassifier(**kw).fit(x, y, sample_weight=w)
    obj = lx.Objective(spec, **options)
    # XGBClassifier configures binary:logistic beside a custom objective: base_score is a
    # probability there.
    start = obj.base_score(y, w, objective="binary:logistic")
    ours = xgb.XGBClassifier(objective=obj, base_score=start, **kw).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(
        ours.predict(x, output_margin=True), reference.predict(x, output_margin=True), atol=1e-6
    )
    np.testing.assert_allclose(ours.predict_proba(x), reference.predict_proba(x), atol=1e-6)


def test_quantile_with_clip_gives_the_builtin_gradients() -> None:
    # reg:quantileerror sends (1 - q) w or -q w with Hessian w, then re-fits each leaf to a
    # quantile of its residuals: a custom objective cannot do that step, so the models differ;
    # the derivatives must not.
    y, w, q = DATA["real"], DATA["w"], 0.3
    obj = lx.Objective("quantile", hessian="clip", q=q)
    score = np.linspace(-1.0, 4.0, N).astype(np.float32) + 1e-3
    dtrain = xgb.DMatrix(DATA["x"], label=y, weight=w)
    grad, hess = obj(score, dtrain)
    y32, w32 = y.astype(np.float32), w.astype(np.float32)
    np.testing.assert_allclose(grad, np.where(score > y32, 1 - q, -q) * w32, rtol=1e-6)
    np.testing.assert_allclose(hess, w32, rtol=1e-6)
    start = obj.base_score(y, w)
    # A minimiser: at most a fraction q of the weight strictly below, 1 - q strictly above.
    below, above = w[y < start - 1e-9].sum(), w[y > start + 1e-9].sum()
    assert below <= q * w.sum() + 1e-9
    assert above <= (1 - q) * w.sum() + 1e-9
