"""Walks over SymPy expressions as DAGs: each distinct subexpression is visited once.

SymPy's `free_symbols` and its traversals walk the expression *tree*: a subexpression shared
k ways is walked k times. Derivatives share a lot (the derivative of a tower exp(exp(...))
repeats every inner level), so tree walks grew exponentially with nesting and made printing
a 1 KB spec take tens of seconds. These walks are iterative (no recursion limit) and memoise
by node.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator

import sympy as sp

Symbols = frozenset[sp.Symbol]
_NONE: Symbols = frozenset()


class FreeSymbols:
    """`e.free_symbols` for expressions without bound variables, memoised across calls: one
    instance serves every expression of one kernel, so repeated queries on subtrees (hoisting
    asks at every node) cost a lookup."""

    def __init__(self) -> None:
        self._memo: dict[sp.Basic, Symbols] = {}

    def __call__(self, e: sp.Basic) -> Symbols:
        memo = self._memo
        found = memo.get(e)
        if found is not None:
            return found
        for node in unique_postorder([e], memo):
            if node.is_Symbol:
                memo[node] = frozenset((node,))
            else:
                memo[node] = _NONE.union(*(memo[a] for a in node.args)) if node.args else _NONE
        return memo[e]

    def union(self, exprs: Iterable[sp.Basic]) -> set[sp.Symbol]:
        out: set[sp.Symbol] = set()
        for e in exprs:
            out |= self(e)
        return out


def unique_postorder(
    exprs: Iterable[sp.Basic], skip: Container[sp.Basic] = ()
) -> Iterator[sp.Basic]:
    """Every distinct node of `exprs` once, arguments before the node that holds them; nodes
    in `skip` (and whatever only they hold) are left out."""
    done: set[sp.Basic] = set()
    for root in exprs:
        stack: list[tuple[sp.Basic, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in done or node in skip:
                continue
            if expanded:
                done.add(node)
                yield node
                continue
            stack.append((node, True))
            stack.extend((a, False) for a in reversed(node.args))
