"""`lossdsl analyze` against the textbook answers (issue 14).

Each property is checked against a closed form that shares no code with the analysis: the
gradient bound of MAE/Huber/pinball/log-cosh, the curvature of MSE and of the softmax, the
mean/median/quantile minimisers, Huber's M-estimate found by bisection on its clipped residual,
and a non-convex loss (Cauchy) written as a test spec.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import lossdsl
from lossdsl.cli import main
from lossdsl.research.analyze import Analysis, analysis_table, analyze

CAUCHY = """
loss cauchy(pred, target; c: real = 1.0 > 0):
    \"\"\"Cauchy (Lorentzian) loss: bounded influence, not convex.\"\"\"
    return log1p(((pred - target) / c)^2)
"""


@cache
def result(name: str, **params: float) -> Analysis:
    loss = lossdsl.compile(CAUCHY) if name == "cauchy" else lossdsl.get(name)
    return analyze(loss, params or None)


def test_mse_convex_unbounded_mean() -> None:
    a = result("mse")
    assert a.convex
    assert a.gradient_bound is None
    assert a.gradient_lipschitz == pytest.approx(2.0)  # d2/dr2 r^2
    assert a.gradient_jumps == ()
    assert a.zero_hessian == ()
    assert a.optimum == "the mean"


def test_mae_convex_bounded_median() -> None:
    a = result("mae")
    assert a.convex
    assert a.gradient_bound == pytest.approx(1.0)
    assert a.gradient_lipschitz is None
    assert a.gradient_jumps == (0.0,)
    assert a.zero_hessian == ((a.view[0], a.view[1]),)  # a GBDT gets no curvature at all
    assert a.optimum == "the median"


def test_huber_convex_bounded_between_median_and_mean() -> None:
    a = result("huber", delta=0.5)
    assert a.convex
    assert a.gradient_bound == pytest.approx(0.5)
    assert a.gradient_lipschitz == pytest.approx(1.0)
    assert a.gradient_jumps == ()
    (low, left), (right, high) = a.zero_hessian
    assert (low, high) == a.view
    assert left == pytest.approx(-0.5, abs=2e-3)
    assert right == pytest.approx(0.5, abs=2e-3)
    # The Huber M-estimate of the same sample: the root of mean(clip(t - c, -delta, delta)).
    t = np.random.default_rng(0).exponential(size=1001)
    lo, hi = np.median(t), t.mean()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.clip(t - mid, -0.5, 0.5).mean() > 0 else (lo, mid)
    assert "between the median and the mean" in a.optimum
    assert float(a.optimum.split()[0]) == pytest.approx(lo, abs=1e-3)


def test_pinball_minimiser_is_the_quantile() -> None:
    a = result("quantile", q=0.9)
    assert a.convex
    assert a.gradient_bound == pytest.approx(0.9)  # max(q, 1 - q)
    assert a.optimum == "the 0.9-quantile"


def test_log_cosh_convex_bounded_smooth() -> None:
    a = result("log_cosh")
    assert a.convex
    assert a.gradient_bound == pytest.approx(1.0, abs=1e-6)  # tanh
    assert a.gradient_lipschitz == pytest.approx(1.0)  # sech^2 at 0
    assert a.gradient_jumps == ()


def test_cross_entropy_takes_logits_and_applies_softmax() -> None:
    a = result("cross_entropy")
    assert a.activation == "identity"
    assert "softmax" in a.model_output
    assert a.convex
    assert a.gradient_bound == pytest.approx(1.0, abs=1e-6)  # 1 - softmax
    assert a.gradient_lipschitz == pytest.approx(0.25, rel=1e-6)  # p (1 - p) at p = 1/2
    assert a.optimum == "logits of the class frequencies"


def test_cauchy_is_detected_as_non_convex() -> None:
    a = result("cauchy")
    assert not a.convex
    assert a.gradient_bound == pytest.approx(1.0)  # 2r / (1 + r^2) peaks at r = 1
    assert a.zero_hessian == ()


def test_losses_without_a_one_dimensional_view_are_refused() -> None:
    with pytest.raises(lossdsl.LossDSLError, match="no one-dimensional view"):
        analyze("cosine_similarity")


def test_table_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    table = analysis_table([result("mse"), result("mae")])
    assert "| convex | yes | yes |" in table
    assert main(["analyze", "mse", "mae"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == table
    assert main(["analyze", "mse", "--param", "delta=2"]) == 2
    assert "no loss here has a parameter 'delta'" in capsys.readouterr().err
    assert main(["analyze", "msee"]) == 2
    assert "did you mean 'mse'" in capsys.readouterr().err


def test_multiclass_scores_and_objectives_without_a_target() -> None:
    # multi_margin takes raw class scores with an integer label: the true class's score varies.
    a = result("multi_margin")
    assert a.variable.startswith("logit of the true class")
    assert a.convex
    # A generator's objective has no target, so no best constant.
    assert result("wasserstein_generator").optimum == "n/a"
