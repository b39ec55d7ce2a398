"""The CUDA target, tested without a GPU: Numba's CUDA simulator against the CPU kernels.

The simulator must be chosen before numba.cuda is first imported, and this pytest process has
already imported the real one, so the simulated runs happen in worker processes that execute
this file as a script (`NUMBA_ENABLE_CUDASIM=1` is set at its top, before lossdsl loads).
Two workers split the built-in specs (the simulator is one Python thread per CUDA thread, so
inputs are tiny); each spec's results come back pickled and are compared here. Kernels that
need a real device (speed, torch CUDA tensors) are marked `gpu`; the typing of every kernel by
Numba's CUDA compiler is checked by compiling to PTX where NVVM is installed (no GPU needed).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported, below

import importlib
import pickle
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ATOL32, ATOL64, RTOL32, RTOL64, draw_inputs

import lossdsl
from lossdsl import codegen
from lossdsl.codegen.base import primitive_names
from lossdsl.errors import SpecShapeError, UnsupportedError

SPECS = lossdsl.available()
REDUCTIONS = ("mean", "sum", "none")
MODES = ("value", "grad", "hess")
# Derivative outputs per entry point, for the PTX signatures (grad_hess: "hess" without value).
OUTPUTS = {"value": 0, "grad": 1, "hess": 2, "grad_hess": 2}
BATCH, CLASSES = 5, 4
_WORKERS = 2
_WORKER_TIMEOUT_S = 1200  # a hang guard only: a busy 2-core machine needs ~3 min


# -- the simulator worker (runs as a script) -------------------------------------------------


def _as_list(x: Any) -> list[np.ndarray]:
    items = x if isinstance(x, tuple) else (x,)
    return [np.array(a.copy_to_host() if hasattr(a, "copy_to_host") else a) for a in items]


def _evaluate(loss: lossdsl.Loss, mode: str, inputs: dict[str, Any], **kw: Any) -> list[Any]:
    """[value, *gradients, *hessian diagonals] for one mode, as host arrays."""
    if mode == "value":
        return _as_list(loss(*inputs.values(), **kw))
    if mode == "grad":
        value, grads = loss.value_and_grad(*inputs.values(), **kw)
        return _as_list(value) + _as_list(grads)
    if mode == "grad_hess":
        grads, hess = loss.grad_hess(*inputs.values(), **kw)
        return _as_list(grads) + _as_list(hess)
    value, grads, hess = loss.value_grad_hess(*inputs.values(), **kw)
    return _as_list(value) + _as_list(grads) + _as_list(hess)


def _cases(name: str) -> Iterator[tuple[str, str, str, bool]]:
    """(mode, dtype, reduction, weighted): every mode, dtype and reduction, weights once, and
    the gradient-boosting entry (grad_hess: per-sample sums, no value) with weights. Where the
    Hessian is documented as unsupported (a DerivationError on the CPU too): value and gradient."""
    hessian = lossdsl.get(name).derived().hessian_error is None
    for dtype in ("f64", "f32"):
        for mode in MODES if hessian else ("value", "grad"):
            for reduction in REDUCTIONS:
                yield mode, dtype, reduction, False
        if hessian:
            yield "hess", dtype, "mean", True
            yield "grad_hess", dtype, "sum", True


def _spec_results(name: str) -> dict[tuple[str, str, str, bool], tuple[list[Any], list[Any]]]:
    """(CUDA, CPU float64) results of one spec for every case."""
    cpu = lossdsl.get(name)
    gpu = cpu.to("cuda")
    rng = np.random.default_rng(20240)
    inputs = draw_inputs(cpu.definition, rng, batch=BATCH, classes=CLASSES)
    weight = rng.uniform(0.5, 2.0, size=BATCH)
    out = {}
    for mode, dtype, reduction, weighted in _cases(name):
        kw: dict[str, Any] = {"reduction": reduction}
        if weighted:
            kw["sample_weight"] = weight
        want = _evaluate(cpu, mode, inputs, **kw)
        cast = np.float32 if dtype == "f32" else np.float64
        typed = {k: v.astype(cast) if v.dtype.kind == "f" else v for k, v in inputs.items()}
        if weighted:
            kw["sample_weight"] = weight.astype(cast)
        out[mode, dtype, reduction, weighted] = (_evaluate(gpu, mode, typed, **kw), want)
    return out


def _device_checks() -> dict[str, Any]:
    """Device arrays in and out, mixed inputs, bad labels, empty and repeated batches."""
    from numba import cuda

    rng = np.random.default_rng(7)
    out: dict[str, Any] = {}
    for name in ("mse", "sparse_cross_entropy", "triplet_margin", "dice"):
        loss = lossdsl.get(name, target="cuda")
        host = draw_inputs(loss.definition, rng, batch=BATCH, classes=CLASSES)
        dev = {k: cuda.to_device(v) for k, v in host.items()}
        v_host, g_host = loss.value_and_grad(*host.values())
        v_dev, g_dev = loss.value_and_grad(*dev.values())
        per_host = loss(*host.values(), reduction="none")
        per_dev = loss(*dev.values(), reduction="none")
        grads = g_dev if isinstance(g_dev, tuple) else (g_dev,)
        out[name] = {
            "value": (float(v_dev), float(v_host)),
            "grads": (_as_list(g_dev), _as_list(g_host)),
            "per_sample": (_as_list(per_dev), _as_list(per_host)),
            "on_device": all(hasattr(g, "copy_to_host") for g in (*grads, per_dev)),
            "host_out": isinstance(
                g_host if not isinstance(g_host, tuple) else g_host[0], np.ndarray
            ),
            "repeat": float(loss.value_and_grad(*dev.values())[0]) == float(v_dev),
        }
    mse = lossdsl.get("mse", target="cuda")
    x = np.linspace(-1.0, 1.0, BATCH)
    out["mixed"] = _error_of(lambda: mse(cuda.to_device(x), x))
    out["mixed_weight"] = _error_of(lambda: mse(x, x, sample_weight=cuda.to_device(x)))
    out["wrong_dtype"] = _error_of(
        lambda: mse(cuda.to_device(x), cuda.to_device(x.astype(np.float32)))
    )
    out["wrong_shape"] = _error_of(lambda: mse(cuda.to_device(x), cuda.to_device(x[:3])))
    sce = lossdsl.get("sparse_cross_entropy", target="cuda")
    logits = rng.normal(size=(BATCH, CLASSES))
    labels = np.array([0, 1, CLASSES, 2, 3])
    out["bad_label"] = _error_of(lambda: sce(logits, labels))
    out["bad_label_device"] = _error_of(lambda: sce(cuda.to_device(logits), cuda.to_device(labels)))
    empty = mse.value_and_grad(np.zeros(0), np.zeros(0))
    out["empty"] = (float(empty[0]), empty[1].shape)
    return out


def _error_of(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _lock_shared_allocation() -> None:
    """Make the simulator's first allocation of a shared array atomic.

    Its `cuda.shared.array` looks the array up by call site and creates it when missing, with
    no lock: two threads of a block can each create one and no longer share memory. Frequent
    thread switches (below) make that likely; on a GPU there is nothing to race.
    """
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    lock = threading.Lock()

    def array(self: Any, shape: Any, dtype: Any) -> np.ndarray:
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            if key not in self._allocations:
                self._allocations[key] = np.empty(shape, dtype)
            return self._allocations[key]  # type: ignore[no-any-return]

    FakeCUDAShared.array = array


def _worker(names: list[str], path: str) -> None:
    _lock_shared_allocation()
    # The simulator's block manager polls its threads while holding the GIL; switching often
    # lets the simulated threads run (about 8x faster than the default 5 ms).
    sys.setswitchinterval(1e-4)
    results: dict[str, Any] = {}
    for name in names:
        try:
            results[name] = _spec_results(name)
        except Exception:
            results[name] = traceback.format_exc()
    if "--device-checks" in sys.argv:
        try:
            results["<device>"] = _device_checks()
        except Exception:
            results["<device>"] = traceback.format_exc()
    Path(path).write_bytes(pickle.dumps(results))


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the workers once for the module; {spec: results or traceback, '<device>': ...}."""
    folder = tmp_path_factory.mktemp("cudasim")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    procs = []
    for k in range(_WORKERS):
        names = SPECS[k::_WORKERS]
        path = folder / f"part{k}.pickle"
        cmd = [sys.executable, __file__, str(path), *names]
        if k == 0:
            cmd.append("--device-checks")
        procs.append((subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True), path))
    results: dict[str, Any] = {}
    try:
        for proc, path in procs:
            _, err = proc.communicate(timeout=_WORKER_TIMEOUT_S)
            assert proc.returncode == 0, err[-4000:]
            results.update(pickle.loads(path.read_bytes()))
    finally:
        for proc, _ in procs:
            proc.kill()  # a no-op for a worker that finished
    return results


def _check_spec(name: str, results: Any) -> None:
    if isinstance(results, str):
        pytest.fail(f"{name}: the simulator run raised\n{results}")
    for (mode, dtype, reduction, weighted), (got, want) in results.items():
        rtol, atol = (RTOL64, ATOL64) if dtype == "f64" else (RTOL32, ATOL32)
        what = f"{name} {mode} {dtype} reduction={reduction} weighted={weighted}"
        assert len(got) == len(want), what
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.shape == w.shape, f"{what}: output {k} shape"
            assert g.dtype == (np.float32 if dtype == "f32" else np.float64), f"{what}: dtype"
            if dtype == "f32":
                # Where float64 itself overflows or divides by zero, float32 need not agree.
                g, w = g[np.isfinite(w)], w[np.isfinite(w)]
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what}: output {k}")


@pytest.mark.parametrize("name", SPECS)
def test_cuda_kernels_match_cpu_under_simulator(name: str, simulated: dict[str, Any]) -> None:
    _check_spec(name, simulated[name])


def _device(simulated: dict[str, Any]) -> dict[str, Any]:
    checks = simulated["<device>"]
    if isinstance(checks, str):
        pytest.fail(f"the device checks raised\n{checks}")
    return checks  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["mse", "sparse_cross_entropy", "triplet_margin", "dice"])
def test_device_arrays_in_give_device_arrays_out(name: str, simulated: dict[str, Any]) -> None:
    r = _device(simulated)[name]
    assert r["on_device"], "device inputs must give device outputs"
    assert r["host_out"], "host inputs must give host outputs"
    assert r["repeat"], "a second run must give the same value"
    np.testing.assert_allclose(*r["value"], rtol=RTOL64)
    for key in ("grads", "per_sample"):
        for got, want in zip(*r[key], strict=True):
            np.testing.assert_allclose(got, want, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mixed", "loss 'mse' got a mix of host and device arrays (1 of 2 on the GPU)"),
        ("mixed_weight", "loss 'mse' got a mix of host and device arrays (1 of 3 on the GPU)"),
        ("wrong_dtype", "device input 'target' of loss 'mse' has dtype float32; it needs float64"),
        ("wrong_shape", "device input 'target' has batch shape (3,) but the batch is (5,)"),
        ("bad_label", "1 sample(s) have a label outside [0, 4) for loss 'sparse_cross_entropy'"),
        ("bad_label_device", "1 sample(s) have a label outside [0, 4)"),
    ],
)
def test_device_errors_under_simulator(case: str, message: str, simulated: dict[str, Any]) -> None:
    error = _device(simulated)[case]
    assert error.startswith("SpecShapeError:"), error
    assert message in error, error


def test_empty_batch_under_simulator(simulated: dict[str, Any]) -> None:
    value, shape = _device(simulated)["empty"]
    assert np.isnan(value)
    assert shape == (0,)


@pytest.mark.parametrize("target", sorted(codegen.TARGETS))
def test_every_target_maps_every_primitive(target: str) -> None:
    functions = importlib.import_module(codegen.TARGETS[target].__module__).FUNCTIONS
    missing = [p for p in primitive_names() if p not in functions]
    assert not missing, f"target '{target}' has no mapping for {missing}"


class _FakeDeviceArray:
    """Looks like a GPU array to lossdsl (it exposes the CUDA array interface) and nothing else."""

    __cuda_array_interface__: ClassVar[dict[str, Any]] = {"shape": (3,), "typestr": "<f8"}
    shape = (3,)


def test_mixed_host_and_device_inputs_fail_before_any_kernel() -> None:
    mse = lossdsl.get("mse", target="cuda")
    with pytest.raises(SpecShapeError, match="mix of host and device arrays"):
        mse(_FakeDeviceArray(), np.zeros(3))


def test_cuda_source_and_module_need_no_gpu() -> None:
    loss = lossdsl.get("sparse_cross_entropy").to("cuda")
    text = loss.source()
    assert "from numba import cuda" in text
    assert "cuda.syncthreads()" in text
    assert "atomic" not in text  # reductions are fixed-order trees: reproducible
    module = loss.compile()._kernels()
    assert {"value_f32", "grad_f64", "hess_f32", "grad_hess_f64"} <= set(dir(module))


def test_no_gpu_is_a_clear_error() -> None:
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(UnsupportedError, match="needs a CUDA GPU"):
        lossdsl.get("mse", target="cuda")(np.zeros(3), np.zeros(3))


# -- typing by Numba's CUDA compiler (NVVM, no GPU) ------------------------------------------

_PTX_SPECS = ["huber", "sparse_cross_entropy", "dice", "triplet_margin"]


@pytest.fixture
def ptx(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`compile_ptx` for compute capability 8.0; skips where NVVM is not installed."""
    from numba import cuda
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = (8, 0)

    # Device functions ask the current device for its capability; there is none to ask.
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Device())
    try:
        cuda.compile_ptx(lambda a: None, "void(float64[::1])", cc=(8, 0))
    except Exception as exc:
        pytest.skip(f"NVVM is not available: {exc}")
    return lambda fn, sig: cuda.compile_ptx(fn, sig, cc=(8, 0))


def _kernel_signature(
    loss: lossdsl.Loss, dtype: str, outputs: int, vectors: bool = False
) -> tuple[Any, ...]:
    from numba import types

    f = types.float32 if dtype == "f32" else types.float64
    d = loss.definition
    sig: list[Any] = [
        types.Array(types.int64 if i.kind == "int" else f, 2 if i.axis else 1, "C")
        for i in d.inputs
    ]
    for p in d.params:
        sig.append(types.Array(f, 1, "C") if p.axis else (types.int64 if p.kind == "int" else f))
    # sample weights, cotangent, mode, lanes per row
    sig += [types.Array(f, 1, "C"), types.Array(f, 1, "C"), types.int64, types.int64]
    sig += [types.Array(types.float64, 1, "C"), types.Array(types.float64, 2, "C")]
    if vectors:  # per-class totals: _V (kernel dtype) and the rows' terms _PV
        sig += [types.Array(f, 1, "C"), types.Array(types.float64, 2, "C")]
    sig.append(types.Array(f, 1, "C"))
    for _ in range(outputs):
        sig += [types.Array(f, 2 if d.input(x).axis else 1, "C") for x in d.wrt]
    return tuple(sig)


def _compile_all(name: str, ptx: Any, loss: lossdsl.Loss | None = None) -> None:
    from numba import types

    loss = loss if loss is not None else lossdsl.get(name, target="cuda")
    module = loss._kernels()
    f64 = types.float64
    ptx(module._finish.py_func, (types.Array(f64, 2, "C"), types.Array(f64, 1, "C"), types.int64))
    vectors = hasattr(module, "_colsum")
    if vectors:
        ptx(
            module._colsum.py_func,
            (types.Array(f64, 2, "C"), types.Array(f64, 1, "C"), types.int64),
        )
    for dtype in ("f32", "f64"):
        for mode, outputs in OUTPUTS.items():
            sig = _kernel_signature(loss, dtype, outputs, vectors)
            for tag in "abm":
                kernel = getattr(module, f"_{mode}_{dtype}_{tag}", None)
                if kernel is not None:
                    ptx(kernel.py_func, sig)


@pytest.mark.parametrize("name", _PTX_SPECS)
def test_kernels_compile_for_cuda(name: str, ptx: Any) -> None:
    _compile_all(name, ptx)


def test_per_class_total_kernels_compile_for_cuda(ptx: Any) -> None:
    loss = lossdsl.compile(
        "loss per_class(pred[C], target[C]):\n"
        "    return mean[C](1 - 2 * total(pred * target) / (total(pred) + total(target)))\n",
        target="cuda",
    )
    _compile_all("per_class", ptx, loss)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_every_builtin_compiles_for_cuda(name: str, ptx: Any) -> None:
    _compile_all(name, ptx)


# -- a real device ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", SPECS)
def test_real_device_matches_cpu(name: str) -> None:
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA device")
    _check_spec(name, _spec_results(name))


@pytest.mark.gpu
def test_torch_cuda_tensors_in_and_out() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    loss = lossdsl.get("cross_entropy", target="cuda")
    logits = torch.randn(64, 10, device="cuda", dtype=torch.float64)
    target = torch.softmax(torch.randn(64, 10, device="cuda", dtype=torch.float64), dim=1)
    value, grad = loss.value_and_grad(logits, target)
    assert isinstance(grad, torch.Tensor)
    assert grad.device == logits.device
    want_v, want_g = lossdsl.get("cross_entropy").value_and_grad(
        logits.cpu().numpy(), target.cpu().numpy()
    )
    np.testing.assert_allclose(value, want_v, rtol=RTOL64)
    np.testing.assert_allclose(grad.cpu().numpy(), want_g, rtol=RTOL64, atol=ATOL64)


if __name__ == "__main__":
    _worker([a for a in sys.argv[2:] if not a.startswith("--")], sys.argv[1])
