"""The public surface: `compile`, `load`, `get`, `available`, `register` and `Loss`.

A `Loss` binds a checked definition to a target. Kernels are loaded on first use from the
content-addressed cache (deriving and generating source only if the cache lacks it); the
derivation itself is computed lazily for `explain`. Calls validate inputs, dtypes, shapes and
parameter domains before any kernel runs, and report problems as `LossDSLError`s.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lossdsl import ir, runtime, validate
from lossdsl.check import TASKS, check_spec
from lossdsl.codegen import MODULES as _TARGET_MODULES
from lossdsl.codegen.names import entry_name
from lossdsl.errors import (
    DerivationError,
    LossDSLError,
    SpecDomainError,
    SpecShapeError,
    UnknownLossError,
    did_you_mean,
)
from lossdsl.parse import parse_spec, read_spec
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
    """A parameter a search can enumerate.

    `domain` is the declared domain as text, `bounds` the same as numbers; `role` is
    "hyperparameter", "switch" or "convention"; `search` the range a hyperparameter search
    draws from (low, high, log), None for switches and conventions. See `lossdsl.metadata`.
    """

    name: str
    kind: str
    default: float
    domain: str | None
    axis: str | None
    bounds: ir.Domain | None = None
    role: str = "hyperparameter"
    search: ir.SearchRange | None = None


@dataclass(frozen=True)
class InputInfo:
    """An input: its kind ("real"/"int"), axis, declared bounds, and the encoding its values
    must have ("logits", "probability", "pm1", "label", ...: `lossdsl.metadata.ENCODINGS`)."""

    name: str
    kind: str
    axis: str | None
    bounds: ir.Domain | None
    encoding: str
    differentiated: bool


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
        """The model's last layer this loss expects ("identity" when it takes logits)."""
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
            ParamInfo(
                p.name,
                p.kind,
                p.default,
                str(p.domain) if p.domain else None,
                p.axis,
                p.domain,
                p.role,
                p.search,
            )
            for p in self.definition.params
        )

    @property
    def input_info(self) -> tuple[InputInfo, ...]:
        """Each input's kind, axis, bounds and encoding, in declaration order."""
        d = self.definition
        return tuple(
            InputInfo(i.name, i.kind, i.axis, i.domain, i.encoding, i.name in d.wrt)
            for i in d.inputs
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
        """Value, gradient and Hessian diagonal as readable formulas; with `latex`, one LaTeX
        `aligned` block (valid in KaTeX and MathJax)."""
        from lossdsl.readable import named_locals

        names = named_locals(self.definition, _registry().resolve)
        if latex:
            from lossdsl.latex import explain_latex

            return explain_latex(self.derived(), names)
        from lossdsl.explain import explain

        return explain(self.derived(), names)

    def _repr_latex_(self) -> str:
        return "$$" + self.explain(latex=True) + "$$"

    def _repr_markdown_(self) -> str:
        """Jupyter: the name, task and activation, then the formulas as display math."""
        summary = f" {self.definition.summary}" if self.definition.summary else ""
        head = f"**{self.name}** ({self.task}; last layer `{self.activation}`).{summary}"
        return f"{head}\n\n$$\n{self.explain(latex=True)}\n$$\n"

    def source(self, defaults: bool = False) -> str:
        """The generated kernel module: the generic one (any parameter values), or with
        `defaults` the one a call with every parameter at its default runs (the defaults as
        constants, where this loss specialises; else the generic one)."""
        from lossdsl.codegen import TARGETS

        fixed = self._default_fixed() if defaults else ()
        if fixed:
            return self._specialized_source(fixed)
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
        cotangent: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        """(value, gradient); several `wrt` inputs give a tuple of gradients.

        `out` (an array shaped and typed like the differentiated input, C-contiguous; a tuple of
        them for several `wrt` inputs) receives the gradient and is returned: a training loop
        that passes the same `out` every step allocates nothing.

        `cotangent` (with reduction='none' only; broadcast to the batch shape) gives the
        vector-Jacobian product: the gradient of sum_i cotangent_i * out_i, where out_i are the
        per-sample outputs returned as the value (batch totals included exactly).
        """
        value, grads, _ = self._run("grad", args, kw, reduction, sample_weight, out, cotangent)
        return value, grads

    def grad(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        cotangent: Any = None,
        **kw: Any,
    ) -> Any:
        """The gradient only; `out` and `cotangent` as for `value_and_grad`."""
        return self._run("grad", args, kw, reduction, sample_weight, out, cotangent)[1]

    def hessian_diag(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        cotangent: Any = None,
        **kw: Any,
    ) -> Any:
        """Diagonal of the Hessian of the reduced loss, shaped like each `wrt` input.

        `out` receives it (as for `value_and_grad`); the gradient computed alongside goes to a
        reused per-thread scratch array. With `cotangent`, the Hessian diagonal of
        sum_i cotangent_i * out_i.
        """
        return self._run("hess", args, kw, reduction, sample_weight, out, cotangent)[2]

    def value_grad_hess(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        cotangent: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any, Any]:
        """Value, gradient and Hessian diagonal from one fused pass (`cotangent` as for
        `value_and_grad`)."""
        return self._run("hess", args, kw, reduction, sample_weight, None, cotangent, fresh=True)

    def grad_hess(
        self,
        *args: Any,
        reduction: str = "sum",
        sample_weight: Any = None,
        out: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        """(gradient, Hessian diagonal) per sample, as a gradient-boosting objective needs them.

        The default reduction is "sum" (not the spec's): sample i gets w_i dl_i and
        w_i d2l_i, never divided by N. `out` is a pair (gradient array, Hessian array), each
        as for `value_and_grad` (a tuple per array for several `wrt` inputs); both are
        written and returned. No per-sample value array is written.
        """
        if out is not None and not (isinstance(out, tuple | list) and len(out) == 2):
            raise SpecShapeError("out= for grad_hess is a pair (gradient, hessian)")
        grad_out, hess_out = (None, None) if out is None else out
        if (grad_out is None) != (hess_out is None):
            raise SpecShapeError("out= for grad_hess needs both arrays, or neither")
        if out is not None and any(
            np.may_share_memory(g, h) for g in _as_list(grad_out) for h in _as_list(hess_out)
        ):
            raise SpecShapeError(
                "out= for grad_hess: the gradient and Hessian arrays overlap",
                hint="give each its own array (np.empty_like twice)",
            )
        _, grads, hess = self._run(
            "hess", args, kw, reduction, sample_weight, hess_out, fresh=True, grad_out=grad_out
        )
        return grads, hess

    def __reduce__(self) -> tuple[Any, ...]:
        # By definition, not by kernels: another process (a Dask worker) rebuilds the Loss
        # and loads the same kernels from the on-disk cache (same key), compiling nothing.
        return (Loss, (self.definition, self.target, self.specialize))

    def _run(
        self,
        mode: str,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        reduction: str | None,
        weight: Any,
        out: Any = None,
        cotangent: Any = None,
        fresh: bool = False,
        grad_out: Any = None,
    ) -> tuple[Any, Any, Any]:
        if self.target == "cuda":
            from lossdsl import device  # device imports this module

            return device.run(self, mode, args, kw, reduction, weight, out, cotangent)
        wrt = self.definition.wrt
        outs = out if grad_out is None else [*_as_list(out), *_as_list(grad_out)]
        # A call with a cotangent is validated in full every time (no plan).
        key = None if cotangent is not None else _plan_key(mode, args, kw, reduction, weight, outs)
        plan = self._plans.get(key) if key is not None else None
        grads_given = None
        if plan is not None:
            # Same shapes, dtypes, parameters and out= layout as a validated call: only the
            # data differs, and no check depends on the data.
            call = plan.with_arrays(args, self.inputs)
            given = _as_list(out) if out is not None else None
            grads_given = _as_list(grad_out) if grad_out is not None else None
        else:
            call = _bind(self.definition, args, kw, reduction, weight)
            call.ct = _cotangent(self.definition, call, cotangent)
            given = _outputs(call, wrt, out) if out is not None else None
            if grad_out is not None:
                grads_given = _outputs(call, wrt, grad_out)
            if key is not None and call.reusable(args):
                if len(self._plans) >= _MAX_PLANS:  # shapes that keep changing: start over
                    self._plans.clear()
                self._plans[key] = dataclasses.replace(call, arrays=[])
        if given:
            call = _unalias(call, given)
        grads: list[np.ndarray] = []
        hess: list[np.ndarray] = []
        if mode == "grad":
            grads = given or [np.empty(call.shape_of(x), call.dtype) for x in wrt]
        elif mode == "hess":
            hess = given or [np.empty(call.shape_of(x), call.dtype) for x in wrt]
            grads = grads_given or [
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
        head = (*call.arrays, *call.params, call.sw, call.ct, call.mode, block)
        tail = (None if result is None else result.reshape(n), *flat)
        weighted = call.sw is not None or self.definition.weight is not None
        weighted_mean = call.mode == 0 and weighted
        entry = entry_name(mode, call.dtag)
        module = self._kernels(call.defaults if self.specialize else ())
        if mode == "hess":
            hessian_supported(self.definition, module)
        value, bad = runtime.run_phases(
            module, entry, head, tail, blocks, threads, weighted_mean, call.axis_len
        )
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
    if weight is not None or "weight" in kw or not isinstance(reduction, str | None):
        return None
    # The count of positional arrays and of out= arrays are part of the key: f(x, y, out=g)
    # and f(x, y, g) have the same arrays. dtype.str includes the byte order.
    key: list[Any] = [mode, reduction, len(args)]
    for a in args:
        if type(a) is not np.ndarray or not (a.flags.c_contiguous and a.dtype.isnative):
            return None
        key.append((a.shape, a.dtype.str))
    outs = _as_list(out) if out is not None else []
    key.append(len(outs))
    for o in outs:
        if type(o) is not np.ndarray or not (o.flags.c_contiguous and o.flags.writeable):
            return None
        key.append((o.shape, o.dtype.str))
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


def _unalias(call: _Call, outs: list[np.ndarray]) -> _Call:
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

    def private(x: Any) -> Any:
        if isinstance(x, np.ndarray) and any(np.may_share_memory(x, o) for o in outs):
            copy = x.copy()  # as writeable as the original: the same kernel signature
            copy.flags.writeable = x.flags.writeable
            return copy
        return x

    arrays = [private(a) for a in call.arrays]
    params = [private(p) for p in call.params]
    sw = private(call.sw)
    if sw is call.sw and all(map(operator.is_, arrays + params, call.arrays + call.params)):
        return call
    return dataclasses.replace(call, arrays=arrays, params=params, sw=sw)


def _kernel_view(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view of `a` (a copy if `a` is strided): Numba types arrays by
    layout and writeability, so strided, read-only (memory-mapped, JAX) and plain inputs would
    each compile the kernel again; this way they share one signature."""
    view = a.view() if a.flags.c_contiguous else np.ascontiguousarray(a)
    view.flags.writeable = False
    return view


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

    def with_arrays(self, args: tuple[np.ndarray, ...], names: tuple[str, ...]) -> _Call:
        """This validated call for new arrays of the same shapes and dtypes (`names` in order)."""
        flat = [
            _kernel_view(b.reshape(self.flat_shape(x))) for b, x in zip(args, names, strict=True)
        ]
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
        flat_shape = (n, axis_len) if inp.axis else (n,)
        if a.shape == full:
            flat.append(_kernel_view(a.reshape(flat_shape)))
        else:  # read-only and strided (zero steps), a second signature only when broadcasting
            flat.append(np.broadcast_to(a, full).reshape(flat_shape))
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
    return _Call(
        dtype, dtag, batch, n, axis_len, flat, params, sw, mode, shapes, axis_inputs, defaults
    )


def hessian_supported(loss: ir.LossDef, module: ModuleType) -> None:
    """Raise the derivation's reason where a module has no Hessian entry points."""
    error = getattr(module, "HESSIAN_ERROR", None)
    if error is not None:
        raise DerivationError(error[0], loss.span, loss.source, error[1])


def cotangent_reduction(loss: ir.LossDef, call: _Call) -> None:
    """A cotangent weighs per-sample outputs: only reduction 'none' has them."""
    if call.mode != _MODES["none"]:
        raise SpecShapeError(
            f"cotangent= needs reduction='none' (loss '{loss.name}' reduces to one number)",
            hint="pass reduction='none': the cotangent weighs each per-sample output",
        )


def _cotangent(loss: ir.LossDef, call: _Call, cotangent: Any) -> np.ndarray | None:
    """Validate `cotangent=`: reduction 'none', real numbers, broadcastable to the batch."""
    if cotangent is None:
        return None
    cotangent_reduction(loss, call)
    c = np.asarray(cotangent)
    if c.dtype.kind not in "fiub":
        raise SpecShapeError(
            f"cotangent= must hold real numbers, got dtype {c.dtype}",
            hint=f"convert it, e.g. np.asarray(cotangent, dtype=np.{call.dtype})",
        )
    try:
        shaped = np.broadcast_to(c.astype(call.dtype, copy=False), call.batch)
    except ValueError:
        raise SpecShapeError(
            f"cotangent of shape {c.shape} does not broadcast to the batch shape {call.batch}",
            hint="give one value per sample: the shape of the per-sample output",
        ) from None
    return np.ascontiguousarray(shaped).reshape(call.n)


def _assign_inputs(loss: ir.LossDef, args: tuple[Any, ...], kw: dict[str, Any]) -> dict[str, Any]:
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
        return validate.axis_param(p, value, dtype, axis_len)
    return validate.scalar_param(p, value, dtype)


def _reduction(loss: ir.LossDef, reduction: str | None) -> int:
    return validate.reduction_name(reduction, loss.reduction, _MODES)


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
    """Names of every registered loss, optionally only those declaring `task`.

    Raises:
        UnknownLossError: `task` is not one of the task tags (the hint lists close ones).
    """
    reg = _registry()
    if task is None:
        return reg.names()
    if task not in TASKS:
        raise UnknownLossError(
            f"unknown task '{task}'", hint=did_you_mean(task, TASKS) or f"tasks: {', '.join(TASKS)}"
        )
    return [n for n in reg.names() if _task_of(reg, n) == task]


def _task_of(reg: Registry, name: str) -> str | None:
    """A loss's task, or None for a spec that fails to check (`get` reports that)."""
    try:
        return reg.definition(name).task
    except LossDSLError:
        return None


def compile(source: str, name: str | None = None, target: str = "cpu") -> Loss:
    """Compile spec text. With several losses in the text, `name` picks one (default: last)."""
    return _from_source(source, "<string>", name, target)


def load(path: str | Path, name: str | None = None, target: str = "cpu") -> Loss:
    """Compile a spec file. With several losses in it, `name` picks one (default: last)."""
    p = Path(path)
    return _from_source(read_spec(p), str(p), name, target)


def check_source(source: str, file: str = "<string>") -> tuple[ir.LossDef, ...]:
    """Parse and check spec text (resolving calls of registered losses) without compiling."""
    reg = _registry()
    return check_spec(parse_spec(source, file), reg.resolve, tuple(reg.names()))


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
            hint=did_you_mean(name or "", [d.name for d in losses])
            or f"it defines: {', '.join(d.name for d in losses)}",
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
    # A user loss may call one just registered over an old name: make every user loss anew.
    for key in [k for k in _LOSSES if not reg.is_builtin(k[0])]:
        del _LOSSES[key]
    return names


def is_builtin(name: str) -> bool:
    return _registry().is_builtin(name)
