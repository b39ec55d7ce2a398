"""The CPU runner: a validated `Call` through a generated CPU module's phases.

Splits the batch into fixed blocks (so sums come out the same for any thread count), picks the
thread count by size and turns the bad-label count into an error. Arrays are the caller's: the
runner allocates nothing the size of the input but the per-sample output of reduction 'none'.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from lossdsl import ir, runtime
from lossdsl.calls import Call, hessian_supported
from lossdsl.codegen.names import HESSIAN_MODES, entry_name
from lossdsl.errors import SpecShapeError

# Samples per block scale so one block holds about this many elements: big enough to amortise
# the per-block partial sum, small enough that every core gets blocks.
BLOCK_ELEMENTS = 16_384
# Below this many elements a serial kernel beats thread start-up.
PARALLEL_ELEMENTS = 262_144


def run(
    module: ModuleType,
    mode: str,
    call: Call,
    grads: list[np.ndarray],
    hess: list[np.ndarray],
    loss: ir.LossDef,
) -> Any:
    """Run the CPU kernels of `module` for a validated call; returns the value.

    `grads` and `hess` (shaped like the `wrt` inputs) receive the derivatives `mode` asks for.

    Raises:
        SpecShapeError: labels outside the class axis (with a non-zero weight).
    """
    n, dtype = call.n, call.dtype
    # The grad_hess entry computes no value: no per-sample array for reduction 'none'.
    result = np.empty(call.batch, dtype) if call.mode == 2 and mode != "grad_hess" else None
    if n == 0:
        for g in grads + hess:
            g.fill(0)
        return result if result is not None else dtype.type(np.nan if call.mode == 0 else 0.0)
    elements = n * max(call.axis_len, 1)
    block = max(1, BLOCK_ELEMENTS // max(call.axis_len, 1))
    blocks = (n + block - 1) // block
    threads = runtime.threads() if elements >= PARALLEL_ELEMENTS else 1
    wrt = loss.wrt
    flat = [a.reshape(call.flat_shape(x)) for a, x in zip(grads, wrt, strict=False)]
    flat += [a.reshape(call.flat_shape(x)) for a, x in zip(hess, wrt, strict=False)]
    head = (*call.arrays, *call.params, call.sw, call.ct, call.mode, block)
    tail = (None if result is None else result.reshape(n), *flat)
    weighted = call.sw is not None or loss.weight is not None
    weighted_mean = call.mode == 0 and weighted
    entry = entry_name(mode, call.dtag)
    if mode in HESSIAN_MODES:
        hessian_supported(loss, module)
    value, bad = runtime.run_phases(
        module, entry, head, tail, blocks, threads, weighted_mean, call.axis_len
    )
    if bad:
        raise SpecShapeError(
            f"{int(bad)} sample(s) have a label outside [0, {call.axis_len}) "
            f"for loss '{loss.name}'",
            hint="labels index the class axis; mark ignored rows with a zero weight",
        )
    return result if result is not None else dtype.type(value)
