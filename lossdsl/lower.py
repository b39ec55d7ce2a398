"""Checked IR -> SymPy (`ir.LossDef` -> `Lowered`).

Inputs along the axis become *element* symbols (the value at the current position of the
row), per-sample inputs and labels become sample symbols, parameters and the axis size become
constants. Every reduction, gather and batch total is lifted into the `Aggregates` table through
the builders of `functions.py`; calls of other losses are inlined. Naive unstable forms are
rewritten to stable primitives as they are built. No differentiation here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sympy as sp

from lossdsl import ir, limits
from lossdsl import primitives as P
from lossdsl.aggregates import Aggregates
from lossdsl.errors import SpecShapeError
from lossdsl.functions import AXIS_FUNCTIONS, FUNCTIONS, relation

INDEX = sp.Symbol("_c", integer=True, nonnegative=True)


@dataclass(frozen=True)
class Lowered:
    loss: ir.LossDef
    inputs: Mapping[str, sp.Symbol]
    params: Mapping[str, sp.Symbol]
    axis: sp.Symbol | None
    index: sp.Symbol
    table: Aggregates
    value: sp.Expr
    weight: sp.Expr

    @property
    def element_symbols(self) -> frozenset[sp.Symbol]:
        return self.table.element_symbols


def lower(loss: ir.LossDef, fixed: Mapping[str, float] | None = None) -> Lowered:
    """Lower a checked loss to SymPy with its aggregates lifted.

    Args:
        loss: the checked loss.
        fixed: parameters whose value is known when the kernel is generated; they become
            constants (`x^gamma` at gamma = 2 a square, a `label_smoothing` of 0 drops its row
            sums). A fixed parameter along the axis is one value for every element.

    Returns:
        `Lowered`: symbols for inputs and parameters, the aggregate table, the per-sample value
        and the per-sample reduction weight (1 when the spec declares none).
    """
    fixed = fixed or {}
    inputs = {i.name: _input_symbol(i) for i in loss.inputs}
    params = {p.name: _param_symbol(p) for p in loss.params if p.name not in fixed}
    axis = sp.Symbol(loss.axis, positive=True, integer=True) if loss.axis else None
    elements = frozenset(
        [inputs[i.name] for i in loss.inputs if i.axis]
        + [params[p.name] for p in loss.params if p.axis and p.name in params]
    )
    table = Aggregates(elements, INDEX, axis if axis is not None else sp.S.One)
    env: dict[tuple[str, str], sp.Expr] = {("input", k): v for k, v in inputs.items()}
    env.update({("param", k): v for k, v in params.items()})
    env.update(
        {("param", p.name): _const(fixed[p.name], p.kind) for p in loss.params if p.name in fixed}
    )
    if axis is not None:
        env[("axis", loss.axis or "")] = axis
    budget = limits.Budget(limits.MAX_LOWERED_NODES, loss.span, loss.source)
    builder = _Lowerer(table, env, frozenset(inputs.values()), budget)
    value = builder.expr(loss.value)
    weight = builder.expr(loss.weight) if loss.weight is not None else sp.S.One
    return Lowered(loss, inputs, params, axis, INDEX, table, value, weight)


def _input_symbol(i: ir.Input) -> sp.Symbol:
    if i.kind == "int":
        return sp.Symbol(i.name, integer=True)
    return sp.Symbol(i.name, real=True)


def _param_symbol(p: ir.Param) -> sp.Symbol:
    if p.kind == "int":
        return sp.Symbol(p.name, integer=True)
    return sp.Symbol(p.name, real=True)


# Numerators of exact fractions past this become Floats (the float64 of the value): SymPy's
# assumption queries turn x^(p/q) and exp(p/q * x) into polynomials of degree p (tanh(x^1.52...)
# took 20 GB), and a literal with many digits (pi, 0.52497918747894) or a product of short ones
# (0.9999 * 0.9999) has a large p.
_EXACT_NUMERATOR = 10**4


def _const(value: float, kind: str) -> sp.Expr:
    if value == float("inf"):
        return sp.oo
    if kind == "int" or float(value).is_integer():
        return sp.Integer(int(value))
    return _bounded(sp.Rational(repr(value)))


def _bounded(e: sp.Expr) -> sp.Expr:
    """`e`, a fraction with a numerator past `_EXACT_NUMERATOR` as its float64."""
    if e.is_Rational and not e.is_Integer and abs(e.p) > _EXACT_NUMERATOR:
        return sp.Float(float(e))
    return e


class _Lowerer:
    """Implements `functions.LoweringContext` over one aggregate table."""

    def __init__(
        self,
        table: Aggregates,
        env: dict[tuple[str, str], sp.Expr],
        varying: frozenset[sp.Symbol],
        budget: limits.Budget,
    ) -> None:
        self.table = table
        self.env = env
        self._varying = varying
        self.budget = budget

    # LoweringContext
    @property
    def axis_size(self) -> sp.Expr:
        return self.table.size

    def varying(self, expr: sp.Expr) -> bool:
        free = expr.free_symbols
        return bool(free & self._varying) or bool(free & self.table.symbols)

    def row_sum(self, expr: sp.Expr, positive: bool = False) -> sp.Expr:
        return self.table.row_sum(expr, positive)

    def row_max(self, expr: sp.Expr, differentiable: bool = True) -> sp.Expr:
        return self.table.row_max(expr, differentiable)

    def total(self, expr: sp.Expr) -> sp.Expr:
        return self.table.total(expr)

    # IR -> SymPy
    def expr(self, e: ir.Expr) -> sp.Expr:
        self.budget.spend()
        if isinstance(e, ir.Const):
            return _const(e.value, e.kind)
        if isinstance(e, ir.Ref):
            return self.env[(e.role, e.name)]
        if isinstance(e, ir.Apply):
            return P.owned(_bounded(self._apply(e)))
        if isinstance(e, ir.AxisOp):
            return AXIS_FUNCTIONS[e.fn].build(self, self.expr(e.arg))
        if isinstance(e, ir.Gather):
            gathered = self.table.gather(self.expr(e.arg), self.expr(e.index))
            return P.stabilize(gathered)
        if isinstance(e, ir.Total):
            return self.table.total(self.expr(e.arg))
        return self._inline(e)

    def _apply(self, e: ir.Apply) -> sp.Expr:
        args = [self.expr(a) for a in e.args]
        fn = e.fn
        if fn == "add":
            return P.stable_add(self._grouped(args[0]) + self._grouped(args[1]))
        if fn == "sub":
            return P.stable_add(self._grouped(args[0]) - self._grouped(args[1]))
        if fn == "mul":
            return args[0] * args[1]
        if fn == "div":
            return args[0] / args[1]
        if fn == "pow":
            limits.check_power(e, args[0], args[1])
            # A parameter exponent gets a derivative that is finite at a zero base (P.SafePow).
            return P.SafePow(args[0], args[1])
        if fn == "neg":
            return -args[0]
        if fn in _RELATIONS:
            return relation(_RELATIONS[fn], args[0], args[1])
        if fn == "and":
            return sp.And(args[0], args[1])
        if fn == "or":
            return sp.Or(args[0], args[1])
        if fn == "not":
            return _negation(args[0])
        out = FUNCTIONS[fn].build(self, *args)
        if e.kind != "bool" and all(a.is_Number for a in args):
            out = limits.constant_value(out, e.span, self.budget.source)
        if isinstance(out, sp.log):
            return P.stable_log(out)
        return out

    def _grouped(self, e: sp.Expr) -> sp.Expr:
        """`e` kept as one operand when it is a difference of inputs (`anchor - positive`), so
        adding to it cannot reassociate the difference (see `P.Grouped`)."""
        terms = sp.Add.make_args(e)
        if len(terms) < 2 or not all(t in self._varying or -t in self._varying for t in terms):
            return e
        return P.Grouped(e) if any(-t in self._varying for t in terms) else e

    def _inline(self, e: ir.Inline) -> sp.Expr:
        callee = e.loss
        env: dict[tuple[str, str], sp.Expr] = {}
        for inp, arg in zip(callee.inputs, e.args, strict=True):
            env[("input", inp.name)] = self.expr(arg)
        given = dict(e.params)
        for p in callee.params:
            env[("param", p.name)] = (
                self.expr(given[p.name]) if p.name in given else _const(p.default, p.kind)
            )
        if callee.axis is not None:
            env[("axis", callee.axis)] = self.table.size
        inner = _Lowerer(self.table, env, self._varying, self.budget)
        try:
            return inner.expr(callee.value)
        except SpecShapeError as err:
            # Undefined for these arguments (`bce(10, 10)`): the place to fix is the call here,
            # not the line of the called loss's own file.
            if err.span is None or e.span is None or err.span.file == e.span.file:
                raise
            message = f"{err.message}: `{callee.name}` at these arguments (its line {err.span})"
            raise SpecShapeError(message, e.span, self.budget.source, err.hint) from None


def _negation(cond: sp.Expr) -> sp.Expr:
    """`not cond`. SymPy turns `not (a > b)` into `a <= b`, which is false where an operand is
    NaN and `not` must be true (IEEE, NumPy, PyTorch); comparing a select of the ordered
    comparison with 0 keeps the negation exact. `==` and `!=` are each other's exact negation."""
    if isinstance(cond, sp.core.relational.Relational) and not isinstance(cond, (sp.Eq, sp.Ne)):
        return sp.Eq(P.Where(cond, sp.S.One, sp.S.Zero), 0)
    return sp.Not(cond)


_RELATIONS = {
    "lt": sp.StrictLessThan,
    "le": sp.LessThan,
    "gt": sp.StrictGreaterThan,
    "ge": sp.GreaterThan,
    "eq": sp.Eq,
    "ne": sp.Ne,
}
