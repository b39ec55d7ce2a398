"""Readable derivatives (issue 14): `show` writes formulas with the spec's local names, lists
only the aggregates they use, and says which loss of a multi-loss file it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

import lossdsl
from lossdsl.cli import main


def test_local_names_are_kept() -> None:
    text = lossdsl.get("huber").explain()
    assert "let       r = pred - target" in text
    assert "gradient  dl/dpred = where(abs(r) <= delta, r, delta*sign(r))" in text
    focal = lossdsl.get("sigmoid_focal").explain()
    assert "let       miss = " in focal
    assert "let       alpha_t = " in focal
    assert "pow(miss, gamma)" in focal.split("value")[1]


def test_unused_locals_and_aggregates_are_not_listed() -> None:
    loss = lossdsl.compile(
        "loss tidy(x[C], t[C]):\n"
        "    unused = x * 2\n"
        "    d = x - t\n"
        "    return sum[C](d^2) + 0 * max[C](x)\n"
    )
    text = loss.explain()
    assert "max[C]" not in text
    assert "unused" not in text
    assert "sum[C]" in text
    assert "latex" not in text
    assert "\\max" not in loss.explain(latex=True)


def test_show_names_the_loss_it_picked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "two.loss"
    spec.write_text(
        "loss first(pred, target):\n    return (pred - target)^2\n"
        "loss second(pred, target):\n    return abs(pred - target)\n",
        encoding="utf-8",
    )
    assert main(["show", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "loss second(pred, target)" in captured.out
    assert "defines first, second; showing 'second'" in captured.err
    assert main(["show", str(spec), "--name", "first"]) == 0
    assert capsys.readouterr().err == ""


def test_locals_that_are_one_aggregate_name_it() -> None:
    text = lossdsl.get("tversky").explain()
    value = text.split("value     l = ")[1].splitlines()[0]
    for name in ("tp", "fp", "fn"):
        assert name in value
    assert "    tp = total(pred*target)   (over the batch)" in text
    assert "\\mathit{tp} &= \\sum_{\\text{batch}}" in lossdsl.get("tversky").explain(latex=True)
