"""Checker: error table (class, line, column, message), pinned renderings, resolved IR."""

from __future__ import annotations

import pytest

from lossdsl import ir
from lossdsl.check import check_spec
from lossdsl.errors import (
    LossDSLError,
    SpecDomainError,
    SpecNameError,
    SpecShapeError,
    SpecSyntaxError,
    UnsupportedError,
)
from lossdsl.parse import parse_spec


def check(src: str) -> tuple[ir.LossDef, ...]:
    return check_spec(parse_spec(src, "t.loss"))


def test_locals_are_inlined_and_kinds_and_axes_resolved() -> None:
    (loss,) = check(
        "loss f(logits[C], label: int; s: real = 0.1 in [0, 1]):\n"
        "    lp = log_softmax[C](logits)\n"
        "    return -(1 - s) * lp[label] - s * mean[C](lp)\n"
    )
    assert loss.axis == "C"
    assert loss.wrt == ("logits",)
    assert loss.reduction == "mean"
    assert loss.value.axis is None
    assert loss.value.kind == "real"
    assert loss.input("label").kind == "int"
    assert str(loss.param("s").domain) == "in [0, 1]"


ERRORS = [
    # (source, error class, line, column, message fragment)
    ("loss f(x):\n    return y\n", SpecNameError, 2, 12, "unknown name 'y'"),
    ("loss f(x, x):\n    return x\n", SpecNameError, 1, 11, "already defined"),
    (
        "loss f(x):\n    r = x\n    r = 2 * x\n    return r\n",
        SpecNameError,
        3,
        5,
        "already defined",
    ),
    ("loss f(x):\n    return foo(x)\n", SpecNameError, 2, 12, "unknown function 'foo'"),
    ("loss f(x):\n    return exp(x, x)\n", SpecShapeError, 2, 12, "takes 1 argument"),
    ("loss f(x):\n    return sum(x)\n", SpecSyntaxError, 2, 12, "works along an axis"),
    ("loss f(x[C]):\n    return sum[D](x)\n", SpecShapeError, 2, 16, "not an axis"),
    ("loss f(x[C]):\n    return x\n", SpecShapeError, 2, 12, "one number per sample"),
    ("loss f(x[C], y[D]):\n    return 1\n", UnsupportedError, 1, 14, "second axis"),
    ("loss f(x[C], y: int):\n    return x[0.5]\n", SpecShapeError, 2, 14, "integer label"),
    ("loss f(x, y: int):\n    return x[y]\n", SpecShapeError, 2, 12, "indexed"),
    ("loss f(y: int, x):\n    return x\n", SpecShapeError, 1, 8, "cannot be differentiated"),
    ("loss f(x, y: int) wrt y:\n    return x\n", SpecShapeError, 1, 23, "cannot be differentiated"),
    ("loss f(x) wrt z:\n    return x\n", SpecNameError, 1, 15, "not an input"),
    ("loss f(x):\n    return x > 0\n", SpecShapeError, 2, 12, "condition"),
    ("loss f(x):\n    return where(x, 1, 0)\n", SpecShapeError, 2, 18, "used as a condition"),
    (
        "loss f(x; a: real = 2 in [0, 1]):\n    return x\n",
        SpecDomainError,
        1,
        11,
        "outside its domain",
    ),
    ("loss f(x; a: real = 1 in [2, 1]):\n    return x\n", SpecDomainError, 1, 23, "empty domain"),
    ("loss f(x; n: int = 1.5):\n    return x\n", SpecDomainError, 1, 11, "non-integer"),
    ("loss f(x; a: complex = 1):\n    return x\n", SpecNameError, 1, 11, "unknown parameter type"),
    ("loss f(x):\n    task regresion\n    return x\n", SpecNameError, 2, 5, "unknown task"),
    ("loss f(x):\n    return x\n    reduce median\n", SpecSyntaxError, 3, 5, "unknown reduction"),
    ("loss f(x):\n    r = x\n", SpecSyntaxError, 1, 6, "no 'return'"),
    ("loss f(x):\n    return x\n    return x\n", SpecSyntaxError, 3, 5, "a second 'return'"),
    (
        "loss f(x, w):\n    return x\n    reduce mean weighted x\n",
        SpecShapeError,
        3,
        26,
        "weight depends",
    ),
    ("loss f(_x):\n    return _x\n", SpecNameError, 1, 8, "reserved"),
    ("loss f(x):\n    return total(total(x))\n", UnsupportedError, 2, 18, "total() inside total()"),
    ("loss f(x):\n    return sum\n", SpecNameError, 2, 12, "is a function"),
    ("loss f(x):\n    exp = x\n    return exp\n", SpecNameError, 2, 5, "hide the built-in"),
]


@pytest.mark.parametrize(("source", "cls", "line", "column", "message"), ERRORS)
def test_check_error_table(
    source: str, cls: type[LossDSLError], line: int, column: int, message: str
) -> None:
    with pytest.raises(cls) as info:
        check(source)
    err = info.value
    assert message in err.message
    assert err.span is not None
    assert (err.span.line, err.span.column) == (line, column)
    assert err.source == source  # so the rendering can show the line


def test_unknown_name_renders_caret_and_did_you_mean() -> None:
    with pytest.raises(SpecNameError) as info:
        check("loss f(pred, target):\n    return (pred - targte)^2\n")
    assert str(info.value) == (
        "t.loss:2:20: error: unknown name 'targte'\n"
        "        return (pred - targte)^2\n"
        "                       ^~~~~~\n"
        "hint: did you mean 'target'?"
    )


def test_axis_mismatch_renders_the_whole_span() -> None:
    with pytest.raises(SpecShapeError) as info:
        check("loss f(x[C]):\n    return sum[D](x)\n")
    assert str(info.value) == (
        "t.loss:2:16: error: 'D' is not an axis of this loss\n"
        "        return sum[D](x)\n"
        "                   ^\n"
        "hint: the axis is 'C'"
    )


def test_composition_resolves_and_binds_parameters() -> None:
    _first, second = check(
        "loss h(p, t; d: real = 1 > 0):\n    return d * (p - t)^2\n"
        "loss mix(p, t):\n    return 0.5 * h(p, t; d=2) + h(p, t)\n"
    )
    assert second.value.kind == "real"
    with pytest.raises(SpecNameError, match="no parameter 'q'"):
        check("loss h(p, t):\n    return p\nloss g(p, t):\n    return h(p, t; q=1)\n")
    with pytest.raises(SpecShapeError, match="takes 2 inputs"):
        check("loss h(p, t):\n    return p\nloss g(p, t):\n    return h(p)\n")
