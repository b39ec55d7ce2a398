"""The NumPy path (lossdsl/eager.py) and the background switch to the fused kernels (issue 16).

The NumPy path is checked against PyTorch autograd for every built-in with a torch oracle (value,
vector-Jacobian product and Hessian diagonal, float64), against the fused kernels for every call
feature on one spec (sample weights with zeros, ignored labels, cotangent, out=, float32, every
reduction and mode), and for NaN, bad labels and dtypes. The background policy is run end to
end once: NumPy first, then the kernels the compile process made, with the same results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RTOL32, assert_close, has_hessian
from oracles import ORACLES, Oracle

import lossdsl
from lossdsl import background, host, runtime
from lossdsl.calls import bind
from lossdsl.errors import SpecShapeError, UnsupportedError

REGRESSIONS = Path(__file__).resolve().parent / "regressions"

# Labels, class weights, ignore_index, a batch total and a row maximum: every phase.
MIXED = """
loss mixed(logits[C], label: int; weight: real[C] = 1, ignore_index: int = -100, k: real = 0.5):
    return -log_softmax[C](logits)[label] + k * max[C](logits) * total(sum[C](softmax[C](logits)))
    reduce mean weighted where(label == ignore_index, 0, weight[label])
"""


def _never(loss: lossdsl.Loss) -> lossdsl.Loss:
    return lossdsl.Loss(loss.definition, compile_mode="never")


def _tuple(x: Any) -> tuple[np.ndarray, ...]:
    return x if isinstance(x, tuple) else (x,)


def _torch_reference(
    oracle: Oracle, loss: lossdsl.Loss, inputs: tuple[np.ndarray, ...], cot: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray] | None]:
    """Per-sample values, and the gradient and Hessian diagonal of sum(cot * values) (None
    where torch has no second derivative of the function, e.g. multi_margin_loss)."""
    torch = pytest.importorskip("torch")
    tensors = [
        torch.tensor(a, dtype=torch.float64, requires_grad=name in loss.wrt)
        if a.dtype.kind == "f"
        else torch.tensor(a, dtype=torch.int64)
        for name, a in zip(loss.inputs, inputs, strict=True)
    ]
    value = oracle.reference(*tensors, reduction="none")
    wrt = [t for name, t in zip(loss.inputs, tensors, strict=True) if name in loss.wrt]
    total = (value * torch.tensor(cot)).sum()
    grads = torch.autograd.grad(total, wrt, create_graph=True, allow_unused=True)
    try:
        hess = _hessian_diagonals(torch, grads, wrt)
    except RuntimeError as exc:
        if "not implemented" not in str(exc):
            raise
        hess = None
    return (
        value.detach().numpy(),
        [
            np.zeros(x.shape) if g is None else g.detach().numpy()
            for g, x in zip(grads, wrt, strict=True)
        ],
        hess,
    )


def _hessian_diagonals(torch: Any, grads: Any, wrt: list[Any]) -> list[np.ndarray]:
    hess = []
    for g, x in zip(grads, wrt, strict=True):
        h = np.zeros(x.numel())
        flat = g.reshape(-1) if g is not None else None
        for j in range(x.numel() if flat is not None and flat.requires_grad else 0):
            assert flat is not None
            (d,) = torch.autograd.grad(flat[j], x, retain_graph=True, allow_unused=True)
            h[j] = 0.0 if d is None else float(d.reshape(-1)[j])
        hess.append(h.reshape(x.shape))
    return hess


@pytest.mark.torch
@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.spec)
def test_numpy_path_matches_torch(oracle: Oracle) -> None:
    """Per-sample values, the vector-Jacobian product and its Hessian diagonal, float64."""
    loss = _never(lossdsl.get(oracle.spec))
    rng = np.random.default_rng(zlib.crc32(oracle.spec.encode()))
    inputs = oracle.cases(rng)["typical"]
    value = loss(*inputs, reduction="none")
    cot = rng.uniform(0.5, 2.0, np.shape(value))
    ref_value, ref_grads, ref_hess = _torch_reference(oracle, loss, inputs, cot)
    assert_close(value, ref_value)
    if has_hessian(loss, *inputs):
        _, grads, hess = loss.value_grad_hess(*inputs, reduction="none", cotangent=cot)
    else:
        (_, grads), ref_hess = loss.value_and_grad(*inputs, reduction="none", cotangent=cot), None
    ours = _tuple(grads) + (_tuple(hess) if ref_hess is not None else ())
    for a, ref in zip(ours, ref_grads + (ref_hess or []), strict=True):
        assert_close(a, ref, rtol=1e-9, atol=1e-10)


def _mixed_calls(rng: np.random.Generator) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    n, c = 9, 5
    logits = rng.normal(size=(n, c))
    labels = rng.integers(0, c, n)
    labels[2] = -100  # ignored: its weight is zero, whatever it reads
    sw = rng.uniform(0.5, 2.0, n)
    sw[4] = 0.0
    weight = rng.uniform(0.5, 1.5, c)
    cot = rng.normal(size=n)
    f32 = logits.astype(np.float32)
    return [
        ("hess", (logits, labels), {"sample_weight": sw, "weight": weight}),
        ("hess", (logits, labels), {"reduction": "sum", "k": 1.5}),
        ("grad", (logits, labels), {"reduction": "none", "cotangent": cot, "sample_weight": sw}),
        ("grad", (f32, labels), {"out": np.empty_like(f32)}),
        ("value", (f32, labels), {"reduction": "sum", "sample_weight": sw.astype(np.float32)}),
        ("value", (logits, labels), {"reduction": "none"}),
    ]


def _call(loss: lossdsl.Loss, mode: str, args: tuple[Any, ...], kw: dict[str, Any]) -> list[Any]:
    if mode == "value":
        return [loss(*args, **kw)]
    if mode == "grad":
        return list(loss.value_and_grad(*args, **kw))
    return list(loss.value_grad_hess(*args, **kw))


def test_numpy_path_matches_kernels_for_every_call_feature(rng: np.random.Generator) -> None:
    definition = lossdsl.compile(MIXED).definition
    fused = lossdsl.Loss(definition, compile_mode="sync")
    numpy_path = lossdsl.Loss(definition, compile_mode="never")
    for mode, args, kw in _mixed_calls(rng):
        ours = _call(numpy_path, mode, args, kw)
        ref = _call(fused, mode, args, kw)
        low = args[0].dtype == np.float32
        for a, b in zip(ours, ref, strict=True):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            if low:
                assert_close(a, b, rtol=RTOL32 * 10, atol=1e-5)
            else:
                assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_in_float32_out_and_nan_stays_in_its_sample() -> None:
    huber = _never(lossdsl.get("huber"))
    pred = np.array([0.5, np.nan, -1.0, 3.0], np.float32)
    target = np.zeros(4, np.float32)
    value, grad = huber.value_and_grad(pred, target, reduction="none")
    assert value.dtype == np.float32
    assert grad.dtype == np.float32
    assert np.isnan(value[1])
    assert np.isfinite(np.delete(value, 1)).all()
    # A zero weight removes the sample, NaN included.
    v, g = huber.value_and_grad(pred, target, sample_weight=np.array([1, 0, 1, 1], np.float32))
    assert isinstance(v, np.float32)
    assert np.isfinite(v)
    assert g[1] == 0


def test_labels_outside_the_axis_raise_unless_ignored() -> None:
    ce = _never(lossdsl.get("sparse_cross_entropy"))
    logits = np.zeros((3, 4))
    with pytest.raises(SpecShapeError, match="outside"):
        ce(logits, np.array([0, 4, 1]))
    assert np.isfinite(ce(logits, np.array([0, -100, 1])))


def test_unknown_compile_policy_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsupportedError, match="compile policy"):
        lossdsl.Loss(lossdsl.get("mse").definition, compile_mode="later")
    monkeypatch.setenv("LOSSDSL_COMPILE", "later")
    with pytest.raises(UnsupportedError, match="LOSSDSL_COMPILE"):
        lossdsl.Loss(lossdsl.get("mse").definition)(np.zeros(2), np.zeros(2))


def test_described_signature_is_numbas_type_of_the_kernel_arguments() -> None:
    numba = pytest.importorskip("numba")
    loss = lossdsl.compile(MIXED)
    logits = np.broadcast_to(np.zeros(5), (4, 5))  # strided and read-only: layout A
    call = bind(loss.definition, (logits, np.arange(4) % 5), {}, "none", np.ones(4, np.float32))
    grads = [np.empty((4, 5))]
    entry, described = host.signature("grad", call, grads, [], loss.definition)
    head, tail = host._head(call, 1), host._tail(call, np.empty(4), grads, [], loss.definition)
    sched, parts = np.zeros(3, np.int64), np.zeros((1, 1))
    actual = (*head, 0, 0, sched, parts, parts, parts, *tail)
    assert entry == "grad_f64"
    assert runtime.numba_signature(described) == tuple(numba.typeof(a) for a in actual)


@pytest.mark.torch
def test_regression_tied_row_minimum_keeps_its_gradient() -> None:
    torch = pytest.importorskip("torch")
    loss = _never(lossdsl.load(REGRESSIONS / "miscompile-array-tied-max.loss"))
    x = np.random.default_rng(1).uniform(0, 1, (200, 4))
    t = torch.tensor(x, requires_grad=True)
    (torch.log_softmax(t.abs(), -1).amin(-1) ** 2).sum().backward()
    assert t.grad is not None
    _, grad = loss.value_and_grad(x)
    assert_close(grad, t.grad.numpy())


def test_regression_totals_count_each_weight_once() -> None:
    loss = lossdsl.load(REGRESSIONS / "miscompile-array-total-weight.loss")
    rng = np.random.default_rng(0)
    p, t, w = rng.uniform(size=50), (rng.uniform(size=50) > 0.5) * 1.0, rng.uniform(0, 3, 50)
    # Frequency weights: total(x) = sum_i w_i x_i, written out.
    ref = 1 - (2 * np.sum(w * p * t) + 1) / (np.sum(w * p) + np.sum(w * t) + 1)
    assert_close(_never(loss)(p, t, sample_weight=w), ref)
    jax = pytest.importorskip("jax")
    from lossdsl.integrations.jax import loss_fn

    with jax.enable_x64(True):
        assert_close(loss_fn(loss)(p, t, sample_weight=w), ref)


def test_background_serves_numpy_then_the_compiled_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(tmp_path))
    spec = "loss background_switch(x, y; a: real = 2.0):\n    return a * (x - y)^2 + log1p(x^2)\n"
    loss = lossdsl.Loss(lossdsl.compile(spec).definition, compile_mode="background")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=100), rng.normal(size=100)
    first = loss.value_and_grad(x, y)
    assert not loss._tracker.ready  # served by NumPy, the kernels asked for
    assert len(loss._tracker.asked) == 1
    try:
        assert background.wait(timeout=600)
    finally:
        background.close()
    assert not loss._tracker.failed
    assert len(loss._tracker.ready) == 1
    module = loss._kernels(loss._default_fixed())
    assert module.grad_f64.signatures  # loaded from the cache the compile process wrote
    second = loss.value_and_grad(x, y)
    assert_close(second[0], first[0], rtol=1e-12)
    assert_close(second[1], first[1], rtol=1e-12)


def test_import_loads_no_compiler_and_a_numpy_call_no_numba() -> None:
    """`import lossdsl` imports neither Numba, SymPy nor Lark (issue 16: import time), and a
    call served by NumPy does not import Numba either."""
    code = (
        "import sys, numpy as np, lossdsl\n"
        "heavy = ('numba', 'sympy', 'lark')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "loss = lossdsl.get('huber')\n"
        "lossdsl.Loss(loss.definition, compile_mode='never')(np.ones(3), np.zeros(3))\n"
        "print('numba' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(lossdsl.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "False"]
