"""Shared test configuration: kernel cache location, tolerances, input generators, references.

Tolerances and generators live here only. Kernels compile into one cache per test session
(`LOSSDSL_CACHE_DIR`, defaulting to a folder under .pytest_cache) so each is compiled once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "lossdsl-kernels"
os.environ.setdefault("LOSSDSL_CACHE_DIR", str(_CACHE))
# Tests name the path they check: the fused kernels unless a test asks for the NumPy path
# (compile_mode="never") or the background switch (tests/test_eager.py).
os.environ.setdefault("LOSSDSL_COMPILE", "sync")

# float64 agreement with an independent reference (PyTorch, NumPy closed forms).
RTOL64 = 1e-10
ATOL64 = 1e-12
# float32 kernels against float64 results.
RTOL32 = 2e-5
ATOL32 = 1e-6
# Central finite differences in float64: error ~ h^2 * f''' + eps / h.
FD_RTOL = 1e-5
FD_ATOL = 1e-6


def assert_close(
    actual: object, expected: object, rtol: float = RTOL64, atol: float = ATOL64
) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _central(
    f_at: Callable[[np.ndarray, int], float], x: np.ndarray, rel_step: float
) -> np.ndarray:
    """Central differences along each coordinate k of `f_at(x, k)`, step scaled to x[k]."""
    x = np.array(x, dtype=np.float64)
    out = np.empty_like(x)
    flat, oflat = x.reshape(-1), out.reshape(-1)
    for k in range(flat.size):
        h = rel_step * max(1.0, abs(flat[k]))
        old = flat[k]
        flat[k] = old + h
        up = f_at(x, k)
        flat[k] = old - h
        down = f_at(x, k)
        flat[k] = old
        oflat[k] = (up - down) / (2 * h)
    return out


def fd_grad(f: Callable[[np.ndarray], float], x: np.ndarray, rel_step: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function."""
    return _central(lambda z, k: f(z), x, rel_step)


def fd_hess_diag(
    grad: Callable[[np.ndarray], np.ndarray], x: np.ndarray, rel_step: float = 1e-5
) -> np.ndarray:
    """Finite differences of the gradient along each coordinate: the Hessian diagonal."""
    return _central(lambda z, k: float(grad(z).reshape(-1)[k]), x, rel_step)


def has_hessian(loss: object, *args: object) -> bool:
    """Whether lossdsl derives the Hessian diagonal of `loss`. Where it documents it as
    unsupported (a softmax inside per-class totals: dice_loss), every Hessian entry point
    called on `args` must raise that DerivationError, naming the spec; checked here."""
    from lossdsl.errors import DerivationError

    error = loss.derived().hessian_error  # type: ignore[attr-defined]
    if error is None:
        return True
    for call in (loss.hessian_diag, loss.value_grad_hess, loss.grad_hess):  # type: ignore[attr-defined]
        with pytest.raises(DerivationError, match="Hessian diagonal") as info:
            call(*args)
        assert info.value.message == error[0]
        assert info.value.span is not None
    return False


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def torch_or_skip():  # type: ignore[no-untyped-def]
    """Import torch for tests marked `torch`; skip cleanly where it is not installed."""
    return pytest.importorskip("torch")


def draw_inputs(
    loss: object, rng: np.random.Generator, batch: int = 6, classes: int = 4
) -> dict[str, np.ndarray]:
    """Inputs for a checked loss drawn from each input's declared domain, kept off the bounds.

    Real inputs without a domain are N(0, 1); a one-sided domain is shifted by |N(0, 1)|;
    int labels are uniform in [0, classes) for losses with an axis, else in {0, 1}.
    """
    out: dict[str, np.ndarray] = {}
    for inp in loss.inputs:  # type: ignore[attr-defined]
        shape = (batch, classes) if inp.axis else (batch,)
        d = inp.domain
        if inp.kind == "int":
            if d is not None and d.low is not None and d.high is not None:
                out[inp.name] = rng.integers(int(d.low), int(d.high) + 1, size=shape)
            else:
                high = classes if loss.axis else 2  # type: ignore[attr-defined]
                out[inp.name] = rng.integers(0, high, size=shape)
            continue
        if d is None or (d.low is None and d.high is None):
            out[inp.name] = rng.normal(size=shape)
        elif d.low is not None and d.high is not None:
            span = d.high - d.low
            out[inp.name] = rng.uniform(d.low + 0.05 * span, d.high - 0.05 * span, size=shape)
        elif d.low is not None:
            out[inp.name] = d.low + 0.1 + np.abs(rng.normal(size=shape))
        else:
            out[inp.name] = d.high - 0.1 - np.abs(rng.normal(size=shape))  # type: ignore[operator]
    return out


def boosting_data(seed: int, n: int = 300) -> dict[str, np.ndarray]:
    """Features and labels for training a built-in and a lossdsl objective side by side.

    Features take 12 distinct values, so histogram cuts are exact and both runs see the same
    splits. Labels for each kind of objective: real, binary (0/1), counts, positive, and
    classes 0..2 (float, as the libraries hold labels); `w` are sample weights.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, size=(n, 3)).astype(np.float64)
    y = x[:, 0] / 4 + rng.normal(size=n)
    return {
        "x": x,
        "w": rng.uniform(0.2, 2.0, n),
        "real": y,
        "binary": (y > 1.5).astype(np.float64),
        "counts": rng.poisson(np.exp(x[:, 0] / 8)).astype(np.float64),
        "positive": np.exp(y / 2),
        "classes": ((x[:, 1] // 4 + rng.integers(0, 2, n)) % 3).astype(np.float64),
    }


def readme_snippet(heading: str) -> str:
    """The first ```python block after a README heading (the snippets users copy)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    after = text[text.index(f"\n{heading}\n") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```\n", start)]
