"""Performance-related properties of the CPU kernels, checked without timing anything.

Issue 4: `out=` reuse allocates nothing new and returns the caller's array; results are bitwise
identical whatever the thread count and between the serial and parallel paths; the branch-free
exp/log/log1p printed into every kernel module stay within 2 ulp of float64 math in float32.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import lossdsl
from lossdsl import api

RNG = np.random.default_rng(4)
# Large enough for the parallel path (and several blocks), small enough for a unit test.
N_PARALLEL = 3 * api._PARALLEL_ELEMENTS + 17


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
    monkeypatch.setattr(api, "_PARALLEL_ELEMENTS", 10**12)
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
