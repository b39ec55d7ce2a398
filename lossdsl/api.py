"""The public surface: `compile`, `load`, `get`, `available`, `register` and `Loss`.

A `Loss` binds a checked definition to a target. Kernels are loaded on first use from the
content-addressed cache (deriving and generating source only if the cache lacks it); the
derivation itself is computed lazily for `explain`. Calls validate inputs, dtypes, shapes and
parameter domains before any kernel runs, and report problems as `LossDSLError`s.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lossdsl import background, calls, eager, host, ir, limits, phases, runtime
from lossdsl.calls import (
    Call,
    Fixed,
    as_list,
    assign_inputs,
    bind,
    check_cotangent,
    check_outputs,
    one_or_tuple,
    plan_key,
    unalias,
)
from lossdsl.check import TASKS, check_spec
from lossdsl.codegen import MODULES as _TARGET_MODULES
from lossdsl.codegen.names import HESSIAN_MODES
from lossdsl.errors import (
    LossDSLError,
    SpecShapeError,
    UnknownLossError,
    UnsupportedError,
    did_you_mean,
)
from lossdsl.registry import Registry
from lossdsl.wrt import with_wrt

if TYPE_CHECKING:
    from lossdsl.derive import Derived

# Validated argument signatures kept per loss (see plan_key).
_MAX_PLANS = 64
# Lazy array libraries: the module defining the array type, and the integration that builds a
# lazy computation of a call on such arrays. Checked without importing the library: if its
# module is not loaded, no array of it exists.
_LAZY_ARRAYS = {"dask.array": ("Array", "lossdsl.integrations.dask")}


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


class Loss:
    """A compiled loss: call it for the value, or ask for gradients and Hessian diagonals.

    With `specialize` (the default), a CPU call whose parameters sit at their defaults runs a
    kernel generated with those values as constants: `x^gamma` at gamma = 2 is a square, not an
    exp and a log, and a zero `label_smoothing` drops its row sums. Other values run the
    generic kernel. Each kernel is generated and compiled once, on the first call that needs it.

    `compile_mode` (default: `LOSSDSL_COMPILE`, else "background") says how a CPU call whose
    kernel is not compiled yet runs: "background" evaluates it with NumPy while the kernel
    compiles in another process, then switches to the kernel (results agree within float
    rounding); "sync" compiles on the caller; "never" always uses NumPy.
    """

    def __init__(
        self,
        definition: ir.LossDef,
        target: str = "cpu",
        specialize: bool = True,
        compile_mode: str | None = None,
    ) -> None:
        if target not in _TARGET_MODULES:
            raise UnknownLossError(
                f"unknown target '{target}'", hint=f"targets: {', '.join(_TARGET_MODULES)}"
            )
        self.definition = definition
        self.target = target
        self.specialize = specialize
        self.compile_mode = compile_mode
        if compile_mode is not None:
            background.policy(compile_mode)  # refuse an unknown one now
        self._modules: dict[Fixed, ModuleType] = {}
        self._derived: Derived | None = None
        self._array: ModuleType | None = None
        self._tracker = background.Tracker()
        # What calls of one argument signature (shapes, dtypes, parameter values, see
        # plan_key) share: their validation, fused module and runner.
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        # The same loss differentiating other inputs, by the `wrt=` tuple asked for.
        self._views: dict[tuple[Any, ...], Loss] = {}

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

    def split_inputs(self, args: tuple[Any, ...], kw: dict[str, Any]) -> list[Any]:
        """The loss's inputs in declaration order, from positional arguments and keywords; input
        keywords are taken out of `kw` (what stays are parameters and options). For adapters.

        Raises:
            SpecShapeError: too many inputs, a missing one, or one given twice.
        """
        return list(assign_inputs(self.definition, args, kw).values())

    @property
    def has_totals(self) -> bool:
        """Whether the loss uses batch totals (`total(...)`, also through a called loss): each
        per-sample output then depends on the whole batch."""
        seen: set[int] = set()
        stack: list[ir.Expr] = [self.definition.value]
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            if isinstance(e, ir.Total):
                return True
            if isinstance(e, ir.Inline):
                stack.append(e.loss.value)
            stack.extend(limits.ir_children(e))
        return False

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
        return runtime.module_path(self._key_of(()))

    def to(self, target: str) -> Loss:
        """The same loss compiled for another target ("cpu", "cuda"); shares the derivation."""
        other = Loss(self.definition, target, self.specialize, self.compile_mode)
        other._derived = self._derived
        return other

    def batch_shape(self, arrays: Sequence[Any]) -> tuple[int, ...]:
        """The batch shape of inputs given in order (NumPy, Dask or any array with `.shape`).

        Raises:
            SpecShapeError: batch shapes that do not broadcast, or a broadcast `wrt` input.
        """
        return calls.batch_shape(
            self.definition,
            {i.name: a for i, a in zip(self.definition.inputs, arrays, strict=True)},
        )

    def with_wrt(self, wrt: str | Sequence[str]) -> Loss:
        """This loss differentiating the inputs `wrt` names, in that order (made once, then
        memoised; its kernels are derived, compiled and cached on first use like any other).
        The `wrt=` keyword of the gradient methods runs through it.

        Raises:
            SpecNameError: a name that is not an input, or one given twice.
            SpecShapeError: no name, an integer (label) input, or one the reduction weight reads.
        """
        key = tuple(wrt) if isinstance(wrt, tuple | list) else (wrt,)
        view = self._views.get(key) if all(isinstance(k, str) for k in key) else None
        if view is None:
            definition = with_wrt(self.definition, key)
            view = self
            if definition is not self.definition:
                view = Loss(definition, self.target, self.specialize, self.compile_mode)
            self._views[key] = view
        return view

    def compile(self) -> Loss:
        """Load (and if needed generate) the kernel module a call with default parameters
        runs now, rather than on the first call. Numba still compiles each entry point on the
        first call that needs it (served by NumPy meanwhile under the "background" policy)."""
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
            key = self._key_of(fixed)
            if fixed:
                module = runtime.load_module(key, lambda: self._specialized_source(fixed))
            else:
                module = runtime.load_module(key, self.source)
            self._modules[fixed] = module
        return module

    @functools.cached_property
    def _key(self) -> str:
        """The generic kernels' cache key: the loss's identity across processes (made once)."""
        return self._key_of(())

    def _key_of(self, fixed: Fixed) -> str:
        fingerprint = ir.fingerprint(self.definition) + (repr(fixed) if fixed else "")
        return runtime.cache_key(fingerprint, self.target)

    def _array_module(self) -> ModuleType:
        """The array target's module, which the NumPy path runs."""
        if self._array is None:
            from lossdsl.codegen.array import generate_numpy

            key = runtime.cache_key(ir.fingerprint(self.definition), "array-numpy")
            self._array = runtime.load_module(key, lambda: generate_numpy(self.derived()).text)
        return self._array

    def _fused(
        self,
        mode: str,
        call: Call,
        grads: list[np.ndarray],
        hess: list[np.ndarray],
        plan: _Plan | None,
    ) -> ModuleType | None:
        """The fused module to run this call, or None for the NumPy path (see `compile_mode`).

        `plan` is the call's plan, if any: its module, once ready, is kept by it.
        """
        if plan is not None and plan.module is not None:
            return plan.module  # chosen under the policy of the plan's first call
        chosen = background.policy(self.compile_mode)
        if chosen == "never":
            return None
        fixed = call.defaults if self.specialize else ()
        if chosen == "sync":
            module: ModuleType | None = self._kernels(fixed)
        else:
            module = self._background(mode, call, grads, hess, fixed)
        if plan is not None:
            plan.module = module
        return module

    def _background(
        self, mode: str, call: Call, grads: list[np.ndarray], hess: list[np.ndarray], fixed: Fixed
    ) -> ModuleType | None:
        entry, described = host.signature(mode, call, grads, hess, self.definition)

        def request() -> background.Request:
            return background.Request(
                self.definition,
                self.specialize,
                fixed,
                entry,
                described,
                lambda: self._kernels(fixed),
            )

        return self._tracker.module((fixed, entry, described), request)

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
        wrt: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        """(value, gradient); several `wrt` inputs give a tuple of gradients.

        `out` (an array shaped and typed like the differentiated input, C-contiguous; a tuple of
        them for several `wrt` inputs) receives the gradient and is returned: a training loop
        that passes the same `out` every step allocates nothing.

        `cotangent` (with reduction='none' only; broadcast to the batch shape) gives the
        vector-Jacobian product: the gradient of sum_i cotangent_i * out_i, where out_i are the
        per-sample outputs returned as the value (batch totals included exactly).

        `wrt` (an input name or a sequence of them) differentiates those inputs instead of the
        spec's `wrt`: one name gives one gradient, several a tuple in the order named
        (`out` then follows that order). Integer (label) inputs cannot be differentiated.
        """
        loss = self if wrt is None else self.with_wrt(wrt)
        value, grads, _ = loss._run("grad", args, kw, reduction, sample_weight, out, cotangent)
        return value, grads

    def grad(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        cotangent: Any = None,
        wrt: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> Any:
        """The gradient only; `out`, `cotangent` and `wrt` as for `value_and_grad`."""
        loss = self if wrt is None else self.with_wrt(wrt)
        return loss._run("grad", args, kw, reduction, sample_weight, out, cotangent)[1]

    def hessian_diag(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        out: Any = None,
        cotangent: Any = None,
        wrt: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> Any:
        """Diagonal of the Hessian of the reduced loss, shaped like each `wrt` input.

        `out` receives it (as for `value_and_grad`); the gradient computed alongside goes to a
        reused per-thread scratch array. With `cotangent`, the Hessian diagonal of
        sum_i cotangent_i * out_i. `wrt` as for `value_and_grad`.
        """
        loss = self if wrt is None else self.with_wrt(wrt)
        return loss._run("hess", args, kw, reduction, sample_weight, out, cotangent)[2]

    def value_grad_hess(
        self,
        *args: Any,
        reduction: str | None = None,
        sample_weight: Any = None,
        cotangent: Any = None,
        wrt: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> tuple[Any, Any, Any]:
        """Value, gradient and Hessian diagonal from one fused pass (`cotangent` as for
        `value_and_grad`), for the inputs `wrt` names (default: the spec's own)."""
        loss = self if wrt is None else self.with_wrt(wrt)
        return loss._run("hess", args, kw, reduction, sample_weight, None, cotangent, fresh=True)

    def grad_hess(
        self,
        *args: Any,
        reduction: str = "sum",
        sample_weight: Any = None,
        out: Any = None,
        wrt: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        """(gradient, Hessian diagonal) per sample, as a gradient-boosting objective needs them.

        The default reduction is "sum" (not the spec's): sample i gets w_i dl_i and
        w_i d2l_i, never divided by N. `out` is a pair (gradient array, Hessian array), each
        as for `value_and_grad` (a tuple per array for several `wrt` inputs); both are
        written and returned. The kernel computes no value at all (its own entry point, with
        only the gradient and Hessian terms in its common subexpressions). `wrt` as for
        `value_and_grad`.
        """
        grad_out, hess_out = (None, None) if out is None else _grad_hess_out(out)
        loss = self if wrt is None else self.with_wrt(wrt)
        _, grads, hess = loss._run(
            "grad_hess", args, kw, reduction, sample_weight, hess_out, fresh=True, grad_out=grad_out
        )
        return grads, hess

    # -- phases: one chunk of a batch at a time ----------------------------------------------

    def partial_totals(
        self, *args: Any, sample_weight: Any = None, mode: str = "grad", **kw: Any
    ) -> phases.Partials:
        """Sums of the batch totals and of the weights over a chunk of the batch.

        Add the `Partials` of every chunk (`+` or `sum`) for the sums over the batch, then
        pass them to `partial_adjoints` and `finalize` of each chunk. Parameters and
        `sample_weight` as for a call; `mode` ("value", "grad", "hess") names the kernels
        that run (any mode's totals serve every mode).
        """
        return phases.partial_totals(
            self.definition, self._chunk_kernels(), mode, args, kw, sample_weight
        )

    def partial_adjoints(
        self,
        *args: Any,
        totals: phases.Partials,
        mode: str = "grad",
        reduction: str | None = None,
        sample_weight: Any = None,
        cotangent: Any = None,
        **kw: Any,
    ) -> phases.Partials:
        """Sums of the totals' adjoints over a chunk, given the `totals` of the whole batch;
        added over every chunk, `finalize` needs them for `mode` "grad" and "hess" of a loss
        with batch totals (elsewhere they are empty and may be left out)."""
        d, kernels = self.definition, self._chunk_kernels()
        return phases.partial_adjoints(
            d, kernels, mode, args, kw, totals, reduction, sample_weight, cotangent
        )

    def finalize(
        self,
        *args: Any,
        totals: phases.Partials,
        adjoints: phases.Partials | None = None,
        mode: str = "grad",
        reduction: str | None = None,
        sample_weight: Any = None,
        cotangent: Any = None,
        out: Any = None,
        **kw: Any,
    ) -> tuple[Any, Any, Any]:
        """The fused pass over a chunk given the sums of the whole batch: (value, gradients,
        Hessian diagonals), None for what `mode` does not compute.

        The value is the chunk's share of the batch's value as a float64 (mean and sum: the
        shares of all chunks add up to it) or, for reduction 'none', the chunk's per-sample
        outputs; the derivatives are those of the batch's value at the chunk's samples.
        `out` receives the gradient (as for `value_and_grad`).
        """
        d, kernels = self.definition, self._chunk_kernels()
        return phases.finalize(
            d, kernels, mode, args, kw, totals, adjoints, reduction, sample_weight, cotangent, out
        )

    def _chunk_kernels(self) -> phases.Kernels:
        if self.target != "cpu":
            raise UnsupportedError(
                f"the phases API runs the CPU kernels; this loss targets '{self.target}'",
                hint="use loss.to('cpu')",
            )
        return lambda call: self._kernels(call.defaults if self.specialize else ())

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # Dask names the tasks of a graph by their arguments: a loss by what defines its kernels.
        return (self._key, self.target, self.specialize)

    def __reduce__(self) -> tuple[Any, ...]:
        # By definition, not by kernels: another process (a Dask worker) rebuilds the Loss
        # and loads the same kernels from the on-disk cache (same key), compiling nothing.
        return (
            _rebuild,
            (self._key, self.definition, self.target, self.specialize, self.compile_mode),
        )

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
        # A call with a cotangent is validated in full every time (no plan).
        key = None
        if cotangent is None and self.target == "cpu":
            outs = out if grad_out is None else [*as_list(out), *as_list(grad_out)]
            key = plan_key(mode, args, kw, reduction, weight, outs)
        if key is None or kw:  # with a key, only a keyword can be a lazy array
            lazy = _lazy_integration(args, kw, weight, cotangent)
            if lazy is not None:
                run: Any = lazy.run
                return run(self, mode, args, kw, reduction, weight, out, cotangent, grad_out)  # type: ignore[no-any-return]
        if self.target == "array":
            raise UnsupportedError(
                "target 'array' is code for array libraries, not a callable kernel",
                hint="use lossdsl.integrations.jax, or target='cpu'",
            )
        if self.target == "cuda":
            from lossdsl import device  # imports numba.cuda: only when used

            d = self.definition
            return device.run(d, self._kernels, mode, args, kw, reduction, weight, out, cotangent)
        plan = self._plans.get(key) if key is not None else None
        if plan is not None and plan.call is not None:
            # Same shapes, dtypes, parameters and out= layout as a validated call: only the
            # data differs, and no check depends on the data but the weights' (made there).
            call = plan.call.with_arrays(args, plan.flat, weight)
            given = None if out is None else as_list(out)
            grads_given = None if grad_out is None else as_list(grad_out)
        else:
            call = bind(self.definition, args, kw, reduction, weight)
            call.ct = check_cotangent(self.definition, call, cotangent)
            wrt = self.definition.wrt
            given = None if out is None else check_outputs(call, wrt, out)
            grads_given = None if grad_out is None else check_outputs(call, wrt, grad_out)
            if key is not None and plan is None:
                plan = self._plan(key, call, args)
        if given:
            call = unalias(call, given)
        grads, hess = self._outputs(mode, call, given, grads_given, fresh)
        runner = None if plan is None else plan.runner
        if runner is not None:  # the plan's module and runner, once it has them
            value = runner.run(call, grads, hess)
        else:
            value = self._first_run(mode, call, grads, hess, plan)
        return value, one_or_tuple(grads), one_or_tuple(hess)

    def _first_run(
        self,
        mode: str,
        call: Call,
        grads: list[np.ndarray],
        hess: list[np.ndarray],
        plan: _Plan | None,
    ) -> Any:
        """Run a call whose plan has no runner yet (or that has no plan): on the fused
        module, once there is one, else on the NumPy path (see `compile_mode`)."""
        module = self._fused(mode, call, grads, hess, plan)
        if module is not None:
            return self._runner(module, mode, call, plan).run(call, grads, hess)
        try:
            # The NumPy path has no gradient-and-Hessian-only form: it computes the value too.
            both = "hess" if mode == "grad_hess" else mode
            return eager.run(self._array_module(), both, call, grads, hess, self.definition)
        finally:
            self._tracker.release()

    def _outputs(
        self,
        mode: str,
        call: Call,
        given: list[np.ndarray] | None,
        grads_given: list[np.ndarray] | None,
        fresh: bool,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The arrays `mode` writes: (gradients, Hessians), the given ones or new ones (the
        gradients of a Hessian mode that returns none in per-thread scratch, unless `fresh`)."""
        wrt = self.definition.wrt
        if mode == "grad":
            return given or [np.empty(call.shape_of(x), call.dtype) for x in wrt], []
        if mode not in HESSIAN_MODES:
            return [], []
        hess = given or [np.empty(call.shape_of(x), call.dtype) for x in wrt]
        grads = grads_given or [
            np.empty(call.shape_of(x), call.dtype)
            if fresh
            else runtime.workspace(("grad", x), call.shape_of(x), call.dtype)
            for x in wrt
        ]
        return grads, hess

    def _plan(self, key: tuple[Any, ...], call: Call, args: tuple[Any, ...]) -> _Plan:
        """A new plan for the calls with `key`; it keeps the validation only where the kernel
        arrays are the caller's (no conversion: only then is the data all that changes)."""
        if len(self._plans) >= _MAX_PLANS:  # shapes that keep changing: start over
            self._plans.clear()
        kept = None
        if call.reusable(args):
            kept = dataclasses.replace(call, arrays=[], sw=None)
        flat = tuple(call.flat_shape(i.name) for i in self.definition.inputs)
        plan = self._plans[key] = _Plan(kept, flat)
        return plan

    def _runner(self, module: ModuleType, mode: str, call: Call, plan: _Plan | None) -> host.Runner:
        """How `module` runs this call, kept by its plan (the plan key fixes every choice a
        runner makes, and the plan keeps its module)."""
        runner = host.Runner(module, mode, call, self.definition)
        if plan is not None and plan.module is module:
            plan.runner = runner
        return runner


def _grad_hess_out(out: Any) -> tuple[Any, Any]:
    """The (gradient, Hessian) arrays of `out=` for grad_hess, checked as a pair that does
    not overlap (each array's shape and layout are checked as for `value_and_grad`)."""
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise SpecShapeError("out= for grad_hess is a pair (gradient, hessian)")
    grad_out, hess_out = out
    if (grad_out is None) != (hess_out is None):
        raise SpecShapeError("out= for grad_hess needs both arrays, or neither")
    if type(grad_out) is np.ndarray and type(hess_out) is np.ndarray:
        overlap = np.may_share_memory(grad_out, hess_out)  # one input: the usual case
    else:
        grads, hess = as_list(grad_out), as_list(hess_out)
        overlap = grad_out is not None and any(
            np.may_share_memory(g, h) for g in grads for h in hess
        )
    if overlap:
        raise SpecShapeError(
            "out= for grad_hess: the gradient and Hessian arrays overlap",
            hint="give each its own array (np.empty_like twice)",
        )
    return grad_out, hess_out


@dataclass
class _Plan:
    """What the calls of one argument signature (`plan_key`) share: the validated call (None
    where binding converts an argument: then each call binds anew), the inputs' kernel
    shapes, the fused module once ready and its runner."""

    call: Call | None
    flat: tuple[tuple[int, ...], ...]
    module: ModuleType | None = None
    runner: host.Runner | None = None


# Losses unpickled in this process, by the key they were pickled with (see `_rebuild`).
_REBUILT: dict[tuple[str, str, bool, str | None], Loss] = {}


def _rebuild(
    key: str, definition: ir.LossDef, target: str, specialize: bool, compile_mode: str | None
) -> Loss:
    """An unpickled `Loss`: one object per definition and process, with its loaded kernels (a
    Dask worker unpickles the loss of every task: a new object would fingerprint it anew)."""
    memo = (key, target, specialize, compile_mode)
    loss = _REBUILT.get(memo)
    if loss is None:
        if len(_REBUILT) >= _MAX_PLANS:
            _REBUILT.clear()
        loss = _REBUILT[memo] = Loss(definition, target, specialize, compile_mode)
    return loss


def _lazy_integration(
    args: tuple[Any, ...], kw: dict[str, Any], weight: Any, cotangent: Any
) -> ModuleType | None:
    """The integration for a call on lazy arrays (a Dask array among the arguments), else None."""
    for module, (cls_name, integration) in _LAZY_ARRAYS.items():
        lib = sys.modules.get(module)
        if lib is None:
            continue
        cls = getattr(lib, cls_name)
        if any(isinstance(a, cls) for a in (*args, *kw.values(), weight, cotangent)):
            return importlib.import_module(integration)
    return None


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
    from lossdsl.parse import read_spec

    return _from_source(read_spec(p), str(p), name, target)


def check_source(source: str, file: str = "<string>") -> tuple[ir.LossDef, ...]:
    """Parse and check spec text (resolving calls of registered losses) without compiling."""
    reg = _registry()
    from lossdsl.parse import parse_spec  # Lark: on first use, not at import

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
