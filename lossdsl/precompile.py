"""Fill the kernel cache ahead of time: `precompile()` compiles every built-in once.

For each loss it generates (or finds) the cached modules (parameters at their defaults fixed,
and generic), then calls every entry point on a tiny batch of each float dtype, so Numba
compiles and stores the machine code a training job would otherwise compile on its first step.
Later processes load it from disk. Writes only a progress line to stderr; it does not change
any loss or setting.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from lossdsl import api, ir
from lossdsl.errors import LossDSLError

_DTYPES = (np.float32, np.float64)


def precompile(names: Iterable[str] | None = None, progress: bool = True) -> dict[str, float]:
    """Compile the kernels of the named losses (default: every registered one) into the cache.

    Args:
        names: loss names; None means `lossdsl.available()`.
        progress: print a progress bar to stderr.

    Returns:
        Seconds spent per loss (near zero for a loss already in the cache).

    Raises:
        UnknownLossError: a name is not registered.
    """
    chosen = list(api.available() if names is None else names)
    spent: dict[str, float] = {}
    start = time.perf_counter()
    for k, name in enumerate(chosen):
        if progress:
            _bar(k, len(chosen), name, time.perf_counter() - start)
        t0 = time.perf_counter()
        # The kernel with the defaults fixed, and (for a loss with parameters) the generic one
        # that every other parameter value runs; compiled here, not in the background.
        fixed = api.Loss(api.get(name).definition, compile_mode="sync")
        variants = [fixed]
        if fixed.params:
            variants.append(api.Loss(fixed.definition, specialize=False, compile_mode="sync"))
        for loss in variants:
            for dtype in _DTYPES:
                args = _tiny_inputs(loss.definition, dtype)
                for run in (loss, loss.value_and_grad, loss.hessian_diag, loss.grad_hess):
                    # An error raised after the kernel ran (e.g. a label this stand-in batch gets
                    # wrong for the loss) is fine: the kernel is compiled, which is all we need.
                    with contextlib.suppress(LossDSLError):
                        run(*args)
        spent[name] = time.perf_counter() - t0
    if progress:
        _bar(len(chosen), len(chosen), "done", time.perf_counter() - start)
        print(file=sys.stderr)
    return spent


def _tiny_inputs(loss: ir.LossDef, dtype: Any) -> list[np.ndarray]:
    """Two samples per input: valid labels, values inside (0, 1) so every domain accepts them."""
    out = []
    for inp in loss.inputs:
        shape = (2, 4) if inp.axis else (2,)
        if inp.kind == "int":
            out.append(np.zeros(2, np.int64))
        else:
            out.append(np.full(shape, 0.5, dtype))
    return out


def _bar(done: int, total: int, label: str, elapsed: float) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\rlossdsl precompile [{bar}] {done}/{total} {label:<24.24} {elapsed:5.1f}s")
    sys.stderr.flush()
