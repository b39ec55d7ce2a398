"""Aggregate lifting: the table of named row aggregates, gathers and batch totals.

Every reduction in a loss becomes a symbol (`_q0`, `_q1`, ...) defined by a `Quantity`, so the
loss body and its derivatives are ordinary SymPy expressions of inputs, parameters and these
symbols. A gather lifts only the loads of element values at its index. Sums are split by
linearity (`sum(q * (x - m))` -> `sum(q*x) - m * sum(q)`) so that as many aggregates as possible
are computed in the same pass over a row. Identical aggregates are
shared. Used by `lower` (to build the table) and `derive` (to add derivative aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

# An expanded summand may grow by at most this factor before we keep it unexpanded.
_EXPAND_GROWTH = 4


@dataclass(frozen=True)
class Quantity:
    """One lifted value, computed once per sample (row ops) or once per batch (totals).

    op: 'sum' or 'max' over the axis; 'argmax' (the first position of the maximum whose
    symbol is `index`, computed in that maximum's pass); 'gather' at `index`; 'total' over the
    batch; 'adjoint' (a batch sum of a per-sample adjoint, used by the gradient of totals).
    A batch quantity whose `index` is the axis index is a vector along the axis.
    """

    symbol: sp.Symbol
    op: str
    expr: sp.Expr
    index: sp.Expr | None = None
    differentiable: bool = True

    @property
    def along(self) -> bool:
        """A batch quantity with one value per position of the axis (a per-class total or
        its adjoint); its symbol is then an element symbol of the table."""
        return self.op in BATCH_OPS and self.index is not None


BATCH_OPS = ("total", "adjoint")

# A sample's frequency weight (the spec's reduction weight times `sample_weight`, unscaled):
# a batch total counts each sample that many times, total(x) = sum_i w_i x_i. Kernels bind
# it before any total's summand is computed, and skip samples whose weight is zero.
WEIGHT = sp.Symbol("_w", real=True)


class Aggregates:
    """A growing table of quantities; element symbols are those that vary along the axis."""

    def __init__(
        self, element_symbols: frozenset[sp.Symbol], index: sp.Symbol, size: sp.Expr
    ) -> None:
        self.element_symbols = element_symbols
        self.index = index
        self.size = size
        self.items: dict[sp.Symbol, Quantity] = {}
        self._keys: dict[tuple[object, ...], sp.Symbol] = {}

    def copy(self) -> Aggregates:
        other = Aggregates(self.element_symbols, self.index, self.size)
        other.items = dict(self.items)
        other._keys = dict(self._keys)
        return other

    @property
    def symbols(self) -> frozenset[sp.Symbol]:
        return frozenset(self.items)

    def element_dependent(self, expr: sp.Expr) -> bool:
        free = expr.free_symbols
        return bool(free & self.element_symbols) or self.index in free

    def row_sum(self, expr: sp.Expr, positive: bool = False) -> sp.Expr:
        const, parts = self._split(expr)
        out = const * self.size
        for dep, coeff in parts:
            pos = positive and len(parts) == 1 and coeff == 1
            out += coeff * self._new("sum", dep, None, True, pos)
        return out

    def row_max(self, expr: sp.Expr, differentiable: bool = True) -> sp.Expr:
        if not self.element_dependent(expr):
            return expr
        return self._new("max", expr, None, differentiable, False)

    def argmax(self, maximum: sp.Symbol) -> sp.Symbol:
        """The first position of a row maximum, found in the maximum's own pass.

        The maximum's derivative falls back on it should a re-evaluated operand ever miss the
        maximum it is compared with (see derive._max_jacobian).
        """
        return self._new("argmax", self.items[maximum].expr, maximum, False, False)

    def gather(self, expr: sp.Expr, index: sp.Expr) -> sp.Expr:
        """`expr` evaluated at position `index`: each element symbol becomes its gathered load.

        Only loads are lifted; the arithmetic stays per-sample, so log(softmax(x)[y]) is still
        seen as log(exp(x[y] - m) / S) and rewritten to x[y] - m - log(S).
        """
        loads = {
            s: self._new("gather", s, index, True, False)
            for s in sorted(expr.free_symbols & self.element_symbols, key=str)
        }
        loads[self.index] = index
        return expr.xreplace(loads)

    def total(self, expr: sp.Expr) -> sp.Expr:
        """sum_i w_i expr_i over the batch (frequency weights, see `WEIGHT`); an `expr` that
        varies along the axis gives one total per position (`Quantity.along`)."""
        return self._batch("total", WEIGHT * expr)

    def adjoint(self, expr: sp.Expr) -> sp.Expr:
        if expr == 0:
            return sp.S.Zero
        return self._batch("adjoint", expr)

    def _batch(self, op: str, expr: sp.Expr) -> sp.Symbol:
        # An element-level batch quantity marks itself with the axis index (it is read at the
        # current position) and joins the element symbols.
        along = self.element_dependent(expr)
        symbol = self._new(op, expr, self.index if along else None, True, False)
        if along:
            self.element_symbols = self.element_symbols | {symbol}
        return symbol

    def _new(
        self, op: str, expr: sp.Expr, index: sp.Expr | None, differentiable: bool, positive: bool
    ) -> sp.Symbol:
        key = (op, expr, index, differentiable)
        if key in self._keys:
            return self._keys[key]
        assumptions = {"positive": True} if positive else {"real": True}
        symbol = sp.Symbol(f"_q{len(self.items)}", **assumptions)
        self.items[symbol] = Quantity(symbol, op, expr, index, differentiable)
        self._keys[key] = symbol
        return symbol

    def _split(self, expr: sp.Expr) -> tuple[sp.Expr, list[tuple[sp.Expr, sp.Expr]]]:
        """expr = const + sum(coeff * part): parts depend on the element, coefficients do not."""
        if not self.element_dependent(expr):
            return expr, []
        # Only the top level: expanding inside a select's condition would re-round the operand
        # of a tie test differently from the max it is compared with.
        expanded = sp.expand_mul(expr, deep=False)
        if sp.count_ops(expanded) > _EXPAND_GROWTH * sp.count_ops(expr) + 8:
            expanded = expr
        const: sp.Expr = sp.S.Zero
        parts: dict[sp.Expr, sp.Expr] = {}
        elems = sorted(self.element_symbols | {self.index}, key=str)
        for term in sp.Add.make_args(expanded):
            coeff, dep = term.as_independent(*elems, as_Add=False)
            if dep == 1:
                const += coeff
            else:
                parts[dep] = parts.get(dep, sp.S.Zero) + coeff
        return const, [(d, c) for d, c in parts.items() if c != 0]
