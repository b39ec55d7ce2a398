"""DAG walks (lossdsl/dag.py) agree with SymPy's tree walks and visit each node once."""

from __future__ import annotations

import random

import sympy as sp

from lossdsl import primitives as P
from lossdsl.codegen.cpu import _integer_ratio
from lossdsl.dag import FreeSymbols, unique_postorder

X, Y, Z = sp.symbols("x y z", real=True)


def _random_expr(rng: random.Random, depth: int) -> sp.Expr:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([X, Y, Z, sp.Integer(rng.randint(1, 3))])
    a, b = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    cond = sp.Eq(a, b) & (a > b) | (b > 0)
    return rng.choice([a + b, a * b, sp.exp(a), sp.log(1 + a**2), P.Where(cond, a, b)])


def test_free_symbols_match_sympy() -> None:
    rng = random.Random(7)
    free = FreeSymbols()
    for _ in range(60):
        e = _random_expr(rng, 4)
        assert free(e) == e.free_symbols


def test_each_distinct_node_once_arguments_first() -> None:
    e = X
    for _ in range(40):  # a tower whose tree has 2^40 leaves: shared levels (built unevaluated:
        # SymPy's own assumption queries on such a tower are exponential too)
        e = sp.Mul(sp.exp(e, evaluate=False), e, evaluate=False)
    order = list(unique_postorder([e]))
    assert len(order) == len(set(order))
    assert len(order) < 200
    position = {node: k for k, node in enumerate(order)}
    assert all(position[a] < position[node] for node in order for a in node.args)
    assert FreeSymbols()(e) == {X}


def test_integer_ratio_of_exponents() -> None:
    m = sp.Symbol("m", real=True)
    a = X - m
    assert _integer_ratio(2 * a, a) == 2
    assert _integer_ratio(-3 * a, a) == -3
    assert _integer_ratio(X * Y * 4, X * Y) == 4
    assert _integer_ratio(a / 2, a) is None
    assert _integer_ratio(2 * X - m, a) is None
    assert _integer_ratio(X + Y, a) is None
