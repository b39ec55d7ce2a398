"""The validated call: arguments of a `Loss` call checked and flattened for the kernels.

`bind` turns user arguments (inputs, parameters, reduction, sample weights) into a `Call`:
one float dtype, flattened C-ordered arrays, typed parameters and the batch shape, or a
`LossDSLError` naming the problem. The API binds host arrays here; each target's runner (CPU:
`host.run`, CUDA: `device.run`) takes a `Call` and the generated module. No kernels run here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossdsl import ir
from lossdsl.errors import SpecDomainError, SpecShapeError, did_you_mean

MODES = {"mean": 0, "sum": 1, "none": 2}
# Parameters fixed at kernel generation, with their values: () is the generic kernel.
Fixed = tuple[tuple[str, float], ...]


def plan_key(
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    reduction: str | None,
    weight: Any,
    out: Any,
) -> tuple[Any, ...] | None:
    """What a call's validation depends on, or None where it depends on more than this.

    Positional C-contiguous arrays (shape, dtype), hashable parameter values, the reduction and
    the out= arrays' layout; sample weights and anything else take the full path every time.
    """
    if weight is not None or "weight" in kw:
        return None
    key: list[Any] = [mode, reduction]
    for a in args:
        if type(a) is not np.ndarray or not a.flags.c_contiguous:
            return None
        key.append((a.shape, a.dtype.num))
    for o in as_list(out) if out is not None else ():
        if type(o) is not np.ndarray or not (o.flags.c_contiguous and o.flags.writeable):
            return None
        key.append((o.shape, o.dtype.num))
    if kw:
        try:
            items = tuple(sorted(kw.items()))
            hash(items)
        except TypeError:  # an array-valued parameter: compared by value on every call
            return None
        # The type too: 1 and 1.0 hash alike, but an int may pass where a float must not.
        key.append(tuple((k, type(v)) for k, v in items))
        key.append(items)
    return tuple(key)


def as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, tuple | list) else [out]


def check_outputs(call: Call, wrt: tuple[str, ...], out: Any) -> list[np.ndarray]:
    """Validate user-provided output arrays: one per `wrt` input, its shape and dtype, C order."""
    arrays = as_list(out)
    if len(arrays) != len(wrt):
        raise SpecShapeError(
            f"out= needs {len(wrt)} array(s), one per differentiated input ({', '.join(wrt)}), "
            f"got {len(arrays)}"
        )
    for a, name in zip(arrays, wrt, strict=True):
        shape = call.shape_of(name)
        if not isinstance(a, np.ndarray):
            raise SpecShapeError(f"out= for '{name}' must be a NumPy array, got {type(a).__name__}")
        if a.shape != shape or a.dtype != call.dtype:
            raise SpecShapeError(
                f"out= for '{name}' has shape {a.shape} and dtype {a.dtype}; "
                f"it needs shape {shape} and dtype {call.dtype}",
                hint=f"allocate it once with np.empty_like({name})",
            )
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise SpecShapeError(
                f"out= for '{name}' must be a writeable C-contiguous array",
                hint="use np.ascontiguousarray or np.empty_like",
            )
    return arrays


def one_or_tuple(items: list[np.ndarray]) -> Any:
    if not items:
        return None
    return items[0] if len(items) == 1 else tuple(items)


@dataclass
class Call:
    """A validated call: flattened arrays, typed parameters, the batch shape."""

    dtype: np.dtype[Any]
    dtag: str
    batch: tuple[int, ...]
    n: int
    axis_len: int
    arrays: list[np.ndarray]
    params: list[Any]
    sw: np.ndarray | None
    mode: int
    shapes: dict[str, tuple[int, ...]]
    axis_inputs: frozenset[str]
    # The parameters whose value is their default (the kernel may have them as constants).
    defaults: Fixed = ()

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def flat_shape(self, name: str) -> tuple[int, ...]:
        return (self.n, self.axis_len) if name in self.axis_inputs else (self.n,)

    def reusable(self, args: tuple[Any, ...]) -> bool:
        """Whether the kernel arrays are the caller's arrays, reshaped: no conversion, no
        broadcast, every input positional. Only such a call's plan is kept for reuse."""
        return len(args) == len(self.arrays) and all(
            a.ctypes.data == b.ctypes.data and a.dtype == b.dtype and a.size == b.size
            for a, b in zip(self.arrays, args, strict=True)
        )

    def with_arrays(self, args: tuple[np.ndarray, ...], names: tuple[str, ...]) -> Call:
        """This validated call for new arrays of the same shapes and dtypes (`names` in order)."""
        flat = [b.reshape(self.flat_shape(x)) for b, x in zip(args, names, strict=True)]
        return Call(
            self.dtype, self.dtag, self.batch, self.n, self.axis_len, flat, self.params,
            None, self.mode, self.shapes, self.axis_inputs, self.defaults,
        )  # fmt: skip


def bind(
    loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any], reduction: str | None, weight: Any
) -> Call:
    if "weight" in kw and all(p.name != "weight" for p in loss.params):
        # `weight=` means per-sample weights unless the loss has a parameter of that name.
        if weight is not None:
            raise SpecShapeError("pass per-sample weights once, as sample_weight=")
        weight = kw.pop("weight")
    given = assign_inputs(loss, args, kw)
    dtype = _compute_dtype(loss, given)
    arrays = {name: _as_array(loss, name, value, dtype) for name, value in given.items()}
    axis_len = _axis_len(loss, arrays)
    batch = _batch_shape(loss, arrays)
    n = math.prod(batch)
    flat = []
    for inp in loss.inputs:
        a = arrays[inp.name]
        full = batch + ((axis_len,) if inp.axis else ())
        # broadcast_to returns a read-only view, which Numba types differently from a writable
        # array: use it only when broadcasting, so repeated calls reuse one compiled signature.
        shaped = a if a.shape == full else np.broadcast_to(a, full)
        flat.append(shaped.reshape((n, axis_len) if inp.axis else (n,)))
    try:
        params = [param_value(p, kw.pop(p.name, p.default), dtype, axis_len) for p in loss.params]
    except SpecDomainError as exc:
        raise exc.with_source(loss.source) from None
    if kw:
        bad = next(iter(kw))
        known = [p.name for p in loss.params] + [i.name for i in loss.inputs]
        raise SpecShapeError(
            f"loss '{loss.name}' has no parameter or input '{bad}'",
            hint=did_you_mean(bad, known)
            or f"parameters: {', '.join(p.name for p in loss.params) or 'none'}",
        )
    mode = reduction_mode(loss, reduction)
    sw = None
    if weight is not None:
        w = np.asarray(weight, dtype=dtype)
        try:
            sw = np.ascontiguousarray(np.broadcast_to(w, batch).reshape(n))
        except ValueError:
            raise SpecShapeError(
                f"weight of shape {w.shape} does not broadcast to the batch shape {batch}"
            ) from None
    shapes = {name: arrays[name].shape for name in loss.wrt}
    dtag = "f32" if dtype == np.float32 else "f64"
    axis_inputs = frozenset(i.name for i in loss.inputs if i.axis)
    defaults = tuple(
        (p.name, p.default)
        for p, v in zip(loss.params, params, strict=True)
        if np.all(v == np.asarray(p.default).astype(np.asarray(v).dtype))
    )
    return Call(
        dtype, dtag, batch, n, axis_len, flat, params, sw, mode, shapes, axis_inputs, defaults
    )


def assign_inputs(loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
    names = [i.name for i in loss.inputs]
    if len(args) > len(names):
        raise SpecShapeError(
            f"loss '{loss.name}' takes {len(names)} inputs ({', '.join(names)}), got {len(args)}"
        )
    given = dict(zip(names, args, strict=False))
    for name in names[len(args) :]:
        if name not in kw:
            raise SpecShapeError(
                f"loss '{loss.name}' is missing input '{name}'",
                hint=f"call it as loss({', '.join(names)})",
            )
        given[name] = kw.pop(name)
    return given


def _compute_dtype(loss: ir.LossDef, given: dict[str, Any]) -> np.dtype[Any]:
    dtypes = {}
    for name in loss.wrt:
        a = np.asarray(given[name])
        if a.dtype.kind in "iub" and not isinstance(given[name], np.ndarray):
            a = a.astype(np.float64)
        if a.dtype not in (np.float32, np.float64):
            raise SpecShapeError(
                f"input '{name}' of loss '{loss.name}' has dtype {a.dtype}; it is differentiated, "
                "so it must be float32 or float64",
                hint=f"convert it, e.g. {name}.astype(np.float32)",
            )
        dtypes[name] = a.dtype
    if len(set(dtypes.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in dtypes.items())
        raise SpecShapeError(
            f"differentiated inputs of loss '{loss.name}' mix dtypes ({shown})",
            hint="give them all the same float dtype",
        )
    return np.dtype(next(iter(dtypes.values())))


def _as_array(loss: ir.LossDef, name: str, value: Any, dtype: np.dtype[Any]) -> np.ndarray:
    inp = loss.input(name)
    a = np.asarray(value)
    if inp.kind == "int":
        if a.dtype.kind not in "iu":
            floats = a.dtype.kind == "f" and a.size
            if floats and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                return a.astype(np.int64)
            raise SpecShapeError(
                f"input '{name}' of loss '{loss.name}' holds integer labels, got dtype {a.dtype}",
                hint=f"pass {name}.astype(np.int64)",
            )
        return a if a.dtype in (np.int32, np.int64) else a.astype(np.int64)
    if a.dtype.kind not in "fiub":
        raise SpecShapeError(f"input '{name}' of loss '{loss.name}' has dtype {a.dtype}")
    return a if a.dtype == dtype else a.astype(dtype)


def _axis_len(loss: ir.LossDef, arrays: dict[str, np.ndarray]) -> int:
    sizes = {}
    for inp in loss.inputs:
        if inp.axis is None:
            continue
        a = arrays[inp.name]
        if a.ndim == 0:
            raise SpecShapeError(
                f"input '{inp.name}' of loss '{loss.name}' needs a trailing axis {inp.axis}, "
                "got a scalar"
            )
        sizes[inp.name] = a.shape[-1]
    if not sizes:
        return 0
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise SpecShapeError(
            f"inputs of loss '{loss.name}' disagree on the length of axis {loss.axis} ({shown})"
        )
    size = next(iter(sizes.values()))
    if size == 0:
        raise SpecShapeError(f"axis {loss.axis} of loss '{loss.name}' is empty")
    return int(size)


def _batch_shape(loss: ir.LossDef, arrays: dict[str, np.ndarray]) -> tuple[int, ...]:
    shapes = {
        inp.name: arrays[inp.name].shape[:-1] if inp.axis else arrays[inp.name].shape
        for inp in loss.inputs
    }
    try:
        batch = tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        shown = ", ".join(f"{k}: {v}" for k, v in shapes.items())
        raise SpecShapeError(
            f"batch shapes of the inputs of loss '{loss.name}' do not broadcast ({shown})"
        ) from None
    for name in loss.wrt:
        if shapes[name] != batch:
            raise SpecShapeError(
                f"input '{name}' has batch shape {shapes[name]} but the batch is {batch}",
                hint="a differentiated input must not be broadcast",
            )
    return batch


def param_value(p: ir.Param, value: Any, dtype: np.dtype[Any], axis_len: int) -> Any:
    if p.axis is not None:
        arr = np.asarray(value, dtype=dtype)
        if arr.ndim == 0:
            arr = np.full(axis_len, arr, dtype)
        if arr.shape != (axis_len,):
            raise SpecShapeError(f"parameter '{p.name}' needs shape ({axis_len},), got {arr.shape}")
        if p.domain is not None and not all(p.domain.contains(float(v)) for v in arr):
            raise SpecDomainError(
                f"parameter '{p.name}' has values outside its domain {p.domain}", p.span
            )
        return np.ascontiguousarray(arr)
    if isinstance(value, np.ndarray) and value.ndim != 0:
        raise SpecShapeError(
            f"parameter '{p.name}' is a scalar, got an array of shape {value.shape}"
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecShapeError(f"parameter '{p.name}' must be a number, got {value!r}") from None
    if p.kind == "int":
        if not v.is_integer():
            raise SpecDomainError(f"parameter '{p.name}' must be an integer, got {value!r}", p.span)
        return np.int64(v)
    if p.domain is not None and not p.domain.contains(v):
        raise SpecDomainError(
            f"parameter '{p.name}' = {value!r} is outside its domain {p.domain}",
            p.span,
        )
    return dtype.type(v)


def reduction_mode(loss: ir.LossDef, reduction: str | None) -> int:
    chosen = reduction if reduction is not None else loss.reduction
    if chosen not in MODES:
        raise SpecShapeError(
            f"unknown reduction {chosen!r}", hint="reduction is 'mean', 'sum' or 'none'"
        )
    return MODES[chosen]
