"""Calls of a `Loss` on the CUDA target: device arrays in, device arrays out.

Inputs that expose `__cuda_array_interface__` (Numba device arrays, CuPy arrays, torch CUDA
tensors) are used in place, without a host copy; gradients, Hessian diagonals and per-sample
values come back on the device, as torch tensors / CuPy arrays when the first input is one,
else as Numba device arrays; a mean or sum comes back as a host NumPy scalar. Host (NumPy)
inputs are validated as on the CPU, copied to the device, and their results copied back, so
`loss.to("cuda")` is a drop-in for host code. Mixing host and device inputs is an error.
Device inputs are not broadcast or converted: same batch shape, C-contiguous, one float dtype.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from lossdsl import calls, ir, runtime
from lossdsl.codegen.names import HESSIAN_MODES, entry_name
from lossdsl.errors import SpecShapeError, UnsupportedError

Loader = Callable[[], ModuleType]


@dataclass(frozen=True)
class Tuning:
    """Launch limits: threads per block, lanes per row, blocks, and elements per lane."""

    threads: int
    max_lanes: int
    max_blocks: int
    per_lane: int


# A fixed block count (not one derived from the device) keeps results identical across GPUs;
# 1024 x 256 threads fill every current GPU, and the grid-stride loop covers larger batches.
GPU = Tuning(threads=256, max_lanes=256, max_blocks=1024, per_lane=8)
# The simulator runs each thread as a Python thread: a handful of threads, still several rows
# per block, several lanes per row and more rows than the grid covers in one stride.
SIMULATOR = Tuning(threads=4, max_lanes=2, max_blocks=2, per_lane=1)


def is_device_array(x: Any) -> bool:
    """True for anything on a CUDA device (or a simulator device array)."""
    return hasattr(x, "__cuda_array_interface__") or bool(getattr(x, "__cuda_ndarray__", False))


def geometry(n: int, axis_len: int, max_threads: int, tuning: Tuning) -> tuple[int, int, int]:
    """(lanes per row, threads per block, blocks): powers of two, lanes dividing threads."""
    threads = min(tuning.threads, max_threads)
    want = max(1, axis_len // tuning.per_lane)
    lanes = min(tuning.max_lanes, threads, 1 << (want.bit_length() - 1))
    rows = threads // lanes
    blocks = max(1, min(tuning.max_blocks, math.ceil(n / rows)))
    return lanes, threads, blocks


def run(
    loss: ir.LossDef,
    load: Loader,
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    reduction: str | None,
    weight: Any,
    out: Any = None,
    cotangent: Any = None,
) -> tuple[Any, Any, Any]:
    """A call of `loss` on the CUDA target: (value, gradients, Hessian diagonals).

    `load` returns the loss's generated CUDA module (loaded on first use).

    Raises:
        SpecShapeError: host and device inputs mixed; a device input of the wrong dtype,
            shape or layout; labels outside the class axis.
        UnsupportedError: no CUDA device (and no simulator); `out=` (CPU only for now).
    """
    from numba import cuda
    from numba.core import config

    if out is not None:
        raise UnsupportedError("out= is not supported on target 'cuda'", hint="drop out=")
    given = [*args, *(kw[i.name] for i in loss.inputs if i.name in kw)]
    given += [x for x in (weight, cotangent) if x is not None]
    on_device = [is_device_array(x) for x in given]
    if any(on_device) and not all(on_device):
        raise SpecShapeError(
            f"loss '{loss.name}' got a mix of host and device arrays "
            f"({sum(on_device)} of {len(given)} on the GPU)",
            hint="move every input (and sample_weight) to the same place",
        )
    if not cuda.is_available():  # type: ignore[no-untyped-call]
        raise UnsupportedError(
            "target 'cuda' needs a CUDA GPU and none is available",
            hint="use target='cpu', or set NUMBA_ENABLE_CUDASIM=1 to run the simulator",
        )
    tuning = SIMULATOR if getattr(config, "ENABLE_CUDASIM", False) else GPU
    if all(on_device) and given:
        call = _bind_device(loss, args, kw, reduction, weight)
        call.ct = _device_cotangent(loss, call, cotangent)
        like = _allocator(given[0])
        return _launch(loss, load, mode, call, tuning, like, lambda a: a)
    call = calls.bind(loss, args, kw, reduction, weight)
    call.arrays = [cuda.to_device(np.ascontiguousarray(a)) for a in call.arrays]
    call.params = [cuda.to_device(p) if isinstance(p, np.ndarray) else p for p in call.params]
    call.sw = cuda.to_device(call.sw if call.sw is not None else np.empty(0, call.dtype))
    ct = calls.check_cotangent(loss, call, cotangent)
    call.ct = cuda.to_device(ct if ct is not None else np.empty(0, call.dtype))
    return _launch(
        loss,
        load,
        mode,
        call,
        tuning,
        lambda s, d: cuda.device_array(s, d),
        lambda a: a.copy_to_host(),
    )


def _launch(
    loss: ir.LossDef, load: Loader, mode: str, call: Any, tuning: Tuning, alloc: Any, back: Any
) -> tuple[Any, Any, Any]:
    wrt = loss.wrt
    grads = [alloc(call.flat_shape(x), call.dtype) for x in wrt] if mode != "value" else []
    hess = [alloc(call.flat_shape(x), call.dtype) for x in wrt] if mode in HESSIAN_MODES else []
    valued = call.mode == 2 and mode != "grad_hess"
    out = alloc((call.n if valued else 0,), call.dtype)
    value: Any = np.nan if call.mode == 0 else 0.0
    if call.n:
        module = load()
        if mode in HESSIAN_MODES:
            calls.hessian_supported(loss, module)
        geom = geometry(call.n, call.axis_len, module.MAX_THREADS, tuning)
        entry = entry_name(mode, call.dtag)
        args = (*call.arrays, *call.params, call.sw, call.ct, call.mode, geom, _view(out))
        args += tuple(_view(a) for a in grads + hess)
        value, bad = runtime.run_kernel(module, entry, args)
        if bad:
            raise SpecShapeError(
                f"{bad} sample(s) have a label outside [0, {call.axis_len}) for loss '{loss.name}'",
                hint="labels index the class axis; mark ignored rows with a zero weight",
            )
    result = back(out).reshape(call.batch) if valued else call.dtype.type(value)
    shaped_g = [back(g).reshape(call.shape_of(x)) for g, x in zip(grads, wrt, strict=False)]
    shaped_h = [back(h).reshape(call.shape_of(x)) for h, x in zip(hess, wrt, strict=False)]
    return result, calls.one_or_tuple(shaped_g), calls.one_or_tuple(shaped_h)


def _view(a: Any) -> Any:
    """A Numba view of a device array of any library (no copy)."""
    from numba import cuda

    if getattr(a, "__cuda_ndarray__", False):
        return a
    return cuda.as_cuda_array(a)  # type: ignore[no-untyped-call]


def _allocator(example: Any) -> Any:
    """Allocate outputs as the library of `example` does (torch, CuPy), else with Numba."""
    from numba import cuda

    library = type(example).__module__.split(".")[0]
    if library == "torch":
        torch = importlib.import_module("torch")

        def torch_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
            kind = torch.float32 if dtype == np.float32 else torch.float64
            return torch.empty(shape, dtype=kind, device=example.device)

        return torch_empty
    if library == "cupy":
        cupy = importlib.import_module("cupy")

        return lambda shape, dtype: cupy.empty(shape, dtype)
    return lambda shape, dtype: cuda.device_array(shape, dtype)


def _bind_device(
    loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any], reduction: str | None, weight: Any
) -> Any:
    """Validate device inputs without copying them: a `calls.Call` holding Numba views."""
    d = loss
    given = {name: _view(x) for name, x in calls.assign_inputs(d, args, kw).items()}
    dtype = _device_dtype(d, given)
    axis_len = 0
    batch: tuple[int, ...] | None = None
    for inp in d.inputs:
        _check_kind(loss, inp, given[inp.name], dtype)
        full = tuple(given[inp.name].shape)
        shape = full[:-1] if inp.axis else full
        if inp.axis:
            if not full or full[-1] == 0 or (axis_len and full[-1] != axis_len):
                raise SpecShapeError(
                    f"device input '{inp.name}' of loss '{loss.name}' has shape {full}: "
                    f"its trailing axis {inp.axis} is missing, empty or disagrees with the others"
                )
            axis_len = full[-1]
        if batch is not None and shape != batch:
            raise SpecShapeError(
                f"device input '{inp.name}' has batch shape {shape} but the batch is {batch}",
                hint="device inputs are not broadcast: pass arrays of the full batch shape",
            )
        batch = shape
    assert batch is not None
    n = math.prod(batch)
    flat = [_flat(loss, i.name, given[i.name], n, axis_len if i.axis else 0) for i in d.inputs]
    params = [_device_param(p, kw.pop(p.name, p.default), dtype, axis_len) for p in d.params]
    if kw:
        raise SpecShapeError(f"loss '{loss.name}' has no parameter or input '{next(iter(kw))}'")
    sw = _view(weight) if weight is not None else None
    if sw is not None:
        if tuple(sw.shape) != batch or sw.dtype != dtype:
            raise SpecShapeError(
                f"device sample_weight has shape {tuple(sw.shape)} and dtype {sw.dtype}; "
                f"it needs the batch shape {batch} and dtype {dtype}"
            )
        sw = _flat(loss, "sample_weight", sw, n, 0)
    else:
        from numba import cuda

        sw = cuda.device_array(0, dtype)
    shapes = {name: tuple(given[name].shape) for name in d.wrt}
    dtag = "f32" if dtype == np.float32 else "f64"
    axis_inputs = frozenset(i.name for i in d.inputs if i.axis)
    mode = calls.reduction_mode(d, reduction)
    return calls.Call(dtype, dtag, batch, n, axis_len, flat, params, sw, mode, shapes, axis_inputs)


def _device_cotangent(loss: ir.LossDef, call: Any, cotangent: Any) -> Any:
    """A device cotangent: reduction 'none', the batch shape and the inputs' dtype."""
    from numba import cuda

    if cotangent is None:
        return cuda.device_array(0, call.dtype)
    calls.cotangent_reduction(loss, call)
    ct = _view(cotangent)
    if tuple(ct.shape) != call.batch or ct.dtype != call.dtype:
        raise SpecShapeError(
            f"device cotangent has shape {tuple(ct.shape)} and dtype {ct.dtype}; "
            f"it needs the batch shape {call.batch} and dtype {call.dtype}",
            hint="device cotangents are not broadcast or converted",
        )
    return _flat(loss, "cotangent", ct, call.n, 0)


def _device_dtype(d: Any, given: dict[str, Any]) -> np.dtype[Any]:
    dtypes = {np.dtype(given[name].dtype) for name in d.wrt}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        shown = ", ".join(f"{name}: {given[name].dtype}" for name in d.wrt)
        raise SpecShapeError(
            f"differentiated device inputs of loss '{d.name}' must share one dtype, "
            f"float32 or float64 ({shown})"
        )
    return next(iter(dtypes))


def _check_kind(loss: ir.LossDef, inp: Any, a: Any, dtype: np.dtype[Any]) -> None:
    ok = a.dtype in (np.int32, np.int64) if inp.kind == "int" else a.dtype == dtype
    if not ok:
        want = "int32 or int64" if inp.kind == "int" else str(dtype)
        raise SpecShapeError(
            f"device input '{inp.name}' of loss '{loss.name}' has dtype {a.dtype}; it needs {want}",
            hint="device inputs are not converted: convert them before the call",
        )


def _flat(loss: ir.LossDef, name: str, a: Any, n: int, axis_len: int) -> Any:
    if not a.is_c_contiguous():
        raise SpecShapeError(
            f"device input '{name}' of loss '{loss.name}' is not C-contiguous",
            hint="make it contiguous first (torch: .contiguous(), CuPy: cupy.ascontiguousarray)",
        )
    return a.reshape((n, axis_len) if axis_len else (n,))


def _device_param(p: Any, value: Any, dtype: np.dtype[Any], axis_len: int) -> Any:
    """Parameters are validated on the host (they are small); array ones go to the device."""
    from numba import cuda

    if is_device_array(value):
        value = _view(value).copy_to_host()
    checked = calls.param_value(p, value, dtype, axis_len)
    return cuda.to_device(checked) if isinstance(checked, np.ndarray) else checked
