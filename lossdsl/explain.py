"""Derived bundle -> readable formulas (plain text or LaTeX) for `Loss.explain` and `show`.

Prints the per-sample value, the gradient and Hessian diagonal of one sample's loss (the
reduction coefficient set to 1) and the definitions of the lifted aggregates, using the
language's own function names. Presentation only: nothing here feeds code generation.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.str import StrPrinter

from lossdsl import primitives as P
from lossdsl.aggregates import WEIGHT
from lossdsl.derive import COEF, Derived
from lossdsl.readable import Names, local_definitions, use_locals, used_quantities

_NAMES = {
    "Where": "where",
    "Abs": "abs",
    "Sign": "sign",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "LogSigmoid": "log_sigmoid",
    "Log1p": "log1p",
    "Expm1": "expm1",
    "LogCosh": "logcosh",
    "SafeSqrt": "sqrt",
    "Xlogy": "xlogy",
    "Maximum": "max",
    "Minimum": "min",
    "StopGradient": "stop_gradient",
    "BinaryCrossEntropy": "binary_xent",
    "SafePow": "pow",
}


class _Printer(StrPrinter):
    def _print_Function(self, expr: sp.Expr) -> str:
        name = _NAMES.get(type(expr).__name__, type(expr).__name__)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        name = str(expr.name)
        if name == "_c":
            return "c"
        return name[1:] if name.startswith("_q") else name

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        return str(super()._print_Pow(expr, rational)).replace("**", "^")

    def _print_Equality(self, expr: sp.Expr) -> str:
        return f"{self._print(expr.lhs)} == {self._print(expr.rhs)}"

    def _print_Unequality(self, expr: sp.Expr) -> str:
        return f"{self._print(expr.lhs)} != {self._print(expr.rhs)}"


def _shown(expr: sp.Expr) -> sp.Expr:
    """The expression for one sample (coefficient 1) without the primitives that only steer
    rounding and NaN: a clamp's NaN-keeping arm shows as its constant, a kept group as a sum."""
    # Totals are weighted by the sample weights (`WEIGHT`): shown as the spec writes them.
    shown = expr.subs({COEF: 1, WEIGHT: 1})
    return shown.replace(lambda e: isinstance(e, P.NanOr | P.Grouped), lambda e: e.args[0])


def _text(expr: sp.Expr) -> str:
    return str(_Printer().doprint(_shown(expr)))


def explain(derived: Derived, names: Names | None = None) -> str:
    """Formulas of a derived loss, one per line, written with the spec's local `names`
    (`readable.named_locals`), then the definitions of the aggregates they use (LaTeX:
    `lossdsl.latex.explain_latex`)."""
    names = names or Names()
    rename = names.renaming(derived.quantities)
    loss = derived.lowered.loss
    params = ", ".join(f"{p.name} = {p.default:g}" for p in loss.params)
    inputs = ", ".join(i.name + (f"[{i.axis}]" if i.axis else "") for i in loss.inputs)
    head = f"loss {loss.name}({inputs}{'; ' + params if params else ''})"
    lines = [
        head,
        f"  reduce    {loss.reduction}" + (" weighted" if loss.weight is not None else ""),
    ]
    shown = formulas(derived, names)
    for symbol, body in local_definitions(names.locals, [e for _, e in shown]):
        lines.append(f"  let       {symbol} = {_text(body)}")
    lines += [f"  {label} = {_text(e.xreplace(rename))}" for label, e in shown]
    defs = _definitions(derived, [e for _, e in shown], rename)
    if defs:
        lines.append("  where")
        lines += [f"    {d}" for d in defs]
    return "\n".join(lines)


def formulas(derived: Derived, names: Names) -> list[tuple[str, sp.Expr]]:
    """(label, expression) of the value, weight, gradients and Hessians, with local names
    (aggregates keep their own symbols: rename them with `Names.renaming` for display)."""
    out = [("value     l", derived.value)]
    if derived.lowered.loss.weight is not None:
        out.append(("weight    w", derived.weight))
    out += [(f"gradient  dl/d{name}", g) for name, g in derived.grads]
    out += [(f"hessian   d2l/d{name}2", h) for name, h in derived.hessians]
    return [(label, use_locals(_shown(e), names.locals)) for label, e in out]


def _definitions(
    derived: Derived, shown: list[sp.Expr], rename: dict[sp.Symbol, sp.Symbol]
) -> list[str]:
    axis = derived.lowered.loss.axis or "C"
    index = derived.lowered.index
    out = []
    for q in used_quantities(derived.quantities, shown):
        name = str(rename.get(q.symbol, q.symbol.name[1:]))
        body = _text(q.expr.subs(index, sp.Symbol("c")).xreplace(rename))
        if q.op == "sum":
            out.append(f"{name} = sum[{axis}]({body})")
        elif q.op == "max":
            note = "" if q.differentiable else "   (shift for stability; not differentiated)"
            out.append(f"{name} = max[{axis}]({body}){note}")
        elif q.op == "argmax":
            out.append(f"{name} = argmax[{axis}]({body})   (first maximal position)")
        elif q.op == "gather":
            out.append(f"{name} = ({body})[{_text(q.index)}]")
        elif q.op == "total":
            out.append(f"{name} = total({body})   (over the batch)")
        else:
            out.append(f"{name} = total({body})   (batch adjoint of the totals)")
    return out
