"""Parser: accepted syntax, error table (class, line, column), pinned renderings, limits."""

from __future__ import annotations

import pytest

from lossdsl import nodes as n
from lossdsl.errors import SpecSyntaxError
from lossdsl.parse import MAX_BRACKET_DEPTH, _parser, parse_spec

HUBER = """\
# Huber: quadratic near zero, linear for large residuals.
# Second line of the comment.
loss huber(pred, target; delta: real = 1.0 > 0):
    task regression
    r = pred - target
    return where(abs(r) <= delta, 0.5 * r^2, delta * (abs(r) - 0.5 * delta))
"""


def test_parses_declarations_and_body() -> None:
    spec = parse_spec(HUBER, "huber.loss")
    (loss,) = spec.losses
    assert loss.name == "huber"
    assert [i.name for i in loss.inputs] == ["pred", "target"]
    (delta,) = loss.params
    assert (delta.name, delta.type, delta.default) == ("delta", "real", 1.0)
    assert delta.domain is not None
    assert delta.domain.low == 0.0
    assert not delta.domain.low_closed
    assert (
        loss.comment
        == "Huber: quadratic near zero, linear for large residuals.\nSecond line of the comment."
    )
    kinds = [type(s).__name__ for s in loss.body]
    assert kinds == ["Meta", "Assign", "Return"]


def test_operator_precedence_and_associativity() -> None:
    src = "loss f(x):\n    return -x^2^3 * 2 + 1 < 3 and not x > 0 or x == 1\n"
    ret = parse_spec(src).losses[0].body[0]
    assert isinstance(ret, n.Return)
    top = ret.value
    assert isinstance(top, n.BoolOp)
    assert top.op == "or"
    left = top.left
    assert isinstance(left, n.BoolOp)
    assert left.op == "and"
    cmp = left.left
    assert isinstance(cmp, n.Compare)
    assert cmp.op == "<"
    arith = cmp.left
    assert isinstance(arith, n.BinaryOp)
    assert arith.op == "+"
    mul = arith.left
    assert isinstance(mul, n.BinaryOp)
    assert mul.op == "*"
    neg = mul.left
    assert isinstance(neg, n.UnaryOp)
    assert neg.op == "-"
    power = neg.operand
    assert isinstance(power, n.BinaryOp)
    assert power.op == "^"
    assert isinstance(power.right, n.BinaryOp)
    assert power.right.op == "^"


def test_axis_calls_gathers_keywords_and_domains() -> None:
    src = (
        "loss ce(logits[C], label: int; w: real[C] = 1, s: real = 0 in [0, 1)) wrt logits:\n"
        "    return -log_softmax[C](logits)[label] + huber(logits[label], 0; delta=2)\n"
        "    reduce mean weighted w[label]\n"
    )
    loss = parse_spec(src).losses[0]
    assert loss.inputs[0].axis == "C"
    assert loss.inputs[1].type == "int"
    s = loss.params[1]
    assert s.domain is not None
    assert s.domain.low_closed
    assert not s.domain.high_closed
    assert [w.name for w in loss.wrt] == ["logits"]
    ret = loss.body[0]
    assert isinstance(ret, n.Return)
    assert isinstance(ret.value, n.BinaryOp)
    gather = ret.value.left
    assert isinstance(gather, n.UnaryOp)
    assert isinstance(gather.operand, n.Index)
    call = gather.operand.base
    assert isinstance(call, n.Call)
    assert isinstance(call.func, n.Index)
    composed = ret.value.right
    assert isinstance(composed, n.Call)
    assert composed.kwargs[0].name == "delta"
    red = loss.body[1]
    assert isinstance(red, n.Reduce)
    assert red.mode == "mean"
    assert red.weight is not None


def test_several_losses_docstrings_and_line_continuation_in_brackets() -> None:
    src = (
        'loss a(x):\n    """First.\n\n    More."""\n    return (x +\n        1)\n'
        "\n# about b\nloss b(x): \n    return a(x) * 2\n"
    )
    spec = parse_spec(src)
    assert [loss.name for loss in spec.losses] == ["a", "b"]
    doc = spec.losses[0].body[0]
    assert isinstance(doc, n.Meta)
    assert doc.value == "First.\n\nMore."
    assert spec.losses[1].comment == "about b"


def test_no_anonymous_terminal_reaches_users() -> None:
    names = {t.name for t in _parser().terminals}
    assert not [t for t in names if t.startswith("__ANON")]


ERRORS = [
    ("loss f(x):\n    return x +\n", 2, 15, "unexpected end of line"),
    ("loss f(x):\n    return x @ 2\n", 2, 14, "unexpected character '@'"),
    ("loss f(x):\n    return x = 2\n", 2, 14, "unexpected '='"),
    ("loss f(x) return x\n", 1, 11, "unexpected 'return'"),
    ("loss (x):\n    return x\n", 1, 6, "unexpected '('"),
    ("loss f(x; a: real = ):\n    return x\n", 1, 21, "unexpected ')'"),
    ("loss f(x):\n    return f(a=1, 2)\n", 2, 19, "positional argument after a keyword"),
    ("loss f(x):\n    return 'x'\n", 2, 12, "unexpected character"),
    ("loss f(x; a: real = 1 != 2):\n    return x\n", 1, 23, "a domain is"),
    ("loss f(x[C]: real[D]):\n    return x\n", 1, 8, "declares its axis twice"),
]


@pytest.mark.parametrize(("source", "line", "column", "message"), ERRORS)
def test_syntax_error_table(source: str, line: int, column: int, message: str) -> None:
    with pytest.raises(SpecSyntaxError) as info:
        parse_spec(source, "bad.loss")
    err = info.value
    assert err.span is not None
    assert (err.span.line, err.span.column) == (line, column)
    assert message in err.message


def test_rendered_message_for_unexpected_end_of_line() -> None:
    with pytest.raises(SpecSyntaxError) as info:
        parse_spec("loss f(x):\n    return x +\n", "bad.loss")
    assert str(info.value) == (
        "bad.loss:2:15: error: unexpected end of line\n"
        "        return x +\n"
        "                  ^\n"
        "hint: expected '(', '+' or '-', a name, a number"
    )


def test_rendered_message_underlines_the_whole_token() -> None:
    with pytest.raises(SpecSyntaxError) as info:
        parse_spec("loss f(x) return x\n", "bad.loss")
    assert str(info.value) == (
        "bad.loss:1:11: error: unexpected 'return'\n"
        "    loss f(x) return x\n"
        "              ^~~~~~\n"
        "hint: expected ':', 'wrt', end of line"
    )


def test_hostile_sizes_are_rejected_quickly() -> None:
    deep = "loss f(x):\n    return " + "(" * (MAX_BRACKET_DEPTH + 5) + "x" + ")" * 60 + "\n"
    with pytest.raises(SpecSyntaxError, match="nested"):
        parse_spec(deep)
    long = "loss f(x):\n    return " + " + ".join(["x"] * 5000) + "\n"
    with pytest.raises(SpecSyntaxError, match="statement longer"):
        parse_spec(long)
    with pytest.raises(SpecSyntaxError, match="larger than"):
        parse_spec("# " + "x" * 300_000 + "\nloss f(x):\n    return x\n")


def test_long_but_legal_statement_parses() -> None:
    src = "loss f(x):\n    return " + " + ".join(["x"] * 900) + "\n"
    assert parse_spec(src).losses[0].name == "f"
