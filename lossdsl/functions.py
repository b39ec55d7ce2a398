"""The table of built-in functions: the one place a function of the language is defined.

Each row gives a name, an arity, the kinds of its arguments and result, and a SymPy builder.
Elementwise builders take SymPy arguments; axis builders (`sum[C]`, `softmax[C]`, ...) and
`total` receive a `LoweringContext` that lifts reductions into named aggregates. `check.py`
reads arity and kinds from here; `lower.py` calls the builders. Adding a row is all a new
function needs when it is built from existing primitives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sympy as sp

    from lossdsl import primitives as P
else:

    class _Lazy:
        """A module imported on first attribute access: checking specs never loads SymPy."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            return getattr(importlib.import_module(self._name), attr)

    sp = _Lazy("sympy")
    P = _Lazy("lossdsl.primitives")


class LoweringContext(Protocol):
    """What builders may ask of the lowering stage."""

    @property
    def axis_size(self) -> sp.Expr: ...

    def varying(self, expr: sp.Expr) -> bool:
        """Whether `expr` depends on an input (not only on parameters and constants)."""
        ...

    def row_sum(self, expr: sp.Expr, positive: bool = False) -> sp.Expr: ...

    def row_max(self, expr: sp.Expr, differentiable: bool = True) -> sp.Expr: ...

    def total(self, expr: sp.Expr) -> sp.Expr: ...


Builder = Callable[..., Any]  # returns a SymPy expression


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int
    arg_kinds: tuple[str, ...]
    result: str
    build: Builder
    doc: str

    def arg_kind(self, position: int) -> str:
        return self.arg_kinds[min(position, len(self.arg_kinds) - 1)]


@dataclass(frozen=True)
class AxisFunction:
    name: str
    reduces: bool
    build: Callable[[LoweringContext, sp.Expr], sp.Expr]
    doc: str


def _unary(module: Any, name: str) -> Builder:
    """A one-argument builder calling `module.name`, looked up only when lowering."""
    return lambda ctx, x: getattr(module, name)(x)


def _max(ctx: LoweringContext, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    # A constant operand makes this a clamp, whose gradient passes 1 at the tie and 0 at NaN,
    # whose value is NaN at NaN (torch.clamp); two varying operands split the gradient at a
    # tie (torch.maximum).
    if not ctx.varying(b):
        return a if b == -sp.oo else P.Where(relation(sp.GreaterThan, a, b), a, P.NanOr(b, a))
    if not ctx.varying(a):
        return b if a == -sp.oo else P.Where(relation(sp.GreaterThan, b, a), b, P.NanOr(a, b))
    return P.Maximum(a, b)


def _min(ctx: LoweringContext, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    if not ctx.varying(b):
        return a if b == sp.oo else P.Where(relation(sp.LessThan, a, b), a, P.NanOr(b, a))
    if not ctx.varying(a):
        return b if a == sp.oo else P.Where(relation(sp.LessThan, b, a), b, P.NanOr(a, b))
    return P.Minimum(a, b)


def relation(cls: Any, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """`cls(a, b)`; unevaluated where SymPy's assumptions wrongly call an operand non-real
    (nested selects of primitives: it raises "Invalid comparison of non-real")."""
    try:
        return cls(a, b)
    except TypeError:
        return cls(a, b, evaluate=False)


def _clip(ctx: LoweringContext, x: sp.Expr, low: sp.Expr, high: sp.Expr) -> sp.Expr:
    # torch.clamp: gradient 1 on the closed interval [low, high], 0 at NaN; NaN stays NaN.
    # Both arms keep NaN. An open end (low = -inf, high = inf) has no arm: SymPy cannot always
    # fold `x >= -oo` (x = xlogy(...) is not known real), and an infinite constant left in the
    # formulas is rejected.
    inside = x if high == sp.oo else P.Where(relation(sp.LessThan, x, high), x, P.NanOr(high, x))
    if low == -sp.oo:
        return inside
    return P.Where(relation(sp.GreaterThan, x, low), inside, P.NanOr(low, x))


def _relu(ctx: LoweringContext, x: sp.Expr) -> sp.Expr:
    # max(x, 0) with gradient 0 at x == 0 (torch.relu); NaN stays NaN, gradient 0 as a clamp's.
    return P.Where(sp.StrictGreaterThan(x, 0), x, P.NanOr(sp.S.Zero, x))


def _logsumexp_parts(ctx: LoweringContext, x: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    # Shift by the row maximum so no exp overflows; the shift cancels exactly, so it is not
    # differentiated (it only selects a numerically safe form).
    shift = ctx.row_max(x, differentiable=False)
    return shift, ctx.row_sum(sp.exp(x - shift), positive=True)


def _logsumexp(ctx: LoweringContext, x: sp.Expr) -> sp.Expr:
    shift, total = _logsumexp_parts(ctx, x)
    return shift + sp.log(total)


def _softmax(ctx: LoweringContext, x: sp.Expr) -> sp.Expr:
    shift, total = _logsumexp_parts(ctx, x)
    return sp.exp(x - shift) / total


def _log_softmax(ctx: LoweringContext, x: sp.Expr) -> sp.Expr:
    shift, total = _logsumexp_parts(ctx, x)
    return x - shift - sp.log(total)


R = ("real",)

FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("abs", 1, 1, R, "real", _unary(P, "Abs"), "|x|; gradient sign(x), 0 at 0"),
        Function("sign", 1, 1, R, "real", _unary(P, "Sign"), "-1, 0 or 1"),
        Function("sqrt", 1, 1, R, "real", _unary(P, "SafeSqrt"), "square root; gradient 0 at 0"),
        Function("square", 1, 1, R, "real", lambda ctx, x: x**2, "x^2"),
        Function("exp", 1, 1, R, "real", _unary(sp, "exp"), "e^x"),
        Function("log", 1, 1, R, "real", _unary(sp, "log"), "natural logarithm"),
        Function("log1p", 1, 1, R, "real", _unary(P, "Log1p"), "log(1 + x), accurate near 0"),
        Function("expm1", 1, 1, R, "real", _unary(P, "Expm1"), "exp(x) - 1, accurate near 0"),
        Function("tanh", 1, 1, R, "real", _unary(sp, "tanh"), "hyperbolic tangent"),
        Function("cosh", 1, 1, R, "real", _unary(sp, "cosh"), "hyperbolic cosine"),
        Function("sinh", 1, 1, R, "real", _unary(sp, "sinh"), "hyperbolic sine"),
        Function("sin", 1, 1, R, "real", _unary(sp, "sin"), "sine"),
        Function("cos", 1, 1, R, "real", _unary(sp, "cos"), "cosine"),
        Function("logcosh", 1, 1, R, "real", _unary(P, "LogCosh"), "log(cosh(x)), no overflow"),
        Function("sigmoid", 1, 1, R, "real", _unary(P, "Sigmoid"), "1 / (1 + exp(-x))"),
        Function("softplus", 1, 1, R, "real", _unary(P, "Softplus"), "log(1 + exp(x)), stable"),
        Function("log_sigmoid", 1, 1, R, "real", _unary(P, "LogSigmoid"), "log(sigmoid(x))"),
        Function("relu", 1, 1, R, "real", _relu, "max(x, 0); gradient 0 at 0"),
        Function("xlogy", 2, 2, R, "real", lambda ctx, x, y: P.Xlogy(x, y), "x*log(y), 0 at x=0"),
        Function(
            "stop_gradient",
            1,
            1,
            R,
            "real",
            _unary(P, "StopGradient"),
            "the value of x, differentiated as a constant",
        ),
        Function(
            "binary_xent",
            2,
            2,
            R,
            "real",
            lambda ctx, p, t: P.BinaryCrossEntropy(p, t, sp.Integer(-100)),
            "torch binary_cross_entropy(p, t): logs clamped at -100, torch's backward",
        ),
        Function("min", 2, 2, R, "real", _min, "smaller of two values"),
        Function("max", 2, 2, R, "real", _max, "larger of two values"),
        Function("clip", 3, 3, R, "real", _clip, "clip(x, low, high), as torch.clamp"),
        Function(
            "where",
            3,
            3,
            ("bool", "real", "real"),
            "real",
            lambda ctx, c, a, b: P.Where(c, a, b),
            "where(cond, a, b): a where cond holds, else b; the other branch never leaks NaN",
        ),
        Function(
            "total",
            1,
            1,
            R,
            "real",
            lambda ctx, x: ctx.total(x),
            "sum over the whole batch (non-decomposable losses such as Dice)",
        ),
    ]
}

AXIS_FUNCTIONS: dict[str, AxisFunction] = {
    f.name: f
    for f in [
        AxisFunction("sum", True, lambda ctx, x: ctx.row_sum(x), "sum along the axis"),
        AxisFunction(
            "mean", True, lambda ctx, x: ctx.row_sum(x) / ctx.axis_size, "mean along the axis"
        ),
        AxisFunction("max", True, lambda ctx, x: ctx.row_max(x), "maximum along the axis"),
        AxisFunction("min", True, lambda ctx, x: -ctx.row_max(-x), "minimum along the axis"),
        AxisFunction(
            "norm",
            True,
            lambda ctx, x: P.SafeSqrt(ctx.row_sum(x**2)),
            "Euclidean norm along the axis; gradient 0 at the zero vector",
        ),
        AxisFunction("logsumexp", True, _logsumexp, "log(sum(exp(x))), max-shifted"),
        AxisFunction("softmax", False, _softmax, "exp(x) / sum(exp(x)), max-shifted"),
        AxisFunction("log_softmax", False, _log_softmax, "x - logsumexp(x)"),
    ]
}

CONSTANTS: dict[str, float] = {"pi": 3.141592653589793, "e": 2.718281828459045, "inf": float("inf")}
