"""The independent reference: a generated tree evaluated by PyTorch, differentiated by autograd.

It reads the generator's own trees (never lossdsl's IR, lowering, derivation or kernels): each
node maps to the torch function with the documented meaning (`torch.amax` for `max[C]`, which
splits tied maxima evenly as the README says; `torch.clamp` for `clip`; `torch.maximum` for
`max` of two values). Per-sample values are (B, 1) tensors and axis values (B, C), so they
broadcast as in the language. Frequency weights follow the lead's semantics: a sample with
weight w counts w times in the reduction and in every batch total, and a zero weight removes it.
The Hessian diagonal is exact: one double-backward pass per element (batches are tiny).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tests.fuzz.gen import INPUT_RANGES, Tree

Arrays = dict[str, np.ndarray]


@dataclass
class Data:
    """One call: inputs, parameter values, sample weights, cotangent, and the sample holding a
    NaN input (its gradient row is not compared: what autograd gives at NaN is not a spec)."""

    inputs: Arrays
    params: dict[str, Any]
    sample_weight: np.ndarray | None
    cotangent: np.ndarray | None
    nan_sample: int | None = None


def draw(case: dict[str, Any]) -> tuple[Data, Data]:
    """The call's data with parameters overridden, and the same data at the defaults."""
    call, loss = case["call"], case["loss"]
    rng = np.random.default_rng(call["data_seed"])
    b, c = call["batch"], call["classes"]
    inputs: Arrays = {}
    for inp in loss["inputs"]:
        if inp["kind"] == "int":
            inputs[inp["name"]] = rng.integers(0, c if loss["axis"] else 3, size=b)
        else:
            lo, hi = INPUT_RANGES[inp["range"]]
            inputs[inp["name"]] = rng.uniform(lo, hi, size=(b, c) if inp["axis"] else b)
    nan_sample = None
    if call.get("nan"):
        reals = [i["name"] for i in loss["inputs"] if i["kind"] == "real"]
        target = inputs[reals[int(rng.integers(len(reals)))]]
        k = int(rng.integers(target.size))
        target.reshape(-1)[k] = np.nan
        nan_sample = k // (target.size // b)
    over: dict[str, Any] = {}
    for p in loss["params"]:
        if p["kind"] == "axis":
            over[p["name"]] = rng.uniform(p["lo"], p["hi"], size=c)
        else:
            over[p["name"]] = p["override"]
    sw = None
    if call["sample_weight"] is not None:
        sw = rng.uniform(0.5, 2.0, size=b)
        if call["sample_weight"] == "zeros":
            sw[rng.random(b) < 0.4] = 0.0
            sw[int(rng.integers(b))] = 1.0  # never all zero
    cot = rng.normal(size=b) if call.get("cotangent") else None
    defaults = {p["name"]: p["default"] for p in loss["params"]}
    return Data(inputs, over, sw, cot, nan_sample), Data(inputs, defaults, sw, cot, nan_sample)


@dataclass
class Reference:
    value: np.ndarray
    grads: list[np.ndarray]
    hess: list[np.ndarray]


def reference(
    case: dict[str, Any], data: Data, dtype: torch.dtype = torch.float64, hess: bool = True
) -> Reference:
    """Value, gradient of every wrt input and (optionally) the Hessian diagonal."""
    loss = case["loss"]
    b = case["call"]["batch"]
    env: dict[str, Any] = {}
    wrt: list[torch.Tensor] = []
    for inp in loss["inputs"]:
        a = data.inputs[inp["name"]]
        if inp["kind"] == "int":
            env["in:" + inp["name"]] = torch.tensor(a, dtype=dtype).reshape(b, 1)
            continue
        t = torch.tensor(a, dtype=dtype).reshape(b, -1).clone()
        if inp["name"] in loss["wrt"]:
            t.requires_grad_(True)
        env["in:" + inp["name"]] = t
    wrt = [env["in:" + n] for n in loss["wrt"]]
    for p in loss["params"]:
        v = torch.tensor(np.asarray(data.params[p["name"]], np.float64), dtype=dtype)
        env["par:" + p["name"]] = v.reshape(1, -1) if p["kind"] == "axis" else v
    env["axis"] = torch.tensor(float(case["call"]["classes"]), dtype=dtype)
    ev = _Eval(case, env, b, dtype)
    w = ev.weights(data)
    per_sample = ev.per_sample(loss["value"])
    objective, value = _reduce(case, per_sample, w, data)
    grads = _grads(objective, wrt)
    hd = [_hess_diag(g, x) for g, x in zip(grads, wrt, strict=True)] if hess else []
    shape = [tuple(data.inputs[n].shape) for n in loss["wrt"]]
    return Reference(
        value.detach().numpy().astype(np.float64),
        [
            g.detach().numpy().reshape(s).astype(np.float64)
            for g, s in zip(grads, shape, strict=True)
        ],
        [h.reshape(s) for h, s in zip(hd, shape, strict=False)],
    )


def _reduce(
    case: dict[str, Any], loss: torch.Tensor, w: torch.Tensor | None, data: Data
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the scalar differentiated, the value returned)."""
    mode = case["call"]["reduction"] or case["loss"]["reduce"]
    out = loss if w is None else torch.where(w == 0, torch.zeros_like(loss), w * loss)
    if mode == "none":
        if data.cotangent is not None:
            c = torch.tensor(data.cotangent, dtype=loss.dtype)
            return (c * out).sum(), out
        return out.sum(), out
    if mode == "sum":
        return out.sum(), out.sum()
    denom = w.sum() if w is not None else torch.tensor(float(loss.shape[0]), dtype=loss.dtype)
    if float(denom) == 0.0:
        # An all-zero-weight mean is NaN (0/0, as PyTorch) with a zero gradient (README).
        return out.sum() * 0.0, torch.tensor(math.nan, dtype=loss.dtype)
    return out.sum() / denom, out.sum() / denom


def _grads(objective: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    if not objective.requires_grad:
        return [torch.zeros_like(x) for x in wrt]
    got = torch.autograd.grad(objective, wrt, create_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, wrt, strict=True)]


def _hess_diag(g: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    flat = g.reshape(-1)
    out = np.zeros(flat.numel())
    if not flat.requires_grad:
        return out
    for k in range(flat.numel()):
        (row,) = torch.autograd.grad(flat[k], x, retain_graph=True, allow_unused=True)
        out[k] = 0.0 if row is None else float(row.reshape(-1)[k])
    return out


class _Eval:
    """Evaluates trees in one environment; locals are evaluated once and reused."""

    def __init__(self, case: dict[str, Any], env: dict[str, Any], b: int, dtype: torch.dtype):
        self.case, self.env, self.b, self.dtype = case, env, b, dtype
        self.lets = dict(case["loss"]["locals"])
        self.total_w: torch.Tensor | None = None

    def weights(self, data: Data) -> torch.Tensor | None:
        """Per-sample frequency weights (B, 1): the spec's weight times sample_weight."""
        w = None
        if self.case["loss"].get("weight") is not None:
            w = self.per_sample(self.case["loss"]["weight"]).detach().reshape(self.b, 1)
        if data.sample_weight is not None:
            sw = torch.tensor(data.sample_weight, dtype=self.dtype).reshape(self.b, 1)
            w = sw if w is None else w * sw
        self.total_w = w
        return None if w is None else w.reshape(self.b)

    def per_sample(self, t: Tree) -> torch.Tensor:
        v = self.ev(t)
        return torch.broadcast_to(v, (self.b, 1)).reshape(self.b)

    def const(self, v: float) -> torch.Tensor:
        return torch.tensor(float(v), dtype=self.dtype)

    def ev(self, t: Tree) -> torch.Tensor:
        op = t[0]
        if op in ("num", "int"):
            return self.const(t[1])
        if op == "const":
            return self.const({"pi": math.pi, "e": math.e, "inf": math.inf}[t[1]])
        if op in ("in", "par"):
            return self.env[f"{op}:{t[1]}"]
        if op == "axis":
            return self.env["axis"]
        if op == "let":
            key = "let:" + t[1]
            if key not in self.env:
                self.env[key] = self.ev(self.lets[t[1]])
            return self.env[key]
        if op == "neg":
            return -self.ev(t[1])
        if op == "bin" and t[1] in ("+", "-"):
            kept = self.cancelled(t)
            if kept is not None:  # README: identities are exact, a - (b + a) is -b even for NaN
                return sum((s * self.ev(u) for s, u in kept), self.const(0.0))
        if self.zero(t):
            return self.const(0.0)  # README: identities are exact, x - x is 0 even for NaN
        if op == "bin" and t[1] == "/" and self.same(t[2], t[3]):
            return self.const(1.0)  # README: x / x is 1, even for NaN or 0
        if op == "bin":
            return _BIN[t[1]](self.ev(t[2]), self.ev(t[3]))
        if op == "cmp" and self.same(t[2], t[3]):
            return torch.tensor(t[1] in ("<=", ">=", "=="))  # x >= x is true even for NaN
        if op == "cmp":
            return _CMP[t[1]](self.ev(t[2]), self.ev(t[3]))
        if op == "and":
            return torch.logical_and(self.ev(t[1]), self.ev(t[2]))
        if op == "or":
            return torch.logical_or(self.ev(t[1]), self.ev(t[2]))
        if op == "not":
            return torch.logical_not(self.ev(t[1]))
        if op == "ax" and t[1] in ("sum", "mean") and self.softmax(t[2]):
            # README: the row sum of a softmax is 1, exactly, even for NaN
            return self.const(1.0 if t[1] == "sum" else 1.0 / self.case["call"]["classes"])
        if op == "ax":
            return _axis(t[1], self.rows(self.ev(t[2])))
        if op == "gather":
            x = self.rows(self.ev(t[1]))
            idx = torch.broadcast_to(self.ev(t[2]), (self.b, 1)).long()
            return torch.gather(x, -1, idx)
        if op == "call":
            return self.call(t)
        if op == "fn" and t[1] == "total":
            return self.total(self.ev(t[2]))
        if op == "fn":
            return _FN[t[1]](*[self.ev(a) for a in t[2:]])
        raise ValueError(f"unknown node {op!r}")

    def zero(self, t: Tree) -> bool:
        """Whether `t` is zero by an identity lossdsl's simplification applies whatever the
        inputs hold, NaN included: `x - x`, a product with such a factor or a positive power of
        it, a zero over anything, a function that is 0 at 0 of such a term."""
        if t[0] == "let":
            return self.zero(self.lets[t[1]])
        if t[0] == "num":
            return bool(t[1] == 0)
        if t[0] == "neg":
            return self.zero(t[1])
        if t[0] == "fn" and t[1] in _ZERO_AT_ZERO:  # tanh(x - x) is tanh(0), 0
            return self.zero(t[2])
        if t[0] == "fn" and t[1] in _ZERO_IF_ALL_ZERO:
            return all(self.zero(a) for a in t[2:])
        if t[0] == "fn" and t[1] == "where":
            return self.zero(t[3]) and self.zero(t[4])
        if t[0] == "ax" and t[1] in ("sum", "mean", "max", "min", "norm"):
            return self.zero(t[2])
        if t[0] != "bin":
            return False
        if t[1] == "-":
            return self.same(t[2], t[3]) or (self.zero(t[2]) and self.zero(t[3]))
        if t[1] == "*":
            return self.zero(t[2]) or self.zero(t[3])
        if t[1] == "/":
            return self.zero(t[2])
        if t[1] == "^":  # exponents are positive numbers or parameters by construction
            return self.zero(t[2]) and (t[3][0] == "par" or (t[3][0] == "num" and t[3][1] > 0))
        return t[1] == "+" and self.zero(t[2]) and self.zero(t[3])

    def cancelled(self, t: Tree) -> list[tuple[int, Any]] | None:
        """The terms of the sum `t` left once equal terms of opposite signs cancel, as SymPy's
        flattening of sums cancels them; None where nothing cancels."""
        signs: dict[str, list[int]] = {}
        trees: dict[str, Any] = {}
        for s, u in self.addends(t):
            key = repr(u)
            signs.setdefault(key, []).append(s)
            trees[key] = u
        if not any(1 in v and -1 in v for v in signs.values()):
            return None
        return [(sum(v), _ungroup(trees[k])) for k, v in signs.items() if sum(v) != 0]

    def addends(self, t: Tree) -> list[tuple[int, Any]]:
        """`t` as signed terms, locals written out; an operand of `+`/`-` that is a difference
        of inputs stays one term (lossdsl keeps it grouped, in written order: README)."""
        if t[0] == "let":
            return self.addends(self.lets[t[1]])
        if t[0] == "neg":
            return [(-s, u) for s, u in self.addends(t[1])]
        if t[0] == "bin" and t[1] in ("+", "-"):
            k = 1 if t[1] == "+" else -1
            return [*self.operand(t[2]), *[(k * s, u) for s, u in self.operand(t[3])]]
        return [(1, self.expand(t))]

    def operand(self, t: Tree) -> list[tuple[int, Any]]:
        terms = self.addends(t)
        names = [repr(u) for _, u in terms]
        if (
            len(terms) >= 2
            and all(u[0] == "in" for _, u in terms)
            and len(set(names)) == len(names)
            and any(s < 0 for s, _ in terms)
        ):
            return [(1, ["grouped", self.expand(t)])]
        return terms

    def softmax(self, t: Tree) -> bool:
        """Whether `t` is a softmax along the axis, written out or as exp(log_softmax)."""
        full = self.expand(t)
        return bool(
            full[:2] == ["ax", "softmax"]
            or (full[:2] == ["fn", "exp"] and full[2][:2] == ["ax", "log_softmax"])
        )

    def same(self, a: Tree, b: Tree) -> bool:
        """Whether two trees are one expression once locals are written out."""
        return self.expand(a) == self.expand(b)

    def expand(self, t: Tree) -> Any:
        if not isinstance(t, list):
            return t
        if t[0] == "let":
            return self.expand(self.lets[t[1]])
        return [self.expand(a) for a in t]

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """A value as a full (B, C) tensor: an expression without the axis (a constant, a
        per-sample value) is broadcast along it, as the language does (`sum[C](1)` is C)."""
        return torch.broadcast_to(x, (self.b, self.case["call"]["classes"]))

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i w_i x_i over the batch; an axis value keeps its axis (per-class totals)."""
        width = x.shape[-1] if x.dim() == 2 else 1
        full = torch.broadcast_to(x, (self.b, width))
        if self.total_w is not None:
            w = self.total_w
            full = torch.where(w == 0, torch.zeros_like(full), w * full)
        return full.sum(0, keepdim=True)

    def call(self, t: Tree) -> torch.Tensor:
        helper = self.case["helper"]
        inner = _Eval(self.case, dict(self.env), self.b, self.dtype)
        inner.lets = {}
        inner.total_w = self.total_w
        inner.env["in:a"], inner.env["in:b"] = self.ev(t[1][0]), self.ev(t[1][1])
        inner.env["par:s"] = self.ev(t[2]["s"]) if "s" in t[2] else self.const(1.0)
        return inner.ev(helper["value"])


# Functions lossdsl folds to 0 at a zero (first) argument, and those at all-zero arguments.
_ZERO_AT_ZERO = frozenset(
    [
        "abs",
        "sign",
        "sqrt",
        "square",
        "expm1",
        "log1p",
        "tanh",
        "sinh",
        "sin",
        "relu",
        "stop_gradient",
        "xlogy",
    ]
)
_ZERO_IF_ALL_ZERO = frozenset(("min", "max", "clip"))


def _ungroup(t: Any) -> Any:
    return t[1] if t[0] == "grouped" else t


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b)


_BIN = {
    "+": torch.add,
    "-": torch.sub,
    "*": torch.mul,
    "/": torch.div,
    "^": _pow,
}
_CMP = {
    "<": torch.lt,
    "<=": torch.le,
    ">": torch.gt,
    ">=": torch.ge,
    "==": torch.eq,
    "!=": torch.ne,
}


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(x, torch.zeros_like(x))


def _bxent(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # torch.nn.functional.binary_cross_entropy's element: logs clamped at -100.
    return -(
        t * torch.clamp(torch.log(p), min=-100) + (1 - t) * torch.clamp(torch.log1p(-p), min=-100)
    )


_FN = {
    "abs": torch.abs,
    # lossdsl's sign(NaN) is NaN (NumPy, JAX; README "Numerical conventions"); torch's is 0.
    "sign": lambda x: torch.where(torch.isnan(x), x, torch.sign(x)),
    "sqrt": torch.sqrt,
    "square": lambda x: x * x,
    "exp": torch.exp,
    "log": torch.log,
    "log1p": torch.log1p,
    "expm1": torch.expm1,
    "tanh": torch.tanh,
    "cosh": torch.cosh,
    "sinh": torch.sinh,
    "sin": torch.sin,
    "cos": torch.cos,
    "logcosh": lambda x: torch.logaddexp(x, -x) - math.log(2.0),
    "sigmoid": torch.sigmoid,
    "softplus": _softplus,
    "log_sigmoid": lambda x: -_softplus(-x),
    "relu": torch.relu,
    "stop_gradient": lambda x: x.detach(),
    "xlogy": torch.xlogy,
    "binary_xent": _bxent,
    "min": torch.minimum,
    "max": torch.maximum,
    "clip": lambda x, lo, hi: torch.clamp(*torch.broadcast_tensors(x, lo, hi)),
    "where": lambda c, a, b: torch.where(c, a, b),
}


def _axis(fn: str, x: torch.Tensor) -> torch.Tensor:
    if fn == "sum":
        return x.sum(-1, keepdim=True)
    if fn == "mean":
        return x.mean(-1, keepdim=True)
    if fn == "max":
        return torch.amax(x, -1, keepdim=True)
    if fn == "min":
        return torch.amin(x, -1, keepdim=True)
    if fn == "norm":
        # lossdsl takes sqrt'(0) as 0 (README): a row of zeros has zero gradient and Hessian,
        # where torch's double backward of vector_norm gives NaN.
        ss = (x * x).sum(-1, keepdim=True)
        return torch.where(ss > 0, torch.sqrt(torch.where(ss > 0, ss, 1.0)), 0.0 * ss)
    if fn == "logsumexp":
        return torch.logsumexp(x, -1, keepdim=True)
    if fn == "softmax":
        return torch.softmax(x, -1)
    if fn == "log_softmax":
        return torch.log_softmax(x, -1)
    raise ValueError(fn)
