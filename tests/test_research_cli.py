"""CLI polish of issue 14: --version, run --param / --check, did-you-mean for names and tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lossdsl
from lossdsl.cli import main
from lossdsl.research.fdcheck import finite_difference_check


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lossdsl {lossdsl.__version__}"


def test_run_with_params_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "huber", "--param", "delta=0.5", "--check", "--batch", "64"]) == 0
    out = capsys.readouterr().out
    assert "delta=0.5" in out
    assert "gradient d/dpred" in out
    assert "MISMATCH" not in out
    assert main(["run", "huber", "--param", "dleta=1"]) == 2
    assert "did you mean: delta" in capsys.readouterr().err
    assert main(["run", "huber", "--param", "delta"]) == 2
    assert "not NAME=NUMBER" in capsys.readouterr().err


class _WrongGradient:
    """A stand-in loss, sum(x^2), whose gradient is off by 1% (the check must say so)."""

    inputs = ("x",)
    wrt = ("x",)

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(np.sum(x**2)), 2.02 * x

    def value_grad_hess(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return float(np.sum(x**2)), 2.02 * x, np.full_like(x, 2.0)


def test_finite_difference_check_catches_a_wrong_gradient() -> None:
    fake: Any = _WrongGradient()
    report = finite_difference_check(fake, [np.linspace(0.5, 2.0, 10)])
    assert report.errors["x", "gradient"] > 1.0
    assert report.errors["x", "hessian"] > 1.0  # the FD of the wrong gradient is 2.02, not 2
    assert not report.ok
    assert "MISMATCH" in report.text()


def test_unknown_names_and_tasks_get_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--task", "regresion"]) == 2
    assert "did you mean 'regression'?" in capsys.readouterr().err
    with pytest.raises(lossdsl.UnknownLossError, match="did you mean 'multiclass'"):
        lossdsl.available(task="multiclas")
    for argv in (["show", "hubr"], ["run", "hubr"], ["plot", "hubr"], ["analyze", "hubr"]):
        assert main(argv) == 2
        assert "did you mean 'huber'?" in capsys.readouterr().err


def test_a_misspelt_loss_called_in_a_spec_gets_close_matches() -> None:
    with pytest.raises(lossdsl.SpecNameError, match="did you mean 'huber'"):
        lossdsl.compile("loss f(p, t):\n    return 0.5 * hubr(p, t)\n")
