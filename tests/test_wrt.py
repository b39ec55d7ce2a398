"""Gradients with respect to inputs chosen at call time (`wrt=`), for built-ins and user specs.

The reference is torch autograd in float64 on the frameworks' own formulas (`oracles.py`),
differentiating every real-valued input at once, so the gradient with respect to targets is
checked for every built-in that has one; Hessian diagonals against finite differences of the
gradient. One kernel module per loss: each call asks for the same wrt set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from typing import Any

import numpy as np
import pytest
from conftest import RTOL32, assert_close, fd_grad, fd_hess_diag
from oracles import ORACLES, Inputs, Oracle

import lossdsl
from lossdsl.errors import SpecNameError, SpecShapeError


def _real_inputs(loss: lossdsl.Loss) -> tuple[str, ...]:
    return tuple(i.name for i in loss.definition.inputs if i.kind == "real")


# Built-ins with a real input beyond the spec's own `wrt` (a target, a variance, a second score).
WITH_TARGETS = [
    o for o in ORACLES if set(_real_inputs(lossdsl.get(o.spec))) - set(lossdsl.get(o.spec).wrt)
]


def _soft_margin(p: Any, t: Any, reduction: str) -> Any:
    # torch's soft_margin_loss, log(1 + exp(-t p)), transcribed: torch refuses target gradients.
    import torch

    per = torch.nn.functional.softplus(-t * p)
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


# References whose torch function does not differentiate its target.
_TRANSCRIBED = {"soft_margin": _soft_margin}


def _typical(oracle: Oracle) -> Inputs:
    return oracle.cases(np.random.default_rng(zlib.crc32(oracle.spec.encode())))["typical"]


def _as_tuple(g: object) -> tuple[np.ndarray, ...]:
    return g if isinstance(g, tuple) else (g,)  # type: ignore[return-value]


def _torch_grads(
    oracle: Oracle,
    loss: lossdsl.Loss,
    inputs: Inputs,
    wrt: tuple[str, ...],
    reduction: str,
    cotangent: np.ndarray | None = None,
    **params: Any,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    torch = pytest.importorskip("torch")
    tensors = {
        name: torch.tensor(a, dtype=torch.float64, requires_grad=name in wrt)
        if a.dtype.kind == "f"
        else torch.tensor(a, dtype=torch.int64)
        for name, a in zip(loss.inputs, inputs, strict=True)
    }
    reference = _TRANSCRIBED.get(oracle.spec, oracle.reference)
    value = reference(*tensors.values(), reduction=reduction, **params)
    seed = value.sum() if cotangent is None else (value * torch.tensor(cotangent)).sum()
    grads = torch.autograd.grad(seed, [tensors[n] for n in wrt], allow_unused=True)
    return value.detach().numpy(), tuple(
        np.zeros(tensors[n].shape) if g is None else g.numpy()
        for g, n in zip(grads, wrt, strict=True)
    )


@pytest.mark.torch
@pytest.mark.parametrize("oracle", WITH_TARGETS, ids=lambda o: o.spec)
def test_gradients_with_respect_to_every_real_input_match_torch(oracle: Oracle) -> None:
    loss = lossdsl.get(oracle.spec)
    wrt = _real_inputs(loss)[::-1]  # the order asked, not the declaration order
    inputs = _typical(oracle)
    for reduction in ("mean", "none"):
        ct = np.linspace(-1.0, 2.0, inputs[0].shape[0]) if reduction == "none" else None
        value, grads = loss.value_and_grad(*inputs, reduction=reduction, wrt=wrt, cotangent=ct)
        ref_value, ref_grads = _torch_grads(oracle, loss, inputs, wrt, reduction, ct)
        assert_close(value, ref_value)
        assert len(_as_tuple(grads)) == len(wrt)
        for name, ours, ref in zip(wrt, _as_tuple(grads), ref_grads, strict=True):
            assert ours.shape == inputs[loss.inputs.index(name)].shape
            assert_close(ours, ref)


@pytest.mark.parametrize("name", ["huber", "kl_div", "cross_entropy", "gaussian_nll"])
def test_hessian_diagonal_with_respect_to_targets_matches_finite_differences(
    name: str, rng: np.random.Generator
) -> None:
    loss = lossdsl.get(name)
    oracle = next(o for o in ORACLES if o.spec == name)
    inputs = list(_typical(oracle))
    wrt = _real_inputs(loss)
    v, grads, hessians = loss.value_grad_hess(*inputs, wrt=wrt)
    assert_close(v, loss(*inputs))
    for k, x_name in enumerate(wrt):
        at = loss.inputs.index(x_name)

        def value(x: np.ndarray, at: int = at) -> float:
            return float(loss(*inputs[:at], x, *inputs[at + 1 :]))

        def grad(x: np.ndarray, at: int = at, k: int = k) -> np.ndarray:
            return _as_tuple(loss.grad(*inputs[:at], x, *inputs[at + 1 :], wrt=wrt))[k]

        np.testing.assert_allclose(grads[k], fd_grad(value, inputs[at]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            hessians[k], fd_hess_diag(grad, inputs[at]), rtol=1e-4, atol=1e-6
        )
    h_alone = loss.hessian_diag(*inputs, wrt=wrt)
    for a, b in zip(h_alone, hessians, strict=True):
        assert_close(a, b)


USER = """
loss distill(student[C], teacher[C]; temperature: real = 2.0 > 0):
    task multiclass
    t = softmax[C](teacher / temperature)
    return -temperature^2 * sum[C](t * log_softmax[C](student / temperature))
"""


def _distill_torch(s: Any, t: Any, reduction: str, temperature: float = 2.0) -> Any:
    import torch

    per = -(temperature**2) * (
        torch.softmax(t / temperature, -1) * torch.log_softmax(s / temperature, -1)
    ).sum(-1)
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


def test_user_spec_gets_both_gradients_with_sample_weight_and_out(
    rng: np.random.Generator,
) -> None:
    torch = pytest.importorskip("torch")
    loss = lossdsl.compile(USER)
    assert loss.wrt == ("student",)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    w = np.array([1.0, 0.0, 2.0, 0.5, 1.0])
    outs = (np.empty_like(s), np.empty_like(t))
    value, grads = loss.value_and_grad(
        s, t, sample_weight=w, out=outs, wrt=("student", "teacher"), temperature=1.5
    )
    assert grads[0] is outs[0]
    assert grads[1] is outs[1]
    ts, tt = (torch.tensor(a, requires_grad=True) for a in (s, t))
    per = _distill_torch(ts, tt, "none", temperature=1.5)
    ref = (per * torch.tensor(w)).sum() / w.sum()
    ref.backward()
    assert_close(value, ref.item())
    assert_close(grads[0], ts.grad.numpy())
    assert_close(grads[1], tt.grad.numpy())
    # The spec's own wrt stays the default; a single name gives one array.
    assert_close(loss.grad(s, t, sample_weight=w, temperature=1.5), ts.grad.numpy())
    g_t = loss.grad(s, t, sample_weight=w, temperature=1.5, wrt="teacher")
    assert_close(g_t, tt.grad.numpy())
    # float32 within tolerance.
    g32 = loss.grad(s.astype(np.float32), t.astype(np.float32), wrt="teacher")
    ref64 = loss.grad(s, t, wrt="teacher")
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, ref64, rtol=RTOL32 * 10, atol=1e-6)


def test_grad_hess_with_respect_to_the_target(rng: np.random.Generator) -> None:
    loss = lossdsl.get("huber")
    p, t = rng.normal(size=6), rng.normal(size=6)
    g, h = loss.grad_hess(p, t, wrt="target")
    g_pred, h_pred = loss.grad_hess(p, t)
    # Huber depends on pred - target only: the target's derivatives mirror the prediction's.
    assert_close(g, -g_pred)
    assert_close(h, h_pred)


def test_views_are_memoised_and_keyed_by_the_wrt_set() -> None:
    loss = lossdsl.get("mse")
    both = loss.with_wrt(("pred", "target"))
    assert both is loss.with_wrt(["pred", "target"])
    assert loss.with_wrt("pred") is loss
    assert loss.with_wrt(("pred",)) is loss
    assert both.wrt == ("pred", "target")
    assert loss.wrt == ("pred",)
    reverse = loss.with_wrt(("target", "pred"))
    keys = {loss.source_path, both.source_path, reverse.source_path}
    assert len(keys) == 3  # the disk cache key includes the wrt set (and its order)
    assert [i.differentiated for i in both.input_info] == [True, True]


@pytest.mark.parametrize(
    ("name", "wrt", "error", "words"),
    [
        ("sparse_cross_entropy", "label", SpecShapeError, "label"),
        ("sparse_cross_entropy", ("logits", "label"), SpecShapeError, "integer labels"),
        ("mse", "tagret", SpecNameError, "did you mean 'target'"),
        ("mse", (), SpecShapeError, "names no input"),
        ("mse", ("pred", "pred"), SpecNameError, "twice"),
        ("mse", 3, SpecNameError, "not an input"),
    ],
)
def test_bad_wrt_is_a_clear_error(name: str, wrt: Any, error: type, words: str) -> None:
    loss = lossdsl.get(name)
    args = (np.zeros((2, 3)), np.array([0, 1])) if loss.definition.axis else (np.zeros(2),) * 2
    with pytest.raises(error) as info:
        loss.grad(*args, wrt=wrt)
    assert words in str(info.value)


def test_an_input_the_reduction_weight_reads_cannot_be_differentiated() -> None:
    loss = lossdsl.compile(
        "loss wmse(pred, target, w):\n    return (pred - target)^2\n    reduce mean weighted w\n"
    )
    with pytest.raises(SpecShapeError, match="reduction weight"):
        loss.grad(np.zeros(2), np.zeros(2), np.ones(2), wrt=("pred", "w"))


def test_inputs_and_parameters_cannot_take_call_keywords() -> None:
    with pytest.raises(SpecNameError, match="keyword of every loss call"):
        lossdsl.compile("loss a(pred, target; wrt: real = 1):\n    return wrt * (pred - target)\n")


_CUDA_SCRIPT = """
import numpy as np, lossdsl
rng = np.random.default_rng(3)
p, t = rng.normal(size=5), rng.normal(size=5)
cpu = lossdsl.get("huber")
for kw in ({}, {"reduction": "none", "cotangent": np.arange(5.0)}):
    v, (gp, gt) = cpu.to("cuda").value_and_grad(p, t, wrt=("target", "pred"), **kw)
    w, (cp, ct) = cpu.value_and_grad(p, t, wrt=("target", "pred"), **kw)
    np.testing.assert_allclose(v, w, rtol=1e-10)
    np.testing.assert_allclose(gp, cp, rtol=1e-10)
    np.testing.assert_allclose(gt, ct, rtol=1e-10)
print("agree")
"""


def test_cuda_target_differentiates_the_chosen_inputs() -> None:
    # The simulator must be chosen before numba.cuda is imported: a fresh process.
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CUDA_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == "agree"


def test_torch_adapter_differentiates_the_chosen_inputs(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    from lossdsl.integrations.torch import LossModule, loss_fn

    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    ours = [torch.tensor(a, requires_grad=True) for a in (s, t)]
    ref = [torch.tensor(a, requires_grad=True) for a in (s, t)]
    f = loss_fn(lossdsl.compile(USER), wrt=("student", "teacher"))
    f(*ours, temperature=1.5).backward()
    _distill_torch(*ref, "mean", temperature=1.5).backward()
    for a, b in zip(ours, ref, strict=True):
        assert_close(a.grad.numpy(), b.grad.numpy())
    # The module form: KL divergence between two networks' log-probabilities.
    p, q = (torch.log_softmax(torch.tensor(rng.normal(size=(4, 3))), -1) for _ in range(2))
    pa, qa = p.clone().requires_grad_(), q.clone().requires_grad_(True)
    pb, qb = p.clone().requires_grad_(), q.clone().requires_grad_(True)
    LossModule("kl_div_batchmean", wrt=("pred", "target"), log_target=1)(pa, qa).backward()
    torch.nn.functional.kl_div(pb, qb, reduction="batchmean", log_target=True).backward()
    assert_close(pa.grad.numpy(), pb.grad.numpy())
    assert_close(qa.grad.numpy(), qb.grad.numpy())
