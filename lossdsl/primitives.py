"""Stable SymPy primitives that lossdsl owns, each with its own derivative.

SymPy's built-ins differentiate `Abs`, `sign`, `Max` and `Piecewise` into `sign`, `DiracDelta`
and `Heaviside`, which no kernel can print and which leak NaN at kinks. The classes here replace
them: `Where` is a select whose derivative is the select of the derivatives (so no NaN crosses
from the branch not taken), and each stable function (softplus, log_sigmoid, log1p, ...) names
a numerically safe form that the printers emit. Nothing here knows about kernels or the IR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import sympy as sp
from sympy.core.evalf import prec_to_dps
from sympy.core.function import ArgumentIndexError

# Derivation installs a check here (derive.py: its deadline). SymPy recurses through the
# derivatives of these classes, so the check runs inside one long `sp.diff` call too.
_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("lossdsl_diff_check", default=None)


@contextmanager
def checked(check: Callable[[], None]) -> Iterator[None]:
    """Run `check` (which may raise) at every derivative of a primitive inside the block."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def _run_check() -> None:
    check = _CHECK.get()
    if check is not None:
        check()


class Primitive(sp.Function):
    """A function lossdsl owns; its derivative runs the installed check first.

    A call of numbers has a numeric value (`evalf`), from the exact elementary form each class
    gives in `exact`: lowering folds it to a float or rejects it (`bce(10, 10)` is undefined,
    not a silent NaN), and SymPy never expands a power of an unevaluated call into its real
    and imaginary parts (`bce(10, 10)^308` took 25 s).
    """

    def _eval_derivative(self, s: sp.Symbol) -> sp.Expr:
        _run_check()
        return super()._eval_derivative(s)

    def exact(self) -> sp.Expr | None:
        """The call as elementary SymPy functions of its arguments; None where it has none."""
        return None

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        if not all(a.is_number for a in self.args):
            return None
        exact = self.exact()
        if exact is None:
            return None
        value = exact.evalf(prec_to_dps(prec))
        # A complex value (log of a negative) is none the kernels could compute: NaN, which
        # lowering rejects with the call's place, as it does an infinite one.
        return value if value.is_Number else sp.nan


class Where(Primitive):
    """`where(cond, a, b)`: a select; derivative selects the branch derivatives."""

    nargs = 3
    # A number, whatever its condition: SymPy leaves a relational argument's commutativity
    # unknown, and a factor of unknown commutativity is kept apart in products, so the
    # derivative of w**2 stayed 2 w**2 w' / w, NaN where the select is 0.
    is_commutative = True

    @classmethod
    def eval(cls, cond: Any, a: Any, b: Any) -> Any:
        if cond is sp.true:
            return a
        if cond is sp.false:
            return b
        if a == b:
            return a
        return None

    def _eval_derivative(self, s: sp.Symbol) -> sp.Expr:
        _run_check()
        cond, a, b = self.args
        return Where(cond, sp.diff(a, s), sp.diff(b, s))

    def _eval_is_real(self) -> bool | None:
        return fuzzy_all(self.args[1:], "is_real")


def _reals(args: Any) -> list[sp.Expr]:
    """The numeric arguments of a call as floats, NaN for any that has no real value."""
    values = [a.evalf(30) for a in args]
    return [v if v.is_Number else sp.nan for v in values]


def _max_or_nan(extremum: type[sp.Max] | type[sp.Min], args: Any) -> sp.Expr:
    """Max or Min of numeric arguments; NaN propagates (torch.maximum), SymPy would raise."""
    values = _reals(args)
    return sp.nan if sp.nan in values else extremum(*values)


def fuzzy_all(args: Any, attr: str) -> bool | None:
    values = [getattr(a, attr) for a in args]
    if all(v is True for v in values):
        return True
    return None


class _Elementwise(Primitive):
    """One real argument, real result; subclasses define `fdiff`."""

    nargs = 1

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real  # type: ignore[no-any-return]


class Sign(_Elementwise):
    """sign(x) with sign(0) = 0; derivative 0 everywhere (a.e.), never DiracDelta."""

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_Number:
            return sp.sign(x)
        return None

    def exact(self) -> sp.Expr:
        return sp.sign(self.args[0])

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


class Abs(_Elementwise):
    """|x|; derivative sign(x), which is 0 at 0 as in PyTorch."""

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_Number:
            return abs(x)
        if isinstance(x, Abs):
            return x
        return None

    def exact(self) -> sp.Expr:
        return sp.Abs(self.args[0])

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sign(self.args[0])

    def _eval_is_nonnegative(self) -> bool | None:
        return True if self.args[0].is_real else None


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), printed in a form that never overflows."""

    def exact(self) -> sp.Expr:
        return 1 / (1 + sp.exp(-self.args[0]))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x = self.args[0]
        # sigmoid(x) * sigmoid(-x) instead of s * (1 - s): keeps e^-|x| accuracy for large |x|.
        return Sigmoid(x) * Sigmoid(-x)

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_real else None


class Softplus(_Elementwise):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): finite for every finite x."""

    def exact(self) -> sp.Expr:
        return sp.log(1 + sp.exp(self.args[0]))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sigmoid(self.args[0])

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_real else None


class LogSigmoid(_Elementwise):
    """log(sigmoid(x)) = -softplus(-x)."""

    def exact(self) -> sp.Expr:
        return -sp.log(1 + sp.exp(-self.args[0]))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return Sigmoid(-self.args[0])


class Log1p(_Elementwise):
    """log(1 + x), accurate for small x."""

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_zero:
            return sp.S.Zero
        return None

    def exact(self) -> sp.Expr:
        return sp.log(1 + self.args[0])

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return 1 / (1 + self.args[0])


class Expm1(_Elementwise):
    """exp(x) - 1, accurate for small x."""

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_zero:
            return sp.S.Zero
        return None

    def exact(self) -> sp.Expr:
        return sp.exp(self.args[0]) - 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.exp(self.args[0])


class LogCosh(_Elementwise):
    """log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log(2): no overflow of cosh."""

    def exact(self) -> sp.Expr:
        return sp.log(sp.cosh(self.args[0]))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.tanh(self.args[0])


class SafeSqrt(_Elementwise):
    """sqrt(x) whose derivative at 0 is taken as 0, so sqrt(r^2) and norm(0) give no NaN."""

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_Number and x >= 0:
            return sp.sqrt(x)
        return None

    def exact(self) -> sp.Expr:
        return sp.sqrt(self.args[0])

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x = self.args[0]
        return Where(sp.StrictGreaterThan(x, 0), 1 / (2 * SafeSqrt(x)), sp.S.Zero)

    def _eval_is_nonnegative(self) -> bool | None:
        return True


class Xlogy(Primitive):
    """x * log(y), defined as 0 where x == 0 (even at y == 0), as in PyTorch."""

    nargs = 2

    @classmethod
    def eval(cls, x: Any, y: Any) -> Any:
        if x.is_zero:
            return sp.S.Zero
        return None

    def exact(self) -> sp.Expr:
        x, y = self.args  # x == 0 never gets here: `eval` folds it to 0
        return x * sp.log(y)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, y = self.args
        zero = sp.Eq(x, 0)
        if argindex == 1:
            return Where(zero, sp.S.Zero, sp.log(y))
        if argindex == 2:
            return Where(zero, sp.S.Zero, x / y)
        raise ArgumentIndexError(self, argindex)

    def _eval_is_real(self) -> bool | None:
        return None


class Maximum(Primitive):
    """max(a, b) of two varying operands; at a tie each side gets half the gradient (torch)."""

    nargs = 2

    @classmethod
    def eval(cls, a: Any, b: Any) -> Any:
        if a == b:
            return a
        if a.is_Number and b.is_Number:
            return sp.Max(a, b)
        return None

    def exact(self) -> sp.Expr:
        return _max_or_nan(sp.Max, self.args)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        a, b = self.args
        if argindex == 2:
            a, b = b, a
        half = sp.Rational(1, 2)
        # A NaN operand gets the whole gradient (both tests fail), as torch.maximum's backward.
        return Where(sp.StrictLessThan(a, b), sp.S.Zero, Where(sp.Eq(a, b), half, sp.S.One))

    def _eval_is_real(self) -> bool | None:
        return fuzzy_all(self.args, "is_real")


class Minimum(Primitive):
    """min(a, b) of two varying operands; ties split the gradient like `Maximum`."""

    nargs = 2

    @classmethod
    def eval(cls, a: Any, b: Any) -> Any:
        if a == b:
            return a
        if a.is_Number and b.is_Number:
            return sp.Min(a, b)
        return None

    def exact(self) -> sp.Expr:
        return _max_or_nan(sp.Min, self.args)

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        a, b = self.args
        if argindex == 2:
            a, b = b, a
        half = sp.Rational(1, 2)
        return Where(sp.StrictGreaterThan(a, b), sp.S.Zero, Where(sp.Eq(a, b), half, sp.S.One))

    def _eval_is_real(self) -> bool | None:
        return fuzzy_all(self.args, "is_real")


class NanOr(Primitive):
    """`value`, or NaN where `witness` is NaN: the constant arm of a clamp, max(x, c) or min(x, c).

    A select `where(x >= c, x, c)` alone returns c for a NaN x; torch.clamp returns NaN. The arm
    is still differentiated as `value` (nothing flows to `witness`), so the clamp's gradient at
    NaN is the select's other branch, 0, as torch.clamp's backward gives.
    """

    nargs = 2

    @classmethod
    def eval(cls, value: Any, witness: Any) -> Any:
        if witness.is_Number and witness is not sp.nan:
            return value
        return None

    def exact(self) -> sp.Expr:
        value, witness = _reals(self.args)
        return sp.nan if witness is sp.nan else value

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex == 1:
            return sp.S.One
        if argindex == 2:
            return sp.S.Zero
        raise ArgumentIndexError(self, argindex)

    def _eval_is_real(self) -> bool | None:
        # Real as its operands are (a NaN witness is a run-time value, not a SymPy one); without
        # it SymPy stops cancelling powers of expressions that contain a clamp (d/dx of r^2
        # kept r^2 / r, which is 0/0 at r = 0).
        return fuzzy_all(self.args, "is_real")


class Grouped(_Elementwise):
    """The identity that keeps its argument, a difference of inputs, evaluated first.

    SymPy flattens and reorders sums, so `anchor - positive + eps` would become
    `(anchor + eps) - positive`: in float32, with anchor == positive, that is not eps and the
    gradient of the distance moves by percents. Grouped, the spec's association is kept, and the
    kernels round as frameworks that evaluate in written order do.
    """

    def exact(self) -> sp.Expr:
        return self.args[0]

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.One


class StopGradient(_Elementwise):
    """The identity whose derivative is 0 (jax.lax.stop_gradient, tf.stop_gradient).

    Lets a spec reproduce a framework that edits a value under `torch.no_grad()`, e.g. the
    variance clamp of gaussian_nll_loss, whose gradient passes straight through the clamp.
    """

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_Number:
            return x
        return None

    def exact(self) -> sp.Expr:
        return self.args[0]

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sp.S.Zero


# torch's binary_cross_entropy_backward divides by max(p (1 - p), EPSILON) with EPSILON the
# float32 1e-12 (9.999999960041972e-13): that exact value keeps the 1e12-sized gradients equal.
_BCE_EPS = sp.Rational(9.999999960041972e-13)


class BinaryCrossEntropy(Primitive):
    """-(t log p + (1 - t) log(1 - p)), each log clamped below at `floor`, as torch computes it.

    Arguments (p, t, floor). The derivative in p is torch's backward, (p - t) / max(p (1 - p),
    1e-12), not the derivative of the clamped value: at p = 0 or 1 (and below e^floor) the
    clamped logs are flat, while torch still pushes p towards t with a gradient of up to 1e12.
    """

    nargs = 3

    def exact(self) -> sp.Expr:
        p, t, floor = _reals(self.args)

        def clamped_log(x: sp.Expr) -> sp.Expr:  # torch: log(0) = -inf, clamped to the floor
            return floor if x.is_zero else _max_or_nan(sp.Max, [sp.log(x), floor])

        if sp.nan in (p, t, floor):
            return sp.nan
        return -(t * clamped_log(p) + (1 - t) * clamped_log(1 - p))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        p, t, floor = self.args
        if argindex == 1:
            pq = p * (1 - p)
            return Where(sp.StrictGreaterThan(pq, _BCE_EPS), (p - t) / pq, (p - t) / _BCE_EPS)
        if argindex == 2:
            log_p = sp.log(p)
            log_q = Log1p(-p)
            return Where(sp.GreaterThan(log_q, floor), log_q, floor) - Where(
                sp.GreaterThan(log_p, floor), log_p, floor
            )
        raise ArgumentIndexError(self, argindex)

    def _eval_is_real(self) -> bool | None:
        return None


class SafePow(Primitive):
    """x^g for a non-numeric exponent g (a parameter such as focal's gamma).

    SymPy differentiates x**g into g*x**g/x, which is 0/0 at x = 0 (a well-classified sample of
    a focal loss). The derivative here is g*x^(g-1), and 0 when g = 0 (torch's pow backward).
    """

    nargs = 2

    @classmethod
    def eval(cls, x: Any, g: Any) -> Any:
        if g.is_Number:
            return x**g
        return None

    def exact(self) -> sp.Expr:
        return self.args[0] ** self.args[1]

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, g = self.args
        if argindex == 1:
            return Where(sp.Eq(g, 0), sp.S.Zero, g * SafePow(x, g - 1))
        if argindex == 2:
            return Where(sp.Eq(x, 0), sp.S.Zero, SafePow(x, g) * sp.log(x))
        raise ArgumentIndexError(self, argindex)

    def _eval_is_real(self) -> bool | None:
        return None


# Every primitive a printer must map; `test_target_coverage` checks each target against it.
PRIMITIVES: tuple[type[sp.Function], ...] = (
    Where,
    Sign,
    Abs,
    Sigmoid,
    Softplus,
    LogSigmoid,
    Log1p,
    Expm1,
    LogCosh,
    SafeSqrt,
    Xlogy,
    Maximum,
    Minimum,
    NanOr,
    Grouped,
    StopGradient,
    BinaryCrossEntropy,
    SafePow,
)


def owned(expr: sp.Expr) -> sp.Expr:
    """`expr` with SymPy's own `Abs` and `sign` replaced by `Abs` and `Sign` here.

    SymPy's constructors create them unasked: (x^2)^0.29 is Abs(x)^0.58 and exp(p*log(x^2))
    is Abs(x)^(2p) for a real x once p is a known number, and their second derivative is a
    DiracDelta no kernel can print.
    """
    if not expr.has(sp.Abs, sp.sign):
        return expr
    return expr.replace(sp.Abs, Abs).replace(sp.sign, Sign)


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite naive unstable forms anywhere in `expr` into the stable primitives.

    log(sigmoid(x)) -> log_sigmoid(x); 1 - sigmoid(x) -> sigmoid(-x); log(1 + exp(x)) ->
    softplus(x); log(1 + x) -> log1p(x); exp(x) - 1 -> expm1(x); log(cosh(x)) -> logcosh(x);
    log of a product of positive factors (log(softmax)) -> a sum of logs.
    """
    expr = expr.replace(lambda e: e.is_Add, stable_add)
    return expr.replace(lambda e: isinstance(e, sp.log), stable_log)


def stable_add(e: sp.Expr) -> sp.Expr:
    """The stable form of a sum at its head: 1 - sigmoid(x), exp(x) - 1; else `e`."""
    if not e.is_Add:
        return e
    return _sigmoid_complement(e) or _expm1_form(e) or e


def _sigmoid_complement(e: sp.Expr) -> sp.Expr | None:
    terms = sp.Add.make_args(e)
    if sp.S.One not in terms:
        return None
    rest = [t for t in terms if t != sp.S.One]
    if len(rest) == 1:
        coeff, factor = rest[0].as_coeff_Mul()
        if coeff == -1 and isinstance(factor, Sigmoid):
            return Sigmoid(-factor.args[0])
    return None


def _expm1_form(e: sp.Expr) -> sp.Expr | None:
    terms = sp.Add.make_args(e)
    if sp.S.NegativeOne not in terms:
        return None
    rest = [t for t in terms if t != sp.S.NegativeOne]
    if len(rest) == 1 and isinstance(rest[0], sp.exp):
        return Expm1(rest[0].args[0])
    return None


def stable_log(e: sp.Expr) -> sp.Expr:
    """The stable form of a logarithm at its head (see `stabilize`); else `e`."""
    if not isinstance(e, sp.log):
        return e
    (arg,) = e.args
    if isinstance(arg, Sigmoid):
        return LogSigmoid(arg.args[0])
    if isinstance(arg, sp.exp) and arg.args[0].is_real:
        return arg.args[0]
    if isinstance(arg, sp.cosh):
        return LogCosh(arg.args[0])
    if arg.is_Add:
        terms = sp.Add.make_args(arg)
        if sp.S.One in terms:
            rest = sp.Add(*[t for t in terms if t != sp.S.One])
            if isinstance(rest, sp.exp):
                return Softplus(rest.args[0])
            return Log1p(rest)
    if arg.is_Mul and all(f.is_positive for f in sp.Mul.make_args(arg)):
        # log of a product of positive factors: split, so log(softmax) becomes x - m - log(S).
        return sp.Add(*[stable_log(sp.log(f, evaluate=False)) for f in sp.Mul.make_args(arg)])
    if arg.is_Pow and arg.base.is_positive and arg.exp.is_real:
        return arg.exp * stable_log(sp.log(arg.base, evaluate=False))
    return e
