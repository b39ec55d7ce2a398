"""The public surface: `compile`, `load`, `get`, `available`, `register` and `Loss`.

A `Loss` binds a checked definition to a target. Kernels are loaded on first use from the
content-addressed cache (deriving and generating source only if the cache lacks it); the
derivation itself is computed lazily for `explain`. Calls validate inputs, dtypes, shapes and
parameter domains before any kernel runs, and report problems as `LossDSLError`s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lossdsl import ir, runtime
from lossdsl.check import check_spec
from lossdsl.codegen import MODULES as _TARGET_MODULES
from lossdsl.codegen.names import entry_name
from lossdsl.errors import (
    SpecDomainError,
    SpecShapeError,
    UnknownLossError,
    UnsupportedError,
    did_you_mean,
)
from lossdsl.parse import parse_spec
from lossdsl.registry import Registry

if TYPE_CHECKING:
    from lossdsl.derive import Derived

_MODES = {"mean": 0, "sum": 1, "none": 2}
# Samples per block scale so one block holds about this many elements: big enough to amortise
# the per-block partial sum, small enough that every core gets blocks.
_BLOCK_ELEMENTS = 16_384
# Below this many elements a serial kernel beats thread start-up.
_PARALLEL_ELEMENTS = 262_144
# Validated argument signatures kept per loss (see _plan_key).
_MAX_PLANS = 64


@dataclass(frozen=True)
class ParamInfo:
    """A parameter a search can enumerate: name, kind, default, domain, axis."""

    name: str
    kind: str
    default: float
    domain: str | None
    axis: str | None


# Parameters fixed at kernel generation, with their values: () is the generic kernel.
Fixed = tuple[tuple[str, float], ...]


class Loss:
    """A compiled loss: call it for the value, or ask for gradients and Hessian diagonals.

    With `specialize` (the default), a CPU call whose parameters sit at their defaults runs a
    kernel generated with those values as constants: `x^gamma` at gamma = 2 is a square, not an
    exp and a log, and a zero `label_smoothing` drops its row sums. Other values run the
    generic kernel. Each kernel is generated and compiled once, on the first call that needs it.
    """

    def __init__(
        self, definition: ir.LossDef, target: str = "cpu", specialize: bool = True
    ) -> None:
        if target not in _TARGET_MODULES:
            raise UnknownLossError(
                f"unknown target '{target}'", hint=f"targets: {', '.join(_TARGET_MODULES)}"
            )
        self.definition = definition
        self.target = target
        self.specialize = specialize
        self._modules: dict[Fixed, ModuleType] = {}
        self._derived: Derived | None = None
        self._key = runtime.cache_key(ir.fingerprint(definition), target)
        # Validated calls by argument signature (shapes, dtypes, parameter values): see _plan_key.
        self._plans: dict[tuple[Any, ...], _Call] = {}

    # -- description --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def task(self) -> str:
        return self.definition.task

    @property
    def activation(self) -> str:
        return self.definition.activation

    @property
    def doc(self) -> str:
        return self.definition.doc

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.definition.inputs)

    @property
    def wrt(self) -> tuple[str, ...]:
        return self.definition.wrt

    @property
    def reduction(self) -> str:
        return self.definition.reduction

    @property
    def params(self) -> tuple[ParamInfo, ...]:
        return tuple(
            ParamInfo(p.name, p.kind, p.default, str(p.domain) if p.domain else None, p.axis)
            for p in self.definition.params
        )

    def __repr__(self) -> str:
        return f"<lossdsl.Loss {self.name} ({', '.join(self.inputs)}) target={self.target}>"

    def derived(self) -> Derived:
        if self._derived is None:
            # SymPy is imported here, not at import time: cached kernels never need it.
            from lossdsl.derive import derive
            from lossdsl.lower import lower

            self._derived = derive(lower(self.definition))
        return self._derived

    def explain(self, latex: bool = False) -> str:
        """Value, gradient and Hessian diagonal as readable formulas."""
        from lossdsl.explain import explain

        return explain(self.derived(), latex)

    def source(self) -> str:
        """The generated kernel module."""
        from lossdsl.codegen import TARGETS

        text: str = TARGETS[self.target](self.derived()).text
        return text

    @property
    def source_path(self) -> Path:
        return runtime.module_path(self._key)

    def to(self, target: str) -> Loss:
        """The same loss compiled for another target ("cpu", "cuda"); shares the derivation."""
        other = Loss(self.definition, target, self.specialize)
        other._derived = self._derived
        return other

    def compile(self) -> Loss:
        """Load (and if needed generate) the kernel module a call with default parameters
        runs now, rather than on the first call."""
        self._kernels(self._default_fixed())
        return self

    def module(self) -> ModuleType:
        """The loaded generated module of the generic kernels (for target "array": the
        vectorised functions that framework adapters such as `integrations.jax` call)."""
        return self._kernels()

    def _default_fixed(self) -> Fixed:
        if not self.specialize or self.target != "cpu":
            return ()
        return tuple((p.name, p.default) for p in self.definition.params)

    def _kernels(self, fixed: Fixed = ()) -> ModuleType:
        module = self._modules.get(fixed)
        if module is None:
            if fixed:
                key = runtime.cache_key(ir.fingerprint(self.definition) + repr(fixed), self.target)
                module = runtime.load_module(key, lambda: self._specialized_source(fixed))
            else:
                module = runtime.load_module(self._key, self.source)
            self._modules[fixed] = module
        return module

    def _specialized_source(self, fixed: Fixed) -> str:
        from lossdsl.codegen import TARGETS
        from lossdsl.derive import derive
        from lossdsl.lower import lower

        text: str = TARGETS[self.target](derive(lower(self.definition, dict(fixed)))).text
        return text

    # -- evaluation ---------------------------------------------------------------------------

    def __call__(
        self, *args: Any, reduction: str | None = None, sample_weight: Any = None, **kw: Any
    ) -> Any:
        """The loss value: a scalar for mean/sum, per-sample values for reduction='none'."""
        return self._run("value", args, kw, reduction, sample_weight)[0]

    def value_and_grad(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        """(value, gradient); several `wrt` inputs give a tuple of gradients.

        `out` (an array shaped and typed like the differentiated input, C-contiguous; a tuple of
        them for several `wrt` inputs) receives the gradient and is returned: a training loop
        that passes the same `out` every step allocates nothing.
        """
        value, grads, _ = self._run("grad", args, kw, reduction, sample_weight, out)
        return value, grads

    def grad(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        **kw: Any,
    ) -> Any:
        """The gradient only; `out` as for `value_and_grad`."""
        return self._run("grad", args, kw, reduction, sample_weight, out)[1]

    def hessian_diag(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        **kw: Any,
    ) -> Any:
        """Diagonal of the Hessian of the reduced loss, shaped like each `wrt` input.

        `out` receives it (as for `value_and_grad`); the gradient computed alongside goes to a
        reused per-thread scratch array.
        """
        return self._run("hess", args, kw, reduction, sample_weight, out)[2]

    def value_grad_hess(
        self, *args: Any, reduction: str | None = None, sample_weight: Any = None, **kw: Any
    ) -> tuple[Any, Any, Any]:
        """Value, gradient and Hessian diagonal from one fused pass."""
        return self._run("hess", args, kw, reduction, sample_weight, None, fresh=True)

    def _run(
        self,
        mode: str,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        reduction: str | None,
        weight: Any,
        out: Any = None,
        fresh: bool = False,
    ) -> tuple[Any, Any, Any]:
        if self.target == "array":
            raise UnsupportedError(
                "target 'array' is code for array libraries, not a callable kernel",
                hint="use lossdsl.integrations.jax, or target='cpu'",
            )
        if self.target == "cuda":
            from lossdsl import device  # device imports this module

            return device.run(self, mode, args, kw, reduction, weight, out)
        wrt = self.definition.wrt
        key = _plan_key(mode, args, kw, reduction, weight, out)
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:
            # Same shapes, dtypes, parameters and out= layout as a validated call: only the
            # data differs, and no check depends on the data.
            call = plan.with_arrays(args, self.inputs)
            given = _as_list(out) if out is not None else None
        else:
            call = _bind(self.definition, args, kw, reduction, weight)
            given = _outputs(call, wrt, out) if out is not None else None
            if key is not None and call.reusable(args):
                if len(self._plans) >= _MAX_PLANS:  # shapes that keep changing: start over
                    self._plans.clear()
                self._plans[key] = dataclasses.replace(call, arrays=[])
        grads: list[np.ndarray] = []
        hess: list[np.ndarray] = []
        if mode == "grad":
            grads = given or [np.empty(call.shape_of(x), call.dtype) for x in wrt]
        elif mode == "hess":
            hess = given or [np.empty(call.shape_of(x), call.dtype) for x in wrt]
            grads = [
                np.empty(call.shape_of(x), call.dtype)
                if fresh
                else runtime.workspace(("grad", x), call.shape_of(x), call.dtype)
                for x in wrt
            ]
        value = self._evaluate(mode, call, grads, hess)
        return value, _one_or_tuple(grads), _one_or_tuple(hess)

    def _evaluate(
        self, mode: str, call: _Call, grads: list[np.ndarray], hess: list[np.ndarray]
    ) -> Any:
        n, dtype = call.n, call.dtype
        result = np.empty(call.batch, dtype) if call.mode == 2 else None
        if n == 0:
            for g in grads + hess:
                g.fill(0)
            return result if result is not None else dtype.type(np.nan if call.mode == 0 else 0.0)
        elements = n * max(call.axis_len, 1)
        block = max(1, _BLOCK_ELEMENTS // max(call.axis_len, 1))
        blocks = (n + block - 1) // block
        threads = runtime.threads() if elements >= _PARALLEL_ELEMENTS else 1
        wrt = self.definition.wrt
        flat = [a.reshape(call.flat_shape(x)) for a, x in zip(grads, wrt, strict=False)]
        flat += [a.reshape(call.flat_shape(x)) for a, x in zip(hess, wrt, strict=False)]
        head = (*call.arrays, *call.params, call.sw, call.mode, block)
        tail = (None if result is None else result.reshape(n), *flat)
        weighted = call.sw is not None or self.definition.weight is not None
        weighted_mean = call.mode == 0 and weighted
        entry = entry_name(mode, call.dtag)
        module = self._kernels(call.defaults if self.specialize else ())
        value, bad = runtime.run_phases(module, entry, head, tail, blocks, threads, weighted_mean)
        if bad:
            raise SpecShapeError(
                f"{int(bad)} sample(s) have a label outside [0, {call.axis_len}) "
                f"for loss '{self.name}'",
                hint="labels index the class axis; mark ignored rows with a zero weight",
            )
        return result if result is not None else dtype.type(value)


def _plan_key(
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
    for o in _as_list(out) if out is not None else ():
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


def _as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, tuple | list) else [out]


def _outputs(call: _Call, wrt: tuple[str, ...], out: Any) -> list[np.ndarray]:
    """Validate user-provided output arrays: one per `wrt` input, its shape and dtype, C order."""
    arrays = _as_list(out)
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


def _one_or_tuple(items: list[np.ndarray]) -> Any:
    if not items:
        return None
    return items[0] if len(items) == 1 else tuple(items)


@dataclass
class _Call:
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

    def with_arrays(self, args: tuple[np.ndarray, ...], names: tuple[str, ...]) -> _Call:
        """This validated call for new arrays of the same shapes and dtypes (`names` in order)."""
        flat = [b.reshape(self.flat_shape(x)) for b, x in zip(args, names, strict=True)]
        return _Call(
            self.dtype, self.dtag, self.batch, self.n, self.axis_len, flat, self.params,
            None, self.mode, self.shapes, self.axis_inputs, self.defaults,
        )  # fmt: skip


def _bind(
    loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any], reduction: str | None, weight: Any
) -> _Call:
    if "weight" in kw and all(p.name != "weight" for p in loss.params):
        # `weight=` means per-sample weights unless the loss has a parameter of that name.
        if weight is not None:
            raise SpecShapeError("pass per-sample weights once, as sample_weight=")
        weight = kw.pop("weight")
    given = _assign_inputs(loss, args, kw)
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
        params = [_param_value(p, kw.pop(p.name, p.default), dtype, axis_len) for p in loss.params]
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
    mode = _reduction(loss, reduction)
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
    return _Call(
        dtype, dtag, batch, n, axis_len, flat, params, sw, mode, shapes, axis_inputs, defaults
    )


def _assign_inputs(loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
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


def _param_value(p: ir.Param, value: Any, dtype: np.dtype[Any], axis_len: int) -> Any:
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


def _reduction(loss: ir.LossDef, reduction: str | None) -> int:
    chosen = reduction if reduction is not None else loss.reduction
    if chosen not in _MODES:
        raise SpecShapeError(
            f"unknown reduction {chosen!r}", hint="reduction is 'mean', 'sum' or 'none'"
        )
    return _MODES[chosen]


# -- module-level functions ------------------------------------------------------------------

_REGISTRY: Registry | None = None
_LOSSES: dict[tuple[str, str], Loss] = {}


def _registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def get(name: str, target: str = "cpu") -> Loss:
    """A registered loss by name (built-in or user), compiled for `target`.

    Raises:
        UnknownLossError: no loss of that name; the hint lists close matches.
    """
    key = (name, target)
    if key not in _LOSSES:
        _LOSSES[key] = Loss(_registry().definition(name), target)
    return _LOSSES[key]


def available(task: str | None = None) -> list[str]:
    """Names of every registered loss, optionally only those declaring `task`."""
    reg = _registry()
    if task is None:
        return reg.names()
    return [n for n in reg.names() if reg.definition(n).task == task]


def compile(source: str, name: str | None = None, target: str = "cpu") -> Loss:
    """Compile spec text. With several losses in the text, `name` picks one (default: last)."""
    return _from_source(source, "<string>", name, target)


def load(path: str | Path, name: str | None = None, target: str = "cpu") -> Loss:
    """Compile a spec file. With several losses in it, `name` picks one (default: last)."""
    p = Path(path)
    return _from_source(p.read_text(encoding="utf-8"), str(p), name, target)


def check_source(source: str, file: str = "<string>") -> tuple[ir.LossDef, ...]:
    """Parse and check spec text (resolving calls of registered losses) without compiling."""
    return check_spec(parse_spec(source, file), _registry().resolve)


def _from_source(source: str, file: str, name: str | None, target: str) -> Loss:
    losses = check_source(source, file)
    if not losses:
        raise SpecShapeError(
            f"{file} defines no loss", hint="start one with: loss name(pred, target):"
        )
    chosen = losses[-1] if name is None else next((d for d in losses if d.name == name), None)
    if chosen is None:
        raise UnknownLossError(
            f"{file} defines no loss named '{name}'",
            hint=did_you_mean(name or "", [d.name for d in losses]),
        )
    return Loss(chosen, target)


def register(loss_or_path: Loss | str | Path, replace: bool = False) -> list[str]:
    """Make user losses available by name beside the built-ins.

    Args:
        loss_or_path: a `Loss`, or a spec file, or a directory of `*.loss` files.
        replace: allow shadowing an existing loss of the same name.

    Returns:
        The names registered.
    """
    reg = _registry()
    if isinstance(loss_or_path, Loss):
        reg.register_definition(loss_or_path.definition, replace)
        names = [loss_or_path.name]
    else:
        names = reg.register_file(Path(loss_or_path), replace)
    for n in names:
        for key in [k for k in _LOSSES if k[0] == n]:
            del _LOSSES[key]
    return names


def is_builtin(name: str) -> bool:
    return _registry().is_builtin(name)
