"""Random well-typed expression trees with value intervals: the generator's expression half.

Every node carries an interval (inputs are drawn inside declared, bounded ranges; parameters
inside their domains), and a node whose interval breaks a function's domain (log, sqrt,
division, exp, pow) or grows past `_BIG` is wrapped in an adapter that restores it
(`abs(a) + c`, `tanh(a)`, ...), so the PyTorch reference is finite by construction.
Trees are nested lists `[op, ...]` (see tests/fuzz/render.py for their text).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

Tree = list[Any]

BMAX, CMAX = 5, 4  # the largest batch and axis length drawn (intervals of totals use them)
_BIG = 1e3  # larger magnitudes are squashed, so float32 comparisons stay meaningful
_CONSTS = (0.5, 1, 2, 3, 0.25, 1.5, 0.1, 0.75)

# Every elementwise function of one argument (their domains: Generator._g_unary).
_UNARY = [
    *("abs", "sign", "sqrt", "square", "exp", "log", "log1p", "expm1", "tanh", "cosh"),
    *("sinh", "sin", "cos", "logcosh", "sigmoid", "softplus", "log_sigmoid", "relu"),
    "stop_gradient",
]
AXIS_REDUCE = ("sum", "mean", "max", "min", "norm", "logsumexp")
AXIS_MAP = ("softmax", "log_softmax")
INPUT_RANGES = {"x": (-2.0, 2.0), "t": (0.05, 0.95), "v": (0.2, 3.0)}


@dataclass
class G:
    """A generated node: its tree, whether it varies along the axis, its value interval, and
    whether it depends on an input (min/max against a non-varying value is a clamp)."""

    t: Tree
    axis: bool
    lo: float
    hi: float
    var: bool = True

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))


def _iv(t: Tree, axis: bool, lo: float, hi: float, var: bool) -> G:
    return G(t, axis, min(lo, hi), max(lo, hi), var)


class Expressions:
    """Draws expressions over the leaves a loss declares; `features` enables semantics beyond
    main's (per-class and nested totals)."""

    def __init__(self, seed: int, features: frozenset[str] = frozenset()) -> None:
        self.r = random.Random(seed)
        self.seed = seed
        self.features = features
        self.leaves: list[G] = []
        self.axis_leaves: list[G] = []
        self.int_leaves: list[G] = []
        self.total_depth = 0
        self.allow_totals = True
        self.helper: dict[str, Any] | None = None
        self.wmax = 1.0
        self.has_axis = False
        self.nested_reject = False
        self.local_totals: set[str] = set()

    def const_pos(self) -> G:
        c = self.r.choice(_CONSTS)
        return G(["num", c], False, c, c, False)

    # -- expressions ---------------------------------------------------------------------------

    def real(self, depth: int, ax: str) -> G:
        """A real expression; `ax` is 'no' (per-sample), 'may' or 'must' (varies along the
        axis)."""
        if ax == "must" and not self.axis_leaves:
            ax = "may"
        leaf = depth <= 0 or self.r.random() < 0.15
        g = self.leaf(ax) if leaf else self._node(depth - 1, ax)
        return self.squash(g) if g.mag > _BIG else g

    def leaf(self, ax: str) -> G:
        r = self.r
        pool = [] if ax == "must" else list(self.leaves)
        pool += self.axis_leaves if ax != "no" else []
        if self.total_depth and not ("nested" in self.features or self.nested_reject):
            # A local holding a total, used inside a total, would nest them.
            pool = [g for g in pool if g.t[0] != "let" or g.t[1] not in self.local_totals]
        if ax == "must":
            return r.choice(pool)
        if self.int_leaves and r.random() < 0.15:
            return r.choice(self.int_leaves)
        if not pool or r.random() < 0.15:
            c = r.choice((*_CONSTS, "pi", "e"))
            v = {"pi": math.pi, "e": math.e}.get(str(c), c)
            return G(["const", c] if isinstance(c, str) else ["num", c], False, v, v, False)
        return r.choice(pool)

    def _node(self, d: int, ax: str) -> G:
        kinds = ["bin"] * 5 + ["unary"] * 5 + ["where", "minmax", "minmax", "clip", "neg", "pow"]
        kinds += ["div", "div", "xlogy", "bxent"]
        if self.has_axis and ax != "no":
            kinds += ["axmap"] * 2
        if ax != "must":  # these give one value per sample
            if self.axis_leaves:
                kinds += ["axred"] * 4 + ["gather"] * 2
            if self.allow_totals:
                kinds += ["total"] * 4
            if self.helper is not None:
                kinds += ["call"]
        k = self.r.choice(kinds)
        g: G = getattr(self, "_g_" + k)(d, ax)
        return g

    def _g_bin(self, d: int, ax: str) -> G:
        a, b = self._pair(d, ax)
        op = self.r.choice("+-*")
        if op == "+":
            return _iv(
                ["bin", "+", a.t, b.t], a.axis or b.axis, a.lo + b.lo, a.hi + b.hi, a.var or b.var
            )
        if op == "-":
            return _iv(
                ["bin", "-", a.t, b.t], a.axis or b.axis, a.lo - b.hi, a.hi - b.lo, a.var or b.var
            )
        c = (a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi)
        return _iv(["bin", "*", a.t, b.t], a.axis or b.axis, min(c), max(c), a.var or b.var)

    def _add(self, a: G, b: G) -> G:
        return _iv(["bin", "+", a.t, b.t], a.axis or b.axis, a.lo + b.lo, a.hi + b.hi, True)

    def _pair(self, d: int, ax: str) -> tuple[G, G]:
        a = self.real(d, ax)
        b = self.real(d, "may" if ax == "must" and a.axis else ax)
        return (a, b) if self.r.random() < 0.5 else (b, a)

    def _g_neg(self, d: int, ax: str) -> G:
        a = self.real(d, ax)
        return _iv(["neg", a.t], a.axis, -a.hi, -a.lo, a.var)

    def _g_div(self, d: int, ax: str) -> G:
        a, b = self._pair(d, ax)
        b = self.pos(b)
        c = (a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi)
        return _iv(["bin", "/", a.t, b.t], a.axis or b.axis, min(c), max(c), a.var or b.var)

    def _g_pow(self, d: int, ax: str) -> G:
        r = self.r
        a = self.real(d, ax)
        if r.random() < 0.5:
            a = self.bounded(a, 10.0)
            k = r.choice((2, 3))
            c = (a.lo**k, a.hi**k) + ((0.0,) if a.lo < 0 < a.hi else ())
            return _iv(["bin", "^", a.t, ["num", k]], a.axis, min(c), max(c), a.var)
        a = self.pos(self.bounded(a, 10.0))
        exps = [g for g in self.leaves if g.t[0] == "par" and g.lo >= 0.1 and g.hi <= 3]
        e = (
            r.choice(exps)
            if exps and r.random() < 0.6
            else G(["num", r.choice((0.5, 1.5))], False, 0.5, 1.5, False)
        )
        c = [x**p for x in (a.lo, a.hi) for p in (e.lo, e.hi)]
        return _iv(["bin", "^", a.t, e.t], a.axis, min(c), max(c), a.var)

    def _g_unary(self, d: int, ax: str) -> G:
        fn = self.r.choice(_UNARY)
        a = self.real(d, ax)
        lo, hi = a.lo, a.hi
        if fn in ("sqrt", "log"):
            a = self.pos(a)
            lo, hi = (
                (math.sqrt(a.lo), math.sqrt(a.hi))
                if fn == "sqrt"
                else (math.log(a.lo), math.log(a.hi))
            )
        elif fn == "log1p":
            a = self.pos(a)
            lo, hi = math.log1p(a.lo), math.log1p(a.hi)
        elif fn in ("exp", "expm1", "cosh", "sinh"):
            a = self.bounded(a, 6.0)
            f = {"exp": math.exp, "expm1": math.expm1, "cosh": math.cosh, "sinh": math.sinh}[fn]
            lo, hi = (f(a.lo), f(a.hi)) if fn != "cosh" else (1.0, math.cosh(a.mag))
        elif fn in ("tanh", "sin", "cos", "sign"):
            lo, hi = -1.0, 1.0
        elif fn == "sigmoid":
            lo, hi = 0.0, 1.0
        elif fn in ("abs", "relu", "square"):
            lo, hi = 0.0, a.mag if fn != "square" else a.mag**2
            if fn == "square":
                a = self.bounded(a, 30.0)
                hi = a.mag**2
        elif fn in ("softplus", "logcosh"):
            lo, hi = 0.0, a.mag + 1.0
        elif fn == "log_sigmoid":
            lo, hi = -a.mag - 1.0, 0.0
        return _iv(["fn", fn, a.t], a.axis, lo, hi, a.var and fn != "stop_gradient")

    def _g_where(self, d: int, ax: str) -> G:
        a, b = self._pair(d, ax)
        return self._where(self.cond(d, "no" if ax == "no" else "may"), a, b)

    def _where(self, c: tuple[Tree, bool], a: G, b: G) -> G:
        axis = a.axis or b.axis or c[1]
        return _iv(
            ["fn", "where", c[0], a.t, b.t], axis, min(a.lo, b.lo), max(a.hi, b.hi), a.var or b.var
        )

    def _g_minmax(self, d: int, ax: str) -> G:
        r = self.r
        fn = r.choice(("min", "max"))
        a = self.real(d, ax)
        roll = r.random()
        if roll < 0.3:
            b = (
                self.const_pos()
                if r.random() < 0.5
                else G(["num", -r.choice(_CONSTS)], False, 0, 0, False)
            )
            b.lo = b.hi = b.t[1]
        elif roll < 0.4 and self.int_leaves:
            b = r.choice(self.int_leaves)
        else:
            b = self.real(d, "may" if ax == "must" and a.axis else ax)
        if r.random() < 0.5:
            a, b = b, a
        f = min if fn == "min" else max
        return _iv(
            ["fn", fn, a.t, b.t], a.axis or b.axis, f(a.lo, b.lo), f(a.hi, b.hi), a.var or b.var
        )

    def _g_clip(self, d: int, ax: str) -> G:
        r = self.r
        x = self.real(d, ax)
        if r.random() < 0.6:
            lo = r.choice((-1.0, -0.5, 0.0, 0.25))
            hi = lo + r.choice((0.5, 1.0, 2.0))
            # An infinite bound now and then: `inf` must print as a float constant.
            lo_t: Tree = ["num", lo] if r.random() < 0.9 else ["neg", ["const", "inf"]]
            hi_t: Tree = ["num", hi] if r.random() < 0.9 else ["const", "inf"]
            lo_v = lo if lo_t[0] == "num" else -math.inf
            hi_v = hi if hi_t[0] == "num" else math.inf
            out_lo, out_hi = min(max(x.lo, lo_v), hi_v), min(max(x.hi, lo_v), hi_v)
            return _iv(["fn", "clip", x.t, lo_t, hi_t], x.axis, out_lo, out_hi, x.var)
        # Varying bounds, ordered by construction: clip(x, a, a + positive).
        a = self.bounded(self.real(d, "no" if ax == "no" else "may"), 3.0)
        width = self.pos(self.bounded(self.real(d, "no"), 3.0))
        hi_t = ["bin", "+", a.t, width.t]
        lo_v, hi_v = a.lo, a.hi + width.hi
        return _iv(["fn", "clip", x.t, a.t, hi_t], x.axis or a.axis, lo_v, hi_v, True)

    def _g_xlogy(self, d: int, ax: str) -> G:
        a, b = self._pair(d, ax)
        b = self.pos(b)
        m = a.mag * max(abs(math.log(b.lo)), abs(math.log(b.hi)))
        return _iv(["fn", "xlogy", a.t, b.t], a.axis or b.axis, -m, m, True)

    def _g_bxent(self, d: int, ax: str) -> G:
        a, b = self._pair(d, ax)
        p = self.bounded(a, 4.0)
        p_t = ["fn", "sigmoid", p.t]
        t = self.unit(b)
        return _iv(["fn", "binary_xent", p_t, t.t], a.axis or b.axis, 0.0, 5.0, True)

    def _g_axred(self, d: int, ax: str) -> G:
        fn = self.r.choice(AXIS_REDUCE)
        a = self.real(d, "must")
        if fn == "logsumexp":
            a = self.bounded(a, 30.0)
        lo, hi = {
            "sum": (CMAX * min(a.lo, 0), CMAX * max(a.hi, 0)),
            "mean": (a.lo, a.hi),
            "max": (a.lo, a.hi),
            "min": (a.lo, a.hi),
            "norm": (0.0, math.sqrt(CMAX) * a.mag),
            "logsumexp": (a.lo, a.hi + math.log(CMAX)),
        }[fn]
        return _iv(["ax", fn, a.t], False, lo, hi, a.var)

    def _g_axmap(self, d: int, ax: str) -> G:
        fn = self.r.choice(AXIS_MAP)
        a = self.bounded(self.real(d, "must"), 30.0)
        lo, hi = (0.0, 1.0) if fn == "softmax" else (a.lo - a.hi - math.log(CMAX), 0.0)
        return _iv(["ax", fn, a.t], True, lo, hi, a.var)

    def _g_gather(self, d: int, ax: str) -> G:
        a = self.real(d, "must")
        ints = [g for g in self.int_leaves]
        idx = (
            self.r.choice(ints)
            if ints and self.r.random() < 0.8
            else G(["int", self.r.randint(0, 2)], False, 0, 2, False)
        )
        return _iv(["gather", a.t, idx.t], False, a.lo, a.hi, a.var)

    def _g_total(self, d: int, ax: str) -> G:
        nested = self.total_depth > 0
        if nested and "nested" not in self.features and not self.nested_reject:
            return self.real(d, ax)
        self.total_depth += 1
        inner_ax = "may" if "perclass" in self.features and ax != "no" else "no"
        a = self.real(d, inner_ax)
        if self.nested_reject and not nested:  # a nested total, for the check to reject
            a = self._add(a, self._g_total(0, "no"))
        self.total_depth -= 1
        scale = BMAX * self.wmax * (BMAX * self.wmax if nested else 1.0)
        return _iv(["fn", "total", a.t], a.axis, scale * min(a.lo, 0), scale * max(a.hi, 0), a.var)

    def _g_call(self, d: int, ax: str) -> G:
        assert self.helper is not None
        a = self.bounded(self.real(d, "no"), 2.0)
        b = self.bounded(self.real(d, "no"), 2.0)
        kw: dict[str, Tree] = {}
        if self.r.random() < 0.6:
            kw["s"] = ["num", self.r.choice((0.5, 1.5, 2.0))]
        return _iv(["call", [a.t, b.t], kw], False, self.helper["lo"], self.helper["hi"], True)

    def cond(self, d: int, ax: str = "may") -> tuple[Tree, bool]:
        """A condition: comparisons, possibly of labels, joined by and/or/not."""
        r = self.r
        roll = r.random()
        if roll < 0.2 and d > 0:
            (a, ax1), (b, ax2) = self.cond(d - 1, ax), self.cond(d - 1, ax)
            return [r.choice(("and", "or")), a, b], ax1 or ax2
        if roll < 0.3 and d > 0:
            a, axa = self.cond(d - 1, ax)
            return ["not", a], axa
        op = r.choice(("<", "<=", ">", ">=", "==", "!="))
        if self.int_leaves and roll < 0.5:
            lab = r.choice(self.int_leaves)
            other = r.choice([*self.int_leaves, G(["int", r.randint(0, 2)], False, 0, 2, False)])
            return ["cmp", op, lab.t, other.t], False
        if op in ("==", "!="):
            op = r.choice(("<", ">"))  # real equality holds with probability zero
        a = self.real(max(d - 1, 0), ax)
        b = (
            self.real(0, ax)
            if r.random() < 0.5
            else G(["num", r.choice((-0.5, 0, 0.5, 1))], False, 0, 0, False)
        )
        return ["cmp", op, a.t, b.t], a.axis or b.axis

    # -- domain adapters -----------------------------------------------------------------------

    def pos(self, g: G) -> G:
        """`g` made >= ~0.1 (a divisor, a log or sqrt argument)."""
        if g.lo >= 0.1:
            return g
        r = self.r
        c = r.choice((0.1, 0.5, 1.0))
        roll = r.random()
        if roll < 0.25:
            g = self.bounded(g, 30.0)
            return _iv(
                ["bin", "+", ["fn", "square", g.t], ["num", c]], g.axis, c, g.mag**2 + c, g.var
            )
        if roll < 0.45:
            g = self.bounded(g, 5.0)
            return _iv(["fn", "exp", g.t], g.axis, math.exp(g.lo), math.exp(g.hi), g.var)
        if roll < 0.6:
            return _iv(
                ["bin", "+", ["fn", "softplus", g.t], ["num", c]], g.axis, c, g.mag + 1 + c, g.var
            )
        if roll < 0.7:
            return _iv(["fn", "max", g.t, ["num", c]], g.axis, c, max(g.hi, c), g.var)
        if roll < 0.8:
            return _iv(["fn", "clip", g.t, ["num", c], ["num", c + 2]], g.axis, c, c + 2, g.var)
        return _iv(["bin", "+", ["fn", "abs", g.t], ["num", c]], g.axis, c, g.mag + c, g.var)

    def bounded(self, g: G, bound: float) -> G:
        """`g` with |value| <= bound."""
        return g if g.mag <= bound else self.squash(g)

    def squash(self, g: G) -> G:
        fn = self.r.choice(("tanh", "sin", "cos", "sigmoid", "soft"))
        if fn == "soft":  # a / (1 + |a|), in (-1, 1)
            t = ["bin", "/", g.t, ["bin", "+", ["num", 1], ["fn", "abs", g.t]]]
            return _iv(t, g.axis, -1.0, 1.0, g.var)
        return _iv(["fn", fn, g.t], g.axis, 0.0 if fn == "sigmoid" else -1.0, 1.0, g.var)

    def unit(self, g: G) -> G:
        """`g` inside [0, 1] (a binary_xent target)."""
        if g.lo >= 0 and g.hi <= 1:
            return g
        if self.r.random() < 0.5:
            return _iv(["fn", "sigmoid", g.t], g.axis, 0.0, 1.0, g.var)
        return _iv(["fn", "clip", g.t, ["num", 0], ["num", 1]], g.axis, 0.0, 1.0, g.var)

    def _per_sample(self, g: G) -> G:
        if not g.axis:
            return g
        fn = self.r.choice(AXIS_REDUCE)
        return _iv(["ax", fn, self.bounded(g, 30.0).t], False, -1e4, 1e4, g.var)
