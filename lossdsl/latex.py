"""Derived bundle -> one LaTeX `aligned` block (`show --latex`, Jupyter display of a `Loss`).

Valid LaTeX for KaTeX/MathJax and nothing of the spec syntax: `where(c, a, b)` prints as
`\\begin{cases}`, functions with multi-letter names as `\\operatorname{...}`, multi-letter
variables as `\\mathit{...}`, aggregates as `q_{k}` with their definitions (`\\sum_{c}`,
`\\max_{c}`, a gather as a subscript, a batch total as `\\sum_{\\text{batch}}`) on the last rows.
Presentation only; nothing here feeds code generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
from sympy.printing.latex import LatexPrinter, greek_letters_set

from lossdsl.aggregates import WEIGHT
from lossdsl.derive import COEF, Derived
from lossdsl.explain import formulas
from lossdsl.readable import Names, local_definitions, used_quantities

# Our primitives with a plain operator name; the rest have methods below.
_OPERATORS = {
    "Sign": r"\operatorname{sign}",
    "Softplus": r"\operatorname{softplus}",
    "LogSigmoid": r"\log\sigma",
    "Sigmoid": r"\sigma",
    "Log1p": r"\operatorname{log1p}",
    "Expm1": r"\operatorname{expm1}",
    "LogCosh": r"\log\cosh",
    "Xlogy": r"\operatorname{xlogy}",
    "Maximum": r"\max",
    "Minimum": r"\min",
    "StopGradient": r"\operatorname{sg}",
    "BinaryCrossEntropy": r"\operatorname{bce}",
}


class _Printer(LatexPrinter):
    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        name = str(expr.name)
        if name == "_c":
            return "c"
        if name.startswith("_q"):
            return f"q_{{{name[2:]}}}"
        return latex_name(name)

    def _print_Function(self, expr: sp.Expr, exp: str | None = None) -> str:
        op = _OPERATORS.get(type(expr).__name__)
        if op is None:
            return str(super()._print_Function(expr, exp))
        args = ", ".join(self._print(a) for a in expr.args)
        head = op if exp is None else f"{op}^{{{exp}}}"
        return rf"{head}\left({args}\right)"

    def _print_Where(self, expr: sp.Expr, exp: str | None = None) -> str:
        cond, a, b = (self._print(x) for x in expr.args)
        cases = (
            rf"\begin{{cases}} {a} & \text{{if }} {cond} \\ {b} & \text{{otherwise}} \end{{cases}}"
        )
        return rf"\left({cases}\right)^{{{exp}}}" if exp else cases

    def _print_Abs(self, expr: sp.Expr, exp: str | None = None) -> str:
        body = rf"\left|{self._print(expr.args[0])}\right|"
        return f"{body}^{{{exp}}}" if exp else body

    def _print_SafeSqrt(self, expr: sp.Expr, exp: str | None = None) -> str:
        body = rf"\sqrt{{{self._print(expr.args[0])}}}"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _print_Rational(self, expr: sp.Rational) -> str:
        # A float constant of the spec arrives as an exact rational: print it as a decimal.
        if abs(expr.q) > 10**6:
            return str(self._print(sp.Float(expr, 10)))
        return str(super()._print_Rational(expr))

    def _print_SafePow(self, expr: sp.Expr, exp: str | None = None) -> str:
        return str(self._print(sp.Pow(*expr.args, evaluate=False)))


def latex_name(name: str) -> str:
    """A variable name: Greek letters and one letter (with digits) as usual, else \\mathit."""
    if name in greek_letters_set or (len(name) == 1 or (name[0].isalpha() and name[1:].isdigit())):
        return str(sp.latex(sp.Symbol(name)))
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def render(expr: sp.Expr) -> str:
    """One expression (the reduction coefficient set to 1)."""
    return str(_Printer().doprint(expr.subs(COEF, 1)))


def explain_latex(derived: Derived, names: Names | None = None) -> str:
    """Local names, value, weight, gradients, Hessian diagonals and the aggregates they use,
    as one `aligned` block."""
    names = names or Names()
    rename = names.renaming(derived.quantities)
    lhs = [r"\ell"] + (["w"] if derived.lowered.loss.weight is not None else [])
    for name, _ in derived.grads:
        lhs.append(rf"\frac{{\partial \ell}}{{\partial {latex_name(name)}}}")
    for name, _ in derived.hessians:
        lhs.append(rf"\frac{{\partial^{{2}} \ell}}{{\partial {latex_name(name)}^{{2}}}}")
    shown = [e for _, e in formulas(derived, names)]
    rows = [(render(s), render(e)) for s, e in local_definitions(names.locals, shown)]
    rows += [(a, render(e.xreplace(rename))) for a, e in zip(lhs, shown, strict=True)]
    rows += _definitions(derived, shown, rename)
    body = " \\\\\n".join(f"{a} &= {b}" for a, b in rows)
    return f"\\begin{{aligned}}\n{body}\n\\end{{aligned}}"


def _definitions(
    derived: Derived, shown: list[sp.Expr], rename: dict[sp.Symbol, sp.Symbol]
) -> Sequence[tuple[str, str]]:
    index = derived.lowered.index
    out = []
    for q in used_quantities(derived.quantities, shown):
        name = render(rename.get(q.symbol, q.symbol))
        body = render(q.expr.subs({index: sp.Symbol("_c"), WEIGHT: 1}).xreplace(rename))
        if q.op == "sum":
            out.append((name, rf"\sum_{{c}} {_group(body)}"))
        elif q.op in ("max", "argmax"):
            op = r"\max" if q.op == "max" else r"\operatorname{argmax}"
            out.append((name, rf"{op}_{{c}} {_group(body)}"))
        elif q.op == "gather":
            out.append((name, rf"{_group(body)}_{{{render(q.index)}}}"))
        else:
            out.append((name, rf"\sum_{{\text{{batch}}}} {_group(body)}"))
    return out


def _group(body: str) -> str:
    return rf"\left({body}\right)"
