"""Semantics of batch totals, weights and vector-Jacobian products (issue 9).

- `total(x)` of an axis-valued `x` keeps the axis (per-class totals); `total(sum[C](x))` is
  the grand total.
- Weights are frequency weights, in the reduction and in every total: total(x) = sum_i w_i x_i;
  a zero weight removes the sample; the gradient is that of the value returned.
- Nested totals are rejected at the inner call.
- `cotangent=` (reduction 'none') gives the gradient of sum_i cotangent_i * out_i.

References share no code with lowering, derivation or code generation: float64 PyTorch
autograd of the formula written by hand, finite differences of the returned value, and the
NumPy interpreter in tests/reference.py.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RTOL32, assert_close, fd_grad, fd_hess_diag, torch_or_skip
from reference import reference_value

import lossdsl
from lossdsl.errors import DerivationError, SpecShapeError, UnsupportedError

REGRESSIONS = Path(__file__).resolve().parent / "regressions"

PER_CLASS_DICE = """
loss per_class_dice(pred[C], target[C]; smooth: real = 1.0 >= 0):
    return mean[C](1 - (2 * total(pred * target) + smooth) / (total(pred) + total(target) + smooth))
"""
# The spec weight enters the totals too (frequency weights).
WEIGHTED_DICE = """
loss weighted_dice(pred, target, m):
    return 1 - 2 * total(pred * target) / (total(pred) + total(target))
    reduce mean weighted m
"""


@pytest.fixture(scope="module")
def per_class() -> lossdsl.Loss:
    return lossdsl.compile(PER_CLASS_DICE)


def _torch_dice(p: Any, t: Any, w: Any, per_class: bool, smooth: float = 1.0) -> Any:
    """Dice written by hand: sums over the batch weighted by w (keeping the class axis for
    per-class Dice, then its mean); one value for the batch."""
    torch = torch_or_skip()
    wb = w[:, None] if p.dim() == 2 else w
    keep = (wb != 0).to(p.dtype)  # a zero weight removes the sample, NaNs included
    dims = (0,) if per_class else tuple(range(p.dim()))
    tp = torch.where(keep > 0, wb * p * t, 0).sum(dims)
    sp_ = torch.where(keep > 0, wb * p, 0).sum(dims)
    st = torch.where(keep > 0, wb * t, 0).sum(dims)
    return (1 - (2 * tp + smooth) / (sp_ + st + smooth)).mean()


def _torch_triad(f: Any, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Value, autograd gradient and double-backward Hessian diagonal of a scalar f(x)."""
    torch = torch_or_skip()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    v = f(xt)
    (g,) = torch.autograd.grad(v, xt, create_graph=True)
    flat = g.reshape(-1)
    h = [
        torch.autograd.grad(flat[k], xt, retain_graph=True)[0].reshape(-1)[k]
        for k in range(flat.numel())
    ]
    return float(v.detach()), g.detach().numpy(), torch.stack(h).reshape(x.shape).detach().numpy()


def _dice_inputs(rng: np.random.Generator, n: int, c: int | None) -> tuple[np.ndarray, np.ndarray]:
    shape = (n, c) if c else (n,)
    return rng.uniform(0.05, 0.95, size=shape), (rng.uniform(size=shape) > 0.5).astype(np.float64)


# -- per-class totals --------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("n", [1, 2, 7])
def test_per_class_dice_matches_torch(per_class: lossdsl.Loss, n: int) -> None:
    torch = torch_or_skip()
    rng = np.random.default_rng(n)
    p, t = _dice_inputs(rng, n, 4)
    w = rng.uniform(0.5, 2.0, size=n)
    if n > 1:
        w[1] = 0.0
    tt, wt = torch.tensor(t), torch.tensor(w)
    for sw in (None, w):
        ws = wt if sw is not None else torch.ones(n, dtype=torch.float64)
        value, grad, hess = _torch_triad(lambda x, ws=ws: _torch_dice(x, tt, ws, True), p)
        v, g, h = per_class.value_grad_hess(p, t, sample_weight=sw, reduction="sum")
        # reduction sum: every sample carries the batch value, weighted.
        scale = float(ws.sum())
        assert_close(v, scale * value)
        assert_close(g, scale * grad)
        assert_close(h, scale * hess)
        v32, g32 = per_class.value_and_grad(p.astype(np.float32), t.astype(np.float32))
        ref = _torch_triad(
            lambda x: _torch_dice(x, tt, torch.ones(n, dtype=torch.float64), True), p
        )
        assert_close(v32, ref[0], rtol=RTOL32, atol=1e-6)
        assert_close(g32, ref[1], rtol=RTOL32, atol=1e-6)


def test_per_class_totals_match_the_reference_interpreter(per_class: lossdsl.Loss) -> None:
    rng = np.random.default_rng(3)
    p, t = _dice_inputs(rng, 5, 3)
    w = np.array([1.0, 0.0, 2.0, 0.5, 1.0])
    d = per_class.definition

    def ref(x: np.ndarray) -> float:
        return float(reference_value(d, {"pred": x, "target": t}, sample_weight=w))

    v, g = per_class.value_and_grad(p, t, sample_weight=w)
    assert_close(v, ref(p))
    assert_close(g, fd_grad(ref, p), rtol=1e-5, atol=1e-7)
    per_sample = per_class(p, t, sample_weight=w, reduction="none")
    assert_close(per_sample, reference_value(d, {"pred": p, "target": t}, None, "none", w))


@pytest.mark.torch
def test_grand_total_sums_the_axis_too() -> None:
    torch = torch_or_skip()
    grand = lossdsl.compile(
        "loss grand(pred[C], target[C]):\n"
        "    return 1 - (2 * total(sum[C](pred * target)) + 1) / "
        "(total(sum[C](pred)) + total(sum[C](target)) + 1)\n"
    )
    rng = np.random.default_rng(4)
    p, t = _dice_inputs(rng, 6, 3)
    ones = torch.ones(6, dtype=torch.float64)
    value, grad, hess = _torch_triad(lambda x: _torch_dice(x, torch.tensor(t), ones, False), p)
    v, g, h = grand.value_grad_hess(p, t)
    assert_close(v, value)
    assert_close(g, grad)
    assert_close(h, hess)


def test_per_class_totals_do_not_depend_on_thread_count(per_class: lossdsl.Loss) -> None:
    import numba

    rng = np.random.default_rng(5)
    p, t = _dice_inputs(rng, 70_000, 4)  # past the parallel threshold, many blocks
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            v, g = per_class.value_and_grad(p, t)
            results.append((np.asarray(v).tobytes(), g.tobytes()))
    finally:
        numba.set_num_threads(before)
    assert all(r == results[0] for r in results)


@pytest.mark.torch
def test_softmax_per_class_dice_gradient_and_hessian_error() -> None:
    """Softmax inside a per-class total: exact value and gradient; the Hessian diagonal (which
    would need every position's total per position) is a clear error, raised when asked for."""
    torch = torch_or_skip()
    loss = lossdsl.compile(
        "loss soft_dice(z[C], target[C]):\n"
        "    return mean[C](1 - 2 * total(softmax[C](z) * target) / "
        "(total(softmax[C](z)) + total(target)))\n"
    )
    rng = np.random.default_rng(2)
    z, t = rng.normal(size=(5, 3)), (rng.uniform(size=(5, 3)) > 0.5).astype(np.float64)
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.5])
    tt, wt = torch.tensor(t), torch.tensor(w)[:, None]

    def f(x: Any) -> Any:
        s = torch.softmax(x, -1)
        return (1 - 2 * (wt * s * tt).sum(0) / ((wt * s).sum(0) + (wt * tt).sum(0))).mean()

    value, grad, _ = _torch_triad(f, z)
    v, g = loss.value_and_grad(z, t, sample_weight=w)
    assert_close(v, value)
    assert_close(g, grad)
    with pytest.raises(DerivationError, match="Hessian diagonal through a per-class total") as e:
        loss.hessian_diag(z, t)
    assert e.value.span is not None
    assert "hint:" in str(e.value)


# -- weights and totals ------------------------------------------------------------------------


def _regression(name: str) -> lossdsl.Loss:
    return lossdsl.load(REGRESSIONS / f"miscompile-{name}.loss")


@pytest.mark.torch
def test_zero_weights_remove_samples_from_totals() -> None:
    """Issue 9, wrong result 4: value and gradient agree for every weight vector."""
    torch = torch_or_skip()
    dice = _regression("dice-zero-weight")
    rng = np.random.default_rng(6)
    p, t = _dice_inputs(rng, 6, None)
    for w in (np.array([1.0, 0, 0, 0, 0, 0]), rng.uniform(0, 2, 6), np.array([0, 2.0, 0, 1, 0, 3])):
        v, g = dice.value_and_grad(p, t, sample_weight=w)
        h = dice.hessian_diag(p, t, sample_weight=w)
        value, grad, hess = _torch_triad(
            lambda x, w=w: _torch_dice(x, torch.tensor(t), torch.tensor(w), False), p
        )
        assert_close(v, value)
        assert_close(g, grad)
        assert_close(h, hess)

        def f(x: np.ndarray, w: np.ndarray = w) -> float:
            return float(dice(x, t, sample_weight=w))

        assert_close(g, fd_grad(f, p), rtol=1e-5, atol=1e-7)
        assert_close(
            h, fd_hess_diag(lambda x, w=w: dice.grad(x, t, sample_weight=w), p), 1e-4, 1e-6
        )
    # A zero-weight sample is removed entirely, its NaN included.
    w = np.array([1.0, 0, 1, 1, 1, 1])
    bad = p.copy()
    bad[1] = np.nan
    v, g = dice.value_and_grad(bad, t, sample_weight=w)
    assert_close(v, dice(np.delete(p, 1), np.delete(t, 1)))
    assert np.all(np.isfinite(g))
    assert g[1] == 0.0


@pytest.mark.torch
def test_spec_weights_enter_the_totals() -> None:
    torch = torch_or_skip()
    loss = lossdsl.compile(WEIGHTED_DICE)
    rng = np.random.default_rng(7)
    p, t = _dice_inputs(rng, 5, None)
    m = np.array([1.0, 0.0, 2.0, 0.5, 1.0])
    sw = np.array([1.0, 1.0, 0.5, 2.0, 0.0])
    w = m * sw

    def f(x: Any) -> Any:
        wt = torch.tensor(w)
        d = 1 - 2 * (wt * x * torch.tensor(t)).sum() / (
            (wt * x).sum() + (wt * torch.tensor(t)).sum()
        )
        return d  # the weighted mean of a batch value is the value

    value, grad, hess = _torch_triad(f, p)
    v, g, h = loss.value_grad_hess(p, t, m, sample_weight=sw)
    assert_close(v, value)
    assert_close(g, grad)
    assert_close(h, hess)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_totals_on_small_batches(n: int) -> None:
    """Issue 9, wrong result 3: a batch of one returned -1 instead of 0."""
    loss = _regression("total-batch-of-one")
    rng = np.random.default_rng(n)
    p = rng.normal(size=n) * 2
    want = np.clip(p, -1, 1).sum() - n
    assert_close(loss(p, p, reduction="none"), np.full(n, want))
    assert_close(loss.grad(p, p, reduction="sum"), n * ((p > -1) & (p < 1)))
    axis = lossdsl.compile(
        "loss a(pred[C], target[C]):\n    return sum[C](total(clip(pred, -1, 1)) - total(1))\n"
    )
    q = rng.normal(size=(n, 3)) * 2
    assert_close(axis(q, q, reduction="none"), np.full(n, np.clip(q, -1, 1).sum() - 3 * n))


# -- nested totals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "column", "message"),
    [
        ("total(1 + total(x))", 22, "total() inside total() is not supported"),
        ("1 + total(x * dice(x, x))", 26, "loss 'dice', called here, uses total()"),
    ],
)
def test_nested_totals_are_rejected_at_the_inner_call(body: str, column: int, message: str) -> None:
    with pytest.raises(UnsupportedError) as e:
        lossdsl.compile(f"loss f(x):\n    return {body}\n")
    assert message in str(e.value)
    assert e.value.span is not None
    assert (e.value.span.line, e.value.span.column) == (2, column)
    assert "hint:" in str(e.value)


def test_total_in_a_reduction_weight_is_rejected() -> None:
    with pytest.raises(UnsupportedError, match="total\\(\\) in a reduction weight"):
        lossdsl.compile("loss f(x, m):\n    return x\n    reduce mean weighted total(m)\n")


# -- vector-Jacobian products ------------------------------------------------------------------


def _vjp(f: Any, x: np.ndarray, ct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    torch = torch_or_skip()
    xt = torch.tensor(x, requires_grad=True)
    out = f(xt)
    (g,) = torch.autograd.grad(out, xt, grad_outputs=torch.tensor(ct))
    return out.detach().numpy(), g.numpy()


@pytest.mark.torch
def test_cotangent_of_a_per_sample_loss() -> None:
    torch = torch_or_skip()
    ce = lossdsl.get("cross_entropy")
    rng = np.random.default_rng(8)
    z, y = rng.normal(size=(5, 4)), rng.dirichlet(np.ones(4), size=5)
    ct = rng.normal(size=5)
    out, grad = _vjp(
        lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(y), reduction="none"), z, ct
    )
    v, g = ce.value_and_grad(z, y, reduction="none", cotangent=ct)
    assert_close(v, out)
    assert_close(g, grad)
    assert_close(ce.grad(z, y, reduction="none", cotangent=ct), grad)
    # The Hessian diagonal of sum_i ct_i out_i, by finite differences of that gradient.
    h = ce.hessian_diag(z, y, reduction="none", cotangent=ct)
    fd = fd_hess_diag(lambda x: ce.grad(x, y, reduction="none", cotangent=ct), z)
    assert_close(h, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["grand", "per_class"])
def test_cotangent_through_batch_totals(kind: str, per_class: lossdsl.Loss) -> None:
    torch = torch_or_skip()
    loss = lossdsl.get("dice") if kind == "grand" else per_class
    rng = np.random.default_rng(9)
    p, t = _dice_inputs(rng, 6, None if kind == "grand" else 3)
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    ct = rng.normal(size=6)

    def f(x: Any) -> Any:
        d = _torch_dice(x, torch.tensor(t), torch.tensor(w), kind == "per_class")
        return torch.tensor(w) * d  # the per-sample outputs w_i * l_i

    out, grad = _vjp(f, p, ct)
    v, g, h = loss.value_grad_hess(p, t, reduction="none", sample_weight=w, cotangent=ct)
    assert_close(v, out)
    assert_close(g, grad)
    fd = fd_hess_diag(lambda x: loss.grad(x, t, reduction="none", sample_weight=w, cotangent=ct), p)
    assert_close(h, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.torch
def test_cotangent_with_ignore_index_and_class_weights() -> None:
    torch = torch_or_skip()
    sce = lossdsl.get("sparse_cross_entropy")
    rng = np.random.default_rng(10)
    z, y = rng.normal(size=(6, 4)), rng.integers(0, 4, size=6)
    y[2] = -100
    cw = rng.uniform(0.5, 2.0, size=4)
    ct = rng.normal(size=6)

    def f(x: Any) -> Any:
        return torch.nn.functional.cross_entropy(
            x, torch.tensor(y), weight=torch.tensor(cw), ignore_index=-100, reduction="none"
        )

    out, grad = _vjp(f, z, ct)
    v, g = sce.value_and_grad(z, y, weight=cw, reduction="none", cotangent=ct)
    assert_close(v, out)
    assert_close(g, grad)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cotangent": np.ones(4)}, "needs reduction='none'"),
        ({"reduction": "none", "cotangent": np.ones(3)}, "does not broadcast to the batch"),
        ({"reduction": "none", "cotangent": np.array(["a"] * 4)}, "must hold real numbers"),
    ],
)
def test_bad_cotangents_are_clear_errors(kw: dict[str, Any], message: str) -> None:
    mse = lossdsl.get("mse")
    with pytest.raises(SpecShapeError, match=message):
        mse.grad(np.zeros(4), np.zeros(4), **kw)


def test_cotangent_broadcasts_and_converts() -> None:
    mse = lossdsl.get("mse")
    p, t = np.arange(4.0), np.zeros(4)
    g = mse.grad(p, t, reduction="none", cotangent=2)  # an int scalar: every sample
    assert_close(g, 2 * 2 * p)


# -- CUDA under the simulator ------------------------------------------------------------------


def _cuda_worker(path: str) -> None:
    """In a subprocess with NUMBA_ENABLE_CUDASIM=1: the CPU and CUDA results side by side."""
    rng = np.random.default_rng(11)
    cpu = lossdsl.compile(PER_CLASS_DICE)
    dice = lossdsl.get("dice")
    out: dict[str, Any] = {}
    p, t = _dice_inputs(rng, 5, 3)
    w = np.array([1.0, 0.0, 2.0, 0.5, 1.0])
    ct = rng.normal(size=5)
    for name, loss, args in (("per_class", cpu, (p, t)), ("dice", dice, (p[:, 0], t[:, 0]))):
        gpu = loss.to("cuda")
        for key, kw in (
            ("plain", {}),
            ("weighted", {"sample_weight": w}),
            ("cotangent", {"reduction": "none", "sample_weight": w, "cotangent": ct}),
        ):
            out[f"{name}/{key}"] = (
                loss.value_grad_hess(*args, **kw),
                gpu.value_grad_hess(*args, **kw),
            )
    # Device arrays in, the cotangent too; a device cotangent is not broadcast.
    from numba import cuda

    gpu = cpu.to("cuda")
    dev = [cuda.to_device(a) for a in (p, t, w, ct)]
    v, g = gpu.value_and_grad(
        dev[0], dev[1], sample_weight=dev[2], cotangent=dev[3], reduction="none"
    )
    want = cpu.value_and_grad(p, t, sample_weight=w, cotangent=ct, reduction="none")
    out["per_class/device"] = (want, (v.copy_to_host(), g.copy_to_host()))
    try:
        gpu.grad(dev[0], dev[1], cotangent=cuda.to_device(ct[:2]), reduction="none")
        out["bad_device_cotangent"] = "no error"
    except SpecShapeError as exc:
        out["bad_device_cotangent"] = exc.message
    Path(path).write_bytes(pickle.dumps(out))


def test_cuda_simulator_matches_cpu(tmp_path: Path) -> None:
    path = tmp_path / "cuda.pickle"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    code = (
        f"import sys; sys.path[:0] = {[str(Path(__file__).parent)]!r}; "
        f"import test_semantics as t; t._cuda_worker({str(path)!r})"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    results = pickle.loads(path.read_bytes())
    assert "needs the batch shape (5,)" in results.pop("bad_device_cotangent")
    assert len(results) == 7
    for key, (cpu, gpu) in results.items():
        for a, b in zip(cpu, gpu, strict=True):
            np.testing.assert_allclose(
                np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12, err_msg=key
            )
