"""Performance-related properties of the CPU kernels, checked without timing anything.

Issue 4: `out=` reuse allocates nothing new and returns the caller's array; results are bitwise
identical whatever the thread count and between the serial and parallel paths; the branch-free
exp/log/log1p printed into every kernel module stay within 2 ulp of float64 math in float32.
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
from conftest import FD_ATOL, FD_RTOL, assert_close, fd_grad
from reference import reference_value

import lossdsl
from lossdsl import host

RNG = np.random.default_rng(4)
# Large enough for the parallel path (and several blocks), small enough for a unit test.
N_PARALLEL = 3 * host.PARALLEL_ELEMENTS + 17


def _inputs(name: str, n: int, dtype: type) -> tuple[np.ndarray, ...]:
    if name == "sparse_cross_entropy":
        return (RNG.standard_normal((n // 50, 50)).astype(dtype), RNG.integers(0, 50, n // 50))
    if name == "cross_entropy":
        t = RNG.random((n // 50, 50)).astype(dtype)
        return RNG.standard_normal((n // 50, 50)).astype(dtype), t / t.sum(1, keepdims=True)
    if name in ("bce", "dice"):
        return RNG.uniform(0.01, 0.99, n).astype(dtype), RNG.random(n).astype(dtype)
    return RNG.standard_normal(n).astype(dtype), RNG.standard_normal(n).astype(dtype)


NAMES = ["mse", "huber", "bce_with_logits", "bce", "dice", "cross_entropy", "sparse_cross_entropy"]


@pytest.mark.parametrize("name", NAMES)
def test_out_is_reused_and_correct(name: str) -> None:
    loss = lossdsl.get(name)
    args = _inputs(name, 5000, np.float32)
    value, expected = loss.value_and_grad(*args)
    out = np.full_like(args[0], np.nan)
    v2, g2 = loss.value_and_grad(*args, out=out)
    assert g2 is out
    np.testing.assert_array_equal(out, expected)
    assert v2 == value
    assert loss.grad(*args, out=out) is out
    h = loss.hessian_diag(*args)
    hout = np.empty_like(h)
    assert loss.hessian_diag(*args, out=hout) is hout
    np.testing.assert_array_equal(hout, h)


def test_out_is_validated() -> None:
    loss = lossdsl.get("mse")
    p, t = _inputs("mse", 100, np.float32)
    bad = [
        np.empty(99, np.float32),
        np.empty(100, np.float64),
        np.empty(200, np.float32)[::2],
        [0.0] * 100,
    ]
    for out in bad:
        with pytest.raises(lossdsl.SpecShapeError, match="out="):
            loss.value_and_grad(p, t, out=out)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bits_do_not_depend_on_thread_count(name: str, dtype: type) -> None:
    loss = lossdsl.get(name)
    args = _inputs(name, N_PARALLEL, dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            v, g = loss.value_and_grad(*args)
            results.append((v, g.copy(), loss(*args, reduction="sum")))
    finally:
        numba.set_num_threads(before)
    for v, g, s in results[1:]:
        assert v.tobytes() == results[0][0].tobytes()
        assert g.tobytes() == results[0][1].tobytes()
        assert s.tobytes() == results[0][2].tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_serial_and_parallel_paths_agree(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loss = lossdsl.get(name)
    args = _inputs(name, N_PARALLEL, np.float64)
    v_par, g_par = loss.value_and_grad(*args)
    monkeypatch.setattr(host, "PARALLEL_ELEMENTS", 10**12)
    v_ser, g_ser = loss.value_and_grad(*args)
    assert v_ser.tobytes() == v_par.tobytes()
    assert g_ser.tobytes() == g_par.tobytes()


def _apply(kernel: object) -> object:
    @numba.njit
    def run(a: np.ndarray, out: np.ndarray) -> None:
        for i in range(a.shape[0]):
            out[i] = kernel(a[i])

    return run


def _math_module() -> object:
    # Any generated module carries the vectorisable exp/log/log1p for both dtypes.
    return lossdsl.get("bce_with_logits")._kernels()


def _ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    ref32 = exact.astype(np.float32)
    ulp = np.spacing(np.abs(ref32)).astype(np.float64)
    ok = np.isfinite(ref32) & np.isfinite(got)
    err = np.zeros_like(exact)
    err[ok] = np.abs(got[ok].astype(np.float64) - exact[ok]) / ulp[ok]
    same_special = (~np.isfinite(ref32)) & ((got == ref32) | (np.isnan(got) & np.isnan(exact)))
    err[~ok & ~same_special] = np.inf
    return err


def _sweep(kind: str) -> np.ndarray:
    if kind == "exp":
        return np.linspace(-104.0, 89.0, 3_000_001).astype(np.float32)
    if kind == "log":
        return np.concatenate(
            [np.geomspace(1e-44, 3e38, 2_000_001), np.linspace(0.5, 2.0, 1_000_001)]
        ).astype(np.float32)
    return np.concatenate(
        [
            np.linspace(-0.999999, 1.0, 1_000_001),
            np.geomspace(1e-30, 1e30, 2_000_001),
            -np.geomspace(1e-30, 0.9999, 1_000_001),
        ]
    ).astype(np.float32)


@pytest.mark.parametrize("fn", ["exp", "log", "log1p"])
def test_float32_math_within_two_ulp(fn: str) -> None:
    module = _math_module()
    kernel = getattr(module, f"_{fn}_f32")
    x = _sweep(fn)
    got = np.empty_like(x)
    _apply(kernel)(x, got)
    exact = getattr(np, fn)(x.astype(np.float64))
    err = _ulp_error(got, exact)
    assert err.max() <= 2.0, (fn, float(err.max()), float(x[err.argmax()]))


@pytest.mark.parametrize("fn", ["exp", "log", "log1p"])
def test_special_values(fn: str) -> None:
    module = _math_module()
    for dtype in ("f32", "f64"):
        kernel = getattr(module, f"_{fn}_{dtype}")
        t = np.float32 if dtype == "f32" else np.float64
        for x in (0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-40, -2.0, 1e30):
            with np.errstate(all="ignore"):
                exact = getattr(np, fn)(np.float64(x))
            got = kernel(t(x))
            if np.isnan(exact):
                assert np.isnan(got), (fn, dtype, x)
            else:
                np.testing.assert_allclose(
                    got,
                    exact,
                    rtol=1e-6 if dtype == "f32" else 1e-15,
                    atol=1e-44 if dtype == "f32" else 0,
                    err_msg=f"{fn} {dtype} {x}",
                )


@pytest.mark.parametrize("fn", ["exp", "log", "log1p"])
def test_float64_math_accurate(fn: str) -> None:
    module = _math_module()
    kernel = getattr(module, f"_{fn}_f64")
    x = {
        "exp": np.linspace(-700, 700, 200_001),
        "log": np.geomspace(1e-300, 1e300, 200_001),
        "log1p": np.concatenate(
            [np.geomspace(1e-300, 1e300, 100_001), -np.geomspace(1e-300, 0.999, 100_001)]
        ),
    }[fn]
    got = np.empty_like(x)
    _apply(kernel)(x, got)
    exact = getattr(np, fn)(x)
    np.testing.assert_allclose(got, exact, rtol=4e-16 * 8, atol=0)


def test_repeated_calls_see_new_data_and_parameters() -> None:
    # Issue 4: repeated calls with the same shapes reuse their validation (calls.plan_key).
    loss = lossdsl.get("huber")
    x, t = _inputs("huber", 1000, np.float32)
    loss.value_and_grad(x, t, delta=0.5)
    for x2, delta in ((x * 3, 0.5), (x, 2.0), (x[::-1].copy(), 0.5)):
        v, g = loss.value_and_grad(x2, t, delta=delta)
        v_ref, g_ref = loss.to("cpu").value_and_grad(x2, t, delta=delta)
        assert v == v_ref
        np.testing.assert_array_equal(g, g_ref)
    with pytest.raises(lossdsl.SpecDomainError):
        loss(x, t, delta=-1.0)
    with pytest.raises(lossdsl.SpecShapeError):
        loss.value_and_grad(x, t, out=np.empty(1000, np.float64))
    labels = lossdsl.get("sparse_cross_entropy")
    logits, y = _inputs("sparse_cross_entropy", 500, np.float32)
    labels(logits, y)
    with pytest.raises(lossdsl.SpecShapeError, match="outside"):
        labels(logits, np.full_like(y, 99))


_STABLE = {
    # name: (float64 reference, float32 sweep)
    "log1p_unit": (
        np.log1p,
        np.concatenate([np.linspace(0, 1, 1_000_001), np.geomspace(1e-45, 1, 1_000_001)]),
    ),
    "softplus": (lambda x: np.logaddexp(0, x), np.linspace(-110, 110, 2_000_001)),
    "log_sigmoid": (lambda x: -np.logaddexp(0, -x), np.linspace(-110, 110, 2_000_001)),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), np.linspace(-110, 110, 2_000_001)),
}


@pytest.mark.parametrize("fn", sorted(_STABLE))
def test_float32_stable_forms_within_two_ulp(fn: str) -> None:
    # The softplus family shares one exp(-|x|) and the [0, 1] log1p (issue 4, round 2).
    reference, sweep = _STABLE[fn]
    x = sweep.astype(np.float32)
    got = np.empty_like(x)
    _apply(getattr(_math_module(), f"_{fn}_f32"))(x, got)
    err = _ulp_error(got, reference(x.astype(np.float64)))
    # sigmoid composes exp (< 1 ulp), 1 + e and a division: 2.2 ulp at worst (x ~ -5.5).
    bound = 2.5 if fn == "sigmoid" else 2.0
    assert err.max() <= bound, (fn, float(err.max()), float(x[err.argmax()]))


_POW_CASES = [
    (0.0, 2.0), (0.0, 0.0), (0.0, -1.0), (np.nan, 0.0), (-2.0, 2.0), (-0.5, 1.0), (-2.0, 0.5),
    (-0.0, 3.0), (np.inf, 2.0), (np.inf, -2.0), (1.0, 7.5),
]  # fmt: skip


def test_pow_special_cases_and_accuracy() -> None:
    # x^g as exp(g log|x|) with C pow's special cases (SafePow; the focal loss's (1 - p_t)^gamma).
    module = _math_module()
    for dtype, kernel in ((np.float64, module._pow_f64), (np.float32, module._pow_f32)):
        for x, g in _POW_CASES:
            got, want = kernel(dtype(x), dtype(g)), np.power(dtype(x), dtype(g))
            assert (np.isnan(got) and np.isnan(want)) or got == want, (dtype, x, g, got, want)
        np.testing.assert_allclose(kernel(dtype(-2.0), dtype(3.0)), -8.0, rtol=1e-6)
    x = RNG.uniform(0, 4, 2000)
    g = RNG.uniform(0, 5, 2000)
    got = np.array([module._pow_f64(a, b) for a, b in zip(x, g, strict=True)])
    np.testing.assert_allclose(got, np.power(x, g), rtol=1e-14)


def _entry_text(source: str, entry: str) -> str:
    start = source.index(f"def {entry}(")
    end = source.find("@numba.njit", start)
    return source[start : end if end > 0 else None]


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("sigmoid_focal", {"gamma": 3.5, "alpha": 0.4}),
        ("cross_entropy", {"label_smoothing": 0.1}),
        ("sparse_cross_entropy", {"label_smoothing": 0.2, "weight": np.linspace(0.5, 2, 5)}),
        ("huber", {"delta": 0.3}),
    ],
)
def test_default_and_other_parameters_match_the_reference(name: str, other: dict) -> None:
    # Issue 4: parameters at their defaults are constants in the kernel; any other value runs
    # the generic kernel. Both must agree with the independent NumPy interpreter.
    loss = lossdsl.get(name)
    if name == "sigmoid_focal":
        args = (RNG.standard_normal(40), RNG.random(40))
    elif name in ("cross_entropy", "sparse_cross_entropy"):
        x, y = _inputs(name, 50 * 8, np.float64)
        t = y % 5 if y.ndim == 1 else y[:, :5] / y[:, :5].sum(1, keepdims=True)
        args = (x[:, :5].copy(), t)
    else:
        args = _inputs(name, 40, np.float64)
    loss = lossdsl.Loss(loss.definition)  # its own kernels: the count below is this test's
    names = loss.inputs
    for params in ({}, other):
        value, grad = loss.value_and_grad(*args, **params)

        def ref(x: np.ndarray, params: dict = params) -> float:
            given = dict(zip(names, (x, *args[1:]), strict=True))
            return float(reference_value(loss.definition, given, params))

        assert_close(value, ref(args[0]))
        assert_close(grad, fd_grad(ref, args[0]), rtol=FD_RTOL, atol=FD_ATOL)
    assert len(loss._modules) == 2  # the kernel with defaults fixed, and the generic one


def test_fixed_defaults_remove_work_from_the_kernel() -> None:
    # Issue 4: focal's (1 - p_t)^gamma at the default gamma = 2 is a square, not exp(g log x);
    # a zero label smoothing drops its two row sums (sum of logits, sum of class weights).
    focal = lossdsl.get("sigmoid_focal")
    fixed = focal._specialized_source(focal._default_fixed())
    assert "_pow_" in _entry_text(focal.source(), "grad_f64")
    assert "_pow_" not in _entry_text(fixed, "grad_f64")
    ce = lossdsl.get("sparse_cross_entropy")
    generic = _entry_text(ce.source(), "grad_f32")
    fixed = _entry_text(ce._specialized_source(ce._default_fixed()), "grad_f32")
    assert fixed.count("_radd(") == generic.count("_radd(") - 2


def test_softmax_exponentials_computed_once_per_element() -> None:
    # Issue 4: the row pass that sums exp(x - max) keeps each term in the gradient row, and
    # the gradient loop reads it back instead of calling exp again.
    for name in ("cross_entropy", "sparse_cross_entropy"):
        loss = lossdsl.get(name)
        for entry in ("grad_f32", "grad_f64", "hess_f32"):
            text = _entry_text(loss._specialized_source(loss._default_fixed()), entry)
            assert text.count("_exp_") == 1, (name, entry)


def test_element_loops_not_starting_at_zero_index_unsigned() -> None:
    # Issue 16: Numba wraps negative indices; LLVM cannot prove a signed index from a stepped
    # range non-negative, and the wrap's select kept float32 softmax cross-entropy's exp pass
    # scalar (5x slower). Loops from 0 are provably non-negative; any other must be unsigned.
    for name in ("cross_entropy", "sparse_cross_entropy", "poly1", "multilabel_soft_margin"):
        loss = lossdsl.get(name)
        for text in (loss.source(), loss._specialized_source(loss._default_fixed())):
            loops = re.findall(r"for _c in range\(([^)]*\)?)", text)
            assert loops, name
            for bounds in loops:
                assert bounds == "_nc)" or bounds.startswith("np.uint64("), (name, bounds)
