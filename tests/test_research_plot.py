"""`lossdsl plot` renders headless (issue 14): files non-empty, axes labelled, one line per loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl.cli import main

pytest.importorskip("matplotlib")

from lossdsl.research.plot import plot_losses, save_figure


def test_figure_has_labelled_panels_and_one_line_per_loss() -> None:
    fig = plot_losses(["mse", "mae", "huber"], {"delta": 0.5}, hessian=True, x_range=(-2, 2))
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_xlabel() == "residual pred - target"
        assert ax.get_ylabel()
        assert len(ax.get_lines()) == 3 + 1  # one per loss and the zero line
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["mse", "mae", "huber, delta=0.5"]
    # The plotted gradient is Huber's clipped residual (a closed form, not the kernel).
    x, g = fig.axes[1].get_lines()[2].get_data()
    np.testing.assert_allclose(g, np.clip(x, -0.5, 0.5), atol=1e-12)


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_every_format_is_written(tmp_path: Path, fmt: str) -> None:
    out = save_figure(plot_losses(["mse"]), tmp_path / f"f.{fmt}")
    assert out.stat().st_size > 1000


def test_command_writes_the_file_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp.svg"
    assert main(["plot", "mse", "huber", "--param", "delta=2", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<?xml")
    assert main(["plot", "mse", "-o", str(tmp_path / "x.gif")]) == 2
    assert "unknown image format 'gif'" in capsys.readouterr().err
    assert main(["plot", "mse", "bce_with_logits", "-o", str(out)]) == 2
    assert "cannot share an axis" in capsys.readouterr().err
    with pytest.raises(lossdsl.LossDSLError, match="nothing to plot"):
        plot_losses([])
