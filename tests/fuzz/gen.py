"""Random well-typed loss specs as JSON-able cases: the generator's declarations half.

A case is a dict: the loss (inputs, params, locals, value tree, weight tree, reduction, wrt),
an optional helper loss it calls, how it is called (batch, classes, reduction, sample weights,
parameter overrides, data seed) and the features it assumes. Trees are nested lists
`[op, ...]` (tests/fuzz/exprs.py draws them, in safe domains by construction) so a case can be
saved as JSON, minimised by editing lists, and evaluated by the independent oracle.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.exprs import AXIS_REDUCE, CMAX, INPUT_RANGES, Expressions, G, Tree, _iv

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "INPUT_RANGES",
    "Tree",
    "generate",
    "names_in",
    "nests_totals",
]

# Optional constructs. Nested totals are rejected at check time (a located error), so a
# campaign with them tests that rejection; the default campaign draws every other one.
FEATURES = ("perclass", "wtotals", "nested", "cotangent", "nan")
DEFAULT_FEATURES = ("perclass", "wtotals", "cotangent", "nan")
_SMOOTH = ("tanh", "sin", "cos", "logcosh", "sigmoid", "softplus", "log_sigmoid")


class Generator(Expressions):
    """Draws one case from a seed."""

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
