"""`show --latex` and the Jupyter display are valid LaTeX with no spec syntax (issue 14).

Every formula row, and every branch and condition of each `cases` block, is parsed by
matplotlib's mathtext (which lacks `cases` and `\\text`, so those are taken apart first);
the block as a whole is checked for balanced braces, `\\left`/`\\right` and environments.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

import lossdsl
from lossdsl.cli import main

mathtext = pytest.importorskip("matplotlib.mathtext")

# Where, gathers, powers, batch totals, float constants, square roots (box_iou's long formulas
# take mathtext half a minute: left out).
LOSSES = ["huber", "sparse_cross_entropy", "sigmoid_focal", "dice", "cosine_embedding", "rmse"]
INNER = re.compile(r"\\begin\{cases\}((?:(?!\\begin\{cases\}).)*?)\\end\{cases\}", re.S)


def pieces(block: str) -> Iterator[str]:
    body = block.split("\\begin{aligned}\n")[1].split("\n\\end{aligned}")[0]
    for row in body.split(" \\\\\n"):
        lhs, rhs = row.split(" &= ")
        yield lhs
        while (m := INNER.search(rhs)) is not None:
            for part in re.split(r" \\\\ | & ", m.group(1)):
                yield part.replace(r"\text{if }", "").replace(r"\text{otherwise}", "1")
            rhs = rhs[: m.start()] + "X" + rhs[m.end() :]
        yield rhs


@pytest.mark.parametrize("name", LOSSES)
def test_latex_parses_and_has_no_spec_syntax(name: str) -> None:
    tex = lossdsl.get(name).explain(latex=True)
    assert tex.startswith("\\begin{aligned}\n")
    assert tex.endswith("\n\\end{aligned}")
    assert tex.count("{") == tex.count("}")
    assert tex.count("\\left") == tex.count("\\right")
    assert tex.count("\\begin{cases}") == tex.count("\\end{cases}")
    for spec_syntax in ("where(", "sum[", "max[", "_q", "total(", "Where", "operatorname{Sign"):
        assert spec_syntax not in tex
    parser = mathtext.MathTextParser("path")
    for piece in pieces(tex):
        parser.parse(f"${piece.strip()}$")


def test_multi_letter_names_and_where() -> None:
    tex = lossdsl.get("huber").explain(latex=True)
    assert "\\begin{cases}" in tex
    assert "r &= \\mathit{pred} - \\mathit{target} \\\\\n" in tex  # the spec's local name
    assert "\\text{if } \\left|r\\right| \\leq \\delta" in tex
    ce = lossdsl.get("sparse_cross_entropy").explain(latex=True)
    assert "\\mathit{label\\_smoothing}" in ce
    assert "\\max_{c}" in ce


def test_jupyter_display_and_show_command(capsys: pytest.CaptureFixture[str]) -> None:
    loss = lossdsl.get("huber")
    assert loss._repr_latex_() == "$$" + loss.explain(latex=True) + "$$"
    md = loss._repr_markdown_()
    assert md.startswith("**huber** (regression; last layer `identity`).")
    assert "$$\n\\begin{aligned}" in md
    assert main(["show", "huber", "--latex"]) == 0
    assert capsys.readouterr().out.strip() == loss.explain(latex=True)
