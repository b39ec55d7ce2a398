"""The spec's local names, for formulas written the way the user wrote the loss.

`named_locals` re-checks each `name = expr` of a loss's own text as a loss of its own
(`return name`), lowers it, and returns (symbol, SymPy expression) pairs; `use_locals` then
writes a derived expression in terms of them (the largest local first). Locals that vary along
an axis, that need lifted aggregates, or that are conditions are left inlined: their SymPy
form would not match the derived one. Presentation only: nothing here feeds code generation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from lossdsl import ir
from lossdsl import nodes as n
from lossdsl.aggregates import Quantity
from lossdsl.check import Resolver, check_spec
from lossdsl.errors import LossDSLError
from lossdsl.lower import lower
from lossdsl.parse import parse_spec

Locals = tuple[tuple[sp.Symbol, sp.Expr], ...]


@dataclass(frozen=True)
class Names:
    """Elementwise locals (symbol, expression), and locals that are one aggregate each
    (symbol, op, expression, index): `tp = total(pred * target)` names that total."""

    locals: Locals = ()
    aggregates: tuple[tuple[sp.Symbol, str, sp.Expr, sp.Expr | None], ...] = ()

    def renaming(self, quantities: tuple[Quantity, ...]) -> dict[sp.Symbol, sp.Symbol]:
        """Aggregate symbols of a derivation -> the local names that define them."""
        out = {}
        for q in quantities:
            for symbol, op, expr, index in self.aggregates:
                if (q.op, q.expr, q.index) == (op, expr, index):
                    out[q.symbol] = symbol
        return out


def named_locals(loss: ir.LossDef, resolve: Resolver | None = None) -> Names:
    """The loss's locals that formulas can be written with, in the spec's order."""
    try:
        spec = parse_spec(loss.source, loss.file)
    except LossDSLError:
        return Names()
    node = next((x for x in spec.losses if x.name == loss.name), None)
    if node is None:
        return Names()
    assigns = [s for s in node.body if isinstance(s, n.Assign)]
    found: list[tuple[sp.Symbol, sp.Expr]] = []
    aggregates = []
    for k, stmt in enumerate(assigns):
        ret = n.Return(n.Name(stmt.name, stmt.span), stmt.span)
        probe = dataclasses.replace(node, body=(*assigns[: k + 1], ret))
        try:
            (checked,) = check_spec(n.Spec((probe,), spec.source, spec.file), resolve)
            lowered = lower(checked)
        except LossDSLError:
            continue  # an axis-valued or boolean local: it stays inlined
        symbol, items = sp.Symbol(stmt.name), lowered.table.items
        if lowered.value in items:  # exactly one aggregate: name it
            q = items[lowered.value]
            aggregates.append((symbol, q.op, q.expr, q.index))
        elif not items and not lowered.value.is_Atom:
            # Aggregate symbols differ between lowerings, so only aggregate-free locals match.
            found.append((symbol, lowered.value))
    return Names(tuple(found), tuple(aggregates))


def use_locals(expr: sp.Expr, names: Locals) -> sp.Expr:
    """`expr` with every occurrence of a local's expression replaced by its name."""
    for symbol, value in reversed(names):
        expr = expr.subs(value, symbol)
    return expr


def local_definitions(names: Locals, shown: list[sp.Expr]) -> Locals:
    """The locals the shown formulas use (directly or through another used local), each
    written in terms of the locals before it."""
    used: set[sp.Symbol] = set().union(*(e.free_symbols for e in shown)) if shown else set()
    out: list[tuple[sp.Symbol, sp.Expr]] = []
    for k in range(len(names) - 1, -1, -1):
        symbol, value = names[k]
        if symbol in used:
            body = use_locals(value, names[:k])
            used |= body.free_symbols
            out.append((symbol, body))
    return tuple(reversed(out))


def used_quantities(quantities: tuple[Quantity, ...], shown: list[sp.Expr]) -> list[Quantity]:
    """The aggregates the shown formulas need, directly or through other aggregates, in order."""
    used: set[sp.Symbol] = set().union(*(e.free_symbols for e in shown)) if shown else set()
    keep: set[sp.Symbol] = set()
    for q in reversed(quantities):
        if q.symbol in used:
            keep.add(q.symbol)
            used |= q.expr.free_symbols
            if q.index is not None:
                used |= q.index.free_symbols
    return [q for q in quantities if q.symbol in keep]
