"""Shared code generation: the printer and the per-sample body every target wraps.

`KernelPrinter` turns SymPy into Python/Numba expression text with literals typed for the
kernel's dtype (so float32 kernels stay float32) and primitives mapped through the target's
`FUNCTIONS` table; a primitive without a mapping raises `UnsupportedError`. `BodyEmitter`
schedules the lifted aggregates into passes over a row (by dependency level), prints gathers,
hoists element-independent work out of the element loop and applies CSE shared by value,
gradient and Hessian. Output is text only: this package never imports numba.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from lossdsl import primitives as P
from lossdsl.aggregates import BATCH_OPS, Quantity
from lossdsl.codegen.names import HESSIAN_MODES, Names
from lossdsl.codegen.ties import is_tie_test, seal, unseal
from lossdsl.dag import FreeSymbols
from lossdsl.derive import COEF, Derived
from lossdsl.errors import UnsupportedError

_RESERVED = {
    "math", "np", "numba", "cuda", "prange", "range", "min", "max", "abs", "int", "float",
    "len", "bool", "print", "True", "False", "None", "e", "pi", "inf", "ir", "types",
    "intrinsic",
}  # fmt: skip
# The symbols `aggregates` names its lifted quantities with.
_AGGREGATE = re.compile(r"_q[0-9]+")


# How the Numba targets print each primitive. A target copies this and overrides rows; the
# `_name_{s}` helpers come from `SHARED_HELPERS` and the target's own helper templates.
NUMBA_FUNCTIONS: dict[str, str] = {
    "exp": "math.exp({0})",
    "log": "math.log({0})",
    "tanh": "math.tanh({0})",
    "sinh": "math.sinh({0})",
    "cosh": "math.cosh({0})",
    "sin": "math.sin({0})",
    "cos": "math.cos({0})",
    "Abs": "abs({0})",
    "Sign": "_sign_{s}({0})",
    "Sigmoid": "_sigmoid_{s}({0})",
    "Softplus": "_softplus_{s}({0})",
    "LogSigmoid": "_log_sigmoid_{s}({0})",
    "Log1p": "math.log1p({0})",
    "Expm1": "math.expm1({0})",
    "LogCosh": "_logcosh_{s}({0})",
    "SafeSqrt": "math.sqrt({0})",
    "Xlogy": "_xlogy_{s}({0}, {1})",
    "Maximum": "_maximum({0}, {1})",
    "Minimum": "_minimum({0}, {1})",
    "NanOr": "_nan_or({0}, {1})",
    "StopGradient": "({0})",
    "Grouped": "({0})",
    "BinaryCrossEntropy": "_bce_{s}({0}, {1}, {2})",
    "SafePow": "(({0})**({1}))",
}

# Helpers whose text is the same on every Numba target, once per dtype (`{jit}` is the target's
# decorator; the literals keep the kernel's precision).
SHARED_HELPERS = """

{jit}
def _sign_{s}(x):
    return {one} if x > {zero} else (-{one} if x < {zero} else x)


{jit}
def _sigmoid_{s}(x):
    # exp(-|x|) never overflows; 1 / (1 + e) and e / (1 + e) are the same function for either
    # sign. One division of a selected numerator: e * (1 / (1 + e)) would round twice (> 2 ulp).
    e = math.exp(-abs(x))
    return ({one} if x >= {zero} else e) / ({one} + e)


{jit}
def _xlogy_{s}(x, y):
    return {zero} if x == {zero} else x * math.log(y)


{jit}
def _bce_{s}(p, t, floor):
    # torch clamps each log at `floor` (-100) so p = 0 or 1 gives a finite loss (NaN stays
    # NaN); log1p(-p) keeps log(1 - p) accurate for p near 0, as torch's kernel does.
    lp = math.log(p)
    lq = math.log1p(-p)
    lp = floor if lp < floor else lp
    lq = floor if lq < floor else lq
    return (t - {one}) * lq - t * lp
"""


def helper_constants(dtype: str) -> dict[str, str]:
    """The literals the helper templates use, typed for `dtype`."""
    return {
        "s": dtype,
        "one": literal(1, dtype),
        "zero": literal(0, dtype),
        "mtwo": literal(-2, dtype),
        "ln2": literal(0.6931471805599453, dtype),
    }


@dataclass(frozen=True)
class KernelSource:
    """Generated module text for one loss and target, with its entry points, and per generated
    function the role of every name it assigns (see `Names`; read by the tests)."""

    loss: str
    target: str
    text: str
    entry_points: tuple[str, ...]
    names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def user_name(name: str) -> str:
    """A user identifier as printed in generated code (never clashes with ours: `_`-prefixed)."""
    if keyword.iskeyword(name) or name in _RESERVED:
        return f"_u_{name}"
    return name


def literal(value: Any, dtype: str) -> str:
    """A float literal of the kernel dtype."""
    try:
        v = float(value)
    except OverflowError:  # an exact integer past float64 that simplification made late
        raise UnsupportedError(
            f"a constant of the generated kernel ({str(value)[:20]}...) overflows a float64",
            hint="rescale the constants of the loss (they must stay below 1.8e308)",
        ) from None
    if v != v:
        text = "np.nan"
    elif v in (float("inf"), float("-inf")):
        text = "np.inf" if v > 0 else "-np.inf"
    else:
        text = repr(v)
    return text if dtype == "f64" else f"np.float32({text})"


class KernelPrinter(PythonCodePrinter):
    """SymPy -> expression text for a Numba target, typed literals, primitive table."""

    def __init__(
        self,
        dtype: str,
        functions: Mapping[str, str],
        target: str,
        names: Names | None = None,
    ) -> None:
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.dtype = dtype
        self.functions = functions
        self.target = target
        # The allocator of the kernel being printed (a printer of its own by default).
        self.names = names if names is not None else Names({})

    def lit(self, value: Any) -> str:
        return literal(value, self.dtype)

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        name = str(expr.name)
        if not name.startswith("_"):
            return self.names.claim(user_name(name), "user name")
        if _AGGREGATE.fullmatch(name):
            return self.names.claim(name, "aggregate")
        if name not in self.names.roles:
            raise AssertionError(f"symbol '{name}' printed without a name from the allocator")
        return name

    def _print_Integer(self, expr: sp.Integer) -> str:
        return self.lit(int(expr))

    def _print_Float(self, expr: sp.Float) -> str:
        return self.lit(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return self.lit(float(expr))

    def _print_Half(self, expr: sp.Expr) -> str:
        return self.lit(0.5)

    _print_One = _print_Integer
    _print_Zero = _print_Integer
    _print_NegativeOne = _print_Integer

    def _print_Infinity(self, expr: sp.Expr) -> str:
        return self.lit(float("inf"))

    def _print_NegativeInfinity(self, expr: sp.Expr) -> str:
        return self.lit(float("-inf"))

    def _print_NaN(self, expr: sp.Expr) -> str:
        return self.lit(float("nan"))

    def _print_Pi(self, expr: sp.Expr) -> str:
        return self.lit(3.141592653589793)

    def _print_Exp1(self, expr: sp.Expr) -> str:
        return self.lit(2.718281828459045)

    def _print_BooleanTrue(self, expr: sp.Expr) -> str:
        return "True"

    def _print_BooleanFalse(self, expr: sp.Expr) -> str:
        return "False"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        b = self.parenthesize(base, 1000)
        if exp.is_Integer and 1 <= int(exp) <= 4:
            return "(" + "*".join([b] * int(exp)) + ")"
        if exp.is_Integer and -4 <= int(exp) <= -1:
            return f"({self.lit(1)}/(" + "*".join([b] * -int(exp)) + "))"
        if exp == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        if exp == sp.Rational(-1, 2):
            return f"({self.lit(1)}/math.sqrt({self._print(base)}))"
        return f"({b}**{self.parenthesize(exp, 1000)})"

    def _print_Relational(self, expr: sp.Expr) -> str:
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        if expr.lhs.is_integer and expr.rhs.is_integer:
            # Integers compare as integers: the class index against a float32 label would
            # convert the index in every element, and AVX2 has no int64 -> float instruction.
            lhs, rhs = (self._print_int(x) for x in (expr.lhs, expr.rhs))
            return f"({lhs} {op} {rhs})"
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    def _print_int(self, x: sp.Expr) -> str:
        return str(int(x)) if x.is_Integer else f"int({self._print(x)})"

    def _print_And(self, expr: sp.Expr) -> str:
        return "(" + " & ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr: sp.Expr) -> str:
        return "(" + " | ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr: sp.Expr) -> str:
        return f"(not {self._print(expr.args[0])})"

    def _print_Where(self, expr: sp.Expr) -> str:
        cond, a, b = (self._print(x) for x in expr.args)
        return f"({a} if {cond} else {b})"

    def _print_Function(self, expr: sp.Expr) -> str:
        name = type(expr).__name__
        template = self.functions.get(name)
        if template is None:
            raise UnsupportedError(
                f"target '{self.target}' has no mapping for primitive '{name}'",
                hint="add it to the target's FUNCTIONS table",
            )
        return template.format(*(self._print(a) for a in expr.args), s=self.dtype)

    # SymPy's own functions dispatch through their class names too.
    def _print_exp(self, expr: sp.Expr) -> str:
        return self._print_Function(expr)

    _print_log = _print_exp
    _print_tanh = _print_exp
    _print_sinh = _print_exp
    _print_cosh = _print_exp
    _print_sin = _print_exp
    _print_cos = _print_exp
    _print_Abs = _print_exp


def primitive_names() -> tuple[str, ...]:
    """Every function class a target must map."""
    builtin = ("exp", "log", "tanh", "sinh", "cosh", "sin", "cos")
    return builtin + tuple(cls.__name__ for cls in P.PRIMITIVES if cls is not P.Where)


@dataclass(frozen=True)
class Layout:
    """How the body reads its data; the defaults are the CPU/thread-per-sample layout."""

    sample: str = "_i"
    element: str = "_c"
    axis_len: str = "_nc"


@dataclass(frozen=True)
class Entry:
    """One entry point (mode): its gradient and Hessian outputs by input, the batch totals and
    adjoints they need, and whether any row reads at a label.

    `valued` is False for the "grad_hess" mode, which computes no per-sample value; `checks`
    then holds the value's gathers, computed only so that a label outside the axis is still
    reported (one load each: the gradient alone may not read at the label).
    """

    grads: dict[str, sp.Expr]
    hess: dict[str, sp.Expr]
    totals: list[Quantity]
    adjoints: list[Quantity]
    has_gather: bool
    valued: bool = True
    checks: tuple[sp.Symbol, ...] = ()


def vector_name(q: Quantity) -> str:
    """The array that holds a per-class batch quantity along the axis."""
    return f"_vec{q.symbol.name[2:]}"


class BodyEmitter:
    """Prints the per-sample computation of a `Derived` bundle for one dtype."""

    def __init__(
        self,
        derived: Derived,
        dtype: str,
        functions: Mapping[str, str],
        target: str,
        layout: Layout = Layout(),
    ) -> None:
        self.derived = derived
        self.lowered = derived.lowered
        self.dtype = dtype
        self.layout = layout
        self.names = Names({**self.fixed_names(), **self._array_names()})
        self.printer = KernelPrinter(dtype, functions, target, self.names)
        self.quantities = {q.symbol: q for q in derived.quantities}
        self.argmax_of = {q.index: q for q in derived.quantities if q.op == "argmax"}
        self.maxima = frozenset(q.symbol for q in derived.quantities if q.op == "max")
        # Per-class totals and their adjoints vary along the axis like inputs do; each is read
        # from a vector (`vector_name`) that the batch phases fill.
        self.along = [q for q in derived.quantities if q.along]
        self.elements = self.lowered.element_symbols | {q.symbol for q in self.along}
        self.index = self.lowered.index
        self._levels: dict[sp.Symbol, int] = {}
        self.free = FreeSymbols()  # memoised: SymPy's walks the tree (lossdsl/dag.py)
        self.arrays = {s: f"_a_{n}" for n, s in self.lowered.inputs.items()}
        self.arrays.update({s: f"_p_{n}" for n, s in self.lowered.params.items()})
        self.arrays.update({q.symbol: vector_name(q) for q in self.along})
        # Row-sum summands that a later element loop needs again, by the array (shaped like
        # the row) that keeps them in between: `exp(x - max)` of a softmax is computed once.
        self.memo: dict[sp.Expr, str] = {}
        self.stored: set[sp.Expr] = set()  # the memo entries a row pass has written

    # -- naming -------------------------------------------------------------------------------

    def expr(self, e: sp.Expr) -> str:
        return str(self.printer.doprint(e))

    def name(self, s: sp.Symbol) -> str:
        return str(self.printer.doprint(s))

    def lit(self, v: float) -> str:
        return self.printer.lit(v)

    def fresh(self, prefix: str, role: str) -> sp.Symbol:
        """A symbol for a new temporary (`_t`: CSE and select operands, `_h`: hoisted values;
        one numbering for both, from 1)."""
        return sp.Symbol(self.names.fresh(prefix, role, counter="temp", first=1), real=True)

    def fixed_names(self) -> dict[str, str]:
        """The names the body's templates use, by role; a target adds its own."""
        lay = self.layout
        return {
            "_n": "batch size",
            lay.axis_len: "axis length",
            lay.sample: "sample index",
            lay.element: "element index",
            "_badrow": "bad-label flag",
            str(COEF): "reduction coefficient",
        }

    def _array_names(self) -> dict[str, str]:
        """Kernel arguments: inputs, parameters, gradient and Hessian outputs."""
        loss = self.lowered.loss
        out = {f"_a_{i.name}": "input array" for i in loss.inputs}
        out.update({f"_p_{p.name}": "parameter" for p in loss.params})
        out.update({f"_g_{n}": "gradient output" for n in loss.wrt})
        out.update({f"_h_{n}": "Hessian output" for n in loss.wrt})
        for q in self.derived.quantities:
            if q.along:
                out[vector_name(q)] = "per-class vector"
                out[vector_name(q) + "x"] = "per-class float64 sum"
        return out

    def claim(self, name: str, role: str) -> str:
        return self.names.claim(name, role)

    def prologue(self, first_array: str) -> list[str]:
        """Bind the batch size, the axis length and the scalar parameters a kernel body uses.

        Integer parameters join float32 arithmetic as float32, like labels (see `loads`).
        """
        lo = self.lowered
        out = [f"    _n = {first_array}.shape[0]"]
        axis_input = next((i for i in lo.loss.inputs if i.axis), None)
        if axis_input is not None:
            out.append(f"    _nc = _a_{axis_input.name}.shape[1]")
            if lo.axis is not None:
                out.append(f"    {self.name(lo.axis)} = {self.cast('_nc')}")
        for p in lo.loss.params:
            # A parameter fixed at generation time is still an argument, but never read.
            if p.axis is None and p.name in lo.params:
                value = self.cast(f"_p_{p.name}") if p.kind == "int" else f"_p_{p.name}"
                out.append(f"    {self.name(lo.params[p.name])} = {value}")
        return out

    # -- analysis -----------------------------------------------------------------------------

    def entry(self, mode: str) -> Entry:
        """What the entry point of `mode` outputs, and the batch aggregates it needs."""
        d = self.derived
        grads = dict(d.grads) if mode != "value" else {}
        hess = dict(d.hessians) if mode in HESSIAN_MODES else {}
        valued = mode != "grad_hess"
        checks: tuple[sp.Symbol, ...] = ()
        if not valued:
            checks = tuple(q.symbol for q in self.quantity_closure([d.value]) if q.op == "gather")
        first = [d.value] if valued else list(checks)
        closure = self.quantity_closure([*first, d.weight, *grads.values(), *hess.values()])
        return Entry(
            grads,
            hess,
            [q for q in closure if q.op == "total"],
            [q for q in closure if q.op == "adjoint"],
            any(q.op == "gather" for q in closure),
            valued,
            checks,
        )

    def quantity_closure(self, exprs: Iterable[sp.Expr]) -> list[Quantity]:
        """Every quantity the expressions need, dependencies first (table order)."""
        seen: set[sp.Symbol] = set()
        stack = [s for s in self.free.union(exprs) if s in self.quantities]
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            q = self.quantities[s]
            deps = self.free.union([q.expr] if q.index is None else [q.expr, q.index])
            stack.extend(d for d in deps if d in self.quantities)
        return [q for q in self.derived.quantities if q.symbol in seen]

    def level(self, q: Quantity) -> int:
        """Row pass in which `q` is known: sums/maxes need one pass past their inputs."""
        if q.op in BATCH_OPS:
            return 0
        if q.op == "argmax":
            assert isinstance(q.index, sp.Symbol)
            return self.level(self.quantities[q.index])  # found in its maximum's pass
        if q.symbol not in self._levels:
            deps = self.free.union([q.expr] if q.index is None else [q.expr, q.index])
            base = max(
                (self.level(self.quantities[d]) for d in deps if d in self.quantities), default=0
            )
            self._levels[q.symbol] = base + (0 if q.op == "gather" else 1)
        return self._levels[q.symbol]

    def element_dependent(self, e: sp.Expr) -> bool:
        free = self.free(e)
        return bool(free & self.elements) or self.index in free

    # -- printing blocks ----------------------------------------------------------------------

    def assign(self, targets: Sequence[tuple[str, sp.Expr]], indent: str) -> list[str]:
        """CSE over all targets, then `name = expr` lines."""
        if not targets:
            return []
        names, exprs = zip(*targets, strict=True)
        temps, reduced = self.cse(exprs)
        lines = [f"{indent}{self.name(t)} = {self.expr(v)}" for t, v in temps]
        lines += [f"{indent}{n} = {self.expr(v)}" for n, v in zip(names, reduced, strict=True)]
        return lines

    def cse(
        self, exprs: Sequence[sp.Expr]
    ) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
        """Common subexpressions as temporaries; tie tests are left whole (codegen/ties.py)."""
        sealed, held = seal(exprs, self.maxima)
        temps, reduced = sp.cse(sealed, symbols=self._temp_symbols(), order="canonical")
        return [(t, unseal(v, held)) for t, v in temps], [unseal(v, held) for v in reduced]

    def _temp_symbols(self) -> Iterator[sp.Symbol]:
        while True:
            yield self.fresh("_t", "temporary")

    def loads(self, symbols: Iterable[sp.Symbol], indent: str, at: str | None = None) -> list[str]:
        """Read the sample's (or, for elements, the current position's) values."""
        lines = []
        lay = self.layout
        for s in sorted(symbols, key=str):
            if s not in self.arrays:
                continue
            array = self.arrays[s]
            if s in self.elements:
                pos = at if at is not None else lay.element
                if s not in self.lowered.inputs.values():  # a parameter or a per-class total
                    lines.append(f"{indent}{self.name(s)} = {array}[{pos}]")
                else:
                    lines.append(f"{indent}{self.name(s)} = {array}[{lay.sample}, {pos}]")
            elif s in self.lowered.inputs.values():
                value = f"{array}[{lay.sample}]"
                # Labels join float32 arithmetic as float32 (exact below 2^24); an int64 would
                # promote the whole expression to float64.
                lines.append(
                    f"{indent}{self.name(s)} = {self.cast(value) if s.is_integer else value}"
                )
        return lines

    def hoist(
        self, exprs: Sequence[sp.Expr]
    ) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
        """Replace element-independent subtrees by symbols computed once per sample."""
        defs: dict[sp.Expr, sp.Symbol] = {}

        def name_of(e: sp.Expr) -> sp.Expr:
            if e.is_Atom:
                return e
            if e not in defs:
                defs[e] = self.fresh("_h", "hoisted value")
            return defs[e]

        def visit(e: sp.Expr) -> sp.Expr:
            if e.is_Atom:
                return e
            if not self.element_dependent(e):
                return name_of(e)
            if is_tie_test(e, self.maxima):
                return e  # printed whole, as the maximum's operand is (codegen/ties.py)
            if e.is_Add or e.is_Mul:
                free = [a for a in e.args if not self.element_dependent(a)]
                dep = [visit(a) for a in e.args if self.element_dependent(a)]
                if free:
                    dep.append(name_of(e.func(*free)))
                return e.func(*dep)
            return e.func(*[visit(a) for a in e.args])

        out = [visit(e) for e in exprs]
        return [(s, e) for e, s in defs.items()], out

    def row_block(
        self, exprs: Sequence[sp.Expr], indent: str, done: set[sp.Symbol] | None = None
    ) -> list[str]:
        """Compute the row quantities the expressions need and `done` lacks (updated)."""
        done = set() if done is None else done
        needed = [
            q
            for q in self.quantity_closure(exprs)
            if q.op not in BATCH_OPS and q.symbol not in done
        ]
        # A maximum's argmax is tracked in the maximum's own pass, always together.
        needed += [
            a for q in needed if (a := self.argmax_of.get(q.symbol)) is not None and a not in needed
        ]
        if not needed:
            return []
        # The sample's own inputs these quantities read, unless loaded already: a kernel that
        # computes no value (grad_hess) may reach its row quantities before any other load.
        free = self.free.union(
            [q.expr for q in needed] + [q.index for q in needed if q.index is not None]
        )
        scalars = {
            s for s in free & set(self.lowered.inputs.values()) if s not in self.elements
        } - done
        done |= scalars
        lines = self.loads(scalars, indent)
        first_gather = not any(
            s in self.quantities and self.quantities[s].op == "gather" for s in done
        )
        if any(q.op == "gather" for q in needed) and first_gather:
            lines.append(f"{indent}_badrow = False")
        top = max(self.level(q) for q in needed)
        for lvl in range(top + 1):
            reductions = [q for q in needed if q.op != "gather" and self.level(q) == lvl]
            if reductions:
                lines += self.row_pass(reductions, indent)
            gathers = [q for q in needed if q.op == "gather" and self.level(q) == lvl]
            by_index: dict[sp.Expr, list[Quantity]] = {}
            for q in gathers:
                by_index.setdefault(q.index, []).append(q)
            for group in by_index.values():
                lines += self.gather(group, indent)
        done.update(q.symbol for q in needed)
        return lines

    def row_pass(self, qs: Sequence[Quantity], indent: str) -> list[str]:
        """One loop over the row accumulating sums and maxima (float64 sums, NaN-sticky max)."""
        inner = indent + "    "
        qs = [q for q in qs if q.op != "argmax"]  # tracked beside their maxima below
        argmax = {q.symbol: a for q in qs if (a := self.argmax_of.get(q.symbol)) is not None}
        # A maximum's operand is printed whole, as its tie tests print it (codegen/ties.py).
        defs, hoisted = self.hoist([q.expr for q in qs if q.op != "max"])
        parts = iter(hoisted)
        exprs = [q.expr if q.op == "max" else next(parts) for q in qs]
        lines = self.assign([(self.name(s), e) for s, e in defs], indent)
        acc = {q.symbol: self.claim(f"_s{q.symbol.name[2:]}", "row accumulator") for q in qs}
        for q in qs:
            lines += self.acc_init(q, acc[q.symbol], indent)
        lines += [f"{indent}{self.name(a.symbol)} = 0" for a in argmax.values()]
        opening, inner, closing = self.row_loop(qs, acc, indent)
        lines += opening
        used = self.free.union(exprs)
        lines += self.loads(used & self.elements, inner)
        values = [
            (self.claim(f"_v{q.symbol.name[2:]}", "row term"), e)
            for q, e in zip(qs, exprs, strict=True)
        ]
        plain = [(v, e) for q, (v, e) in zip(qs, values, strict=True) if q.op == "max"]
        lines += [f"{inner}{v} = {self.expr(e)}" for v, e in plain]
        lines += self.assign(
            [(v, e) for q, (v, e) in zip(qs, values, strict=True) if q.op != "max"], inner
        )
        at = f"[{self.layout.sample}, {self.layout.element}]"
        lines += [
            f"{inner}{self.memo[q.expr]}{at} = {v}"
            for q, (v, _) in zip(qs, values, strict=True)
            if q.expr in self.memo
        ]
        self.stored.update(q.expr for q in qs if q.expr in self.memo)
        for q, (v, _) in zip(qs, values, strict=True):
            if q.symbol in argmax:
                # Strictly greater than the running maximum: the first maximal position wins.
                pos = self.name(argmax[q.symbol].symbol)
                lines.append(
                    f"{inner}{pos} = {self.layout.element} if {v} > {acc[q.symbol]} else {pos}"
                )
            lines += self.acc_update(q, acc[q.symbol], v, inner)
        lines += closing
        lines += self.combine(qs, acc, indent)
        for q in qs:
            total, name = acc[q.symbol], self.name(q.symbol)
            if q.op == "sum":
                lines.append(f"{indent}{name} = {self.cast(total)}")
            elif q.differentiable:
                lines.append(f"{indent}{name} = {total}")
            else:
                # A shift only selects a safe form: an infinite row max would make x - max NaN.
                lines.append(
                    f"{indent}{name} = {total} if abs({total}) < np.inf else {self.lit(0)}"
                )
        return lines

    def acc_init(self, q: Quantity, acc: str, indent: str) -> list[str]:
        """Start a row accumulator (float64 sums, NaN-sticky max from -inf)."""
        init = "0.0" if q.op == "sum" else self.lit(float("-inf"))
        return [f"{indent}{acc} = {init}"]

    def acc_update(self, q: Quantity, acc: str, v: str, indent: str) -> list[str]:
        """Fold one element's value into a row accumulator."""
        if q.op == "sum":
            return [f"{indent}{acc} += {v}"]
        return [f"{indent}{acc} = {v} if ({v} > {acc} or {v} != {v}) else {acc}"]

    def row_loop(
        self, qs: Sequence[Quantity], acc: Mapping[sp.Symbol, str], indent: str
    ) -> tuple[list[str], str, list[str]]:
        """Lines opening the loop over a row, the indent of its body, and lines closing it."""
        return [f"{indent}{self.element_loop()}"], indent + "    ", []

    def element_loop(self) -> str:
        """The loop over a row; a target that splits rows across threads overrides it."""
        return f"for {self.layout.element} in range({self.layout.axis_len}):"

    def combine(
        self, qs: Sequence[Quantity], acc: Mapping[sp.Symbol, str], indent: str
    ) -> list[str]:
        """Lines merging the partial accumulators of threads that share a row: none on the CPU."""
        return []

    def cast(self, text: str) -> str:
        return text if self.dtype == "f64" else f"np.float32({text})"

    def gather(self, qs: Sequence[Quantity], indent: str) -> list[str]:
        """Read elements at one integer index; an out-of-range index is flagged and clamped."""
        index = qs[0].index
        assert index is not None
        k = self.claim(f"_k{qs[0].symbol.name[2:]}", "gather index")
        lines = [f"{indent}{k} = int({self.expr(index)})"]
        lines.append(f"{indent}if {k} < 0 or {k} >= {self.layout.axis_len}:")
        lines.append(f"{indent}    _badrow = True")
        lines.append(f"{indent}    {k} = 0")
        used = self.free.union(q.expr for q in qs)
        lines += self.loads(used & self.elements, indent, at=k)
        at = sp.Symbol(k, integer=True)
        targets = [(self.name(q.symbol), q.expr.subs(self.index, at)) for q in qs]
        lines += self.assign(targets, indent)
        return lines
