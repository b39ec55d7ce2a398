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
from lossdsl.codegen.names import entry_name
from lossdsl.errors import SpecShapeError

# Samples per block scale so one block holds about this many elements: big enough to amortise
# the per-block partial sum, small enough that every core gets blocks.
BLOCK_ELEMENTS = 16_384
# Below this many elements a serial kernel beats thread start-up.
PARALLEL_ELEMENTS = 262_144
# Stands for the block sums in a signature.
_PARTS = np.zeros((1, 1))


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
    result = np.empty(call.batch, dtype) if call.mode == 2 else None
    if n == 0:
        for g in grads + hess:
            g.fill(0)
        return result if result is not None else dtype.type(np.nan if call.mode == 0 else 0.0)
    elements = n * max(call.axis_len, 1)
    block = _block(call)
    blocks = (n + block - 1) // block
    threads = runtime.threads() if elements >= PARALLEL_ELEMENTS else 1
    head, tail = _arguments(call, block, result, grads, hess, loss)
    weighted = call.sw is not None or loss.weight is not None
    weighted_mean = call.mode == 0 and weighted
    entry = entry_name(mode, call.dtag)
    if mode == "hess":
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


def signature(
    mode: str, call: Call, grads: list[np.ndarray], hess: list[np.ndarray], loss: ir.LossDef
) -> tuple[str, tuple[Any, ...]]:
    """The entry point `run` calls for this call and its argument types (`describe` records):
    what Numba compiles once, the same for every phase of the entry."""
    stand_in = np.empty(1, call.dtype) if call.mode == 2 else None
    head, tail = _arguments(call, _block(call), stand_in, grads, hess, loss)
    # The phase arguments: block range and block sums (float64, C order, like `run_phases`').
    middle = (0, 0, *[_PARTS] * 3)
    return entry_name(mode, call.dtag), tuple(describe(a) for a in (*head, *middle, *tail))


def describe(value: Any) -> Any:
    """A picklable record of the Numba type of a kernel argument, made without importing Numba
    (`runtime.numba_signature` turns it back): arrays by dtype, dimensions, layout, flags."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return (value.dtype.str, value.ndim, layout, not flags.writeable, flags.aligned)
    if isinstance(value, np.generic):
        return value.dtype.str
    return type(value).__name__


def _block(call: Call) -> int:
    return max(1, BLOCK_ELEMENTS // max(call.axis_len, 1))


def _arguments(
    call: Call,
    block: int,
    result: np.ndarray | None,
    grads: list[np.ndarray],
    hess: list[np.ndarray],
    loss: ir.LossDef,
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The kernel arguments before the phase arguments (inputs, parameters, weights, ...) and
    after them (the outputs)."""
    wrt = loss.wrt
    flat = [a.reshape(call.flat_shape(x)) for a, x in zip(grads, wrt, strict=False)]
    flat += [a.reshape(call.flat_shape(x)) for a, x in zip(hess, wrt, strict=False)]
    head = (*call.arrays, *call.params, call.sw, call.ct, call.mode, block)
    tail = (None if result is None else result.reshape(-1), *flat)
    return head, tail
