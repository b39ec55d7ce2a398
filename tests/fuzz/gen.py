"""Random well-typed loss specs as JSON-able trees, and their rendering to spec text.

A case is a dict: the loss (inputs, params, locals, value tree, weight tree, reduction, wrt),
an optional helper loss it calls, and how it is called (batch, classes, reduction, sample
weights, parameter overrides, data seed). Trees are nested lists `[op, ...]` so a case can be
saved as JSON, minimised by editing lists, and evaluated by the independent oracle.

Values stay in safe domains by construction: every node carries an interval (inputs are drawn
inside declared, bounded ranges; parameters inside their domains), and a node whose interval
breaks a function's domain (log, sqrt, division, exp, pow) or grows past `_BIG` is wrapped in
an adapter that restores it (`abs(a) + c`, `tanh(a)`, ...), so the reference is finite.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

Tree = list[Any]

# Semantics that main may not implement yet; the campaign enables them with --features.
FEATURES = ("perclass", "wtotals", "nested", "cotangent", "nan")

BMAX, CMAX = 5, 4  # the largest batch and axis length drawn (intervals of totals use them)
_BIG = 1e3  # larger magnitudes are squashed, so float32 comparisons stay meaningful
_CONSTS = (0.5, 1, 2, 3, 0.25, 1.5, 0.1, 0.75)

# Every elementwise function of one argument (their domains: Generator._g_unary).
_UNARY = [
    *("abs", "sign", "sqrt", "square", "exp", "log", "log1p", "expm1", "tanh", "cosh"),
    *("sinh", "sin", "cos", "logcosh", "sigmoid", "softplus", "log_sigmoid", "relu"),
    "stop_gradient",
]
_SMOOTH = ("tanh", "sin", "cos", "logcosh", "sigmoid", "softplus", "log_sigmoid")
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


class Generator:
    """Draws one case from a seed; `features` enables semantics beyond main's."""

    def __init__(self, seed: int, features: frozenset[str] = frozenset()) -> None:
        self.r = random.Random(seed)
        self.seed = seed
        self.features = features
        self.leaves: list[G] = []
        self.axis_leaves: list[G] = []
        self.int_leaves: list[G] = []
        self.conds_ok = True
        self.total_depth = 0
        self.allow_totals = True
        self.helper: dict[str, Any] | None = None
        self.wmax = 1.0
        self.has_axis = False
        self.nested_reject = False
        self.local_totals: set[str] = set()

    # -- the case ------------------------------------------------------------------------------

    def case(self) -> dict[str, Any]:
        r = self.r
        self.has_axis = r.random() < 0.6
        loss = self._signature()
        if r.random() < 0.25:
            self.helper = self._helper()
        weighted = r.random() < 0.3
        self.wmax = 1.0
        weight = None
        if weighted:
            weight = self._weight(loss)
            self.wmax = max(weight.hi, 1.0)
        call_sw = r.random() < 0.3
        if call_sw:
            self.wmax *= 2.0
        self.allow_totals = "wtotals" in self.features or not (weighted or call_sw)
        self.nested_reject = self.allow_totals and r.random() < 0.05
        self._locals(loss)
        value = self._per_sample(self.real(r.randint(2, 4), "may"))
        if r.random() < 0.5:  # two independent halves: more inputs and locals meet
            other = self._per_sample(self.real(r.randint(1, 3), "may"))
            value = _iv(["bin", r.choice("+-*"), value.t, other.t], False, 0, 0, True)
        loss["value"] = self._use_wrt(loss, value.t)
        loss["weight"] = None if weight is None else weight.t
        loss["reduce"] = r.choice(("mean", "mean", "sum", "none")) if weight is None else "mean"
        call = {
            "batch": r.choice((1, 2, 3, 4, 5, 5)) if r.random() < 0.15 else r.choice((3, 4, 5)),
            "classes": r.choice((3, 4)),
            "reduction": r.choice((None, None, "mean", "sum", "none")),
            "sample_weight": r.choice(("pos", "zeros")) if call_sw else None,
            "data_seed": r.randrange(2**31),
            "cotangent": "cotangent" in self.features and r.random() < 0.3,
            "nan": "nan" in self.features and r.random() < 0.15,
        }
        if call["cotangent"]:
            call["reduction"] = "none"
        return {
            "loss": loss,
            "helper": self.helper,
            "call": call,
            "seed": self.seed,
            "features": sorted(self.features),
        }

    def _use_wrt(self, loss: dict[str, Any], value: Tree) -> Tree:
        """`value`, plus a term in each local and differentiated input it does not use."""
        lets = dict(loss["locals"])
        for name, _ in loss["locals"]:
            if name not in names_in([value, *lets.values()], "let"):
                term: Tree = ["fn", "tanh", ["let", name]]
                axis = self._leaf_list_has(name)
                value = ["bin", "*", value, ["ax", "mean", term] if axis else term]
        used = names_in(value, "in")
        for name in names_in(value, "let"):
            used |= names_in(lets[name], "in") | {
                n for u in names_in(lets[name], "let") for n in names_in(lets[u], "in")
            }
        for inp in loss["inputs"]:
            name = inp["name"]
            if name in loss["wrt"] and name not in used:
                term = ["fn", self.r.choice(_SMOOTH), ["in", name]]
                term = ["ax", self.r.choice(AXIS_REDUCE), term] if inp["axis"] else term
                value = ["bin", "+", value, term]
        return value

    def _leaf_list_has(self, name: str) -> bool:
        """Whether local `name` varies along the axis."""
        return any(g.t == ["let", name] for g in self.axis_leaves)

    def _signature(self) -> dict[str, Any]:
        r = self.r
        inputs: list[dict[str, Any]] = []
        n_real = r.randint(1, 3)
        for i in range(n_real):
            kind = r.choice("xxxtv")
            axis = self.has_axis and (i == 0 or r.random() < 0.5)
            inputs.append({"name": f"{kind}{i}", "kind": "real", "axis": axis, "range": kind})
        if r.random() < 0.4:
            inputs.insert(r.randint(1, len(inputs)), {"name": "lab", "kind": "int", "axis": False})
        reals = [i["name"] for i in inputs if i["kind"] == "real"]
        wrt = r.sample(reals, r.randint(1, min(3, len(reals))))
        if r.random() < 0.3 and inputs[0]["kind"] == "real":
            wrt = [inputs[0]["name"]]
        params = self._params()
        for inp in inputs:
            leaf = self._input_leaf(inp)
            if inp["kind"] == "int":
                self.int_leaves.append(leaf)
            else:  # inputs three times: most leaves should vary
                self._leaf_list(leaf).extend([leaf] * 3)
        for p in params:
            self._leaf_list_param(p)
        if self.has_axis:
            self.leaves.append(G(["axis"], False, 3, CMAX, False))
        return {"inputs": inputs, "params": params, "wrt": wrt, "locals": [], "axis": self.has_axis}

    def _input_leaf(self, inp: dict[str, Any]) -> G:
        if inp["kind"] == "int":
            high = CMAX - 1 if self.has_axis else 2
            return G(["in", inp["name"]], False, 0, high, True)
        lo, hi = INPUT_RANGES[inp["range"]]
        return G(["in", inp["name"]], inp["axis"], lo, hi, True)

    def _leaf_list(self, leaf: G) -> list[G]:
        return self.axis_leaves if leaf.axis else self.leaves

    def _params(self) -> list[dict[str, Any]]:
        r = self.r
        out: list[dict[str, Any]] = []
        for i in range(r.choice((0, 0, 1, 1, 2, 3))):
            kind = r.choice(("real", "real", "int", "axis") if self.has_axis else ("real", "int"))
            name = f"p{i}"
            if kind == "int":
                default = r.randint(0, 2)
                override = r.choice([v for v in (0, 1, 2) if v != default])
                out.append(
                    {
                        "name": name,
                        "kind": "int",
                        "default": default,
                        "lo": 0,
                        "hi": 2,
                        "override": override,
                    }
                )
            elif kind == "axis":
                out.append(
                    {
                        "name": name,
                        "kind": "axis",
                        "default": 1.0,
                        "lo": 0.5,
                        "hi": 2.0,
                        "override": "vector",
                    }
                )
            else:
                lo, hi = r.choice(((0.1, 2.0), (-1.0, 1.0), (0.5, 3.0)))
                default = round(r.uniform(lo, hi), 2)
                override = round(r.uniform(lo, hi), 3)
                out.append(
                    {
                        "name": name,
                        "kind": "real",
                        "default": default,
                        "lo": lo,
                        "hi": hi,
                        "override": override,
                        "domain": r.random() < 0.8,
                    }
                )
        return out

    def _leaf_list_param(self, p: dict[str, Any]) -> None:
        leaf = G(["par", p["name"]], p["kind"] == "axis", p["lo"], p["hi"], False)
        if p["kind"] == "int":
            self.int_leaves.append(leaf)
        self._leaf_list(leaf).append(leaf)

    def _locals(self, loss: dict[str, Any]) -> None:
        for i in range(self.r.choice((0, 1, 1, 2))):
            g = self.real(self.r.randint(1, 2), "may")
            loss["locals"].append([f"u{i}", g.t])
            leaf = G(["let", f"u{i}"], g.axis, g.lo, g.hi, g.var)
            if has_total(g.t):
                self.local_totals.add(f"u{i}")
            # Listed twice: a local is picked more often than an input, so it is used repeatedly.
            self._leaf_list(leaf).extend([leaf, leaf])

    def _helper(self) -> dict[str, Any]:
        """A small per-sample loss `helper(a, b; s)` that the main loss calls."""
        saved = (self.leaves, self.axis_leaves, self.int_leaves, self.has_axis)
        self.leaves = [
            G(["in", "a"], False, -2, 2, True),
            G(["in", "b"], False, -2, 2, True),
            G(["par", "s"], False, 0.5, 2.0, False),
        ]
        self.axis_leaves, self.int_leaves, self.has_axis = [], [], False
        self.allow_totals = False
        body = self.real(2, "no")
        self.leaves, self.axis_leaves, self.int_leaves, self.has_axis = saved
        return {"value": body.t, "lo": body.lo, "hi": body.hi}

    def _weight(self, loss: dict[str, Any]) -> G:
        """A non-negative per-sample weight from labels, parameters and non-wrt inputs."""
        keep = {i["name"] for i in loss["inputs"]} - set(loss["wrt"])
        saved = (self.leaves, self.axis_leaves)
        self.leaves = [g for g in self.leaves if g.t[0] != "in" or g.t[1] in keep]
        self.axis_leaves = [g for g in self.axis_leaves if g.t[0] != "in" or g.t[1] in keep]
        self.allow_totals = False
        base = self.pos(self.real(1, "no")) if self.r.random() < 0.6 else self.const_pos()
        if self.int_leaves and self.r.random() < 0.6:
            zero = G(["num", 0], False, 0, 0, False)
            base = self._where(self.cond(1, "no"), zero, base) if self.r.random() < 0.5 else base
        self.leaves, self.axis_leaves = saved
        return _iv(base.t, False, 0.0, base.hi, base.var)

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


def names_in(t: Any, op: str) -> set[str]:
    """The names of `[op, name]` leaves anywhere in a tree (or list of trees)."""
    if isinstance(t, list):
        if len(t) == 2 and t[0] == op and isinstance(t[1], str):
            return {t[1]}
        return set().union(*(names_in(x, op) for x in t)) if t else set()
    if isinstance(t, dict):
        return set().union(*(names_in(x, op) for x in t.values())) if t else set()
    return set()


def nests_totals(loss: dict[str, Any]) -> bool:
    """Whether a total contains another (after inlining locals): main rejects that at check."""
    lets = dict(loss["locals"])

    def walk(t: Any, inside: bool) -> bool:
        if not isinstance(t, list):
            return isinstance(t, dict) and any(walk(x, inside) for x in t.values())
        if t[:1] == ["let"]:
            return walk(lets[t[1]], inside)
        if t[:2] == ["fn", "total"]:
            return inside or walk(t[2], True)
        return any(walk(x, inside) for x in t)

    return walk(loss["value"], False)


def has_total(t: Any) -> bool:
    if isinstance(t, list):
        return (len(t) > 1 and t[:2] == ["fn", "total"]) or any(has_total(x) for x in t)
    return isinstance(t, dict) and any(has_total(x) for x in t.values())


def generate(seed: int, features: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The case drawn from `seed`."""
    return Generator(seed, features).case()
