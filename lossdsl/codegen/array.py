"""The array target: a `Derived` bundle as vectorised code over an array namespace `xp`.

Every generated function takes `xp` first (`numpy`, `jax.numpy`, or any namespace with the same
functions), so one text serves NumPy (the compile-free path, `lossdsl/eager.py`) and JAX (which
traces it, on any device). Layout: a batch of n samples is a 2-D block; element values are
(n, C) arrays, per-sample values (n, 1), so broadcasting does the rest. Row sums and maxima
reduce the last axis, gathers are `take_along_axis`, batch totals are weighted sums over the
batch axis. The printer itself (NaN-safe selects, helpers) is `codegen/array_printer.py`.

Entry points: `weight` (the spec's per-sample weight), `totals` (every batch total, weighted),
`value` (per-sample loss at given totals) and `grad_<k>` (the derivative of the per-sample loss
in the k-th `wrt` input with the totals held fixed): a framework adapter composes them and
attaches the gradients as its derivative rule. The CPU kernels' phases, for the NumPy path:
`adjoints_<mode>` (batch sums of the adjoints the mode needs), `derivs_<mode>` (the gradients
of the reduced loss, then for "hess" the Hessian diagonals) and `badrows` (labels outside the
axis). Text only: no numpy or jax import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sympy as sp

from lossdsl.aggregates import Quantity
from lossdsl.codegen.array_printer import FUNCTIONS as FUNCTIONS
from lossdsl.codegen.array_printer import HEADER, NAME, ArrayPrinter, safe_cse
from lossdsl.codegen.base import KernelSource
from lossdsl.dag import FreeSymbols
from lossdsl.derive import COEF, Derived

__all__ = ["FUNCTIONS", "NAME", "ArrayPrinter", "generate", "generate_numpy"]

# Row quantities that are zero where their operand is (a row sum, maximum or gather of 0).
_VANISH = ("sum", "max", "gather")

_TRAILER = """
HESSIAN_ERROR = {error!r}
GATHERS = {gathers!r}
"""


def generate(derived: Derived) -> KernelSource:
    """Print the array-namespace module of a derived loss (see the module docstring)."""
    return _Module(derived).source()


def generate_numpy(derived: Derived) -> KernelSource:
    """The same module for evaluation only (the NumPy path): no select guards, plain CSE.

    Guards keep a framework's derivatives of the printed code NaN-free; code that is only
    evaluated does not need them, and on deeply nested selects they multiply the text.
    """
    return _Module(derived, guard=False).source()


class _Module:
    def __init__(self, derived: Derived, guard: bool = True) -> None:
        self.d = derived
        self.lo = derived.lowered
        self.loss = derived.lowered.loss
        self.printer = ArrayPrinter(guard)
        self.quantities = {q.symbol: q for q in derived.quantities}
        self.free = FreeSymbols()  # memoised: SymPy's walks the tree (lossdsl/dag.py)
        self.totals = [q for q in derived.quantities if q.op == "total"]
        # The per-sample gradient at fixed totals: unit coefficient, no batch adjoints, in the
        # gradient and in every row quantity built on an adjoint (a softmax's row sum of
        # adjoint-weighted terms): those vanish with them (table order: operands come first),
        # and with them the weight factors of the paths through the totals.
        self.held: dict[sp.Symbol, sp.Expr] = {COEF: sp.S.One}
        for q in derived.quantities:
            if q.op == "adjoint" or (q.op in _VANISH and q.expr.xreplace(self.held) == 0):
                self.held[q.symbol] = sp.S.Zero
        self.grads = [g.xreplace(self.held) for _, g in derived.grads]
        self.args = [f"v_{i.name}" for i in self.loss.inputs]
        self.args += [f"v_{p.name}" for p in self.loss.params]
        self.axis_input = next((i.name for i in self.loss.inputs if i.axis), None)
        # Each differentiable row maximum keeps its operand in an array of its own: the tie
        # tests of its derivative (operand == max) read that array, so CSE cannot re-round the
        # operand and lose the maximum (which would drop the gradient of a tied row).
        self.operands = {
            q.symbol: sp.Symbol(f"_o{q.symbol.name[2:]}", real=True)
            for q in derived.quantities
            if q.op == "max" and q.differentiable
        }

    def source(self) -> KernelSource:
        total_names = [self.name(q.symbol) for q in self.totals]
        parts = [
            HEADER.format(
                loss=self.loss.name,
                inputs=tuple(i.name for i in self.loss.inputs),
                params=tuple(p.name for p in self.loss.params),
                wrt=self.loss.wrt,
                totals=len(self.totals),
                zero=tuple(k for k, g in enumerate(self.grads) if g == 0),
            )
        ]
        parts.append(self.function("weight", [], [self.d.weight], ["_sshape"]))
        parts.append(self.totals_function())
        parts.append(self.function("value", total_names, [self.d.value], ["_sshape"]))
        entries = ["weight", "totals", "value"]
        for k, (name, g) in enumerate(zip(self.loss.wrt, self.grads, strict=True)):
            shape = [self.shape_of(name)]
            parts.append(self.function(f"grad_{k}", total_names, [g], shape, held=True))
            entries.append(f"grad_{k}")
        modes = ("grad", "hess") if self.d.hessian_error is None else ("grad",)
        for mode in modes:
            parts += self.phase_functions(mode, total_names)
            entries += [f"adjoints_{mode}", f"derivs_{mode}"]
        gathers = self.gather_indexes()
        if gathers:
            parts.append(self.badrows_function(gathers, total_names))
            entries.append("badrows")
        parts.append(_TRAILER.format(error=self.d.hessian_error, gathers=bool(gathers)))
        return KernelSource(self.loss.name, NAME, "\n".join(parts), tuple(entries))

    def name(self, s: sp.Symbol) -> str:
        return str(self.printer.doprint(s))

    def expr(self, e: sp.Expr) -> str:
        return str(self.printer.doprint(e))

    def shape_of(self, name: str) -> str:
        return "_shape" if self.loss.input(name).axis else "_sshape"

    def prologue(self) -> list[str]:
        first = self.args[0]
        lines = []
        if self.axis_input is not None:
            lines.append(f"    _n, _nc = v_{self.axis_input}.shape")
        else:
            lines.append(f"    _n, _nc = {first}.shape[0], 1")
        lines += [
            "    _shape = (_n, _nc)",
            "    _sshape = (_n, 1)",
            "    _c = xp.arange(_nc)[None, :]",
        ]
        if self.lo.axis is not None:
            lines.append(f"    {self.name(self.lo.axis)} = _nc")
        return lines

    def function(
        self,
        fname: str,
        extra: list[str],
        exprs: Sequence[sp.Expr],
        shapes: Sequence[str],
        many: bool = False,
        held: bool = False,
    ) -> str:
        """`fname(xp, inputs..., params..., extra...)` returning each of `exprs` broadcast to
        its shape: a tuple with `many`, else the one array. `held`: quantities are printed
        with the batch adjoints at zero (`self.held`)."""
        signature = ", ".join(["xp", *self.args, *extra])
        body = self.prologue()
        body += self.quantity_lines(self.closure(exprs, batch=False), held)
        temps, results = self.cse([self.tied(e) for e in exprs])
        body += [f"    {self.name(t)} = {self.expr(e)}" for t, e in temps]
        out = [
            f"xp.broadcast_to({self.expr(r)}, {s})" for r, s in zip(results, shapes, strict=True)
        ]
        body.append(f"    return ({', '.join(out)},)" if many else f"    return {out[0]}")
        return f"\n\ndef {fname}({signature}):\n" + "\n".join(body) + "\n"

    def totals_function(self) -> str:
        signature = ", ".join(["xp", *self.args, "_w"])
        body = self.prologue()
        body += self.quantity_lines(self.closure([q.symbol for q in self.totals], batch=True))
        names = ", ".join(self.name(q.symbol) for q in self.totals)
        body.append(f"    return ({names}{',' if len(self.totals) == 1 else ''})")
        return f"\n\ndef totals({signature}):\n" + "\n".join(body) + "\n"

    def phase_functions(self, mode: str, total_names: list[str]) -> list[str]:
        """`adjoints_<mode>` and `derivs_<mode>`: the CPU kernel's adjoint and derivative
        phases of one mode, over a block of samples."""
        outputs = [g for _, g in self.d.grads]
        shapes = [self.shape_of(name) for name, _ in self.d.grads]
        if mode == "hess":
            outputs += [h for _, h in self.d.hessians]
            shapes += [self.shape_of(name) for name, _ in self.d.hessians]
        adjoints = [q for q in self.closure(outputs, batch=True) if q.op == "adjoint"]
        adjoint_names = [self.name(q.symbol) for q in adjoints]
        return [
            self.adjoints_function(mode, adjoints, total_names),
            self.function(
                f"derivs_{mode}",
                [*total_names, *adjoint_names, "_w", "_coef"],
                outputs,
                shapes,
                True,
            ),
        ]

    def adjoints_function(self, mode: str, adjoints: list[Quantity], total_names: list[str]) -> str:
        """Block sums of the adjoints (kept samples only), each (1, 1) or (1, C)."""
        signature = ", ".join(["xp", *self.args, *total_names, "_w", "_coef"])
        body = self.prologue()
        exprs = [q.expr for q in adjoints]
        body += self.quantity_lines(self.closure(exprs, batch=False))
        temps, results = self.cse([self.tied(e) for e in exprs])
        body += [f"    {self.name(t)} = {self.expr(e)}" for t, e in temps]
        names = []
        for q, r in zip(adjoints, results, strict=True):
            term = f"xp.broadcast_to({self.expr(r)}, {'_shape' if q.along else '_sshape'})"
            names.append(self.name(q.symbol))
            body.append(f"    {names[-1]} = _batch_sum(xp, {term}, _w != 0)")
        body.append(f"    return ({''.join(n + ', ' for n in names)})")
        return f"\n\ndef adjoints_{mode}({signature}):\n" + "\n".join(body) + "\n"

    def gather_indexes(self) -> list[sp.Expr]:
        """The label expressions that rows read at (as the CPU kernel checks them)."""
        found = self.closure([self.d.value, self.d.weight], batch=True, adjoints=True)
        indexes: list[sp.Expr] = []
        for q in found:
            if q.op == "gather" and q.index is not None and q.index not in indexes:
                indexes.append(q.index)
        return indexes

    def badrows_function(self, indexes: list[sp.Expr], total_names: list[str]) -> str:
        """Per sample, whether a label read falls outside the axis."""
        signature = ", ".join(["xp", *self.args, *total_names])
        body = self.prologue()
        body += self.quantity_lines(self.closure(indexes, batch=False))
        body.append("    _bad = xp.zeros(_sshape, dtype=bool)")
        for index in indexes:
            k = f"xp.broadcast_to(xp.asarray({self.expr(index)}).astype(int), _sshape)"
            body.append(f"    _k = {k}")
            body.append("    _bad = _bad | (_k < 0) | (_k >= _nc)")
        body.append("    return _bad")
        return f"\n\ndef badrows({signature}):\n" + "\n".join(body) + "\n"

    def closure(
        self, exprs: Iterable[sp.Expr], batch: bool, adjoints: bool = False
    ) -> list[Quantity]:
        """Quantities the expressions need, table order; through totals too when `batch`.

        Batch adjoints are arguments: listed (with `batch`) but not looked into.
        """
        seen: set[sp.Symbol] = set()
        stack = [s for s in self.free.union(exprs) if s in self.quantities]
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            q = self.quantities[s]
            if (q.op == "total" and not batch) or (q.op == "adjoint" and not adjoints):
                continue  # an argument
            deps = self.free.union([q.expr] if q.index is None else [q.expr, q.index])
            stack.extend(d for d in deps if d in self.quantities)
        return [q for q in self.d.quantities if q.symbol in seen and (batch or q.op != "total")]

    def quantity_lines(self, qs: Sequence[Quantity], held: bool = False) -> list[str]:
        lines = []
        for q in qs:
            body = q.expr.xreplace(self.held) if held else q.expr
            name, e = self.name(q.symbol), self.expr(self.tied(body))
            along = self.element_level(q.expr)
            shape = "_shape" if along else "_sshape"
            if q.op == "sum":
                rhs = f"xp.sum(xp.broadcast_to({e}, _shape), axis=-1, keepdims=True)"
            elif q.op == "max" and q.differentiable:
                operand = self.name(self.operands[q.symbol])
                lines.append(f"    {operand} = xp.broadcast_to({e}, _shape)")
                rhs = f"xp.max({operand}, axis=-1, keepdims=True)"
            elif q.op == "max":
                rhs = f"_row_max(xp, {e}, _shape)"
            elif q.op == "argmax":
                rhs = f"xp.argmax(xp.broadcast_to({e}, _shape), axis=-1, keepdims=True)"
            elif q.op == "gather":
                assert q.index is not None
                rhs = f"_gather(xp, {e}, {self.expr(q.index)}, _shape)"
            elif q.op == "total":
                # Frequency weights: the summand already holds the weight `_w` (a sample counts
                # w times), and a zero weight drops the sample (NaN included).
                term = f"xp.broadcast_to({e}, {shape})"
                rhs = f"_batch_sum(xp, {term}, _w != 0)"
            else:  # adjoints are arguments (or held at zero by the caller)
                continue
            lines.append(f"    {name} = {rhs}")
        return lines

    def cse(
        self, exprs: Sequence[sp.Expr]
    ) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
        if self.printer.guard:
            return safe_cse(exprs)
        temps, reduced = sp.cse(
            list(exprs), symbols=sp.numbered_symbols("_t", real=True), order="canonical"
        )
        return temps, reduced

    def tied(self, e: sp.Expr) -> sp.Expr:
        """`e` with each tie test `operand == max` reading the maximum's operand array."""

        def is_tie(x: sp.Expr) -> bool:
            return isinstance(x, sp.Eq) and self._operand_of(x) is not None

        def named(x: sp.Expr) -> sp.Expr:
            q = self._operand_of(x)
            assert q is not None
            return sp.Eq(self.operands[q], q, evaluate=False)

        return e.replace(is_tie, named) if self.operands else e

    def _operand_of(self, eq: sp.Eq) -> sp.Symbol | None:
        for q, other in ((eq.lhs, eq.rhs), (eq.rhs, eq.lhs)):
            if q in self.operands and other == self.quantities[q].expr:
                return q
        return None

    def element_level(self, e: sp.Expr) -> bool:
        free = self.free(e)
        if free & self.lo.element_symbols or self.lo.index in free:
            return True
        # A per-class total (or anything built on one) varies along the axis too.
        return any(
            s in self.quantities
            and self.quantities[s].op in ("total", "adjoint")
            and self.element_level(self.quantities[s].expr)
            for s in free
        )
