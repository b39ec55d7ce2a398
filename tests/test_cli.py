"""The command line: subcommands, exit codes, error rendering (also via `python -m lossdsl`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lossdsl.cli import main


def test_list_shows_tasks_and_summaries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "huber" in out
    assert "regression" in out
    assert "robust to outliers" in out
    assert main(["list", "--task", "multiclass"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert all("multiclass" in line for line in lines)


def test_check_reports_error_with_caret_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.loss"
    good.write_text("loss good(pred, target):\n    return (pred - target)^2\n")
    bad = tmp_path / "bad.loss"
    bad.write_text("loss bad(pred, target):\n    return (pred - tagret)^2\n")
    assert main(["check", str(good)]) == 0
    assert "ok (good)" in capsys.readouterr().out
    assert main(["check", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:20: error: unknown name 'tagret'" in err
    assert "^~~~~~" in err
    assert "did you mean 'target'" in err
    assert "Traceback" not in err


def test_show_formulas_source_and_latex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "huber"]) == 0
    out = capsys.readouterr().out
    assert "gradient  dl/dpred" in out
    assert "hessian" in out
    assert main(["show", "huber", "--source"]) == 0
    assert "@numba.njit" in capsys.readouterr().out
    assert main(["show", "huber", "--latex"]) == 0
    assert "\\" in capsys.readouterr().out
    spec = tmp_path / "two.loss"
    spec.write_text("loss a(x):\n    return x^2\nloss b(x):\n    return a(x) + x\n")
    assert main(["show", str(spec), "--name", "a"]) == 0
    assert "dl/dx = 2*x" in capsys.readouterr().out


def test_unknown_loss_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "hubber"]) == 2
    err = capsys.readouterr().err
    assert "unknown loss 'hubber'" in err
    assert "did you mean 'huber'" in err


def test_run_evaluates_a_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "sparse_cross_entropy", "--batch", "16", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "value" in out
    assert "grad logits: shape (16, 5)" in out


def test_fmt_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "messy.loss"
    spec.write_text("loss   messy( x ,y ;k:real=2>0 ):\n  return ((x-y))^2*(k)\n")
    assert main(["fmt", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out == "loss messy(x, y; k: real = 2 > 0):\n    return (x - y)^2 * k\n"


def test_python_dash_m_is_the_same_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lossdsl", "show", "mse"], capture_output=True, text=True, check=True
    )
    assert "dl/dpred" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lossdsl", "check", "/nonexistent.loss"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
