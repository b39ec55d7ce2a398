"""Spec text of a generated case: the helper loss (if any), then the loss under test.

Every operation is parenthesised, so the text means exactly the tree whatever the grammar's
precedences are (`^` binds tighter than unary minus, for one).
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.gen import Tree

AXIS = "C"
HELPER = "helper"


def render_case(case: dict[str, Any]) -> str:
    """The spec text: a helper loss first when the case calls one, then `loss fuzz`."""
    parts = []
    if case.get("helper") is not None:
        body = expr(case["helper"]["value"])
        parts.append(f"loss {HELPER}(a, b; s: real = 1.0 > 0):\n    return {body}\n")
    parts.append(_loss(case["loss"]))
    return "\n".join(parts)


def _loss(loss: dict[str, Any]) -> str:
    decls = [_input(i) for i in loss["inputs"]]
    params = [_param(p) for p in loss["params"]]
    head = f"loss fuzz({', '.join(decls)}"
    head += f"; {', '.join(params)})" if params else ")"
    first = loss["inputs"][0]["name"]
    if loss["wrt"] != [first]:
        head += " wrt " + ", ".join(loss["wrt"])
    lines = [head + ":"]
    lines += [f"    {name} = {expr(t)}" for name, t in loss["locals"]]
    lines.append(f"    return {expr(loss['value'])}")
    reduce = f"    reduce {loss['reduce']}"
    if loss.get("weight") is not None:
        reduce = f"    reduce mean weighted {expr(loss['weight'])}"
    lines.append(reduce)
    return "\n".join(lines) + "\n"


def _input(i: dict[str, Any]) -> str:
    if i["kind"] == "int":
        return f"{i['name']}: int"
    text = i["name"] + (f"[{AXIS}]" if i["axis"] else "")
    # Declared domains hold the drawn ranges (INPUT_RANGES); x is drawn in [-2, 2], undeclared.
    return text + {"t": " in [0, 1]", "v": " > 0"}.get(i["range"], "")


def _param(p: dict[str, Any]) -> str:
    if p["kind"] == "int":
        return f"{p['name']}: int = {p['default']} in [{p['lo']}, {p['hi']}]"
    if p["kind"] == "axis":
        return f"{p['name']}: real[{AXIS}] = {num(p['default'])} > 0"
    text = f"{p['name']}: real = {num(p['default'])}"
    if p.get("domain", True):
        text += f" in [{num(p['lo'])}, {num(p['hi'])}]"
    return text


def num(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def expr(t: Tree) -> str:
    """The text of one expression tree."""
    op = t[0]
    if op in ("num", "int"):
        return num(t[1]) if op == "num" else str(int(t[1]))
    if op in ("in", "par", "let"):
        return str(t[1])
    if op == "const":
        return str(t[1])
    if op == "axis":
        return AXIS
    if op == "bin":
        return f"({expr(t[2])} {t[1]} {expr(t[3])})"
    if op == "neg":
        return f"(-{expr(t[1])})"
    if op == "fn":
        return f"{t[1]}({', '.join(expr(a) for a in t[2:])})"
    if op == "ax":
        return f"{t[1]}[{AXIS}]({expr(t[2])})"
    if op == "gather":
        return f"{_atom(t[1])}[{expr(t[2])}]"
    if op == "cmp":
        return f"({expr(t[2])} {t[1]} {expr(t[3])})"
    if op in ("and", "or"):
        return f"({expr(t[1])} {op} {expr(t[2])})"
    if op == "not":
        return f"(not {expr(t[1])})"
    if op == "call":
        args = ", ".join(expr(a) for a in t[1])
        kws = ", ".join(f"{k}={expr(v)}" for k, v in t[2].items())
        return f"{HELPER}({args}; {kws})" if kws else f"{HELPER}({args})"
    raise ValueError(f"unknown node {op!r}")


def _atom(t: Tree) -> str:
    """A gathered base: names and calls index directly, anything else in parentheses."""
    text = expr(t)
    return text if t[0] in ("in", "par", "let", "fn", "ax") or text.startswith("(") else f"({text})"
