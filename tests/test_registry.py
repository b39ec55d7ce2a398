"""Registry: built-ins by file stem, user specs beside them, no silent shadowing, composition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl.errors import SpecNameError, UnknownLossError
from lossdsl.registry import Registry, specs_dir

ASYM = """\
# Asymmetric squared error.
loss asym(pred, target; k: real = 2 > 0):
    task regression
    r = pred - target
    return where(r > 0, k * r^2, r^2)
"""


def test_builtins_are_discovered_by_stem() -> None:
    reg = Registry()
    names = reg.names()
    assert "huber" in names
    assert "cross_entropy" in names
    assert names == sorted(p.stem for p in specs_dir().glob("*.loss"))
    assert reg.is_builtin("mse")


def test_unknown_loss_suggests_close_names() -> None:
    with pytest.raises(UnknownLossError) as info:
        lossdsl.get("hubr")
    assert "did you mean 'huber'" in str(info.value)


def test_register_file_then_get_and_compose(tmp_path: Path, rng: np.random.Generator) -> None:
    reg = Registry(search_path="")
    spec = tmp_path / "asym.loss"
    spec.write_text(ASYM)
    assert reg.register_file(spec) == ["asym"]
    mix = tmp_path / "mix.loss"
    mix.write_text(
        "loss mix(pred, target):\n    return 0.5 * asym(pred, target; k=3) + mse(pred, target)\n"
    )
    reg.register_file(mix)
    loss = lossdsl.Loss(reg.definition("mix"))
    p, t = rng.normal(size=40), rng.normal(size=40)
    r = p - t
    expected = (0.5 * np.where(r > 0, 3 * r * r, r * r) + r * r).mean()
    np.testing.assert_allclose(loss(p, t), expected, rtol=1e-12)
    g = loss.grad(p, t)
    np.testing.assert_allclose(g, (0.5 * np.where(r > 0, 6 * r, 2 * r) + 2 * r) / 40, rtol=1e-12)


def test_user_spec_never_silently_shadows_a_builtin(tmp_path: Path) -> None:
    reg = Registry(search_path="")
    spec = tmp_path / "huber.loss"
    spec.write_text("loss huber(pred, target):\n    return abs(pred - target)\n")
    with pytest.raises(SpecNameError, match="is a built-in"):
        reg.register_file(spec)
    assert reg.register_file(spec, replace=True) == ["huber"]
    assert not reg.is_builtin("huber")


def test_search_path_variable(tmp_path: Path) -> None:
    (tmp_path / "asym.loss").write_text(ASYM)
    reg = Registry(search_path=str(tmp_path))
    assert "asym" in reg.names()
    env = {**os.environ, "LOSSDSL_PATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "lossdsl", "list", "--task", "regression"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "asym" in out.stdout
    assert "Asymmetric squared error." in out.stdout


def test_composition_cycle_is_an_error(tmp_path: Path) -> None:
    reg = Registry(search_path="")
    (tmp_path / "a.loss").write_text("loss a(x):\n    return b(x)\n")
    (tmp_path / "b.loss").write_text("loss b(x):\n    return a(x)\n")
    reg.register_file(tmp_path)
    with pytest.raises(SpecNameError, match="cycle"):
        reg.definition("a")


def test_register_compiled_loss_through_the_api(rng: np.random.Generator) -> None:
    loss = lossdsl.compile(ASYM.replace("asym", "asym_api"))
    assert lossdsl.register(loss) == ["asym_api"]
    assert lossdsl.get("asym_api").definition == loss.definition
    assert "asym_api" in lossdsl.available(task="regression")
    with pytest.raises(SpecNameError):
        lossdsl.register(lossdsl.compile("loss mse(a, b):\n    return a\n"))
