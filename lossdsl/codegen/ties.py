"""Tie tests of a row maximum's gradient, kept out of every rewrite that regroups arithmetic.

The gradient of `max[C](f)` goes to the positions where `f == max` (shared between ties), so
the operand `f` recomputed in a later loop must round exactly as it did when the maximum was
taken. Both places print the same SymPy tree as one plain expression. CSE, hoisting and memo
reads would regroup it (a divisor shared with another term becomes a reciprocal temporary, so
`a / b` turns into `a * (1 / b)`: one rounding more, and the maximum's own position no longer
ties), so they see a placeholder symbol in place of each tie test.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sympy as sp

from lossdsl.dag import unique_postorder


def is_tie_test(e: sp.Basic, maxima: Collection[sp.Symbol]) -> bool:
    """`Eq(f, m)` with `m` a row maximum: the test derive.py builds for a maximum's gradient."""
    return isinstance(e, sp.Eq) and any(a in maxima for a in e.args)


def seal(
    exprs: Sequence[sp.Expr], maxima: Collection[sp.Symbol]
) -> tuple[list[sp.Expr], dict[sp.Symbol, sp.Expr]]:
    """`exprs` with each tie test replaced by a placeholder, and the map back (`unseal`)."""
    tests: dict[sp.Expr, sp.Symbol] = {}
    if maxima:
        for node in unique_postorder(exprs):
            if is_tie_test(node, maxima):
                tests[node] = sp.Dummy("tie")
    return [e.xreplace(tests) for e in exprs], {d: t for t, d in tests.items()}


def unseal(e: sp.Expr, held: dict[sp.Symbol, sp.Expr]) -> sp.Expr:
    return e.xreplace(held) if held else e
