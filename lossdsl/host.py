"""The CPU runner: a validated `Call` through a generated CPU module's phases.

Splits the batch into fixed blocks (so sums come out the same for any thread count), picks the
thread count by size and turns the bad-label count into an error. Arrays are the caller's: the
runner allocates nothing the size of the input but the per-sample output of reduction 'none'.
A call may also be one chunk of a larger batch: `phase_sums` runs the totals or adjoints phase
alone, and `run` takes their sums over the whole batch (`lossdsl.phases` builds on both).
"""

from __future__ import annotations

from dataclasses import dataclass
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
# Stand for the block schedule and the block sums in a signature.
_SCHED = np.zeros(3, np.int64)
_PARTS = np.zeros((1, 1))

# Sums over a whole batch given to a chunk of it: (totals and weight sum, adjoints).
Given = tuple[np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class _Launch:
    """The kernel arguments of one call (`tail`: its outputs), and how its blocks run."""

    head: tuple[Any, ...]
    tail: tuple[Any, ...]
    blocks: int
    threads: int


def _launch(call: Call, tail: tuple[Any, ...]) -> _Launch:
    block = _block(call)
    return _Launch(_head(call, block), tail, _blocks(call, block), _threads(call))


class Runner:
    """How the kernels of `module` run calls of one signature (mode, shapes, dtypes,
    reduction, weights or none), decided once: the phases, the blocks and the threading. A
    runner made for one call serves every call the same validated plan covers.
    """

    def __init__(self, module: ModuleType, mode: str, call: Call, loss: ir.LossDef) -> None:
        if mode in HESSIAN_MODES:
            hessian_supported(loss, module)
        weighted = call.sw is not None or loss.weight is not None
        self.module, self.loss = module, loss
        self.block = _block(call)
        self.blocks = _blocks(call, self.block)
        self.parallel = call.n * max(call.axis_len, 1) >= PARALLEL_ELEMENTS
        self.phases = runtime.entry_phases(
            module, entry_name(mode, call.dtag), call.mode == 0 and weighted, call.axis_len
        )
        # The grad_hess entry computes no value: no per-sample array for reduction 'none'.
        self.valued = mode != "grad_hess"
        self.per_sample = call.mode == 2 and self.valued
        # The kernels' shapes of the outputs (one row per sample), where the inputs' differ.
        flat = [call.flat_shape(x) for x in loss.wrt]
        reshape = any(f != call.shape_of(x) for f, x in zip(flat, loss.wrt, strict=True))
        self.flat = flat if reshape else None

    def run(
        self,
        call: Call,
        grads: list[np.ndarray],
        hess: list[np.ndarray],
        given: Given = (None, None),
    ) -> Any:
        """Run the kernels for a validated call; returns the value (see `run`)."""
        dtype = call.dtype
        result = np.empty(call.batch, dtype) if self.per_sample else None
        chunk = given[0] is not None
        if call.n == 0:
            for g in grads + hess:
                g.fill(0)
            if result is not None or chunk:
                return result if result is not None else 0.0
            return dtype.type(np.nan if call.mode == 0 else 0.0)
        head = (*call.arrays, *call.params, call.sw, call.ct, call.mode, self.block)
        if self.flat is not None:
            grads = [a.reshape(f) for a, f in zip(grads, self.flat, strict=False)]
            hess = [a.reshape(f) for a, f in zip(hess, self.flat, strict=False)]
        tail = (None if result is None else result.reshape(-1), *grads, *hess)
        threads = runtime.threads() if self.parallel else 1
        value, bad = runtime.run_phases(self.phases, head, tail, self.blocks, threads, given)
        if bad:
            raise SpecShapeError(
                f"{int(bad)} sample(s) have a label outside [0, {call.axis_len}) "
                f"for loss '{self.loss.name}'",
                hint="labels index the class axis; mark ignored rows with a zero weight",
            )
        if result is not None:
            return result
        if chunk or not self.valued:
            return value
        return dtype.type(value)


def run(
    module: ModuleType,
    mode: str,
    call: Call,
    grads: list[np.ndarray],
    hess: list[np.ndarray],
    loss: ir.LossDef,
    given: Given = (None, None),
) -> Any:
    """Run the CPU kernels of `module` for a validated call; returns the value.

    `grads` and `hess` (shaped like the `wrt` inputs) receive the derivatives `mode` asks for.
    With `given` sums over a whole batch (see `phase_sums`), the call is one chunk of it and
    the value its share, in float64 (the per-sample outputs for reduction 'none').

    Raises:
        SpecShapeError: labels outside the class axis (with a non-zero weight).
    """
    return Runner(module, mode, call, loss).run(call, grads, hess, given)


def signature(
    mode: str, call: Call, grads: list[np.ndarray], hess: list[np.ndarray], loss: ir.LossDef
) -> tuple[str, tuple[Any, ...]]:
    """The entry point `run` calls for this call and its argument types (`describe` records):
    what Numba compiles once, the same for every phase of the entry."""
    stand_in = np.empty(1, call.dtype) if call.mode == 2 else None
    head, tail = _head(call, _block(call)), _tail(call, stand_in, grads, hess, loss)
    # The phase arguments: helper flag, block count, schedule and block sums (float64, C order,
    # like `runtime._run`'s).
    middle = (0, 0, _SCHED, *[_PARTS] * 3)
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


def _blocks(call: Call, block: int) -> int:
    return (call.n + block - 1) // block


def _threads(call: Call) -> int:
    return runtime.threads() if call.n * max(call.axis_len, 1) >= PARALLEL_ELEMENTS else 1


def _head(call: Call, block: int) -> tuple[Any, ...]:
    """The kernel arguments before the phase arguments: inputs, parameters, weights, ..."""
    return (*call.arrays, *call.params, call.sw, call.ct, call.mode, block)


def _tail(
    call: Call,
    result: np.ndarray | None,
    grads: list[np.ndarray],
    hess: list[np.ndarray],
    loss: ir.LossDef,
) -> tuple[Any, ...]:
    """The kernel arguments after the phase arguments: the outputs."""
    flat = [a.reshape(call.flat_shape(x)) for a, x in zip(grads, loss.wrt, strict=False)]
    flat += [a.reshape(call.flat_shape(x)) for a, x in zip(hess, loss.wrt, strict=False)]
    return (None if result is None else result.reshape(-1), *flat)


def phase_sums(
    module: ModuleType,
    mode: str,
    suffix: str,
    call: Call,
    loss: ir.LossDef,
    totals: np.ndarray | None = None,
) -> np.ndarray:
    """The sums of one earlier phase of entry `mode` over the call's samples: "_pre" (batch
    totals, per-class totals and the weight sum) or "_adj" (the totals' adjoints, given the
    `totals` of the whole batch). Zeros for an empty call."""
    entry = entry_name(mode, call.dtag)
    _, width, per_class, _ = next(p for p in module.PHASES[entry] if p[0] == suffix)
    if call.n == 0:
        return np.zeros(width + per_class * call.axis_len)
    # Stand-ins with the types of the outputs a full call passes (the phase writes none of
    # them): the kernel is compiled for the same signature, once.
    out = np.empty(0, call.dtype) if call.mode == 2 else None
    empty = [np.empty((0, call.axis_len)[: len(call.flat_shape(x))], call.dtype) for x in loss.wrt]
    outputs = {"value": [], "grad": empty, "hess": empty + empty}[mode]
    go = _launch(call, (out, *outputs))
    return runtime.phase_sums(
        module, entry, suffix, go.head, go.tail, go.blocks, go.threads, call.axis_len, totals
    )
