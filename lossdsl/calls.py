"""The validated call: arguments of a `Loss` call checked and flattened for the kernels.

`bind` turns user arguments (inputs, parameters, reduction, sample weights) into a `Call`:
one float dtype, flattened C-ordered arrays, typed parameters and the batch shape, or a
`LossDSLError` naming the problem. The API binds host arrays here; each target's runner (CPU:
`host.run`, CUDA: `device.run`) takes a `Call` and the generated module. No kernels run here.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from lossdsl import ir, validate
from lossdsl.errors import DerivationError, SpecDomainError, SpecShapeError, did_you_mean

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

    Positional C-contiguous arrays (shape, dtype), the sample weights' (shape, dtype),
    hashable parameter values, the reduction and the out= arrays' layout; anything else takes
    the full path every time. The one check on data, finite weights, runs on every call
    (`Call.with_arrays`).
    """
    if "weight" in kw or not isinstance(reduction, str | None):
        return None
    # The count of positional arrays and of out= arrays are part of the key: f(x, y, out=g)
    # and f(x, y, g) have the same arrays. Equal dtypes have the same byte order (a
    # non-native one is converted by `bind`: its plan keeps no validated call).
    key: list[Any] = [mode, reduction, len(args)]
    for a in args:
        if type(a) is not np.ndarray or not a.flags.c_contiguous:
            return None
        key.append((a.shape, a.dtype))
    if weight is None:
        key.append(None)
    elif type(weight) is np.ndarray and weight.dtype.isnative and weight.dtype.kind in "biuf":
        key.append((weight.shape, weight.dtype))
    else:
        return None
    outs = out if isinstance(out, tuple | list) else () if out is None else (out,)
    key.append(len(outs))
    for o in outs:
        if type(o) is not np.ndarray:
            return None
        flags = o.flags
        if not (flags.c_contiguous and flags.writeable):
            return None
        key.append((o.shape, o.dtype))
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


def unalias(call: Call, outs: list[np.ndarray]) -> Call:
    """The call with private copies of the arrays it reads that overlap an out= array.

    A kernel writes out= while it still reads its inputs, so `grad(x, y, out=x)` would read
    gradient values as inputs; a copy keeps the result exact (out= arrays overlapping each
    other cannot be fixed that way and are an error).
    """
    for i, a in enumerate(outs):
        if any(np.may_share_memory(a, b) for b in outs[i + 1 :]):
            raise SpecShapeError(
                "out= arrays overlap each other", hint="give each gradient its own array"
            )
    read = [*call.arrays, *call.params, call.sw, call.ct]
    if not any(np.may_share_memory(x, o) for x in read if isinstance(x, np.ndarray) for o in outs):
        return call  # the usual case, checked with the fewest steps: nothing to copy

    def private(x: Any) -> Any:
        if isinstance(x, np.ndarray) and any(np.may_share_memory(x, o) for o in outs):
            copy = x.copy()  # as writeable as the original: the same kernel signature
            copy.flags.writeable = x.flags.writeable
            return copy
        return x

    arrays = [private(a) for a in call.arrays]
    params = [private(p) for p in call.params]
    sw, ct = private(call.sw), private(call.ct)
    if (
        sw is call.sw
        and ct is call.ct
        and all(map(operator.is_, arrays + params, call.arrays + call.params))
    ):
        return call
    return dataclasses.replace(call, arrays=arrays, params=params, sw=sw, ct=ct)


def _kernel_view(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view of `a` (a copy if `a` is strided): Numba types arrays by
    layout and writeability, so strided, read-only (memory-mapped, JAX) and plain inputs would
    each compile the kernel again; this way they share one signature."""
    view = a.view() if a.flags.c_contiguous else np.ascontiguousarray(a)
    view.flags.writeable = False
    return view


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
    # Per-sample cotangent of a vector-Jacobian product (reduction 'none' only).
    ct: np.ndarray | None = None

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

    def with_arrays(
        self,
        args: tuple[np.ndarray, ...],
        shapes: tuple[tuple[int, ...], ...],
        weight: np.ndarray | None = None,
    ) -> Call:
        """This validated call for new C-contiguous arrays of the same shapes and dtypes
        (`shapes`: their kernel shapes, `flat_shape` of each input) and sample weights of the
        same shape and dtype (checked finite: the one check that depends on the data)."""
        flat = []
        for a, shape in zip(args, shapes, strict=True):
            view = a.reshape(shape)  # a new view of a C-contiguous array: as `_kernel_view`
            view.flags.writeable = False
            flat.append(view)
        sw = None if weight is None else self._weights(weight)
        return Call(
            self.dtype, self.dtag, self.batch, self.n, self.axis_len, flat, self.params,
            sw, self.mode, self.shapes, self.axis_inputs, self.defaults,
        )  # fmt: skip

    def _weights(self, weight: np.ndarray) -> np.ndarray:
        w = weight if weight.dtype == self.dtype else weight.astype(self.dtype)
        # One pass and no temporary in the usual case: a sum is finite only if every term is
        # (NaN and inf propagate); a sum that overflowed gets the full check, which tells.
        if not math.isfinite(np.add.reduce(w, axis=None)):
            validate.sample_weight(w, self.dtype)
        if w.shape != self.batch:
            w = np.broadcast_to(w, self.batch)
        # Writeable, aligned and C-ordered, as `bind` passes them: the same kernel signature.
        w = w.reshape(self.n)
        flags = w.flags
        return w if flags.writeable and flags.c_contiguous and flags.aligned else w.copy()


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
    batch = batch_shape(loss, arrays)
    n = math.prod(batch)
    flat = []
    for inp in loss.inputs:
        a = arrays[inp.name]
        full = batch + ((axis_len,) if inp.axis else ())
        flat_shape = (n, axis_len) if inp.axis else (n,)
        if a.shape == full:
            flat.append(_kernel_view(a.reshape(flat_shape)))
        else:  # read-only and strided (zero steps), a second signature only when broadcasting
            flat.append(np.broadcast_to(a, full).reshape(flat_shape))
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
        w = validate.sample_weight(weight, dtype)
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


def hessian_supported(loss: ir.LossDef, module: ModuleType) -> None:
    """Raise the derivation's reason where a module has no Hessian entry points."""
    error = getattr(module, "HESSIAN_ERROR", None)
    if error is not None:
        raise DerivationError(error[0], loss.span, loss.source, error[1])


def cotangent_reduction(loss: ir.LossDef, call: Call) -> None:
    """A cotangent weighs per-sample outputs: only reduction 'none' has them."""
    if call.mode != MODES["none"]:
        raise SpecShapeError(
            f"cotangent= needs reduction='none' (loss '{loss.name}' reduces to one number)",
            hint="pass reduction='none': the cotangent weighs each per-sample output",
        )


def check_cotangent(loss: ir.LossDef, call: Call, cotangent: Any) -> np.ndarray | None:
    """Validate `cotangent=`: reduction 'none', real numbers, broadcastable to the batch."""
    if cotangent is None:
        return None
    cotangent_reduction(loss, call)
    c = validate.numeric_array(cotangent, "cotangent=")
    try:
        shaped = np.broadcast_to(c.astype(call.dtype, copy=False), call.batch)
    except ValueError:
        raise SpecShapeError(
            f"cotangent of shape {c.shape} does not broadcast to the batch shape {call.batch}",
            hint="give one value per sample: the shape of the per-sample output",
        ) from None
    return np.ascontiguousarray(shaped).reshape(call.n)


def assign_inputs(loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
    names = [i.name for i in loss.inputs]
    if len(args) > len(names):
        raise SpecShapeError(
            f"loss '{loss.name}' takes {len(names)} inputs ({', '.join(names)}), got {len(args)}"
        )
    given = dict(zip(names, args, strict=False))
    twice = [name for name in given if name in kw]
    if twice:
        raise SpecShapeError(
            f"input '{twice[0]}' of loss '{loss.name}' is given both by position and by keyword"
        )
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
        a = validate.numeric_array(given[name], f"input '{name}' of loss '{loss.name}'")
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
    what = f"input '{name}' of loss '{loss.name}'"
    a = validate.numeric_array(value, what)
    if loss.input(name).kind == "int":
        return validate.labels(a, what)
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


def batch_shape(loss: ir.LossDef, arrays: Mapping[str, Any]) -> tuple[int, ...]:
    """The broadcast batch shape of inputs by name (anything with a `.shape`); a
    differentiated input must have it whole."""
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
        return validate.axis_param(p, value, dtype, axis_len)
    return validate.scalar_param(p, value, dtype)


def reduction_mode(loss: ir.LossDef, reduction: str | None) -> int:
    return validate.reduction_name(reduction, loss.reduction, MODES)
