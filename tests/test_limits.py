"""The bounded front end (issue 10): limits, encodings, carets and messages, each located.

The cases that once crashed, hung or blew up live in tests/regressions/badinput-*.loss and are
replayed by test_fuzz_text.py; these tests check where the errors point and what they say.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl import ir, limits
from lossdsl.cli import main
from lossdsl.errors import DerivationError, LossDSLError, SpecShapeError, SpecSyntaxError
from lossdsl.parse import decode_spec, parse_spec
from lossdsl.registry import Registry

REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("badinput-*.loss"))


def _error(source: str) -> LossDSLError:
    with pytest.raises(LossDSLError) as info:
        lossdsl.check_source(source)
    return info.value


@pytest.mark.parametrize("separator", ["\f", "\x0b", "\x85", "\u2028", "\x1c"])
def test_caret_stays_on_the_parser_line(separator: str) -> None:
    src = f"loss f(x, y):\n    # note{separator}more\n    r = x - y\n    return r +\n"
    err = _error(src)
    assert err.span is not None
    assert err.span.line == 4
    shown = str(err).splitlines()
    assert shown[1] == "        return r +"
    assert shown[2].index("^") == len("        return r +")


def test_control_characters_do_not_shift_the_caret() -> None:
    err = _error("loss f(x, y):\n    return x\f + $y\n")
    line, caret = str(err).splitlines()[1:3]
    assert line[caret.index("^")] == "$"


def test_unclosed_bracket_points_at_the_bracket() -> None:
    err = _error("loss f(x, y):\n    r = abs((x - y)\n    return r\n")
    assert isinstance(err, SpecSyntaxError)
    assert err.span is not None
    assert (err.span.line, err.span.column) == (2, 12)
    assert "never closed" in err.message
    assert err.hint
    assert "')'" in err.hint


def test_unclosed_bracket_at_end_of_input() -> None:
    err = _error("loss f(x, y):\n    return sum[C](x\n")
    assert err.span is not None
    assert (err.span.line, err.span.column) == (2, 18)


def test_if_then_gets_a_where_hint() -> None:
    err = _error("loss f(x, y):\n    return if x > y then x else y\n")
    assert err.hint is not None
    assert "where(" in err.hint


def test_bom_is_accepted() -> None:
    src = "\ufeffloss f(x, y):\n    return (x - y)^2\n"
    assert parse_spec(src).losses[0].name == "f"
    assert decode_spec(src.encode()).startswith("loss")


def test_non_utf8_points_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "bad.loss"
    path.write_bytes(b"loss f(x, y):\n    return x - \xffy\n")
    with pytest.raises(SpecSyntaxError) as info:
        lossdsl.load(path)
    span = info.value.span
    assert span is not None
    assert (span.line, span.column) == (2, 16)
    assert "UTF-8" in info.value.message
    with pytest.raises(SpecSyntaxError):
        Registry(search_path="").register_file(path)


def test_cli_check_reports_every_bad_input_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path in REGRESSIONS:
        code = main(["check", str(path)])
        captured = capsys.readouterr()
        assert code in (0, 2), path
        assert "Traceback" not in captured.err
        if b"expect: SpecSyntaxError" in path.read_bytes()[:80]:
            assert code == 2, path
            assert "error:" in captured.err


def test_depth_limit_points_inside_the_expression() -> None:
    depth = limits.MAX_DEPTH + 5
    err = _error("loss f(x):\n    return " + "-" * depth + "x\n")
    assert isinstance(err, SpecSyntaxError)
    assert err.span is not None
    assert err.span.line == 2
    assert f"{limits.MAX_DEPTH}" in err.message


def test_depth_after_locals_is_bounded() -> None:
    body = "".join(f"    a{k} = exp(a{k - 1})\n" for k in range(1, limits.MAX_IR_DEPTH + 5))
    err = _error("loss f(x):\n    a0 = x\n" + body + f"    return a{limits.MAX_IR_DEPTH + 4}\n")
    assert isinstance(err, SpecShapeError)
    assert "deep" in err.message


def test_counts_are_bounded() -> None:
    losses = "".join(f"loss f{k}(x):\n    return x\n" for k in range(limits.MAX_LOSSES + 1))
    assert "losses" in _error(losses).message
    names = ", ".join(f"x{k}" for k in range(limits.MAX_INPUTS + 1))
    assert "inputs" in _error(f"loss f({names}):\n    return x0\n").message


def test_long_chain_checks_to_a_shallow_tree() -> None:
    (loss,) = _check_defs("loss f(x):\n    return " + " - ".join(["x"] * 500) + "\n")
    limits.bound_ir((loss.value,), loss.span)  # within MAX_IR_DEPTH although written 500 long


def _check_defs(source: str) -> tuple[ir.LossDef, ...]:
    return lossdsl.check_source(source)


def test_fingerprint_is_linear_in_composition_depth() -> None:
    levels = 10  # each loss calls the previous one twice: 2^10 copies once expanded
    src = "loss a0(x, y):\n    return (x - y)^2\n" + "".join(
        f"loss a{k}(x, y):\n    return a{k - 1}(x, y) + a{k - 1}(y, x)\n"
        for k in range(1, levels + 1)
    )
    defs = _check_defs(src)
    sizes = [len(ir.fingerprint(d)) for d in defs]
    assert max(sizes) < 4 * min(sizes[1:]), sizes


def test_constants_are_folded_with_their_place() -> None:
    err = _error("loss f(x):\n    r = x + 1\n    return r * 10^(3 * 200)\n")
    assert isinstance(err, SpecShapeError)
    assert err.span is not None
    assert (err.span.line, err.span.column) == (3, 16)


@pytest.mark.parametrize(
    "call", ["sqrt(-1)", "log1p(-3)", "xlogy(1, 0)", "bce(10, 10)", "max(sqrt(-2), 1)"]
)
def test_primitive_of_constants_outside_its_domain_is_located(call: str) -> None:
    # These compiled to a kernel that returned NaN for every sample.
    loss = lossdsl.compile(f"loss f(x):\n    return x + {call}\n")
    with pytest.raises(SpecShapeError) as info:
        loss.source()
    assert info.value.span is not None
    span = info.value.span
    assert span.line == 2
    assert 16 <= span.column < 16 + len(call), "a call in this spec"


def _torch_bce(p: float, t: float) -> float:
    def clamped(v: float) -> float:  # torch clamps each log at -100
        return max(math.log(v), -100.0) if v > 0 else -100.0

    return -(t * clamped(p) + (1 - t) * clamped(1 - p))


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("sigmoid(0.5)", 1 / (1 + math.exp(-0.5))),
        ("softplus(3)", math.log1p(math.exp(3))),
        ("softplus(-800)", 0.0),
        ("log_sigmoid(-2)", -math.log1p(math.exp(2))),
        ("logcosh(1000)", 1000 - math.log(2)),
        ("expm1(1e-10)", math.expm1(1e-10)),
        ("bce(0.25, 1)", _torch_bce(0.25, 1)),
        ("bce(0, 1)", _torch_bce(0, 1)),
        ("bce(1, 1)", _torch_bce(1, 1)),
        ("xlogy(0, 0)", 0.0),
        ("max(softplus(1), 1.2)", math.log1p(math.e)),
        ("bce(0.5, 0.5)^308", math.log(2) ** 308),
    ],
)
def test_primitive_of_constants_is_folded_to_its_value(call: str, expected: float) -> None:
    # Folded while lowering (exactly: the power of the float log(2) is 308 roundings off), where
    # `bce(0.5, 0.5)^308` once spent 9 s expanding the power of a call.
    loss = lossdsl.compile(f"loss f(x):\n    return x + {call}\n")
    value = loss(np.zeros(2), reduction="none")
    np.testing.assert_allclose(value, [expected, expected], rtol=1e-13, atol=1e-300)


def test_long_literals_are_floats_with_exact_values() -> None:
    """tests/regressions/badinput-long-literal-exponent.loss (its derivation once exhausted
    memory): value and gradient against the closed form in NumPy, the literals as written."""
    path = Path(__file__).parent / "regressions" / "badinput-long-literal-exponent.loss"
    loss = lossdsl.load(path)
    rng = np.random.default_rng(11)
    x0, x2 = rng.normal(size=(6, 3)), rng.uniform(0.2, 2.0, size=6)
    r = 0.52497918747894
    a = np.tanh(x2 ** (1 + r))
    b = np.tanh(np.exp(math.pi * x2[:, None] - x0))
    c = np.tanh(x2**0.99980001)
    expected = a * x0.mean(axis=1) + b.mean(axis=1) + c
    da = (1 + r) * x2**r * (1 - a**2) * x0.mean(axis=1)
    db = ((1 - b**2) * np.exp(math.pi * x2[:, None] - x0) * math.pi).mean(axis=1)
    dc = 0.99980001 * x2**-0.00019999 * (1 - c**2)
    value, (g0, g2) = loss.value_and_grad(x0, x2, reduction="none", wrt=("x0", "x2"))
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(g2, da + db + dc, rtol=1e-10)
    dx0 = a[:, None] / 3 - (1 - b**2) * np.exp(math.pi * x2[:, None] - x0) / 3
    np.testing.assert_allclose(g0, dx0, rtol=1e-10, atol=1e-15)


def test_a_hessian_past_the_size_bound_leaves_value_and_gradient() -> None:
    """Random spec 710742: its Hessian diagonal grows past limits.MAX_OPS while its gradient
    does not. Value and gradient run (against central differences); Hessian calls raise the
    located DerivationError."""
    regressions = Path(__file__).parent / "regressions"
    loss = lossdsl.load(regressions / "miscompile-large-hessian-rejected-spec-case.loss")
    rng = np.random.default_rng(3)
    x, lab = rng.normal(size=(3, 4)), np.array([0, 1, 2])
    value, grad = loss.value_and_grad(x, lab, reduction="sum")
    eps = 1e-6
    for i, j in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i, j] = eps
        fd = (loss(x + d, lab, reduction="sum") - loss(x - d, lab, reduction="sum")) / (2 * eps)
        assert math.isclose(grad[i, j], fd, rel_tol=1e-5, abs_tol=1e-8)
    assert np.isfinite(value)
    with pytest.raises(DerivationError, match="Hessian diagonal") as info:
        loss.hessian_diag(x, lab)
    assert info.value.span is not None
    assert f"{limits.MAX_OPS} operations" in str(info.value)
