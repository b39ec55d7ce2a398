"""The shared GBDT layer (issue 12): per-sample derivatives, Hessian policies, start scores,
pickling, and CUDA arrays under the simulator. References are closed forms in NumPy."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl.integrations.gbdt import Booster

N = 64


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def test_grad_hess_is_per_sample_and_never_divided_by_n(rng: np.random.Generator) -> None:
    loss = lossdsl.get("pseudo_huber")
    p, t, w = rng.normal(size=N), rng.normal(size=N), rng.uniform(0, 2, N)
    g, h = loss.grad_hess(p, t, sample_weight=w)
    r = p - t
    np.testing.assert_allclose(g, w * r / np.sqrt(1 + r * r), rtol=1e-12)
    np.testing.assert_allclose(h, w * (1 + r * r) ** -1.5, rtol=1e-12)
    out = (np.empty(N), np.empty(N))
    g2, h2 = loss.grad_hess(p, t, sample_weight=w, out=out)
    assert g2 is out[0]
    assert h2 is out[1]
    np.testing.assert_array_equal(g2, g)
    with pytest.raises(lossdsl.LossDSLError, match="pair"):
        loss.grad_hess(p, t, out=np.empty(N))
    with pytest.raises(lossdsl.LossDSLError, match="overlap"):
        loss.grad_hess(p, t, out=(out[0], out[0]))


def test_loss_pickles_by_definition(rng: np.random.Generator) -> None:
    loss = lossdsl.compile("loss asym(pred, target; k: real = 2 > 0):\n    r = pred - target\n"
                           "    return where(r > 0, k * r^2, r^2)\n")  # fmt: skip
    again = pickle.loads(pickle.dumps(loss))
    assert again.source_path == loss.source_path  # the same cache entry: nothing recompiles
    p, t = rng.normal(size=N), rng.normal(size=N)
    np.testing.assert_array_equal(again.grad(p, t, k=3.0), loss.grad(p, t, k=3.0))


def test_policies_against_closed_forms(rng: np.random.Generator) -> None:
    s, w = rng.normal(size=(N, 4)), rng.uniform(0.5, 2, N)
    y = rng.integers(0, 4, N).astype(np.float64)
    p = _softmax(s)
    onehot = np.eye(4)[y.astype(int)]
    g, h = Booster("sparse_cross_entropy", hessian="lightgbm").gradients(s, y, w)
    np.testing.assert_allclose(g, w[:, None] * (p - onehot), rtol=1e-12)
    np.testing.assert_allclose(h, w[:, None] * 4 / 3 * p * (1 - p), rtol=1e-12)
    _, h = Booster("sparse_cross_entropy", hessian="xgboost").gradients(s, y, w)
    np.testing.assert_allclose(h, w[:, None] * 2 * p * (1 - p), rtol=1e-12)
    r = rng.normal(size=N)
    g, h = Booster("mse", hessian="xgboost").gradients(r, np.zeros(N), w)
    np.testing.assert_allclose(g, w * r, rtol=1e-12)  # r^2 / 2
    np.testing.assert_allclose(h, w, rtol=1e-12)
    g, h = Booster("mae", hessian="clip", hess_floor=0.25).gradients(r, np.zeros(N), w)
    np.testing.assert_allclose(h, 0.25 * w, rtol=1e-12)  # exact Hessian 0, floored per weight
    g, h = Booster("poisson_nll", hessian="xgboost").gradients(r, np.ones(N), w)
    np.testing.assert_allclose(h, w * np.exp(r + 0.7), rtol=1e-12)


def test_fisher_is_the_expected_hessian(rng: np.random.Generator) -> None:
    s, w = rng.normal(size=N), rng.uniform(0.5, 2, N)
    y = rng.gamma(2.0, size=N)
    _, h = Booster("gamma_nll", hessian="fisher").gradients(s, y, w)
    np.testing.assert_allclose(h, w, rtol=1e-12)  # y exp(-s) with E[y] = exp(s)
    _, h = Booster("tweedie_nll", hessian="fisher", variance_power=1.3).gradients(s, y, w)
    np.testing.assert_allclose(h, w * np.exp(0.7 * s), rtol=1e-12)  # mu^(2 - rho)
    with pytest.raises(lossdsl.LossDSLError, match="fisher"):
        Booster("sparse_cross_entropy", hessian="fisher")


def test_start_scores_are_the_optimal_constants(rng: np.random.Generator) -> None:
    w = rng.uniform(0.5, 2, 200)
    y = rng.normal(size=200)
    assert np.isclose(Booster("mse").start_score(y, w), np.average(y, weights=w), rtol=1e-12)
    yb = (y > 0.3).astype(np.float64)
    m = np.average(yb, weights=w)
    assert np.isclose(Booster("bce_with_logits").start_score(yb, w), np.log(m / (1 - m)))
    yc = rng.poisson(2.0, 200).astype(np.float64)
    assert np.isclose(Booster("poisson_nll").start_score(yc, w), np.log(np.average(yc, weights=w)))
    yk = rng.integers(0, 3, 200).astype(np.float64)
    log_freq = np.log(np.bincount(yk.astype(int), weights=w) / w.sum())
    c = Booster("sparse_cross_entropy").start_score(yk, w, classes=3)
    np.testing.assert_allclose(c, log_freq - log_freq.mean(), atol=1e-9)


def test_bad_objectives_are_clear_errors() -> None:
    with pytest.raises(lossdsl.LossDSLError, match="policies"):
        Booster("mse", hessian="newton")
    with pytest.raises(lossdsl.LossDSLError, match="score, label"):
        Booster("gaussian_nll")
    with pytest.raises(lossdsl.LossDSLError, match="whole numbers"):
        Booster("sparse_cross_entropy").gradients(np.zeros((2, 3)), np.array([0.5, 1.0]))


# A user spec boosting a batch-total loss through a call: the totals are found through it.
_SOFT_DICE = "loss soft_dice(score, label):\n    return dice(sigmoid(score), label)\n"


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("spec", ["dice", "soft_dice"])
def test_batch_total_losses_are_refused_as_objectives(library: str, spec: str) -> None:
    # A booster fits trees to per-sample (g, h): a loss coupling the samples through total()
    # has a dense Hessian, so it is refused when the objective is made, before any training.
    pytest.importorskip(library)
    adapter = importlib.import_module(f"lossdsl.integrations.{library}")
    loss = lossdsl.compile(_SOFT_DICE) if spec == "soft_dice" else spec
    with pytest.raises(lossdsl.LossDSLError, match=rf"loss '{spec}' uses batch totals") as err:
        adapter.Objective(loss)
    assert "Hessian is not diagonal" in str(err.value)
    assert "per-sample loss" in str(err.value)  # the hint
    # The same spec without totals is a fine objective.
    adapter.Objective(lossdsl.compile(_SOFT_DICE.replace("dice(", "bce(")))


_SIMULATOR_SCRIPT = """
import numpy as np
from numba import cuda
from lossdsl.integrations.xgboost import Objective
rng = np.random.default_rng(0)
s, y = rng.normal(size=(64, 3)).astype(np.float32), rng.integers(0, 3, 64).astype(np.float32)
obj = Objective("sparse_cross_entropy")
w = rng.uniform(0.5, 2.0, 64).astype(np.float32)
g, h = obj.gradients(cuda.to_device(s), y, w)  # labels and weights from the host, as XGBoost's
g0, h0 = obj.gradients(s, y, w)
assert obj._cuda is not None and obj._cuda.target == "cuda"
host = lambda a: a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
np.testing.assert_allclose(host(g), g0, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(host(h), h0, rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_device_arrays_run_the_cuda_kernels_under_the_simulator() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SIMULATOR_SCRIPT)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
