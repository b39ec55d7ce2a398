"""Symbolic derivatives: `Lowered` -> `Derived` (gradient and Hessian diagonal per `wrt` input).

The reduced loss is R = sum_i c_i * l_i (c_i = weight * scale). With batch totals T_m the
per-sample function differentiated is Phi_i = c_i * l_i + sum_m Tbar_m * h_m(i), where
Tbar_m = sum_i c_i dl_i/dT_m is a batch adjoint: that gives dR/dx exactly while each sample only
sees its own inputs. Row aggregates are differentiated in forward mode: dQ/dx at the current
element follows the chain rule through the aggregate table, adding derivative aggregates (sums
of partials) as needed. The Hessian diagonal differentiates the gradient once more, this time
through the totals and their adjoints too. Derivatives of selects stay selects (no Heaviside).
Simplification is bounded: SymPy's automatic evaluation plus a size limit; CSE is the printer's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from lossdsl import limits
from lossdsl import primitives as P
from lossdsl.aggregates import Aggregates, Quantity
from lossdsl.errors import DerivationError
from lossdsl.lower import Lowered

COEF = sp.Symbol("_coef", real=True)
MAX_OPS = limits.MAX_OPS
DEADLINE_S = limits.DERIVATION_DEADLINE_S


@dataclass(frozen=True)
class Derived:
    lowered: Lowered
    quantities: tuple[Quantity, ...]
    value: sp.Expr
    weight: sp.Expr
    grads: tuple[tuple[str, sp.Expr], ...]
    hessians: tuple[tuple[str, sp.Expr], ...]
    # (message, hint) when the Hessian diagonal is not supported (_HessianUnsupported); the
    # value and gradient still are, and the kernels raise it only when a Hessian is asked for.
    hessian_error: tuple[str, str] | None = None

    def quantity(self, symbol: sp.Symbol) -> Quantity:
        return next(q for q in self.quantities if q.symbol == symbol)


def derive(lowered: Lowered, hessian: bool = True) -> Derived:
    """Differentiate a lowered loss with respect to each of its `wrt` inputs.

    Returns:
        `Derived`: the aggregate table (with derivative aggregates), the per-sample value and
        weight, and per input the gradient and Hessian diagonal of the reduced loss, written
        with the symbol `COEF` for the per-sample reduction coefficient.

    Raises:
        DerivationError: an expression grew past `MAX_OPS` or derivation ran past its deadline.
    """
    try:
        return _derive(lowered, hessian)
    except TypeError as exc:
        # SymPy refuses to order an undefined constant (a clamp of log(0) once arguments are
        # substituted): the derivative is undefined there, which is the spec's to fix.
        if "Invalid comparison" not in str(exc):
            raise
        raise DerivationError(
            "the derivative compares an undefined constant (such as log(0))",
            lowered.loss.span,
            lowered.loss.source,
            "a called loss or function gets a constant outside its domain",
        ) from None


def _derive(lowered: Lowered, hessian: bool) -> Derived:
    table = lowered.table.copy()
    differ = _Differ(lowered, table)
    with P.checked(differ.tick):
        return _derive_with(lowered, hessian, table, differ)


def _derive_with(lowered: Lowered, hessian: bool, table: Aggregates, differ: _Differ) -> Derived:
    grads, hessians = [], []
    for name in lowered.loss.wrt:
        x = lowered.inputs[name]
        g = differ.d(differ.phi, x, full=False)
        if _too_large(g):
            raise DerivationError(
                f"the derivative with respect to '{name}' grew past {MAX_OPS} operations",
                lowered.loss.span,
                lowered.loss.source,
                "name repeated subexpressions or split the loss",
            )
        grads.append((name, g))
    error = None
    if hessian:
        try:
            for name, g in grads:
                h = differ.d(g, lowered.inputs[name], full=True)
                if _too_large(h):
                    # The value and gradient stand: only Hessian calls raise this.
                    raise _HessianUnsupported(
                        f"the Hessian diagonal with respect to '{name}' grew past {MAX_OPS} "
                        "operations",
                        lowered.loss.span,
                        lowered.loss.source,
                        "value and gradient are available; for the Hessian, name repeated "
                        "subexpressions or split the loss",
                    )
                hessians.append((name, h))
        except _HessianUnsupported as exc:
            hessians, error = [], (exc.message, exc.hint or "")
    formulas = [lowered.value, lowered.weight, *(q.expr for q in table.items.values())]
    formulas += [e for _, e in (*grads, *hessians)]
    limits.check_numbers(formulas, lowered.loss.span, lowered.loss.source)
    return Derived(
        lowered,
        tuple(table.items.values()),
        lowered.value,
        lowered.weight,
        tuple(grads),
        tuple(hessians),
        error,
    )


_ROW_FUNCTION = "that a row function (sum[C], softmax[C], a gather, ...) mixes across the axis"
_BROADCAST = "of a per-sample input (broadcast along the axis, it moves every position)"


class _HessianUnsupported(DerivationError):
    """No Hessian diagonal, where the value and gradient are fine: it is raised on Hessian
    calls only (`Derived.hessian_error`)."""


class _MixedPositions(_HessianUnsupported):
    """The Hessian diagonal would need d T[c'] / d x[c] for every c' of a per-class total."""


def _too_large(expr: sp.Expr) -> bool:
    # count_ops walks the expanded tree: bound that walk first (shared subtrees can make the
    # tree exponentially larger than the expression's DAG).
    return not limits.tree_within(expr, 4 * MAX_OPS) or sp.count_ops(expr) > MAX_OPS


def _times(dq: sp.Expr, jq: sp.Expr) -> sp.Expr:
    """dq * jq, with jq moved into a select factor of dq that has a zero arm.

    The chain rule through an aggregate multiplies d(expr)/dq, often where(c, 1, 0) when q
    sits in one branch of a where, by q's Jacobian, which may be inf or NaN exactly when that
    branch is not taken (a p-norm at distance 0); 0 * inf would leak NaN past the select.
    """
    factors = sp.Mul.make_args(dq)
    for k, f in enumerate(factors):
        if isinstance(f, P.Where) and (f.args[1] == 0 or f.args[2] == 0):
            rest = sp.Mul(*factors[:k], *factors[k + 1 :]) * jq
            cond, a, b = f.args
            return P.Where(cond, a * rest, b * rest)
    return dq * jq


class _Differ:
    def __init__(self, lowered: Lowered, table: Aggregates) -> None:
        self.lowered = lowered
        self.table = table
        self.elements = lowered.element_symbols
        self.deadline = time.thread_time() + DEADLINE_S
        self.memo: dict[tuple[sp.Symbol, sp.Symbol, bool], sp.Expr] = {}
        value = lowered.value
        self.totals = [q for q in table.items.values() if q.op == "total"]
        # Tbar_m = sum_i c_i dl_i/dT_m, a batch adjoint per total (per position for a
        # per-class total: dl_i/dT_m[c] is then an element-level derivative).
        self.tbar = {q.symbol: table.adjoint(COEF * self.partial(value, q)) for q in self.totals}
        self.tbar_of = {v: k for k, v in self.tbar.items() if isinstance(v, sp.Symbol)}
        # Each sample sees its share of the totals: sum_m Tbar_m . (w_i h_m(i)), a row sum
        # over the positions for per-class totals.
        shares = [
            table.row_sum(self.tbar[q.symbol] * q.expr) if q.along else self.tbar[q.symbol] * q.expr
            for q in self.totals
        ]
        self.phi = COEF * value + sum(shares, sp.S.Zero)

    def partial(self, expr: sp.Expr, total: Quantity) -> sp.Expr:
        """d expr / d T, also through the row aggregates that hold T (at the current position
        for a per-class T); other totals are held fixed."""
        return self.d(expr, total.symbol, full=False)

    def d(self, expr: sp.Expr, x: sp.Symbol, full: bool) -> sp.Expr:
        """Total derivative of `expr` w.r.t. `x` at the current element / sample."""
        self.tick()
        out = sp.diff(expr, x)
        for q in sorted(expr.free_symbols & self.table.symbols, key=str):
            dq = sp.diff(expr, q)
            if dq == 0:
                continue
            jq = self.jacobian(q, x, full)
            if jq != 0:
                out += _times(dq, jq)
        return out

    def jacobian(self, q: sp.Symbol, x: sp.Symbol, full: bool) -> sp.Expr:
        self.tick()
        key = (q, x, full)
        if key not in self.memo:
            self.memo[key] = self._jacobian(self.table.items[q], x, full)
        return self.memo[key]

    def _jacobian(self, q: Quantity, x: sp.Symbol, full: bool) -> sp.Expr:
        if q.op == "total":
            # T is held fixed in the gradient (its effect is carried by Tbar), not in the Hessian.
            if not full:
                return sp.S.Zero
            if q.along and self._mixes(q.expr, x):
                # T[c'] moves with x[c] for every c' (a softmax inside the total): the Hessian
                # diagonal needs each row's C x C block, not the position's own derivative.
                self._mixed_per_class(_ROW_FUNCTION)
            j = self.d(q.expr, x, full=False)
            if q.along and j != 0 and x not in self.elements:
                # A per-sample x is broadcast along the axis: it moves T[c] at every position
                # too, and the Hessian diagonal needs the C x C block of every pair.
                self._mixed_per_class(_BROADCAST)
            return j
        if q.op == "adjoint":
            return self._adjoint_jacobian(q, x) if full else sp.S.Zero
        if q.op == "argmax":
            return sp.S.Zero  # a position: piecewise constant
        if q.op in ("sum", "max"):
            return self._reduce_jacobian(q, x, full)
        return self._gather_jacobian(q, x, full)

    def _reduce_jacobian(self, q: Quantity, x: sp.Symbol, full: bool) -> sp.Expr:
        if not q.differentiable:
            return sp.S.Zero
        f = q.expr
        if q.op == "max":
            return self._max_jacobian(q, x, full)
        out = sp.diff(f, x) if x in self.elements else self.table.row_sum(sp.diff(f, x))
        return out + self._through(f, x, full, self.table.row_sum)

    def _max_jacobian(self, q: Quantity, x: sp.Symbol, full: bool) -> sp.Expr:
        # Tied maxima share the gradient evenly (torch.amax, tf.reduce_max). The operand is
        # re-evaluated by the same printed code as in the max's pass, so ties compare exactly;
        # should rounding ever make a row miss its own maximum, the first argmax takes it all.
        f = q.expr
        hit = P.Where(sp.Eq(f, q.symbol), sp.S.One, sp.S.Zero)
        ties = self.table.row_sum(hit)
        first = P.Where(sp.Eq(self.lowered.index, self.table.argmax(q.symbol)), 1, 0)
        w = P.Where(sp.StrictGreaterThan(ties, 0), hit / ties, first)
        out = w * sp.diff(f, x) if x in self.elements else self.table.row_sum(w * sp.diff(f, x))
        return out + self._through(f, x, full, lambda df: self.table.row_sum(w * df))

    def _gather_jacobian(self, q: Quantity, x: sp.Symbol, full: bool) -> sp.Expr:
        f, index = q.expr, q.index
        assert index is not None
        if x in self.elements:
            out = P.Where(sp.Eq(self.lowered.index, index), sp.diff(f, x), sp.S.Zero)
        else:
            out = self.table.gather(sp.diff(f, x), index)
        return out + self._through(f, x, full, lambda df: self.table.gather(df, index))

    def _through(
        self, f: sp.Expr, x: sp.Symbol, full: bool, lift: Callable[[sp.Expr], sp.Expr]
    ) -> sp.Expr:
        """Chain rule through the quantities inside an aggregate's operand `f`.

        `lift` turns the per-element partial df/dq2 into a per-sample value: a row sum for
        sums and maxima, a read at the index for gathers.
        """
        out = sp.S.Zero
        for q2 in sorted(f.free_symbols & self.table.symbols, key=str):
            self.tick()
            df = sp.diff(f, q2)
            if df == 0:
                continue
            j2 = self.jacobian(q2, x, full)
            if j2 != 0:
                if self.table.items[q2].along:
                    self._mixed_per_class(_ROW_FUNCTION)
                out += lift(df) * j2
        return out

    def _mixes(self, f: sp.Expr, x: sp.Symbol) -> bool:
        """Whether `f` at one position reads `x` at other positions of the row, through a row
        function or a gather of it."""
        return any(
            self.table.items[q].op in ("sum", "max", "gather") and self.jacobian(q, x, False) != 0
            for q in f.free_symbols & self.table.symbols
        )

    def _mixed_per_class(self, why: str) -> None:
        # d T[c'] / d x[c] for every c' of the row: the Hessian diagonal would need a C x C
        # block per row. Only the position's own T[c] is supported.
        raise _MixedPositions(
            f"the Hessian diagonal through a per-class total {why} is not supported",
            self.lowered.loss.span,
            self.lowered.loss.source,
            "use per-class totals position by position (mean[C](f(total(x)))), with an "
            "elementwise x, or a grand total total(sum[C](x))",
        )

    def _adjoint_jacobian(self, q: Quantity, x: sp.Symbol) -> sp.Expr:
        total = self.tbar_of.get(q.symbol)
        if total is None:
            return sp.S.Zero  # a second-order adjoint: only needed to first order
        first = self.partial(self.lowered.value, self.table.items[total])
        out = self.d(COEF * first, x, full=False)
        for other in self.totals:
            v = self.table.adjoint(COEF * self.partial(first, other))
            if v != 0:
                out += v * self.jacobian(other.symbol, x, True)
        return out

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise DerivationError(
                f"derivation ran past {DEADLINE_S:g} s of CPU time",
                self.lowered.loss.span,
                self.lowered.loss.source,
                "simplify the loss or split it into named parts",
            )
