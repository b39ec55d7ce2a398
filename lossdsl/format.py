"""Syntax tree -> canonical spec text (`nodes.Spec` -> str).

The inverse of `parse.py` up to layout: parsing the output gives the same tree (spans aside).
Used by `lossdsl fmt` and by the round-trip property tests. Parenthesises by precedence, so
the output has no redundant brackets.
"""

from __future__ import annotations

from lossdsl import nodes as n

# Binding strength of each construct; higher binds tighter.
_PREC = {
    "or": 1,
    "and": 2,
    "not": 3,
    "compare": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "neg": 7,
    "^": 8,
}
_ATOM = 10


def format_spec(spec: n.Spec) -> str:
    """Canonical text of every loss in `spec`, separated by blank lines."""
    return "\n".join(format_loss(loss) for loss in spec.losses)


def format_loss(loss: n.LossNode) -> str:
    lines = [f"# {line}".rstrip() for line in loss.comment.splitlines()] if loss.comment else []
    inputs = ", ".join(_input(i) for i in loss.inputs)
    params = ", ".join(_param(p) for p in loss.params)
    head = f"loss {loss.name}({inputs}{'; ' + params if params else ''})"
    if loss.wrt:
        head += " wrt " + ", ".join(w.name for w in loss.wrt)
    lines.append(head + ":")
    for stmt in loss.body:
        lines.append("    " + _statement(stmt))
    return "\n".join(lines) + "\n"


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


def _domain(d: n.Domain | None) -> str:
    if d is None:
        return ""
    if d.low is not None and d.high is not None:
        lo, hi = "[" if d.low_closed else "(", "]" if d.high_closed else ")"
        return f" in {lo}{_number(d.low)}, {_number(d.high)}{hi}"
    if d.low is not None:
        return (" >= " if d.low_closed else " > ") + _number(d.low)
    return (" <= " if d.high_closed else " < ") + _number(d.high or 0.0)


def _input(i: n.InputDecl) -> str:
    axis = f"[{i.axis}]" if i.axis else ""
    kind = f": {i.type}" if i.type != "real" else ""
    return f"{i.name}{axis}{kind}{_domain(i.domain)}"


def _param(p: n.ParamDecl) -> str:
    axis = f"[{p.axis}]" if p.axis else ""
    return f"{p.name}: {p.type}{axis} = {_number(p.default)}{_domain(p.domain)}"


def _statement(s: n.Statement) -> str:
    if isinstance(s, n.Assign):
        return f"{s.name} = {expr(s.value)}"
    if isinstance(s, n.Return):
        return f"return {expr(s.value)}"
    if isinstance(s, n.Reduce):
        weight = f" weighted {expr(s.weight)}" if s.weight is not None else ""
        return f"reduce {s.mode}{weight}"
    if isinstance(s, n.Annotation):
        if s.key == "range" and s.domain is not None:
            scale = " log" if s.value == "log" else ""
            return f"range {s.name}{_domain(s.domain)}{scale}"
        return f"{s.key} {s.name} {s.value}"
    if s.key == "doc":
        return f'"""{s.value}"""'
    return f"{s.key} {s.value}"


def expr(e: n.Expr) -> str:
    """Canonical text of one expression."""
    return _expr(e)[0]


def _wrap(text_prec: tuple[str, int], need: int) -> str:
    text, prec = text_prec
    return f"({text})" if prec < need else text


def _expr(e: n.Expr) -> tuple[str, int]:
    if isinstance(e, n.Number):
        return _number(e.value), _ATOM
    if isinstance(e, n.Name):
        return e.name, _ATOM
    if isinstance(e, n.BinaryOp):
        p = _PREC[e.op]
        if e.op == "^":  # right associative; the exponent may be a signed factor
            return f"{_wrap(_expr(e.left), _ATOM)}^{_wrap(_expr(e.right), _PREC['neg'])}", p
        return f"{_wrap(_expr(e.left), p)} {e.op} {_wrap(_expr(e.right), p + 1)}", p
    if isinstance(e, n.UnaryOp):
        if e.op == "not":
            return f"not {_wrap(_expr(e.operand), _PREC['not'])}", _PREC["not"]
        return f"-{_wrap(_expr(e.operand), _PREC['neg'])}", _PREC["neg"]
    if isinstance(e, n.Compare):
        p = _PREC["compare"]
        return f"{_wrap(_expr(e.left), p + 1)} {e.op} {_wrap(_expr(e.right), p + 1)}", p
    if isinstance(e, n.BoolOp):
        p = _PREC[e.op]
        return f"{_wrap(_expr(e.left), p)} {e.op} {_wrap(_expr(e.right), p + 1)}", p
    if isinstance(e, n.Index):
        return f"{_wrap(_expr(e.base), _ATOM)}[{expr(e.index)}]", _ATOM
    args = [expr(a) for a in e.args]
    kwargs = [f"{k.name}={expr(k.value)}" for k in e.kwargs]
    sep = "; " if args and kwargs else ""
    return f"{_wrap(_expr(e.func), _ATOM)}({', '.join(args)}{sep}{', '.join(kwargs)})", _ATOM
