"""Registry: built-ins by file stem, user specs beside them, no silent shadowing, composition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl import api, ir
from lossdsl.errors import LossDSLError, SpecNameError, UnknownLossError
from lossdsl.parse import MAX_SOURCE_BYTES
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


# -- one bad file costs only itself (issue 10) ------------------------------------------------


def _bad_search_path(folder: Path) -> dict[str, str]:
    """A search path with one good spec and one file per way a spec file can be bad; returns
    the bad files' names and a fragment of the warning each gets."""
    (folder / "good.loss").write_text(ASYM.replace("asym", "good"))
    (folder / "defines_mse.loss").write_text("loss mse(pred, target):\n    return pred\n")
    (folder / "syntax.loss").write_text("loss broken(pred target):\n")
    (folder / "latin1.loss").write_bytes(b"# caf\xe9\nloss latin(pred, target):\n    return pred\n")
    (folder / "zero.loss").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo.loss")
    (folder / "folder.loss").mkdir()
    (folder / "dangling.loss").symlink_to(folder / "nowhere")
    (folder / "huge.loss").write_text("# " + "x" * (MAX_SOURCE_BYTES + 10) + "\n")
    return {
        "defines_mse.loss": "'mse' is a built-in",
        "syntax.loss": "syntax.loss:1:",
        "latin1.loss": "not valid UTF-8",
        "zero.loss": "not a regular file",
        "fifo.loss": "not a regular file",
        "folder.loss": "not a regular file",
        "dangling.loss": "cannot read",
        "huge.loss": "larger than",
    }


def test_one_bad_file_on_the_search_path_costs_only_itself(tmp_path: Path) -> None:
    bad = _bad_search_path(tmp_path)
    with pytest.warns(UserWarning, match="lossdsl: skipped") as record:
        reg = Registry(search_path=str(tmp_path))
    messages = [str(w.message) for w in record]
    for name, fragment in bad.items():
        (warning,) = [m for m in messages if f"{tmp_path / name}" in m]
        assert fragment in warning
    assert len(messages) == len(bad)
    assert "good" in reg.names()
    assert reg.is_builtin("mse")
    assert reg.definition("huber").name == "huber"
    assert reg.definition("good").task == "regression"


def test_cli_list_survives_a_bad_search_path(tmp_path: Path) -> None:
    _bad_search_path(tmp_path)
    env = {**os.environ, "LOSSDSL_PATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "lossdsl", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines()}
    assert {"huber", "mse", "good"} <= names
    assert "fifo.loss" in out.stderr


def test_replacing_a_builtin_leaves_builtins_that_call_it_alone(tmp_path: Path) -> None:
    # squared_hinge calls hinge: it keeps the built-in hinge, whichever is checked first.
    plain = Registry(search_path="")
    expected = ir.fingerprint(plain.definition("squared_hinge"))
    spec = tmp_path / "hinge.loss"
    spec.write_text("loss hinge(pred, target):\n    return 100 * pred\n")
    for check_first in (True, False):
        reg = Registry(search_path="")
        if check_first:
            reg.definition("squared_hinge")
        reg.register_file(spec, replace=True)
        assert ir.fingerprint(reg.definition("squared_hinge")) == expected
        assert ir.fingerprint(reg.definition("hinge")) != ir.fingerprint(plain.definition("hinge"))


def test_user_losses_call_the_loss_registered_now(tmp_path: Path) -> None:
    # A user loss calling a replaced user loss gets the new one, whichever was checked first.
    (tmp_path / "inner.loss").write_text("loss inner(pred, target):\n    return pred\n")
    (tmp_path / "outer.loss").write_text(
        "loss outer(pred, target):\n    return inner(pred, target)\n"
    )
    new_inner = tmp_path / "new" / "inner.loss"
    new_inner.parent.mkdir()
    new_inner.write_text("loss inner(pred, target):\n    return 2 * pred\n")
    results = []
    for check_first in (True, False):
        reg = Registry(search_path=str(tmp_path))
        if check_first:
            reg.definition("outer")
        reg.register_file(new_inner, replace=True)
        results.append(ir.fingerprint(reg.definition("outer")))
    assert results[0] == results[1]
    fresh = Registry(search_path=str(tmp_path))
    assert results[0] != ir.fingerprint(fresh.definition("outer"))


def test_api_register_replace_keeps_squared_hinge() -> None:
    pred, target = np.array([0.3, -0.2, 1.5]), np.array([1.0, -1.0, 1.0])
    margin = np.maximum(0.0, 1 - pred * target)
    api._LOSSES.clear()
    saved = api._REGISTRY
    api._REGISTRY = None
    try:
        lossdsl.register(
            lossdsl.compile("loss hinge(pred, target):\n    return 100 * pred\n"), True
        )
        np.testing.assert_allclose(lossdsl.get("squared_hinge")(pred, target), np.mean(margin**2))
        np.testing.assert_allclose(lossdsl.get("hinge")(pred, target), 100 * pred.mean())
    finally:
        api._REGISTRY = saved
        api._LOSSES.clear()


def test_spec_files_are_read_without_blocking_or_past_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.loss"
    os.mkfifo(fifo)
    reg = Registry(search_path="")
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(LossDSLError, match="not a regular file"):
            reg.register_file(path)
        with pytest.raises(LossDSLError, match="not a regular file"):
            lossdsl.load(path)
    bom = tmp_path / "bom.loss"
    bom.write_bytes(b"\xef\xbb\xbf" + ASYM.encode())
    assert reg.register_file(bom) == ["asym"]
