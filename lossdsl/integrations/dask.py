"""Dask arrays in, Dask arrays out: every `Loss` call on `dask.array` inputs, lazily.

`run` (reached from any `Loss` call that is given a Dask array) builds a graph of the loss's
phases (`Loss.partial_totals`, `partial_adjoints`, `finalize`): the totals and weight sum of
each block, added in a tree; the adjoints of each block given those totals, added in a tree;
then the fused pass of each block given both. Values, gradients and Hessian diagonals are
exact (not per-block approximations) and lazy: a 0-d array for a reduced value, arrays chunked
like the inputs for per-sample outputs and derivatives. Nothing is computed until the caller
computes; every block runs the same fused kernels, which a worker process loads from the
on-disk cache (a `Loss` pickles by its definition). A class or feature axis split over several
chunks is rechunked into one. `from_npy` and `to_npy` stream `.npy` files block by block; and
`dask_totals` gives the boosting adapters exact start scores.
"""

from __future__ import annotations

import importlib
import math
import operator
import os
from typing import TYPE_CHECKING, Any

import numpy as np

import lossdsl
from lossdsl import SpecShapeError, UnsupportedError

if TYPE_CHECKING:
    from lossdsl.integrations.gbdt import Booster
    from lossdsl.integrations.start import Totals

# Partial sums added per task of the tree reductions.
SPLIT_EVERY = 8


def run(
    loss: lossdsl.Loss,
    mode: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    reduction: str | None,
    weight: Any,
    out: Any,
    cotangent: Any,
    grad_out: Any = None,
) -> tuple[Any, Any, Any]:
    """A `Loss` call whose arguments include Dask arrays, as lazy (value, grads, hess).

    Raises:
        LossDSLError: the same errors as the call on NumPy arrays (checked on the metadata
            and one sample before any graph is built), `out=`, unknown chunk sizes, a
            parameter given as a Dask array, or a target other than the CPU.
    """
    da: Any = importlib.import_module("dask.array")
    _refuse(loss, kw, out, grad_out)
    # The phases run the full Hessian pass for `grad_hess` (its value is then dropped).
    mode = "hess" if mode == "grad_hess" else mode
    kw = dict(kw)
    if "weight" in kw and all(p.name != "weight" for p in loss.params):
        if weight is not None:
            raise SpecShapeError("pass per-sample weights once, as sample_weight=")
        weight = kw.pop("weight")
    arrays = [da.asarray(a) for a in loss.split_inputs(args, kw)]
    extra = {
        "sample_weight": None if weight is None else da.asarray(weight),
        "cotangent": None if cotangent is None else da.asarray(cotangent),
    }
    for name, a in [*zip(loss.inputs, arrays, strict=True), *extra.items()]:
        if a is not None and any(math.isnan(c) for dim in a.chunks for c in dim):
            raise SpecShapeError(
                f"'{name}' has chunks of unknown size",
                hint=f"call {name}.compute_chunk_sizes() first",
            )
    first = _check_one_sample(loss, mode, arrays, kw, reduction, extra)
    batch = loss.batch_shape(arrays)
    arrays, extra = _aligned(da, loss, arrays, extra, batch)
    return _Graph(loss, mode, kw, reduction, arrays, extra, first).outputs()


def _refuse(loss: lossdsl.Loss, kw: dict[str, Any], out: Any, grad_out: Any) -> None:
    da: Any = importlib.import_module("dask.array")
    if loss.target != "cpu":
        raise UnsupportedError(
            f"Dask arrays run the CPU kernels; this loss targets '{loss.target}'",
            hint="use loss.to('cpu') for Dask arrays",
        )
    if out is not None or grad_out is not None:
        raise SpecShapeError(
            "out= is not supported with Dask arrays: the results are lazy Dask arrays",
            hint="store them with dask.array.store or lossdsl.integrations.dask.to_npy instead",
        )
    for name, value in kw.items():
        if isinstance(value, da.Array):
            raise SpecShapeError(
                f"parameter '{name}' is a Dask array; parameters are small and go to every block",
                hint=f"pass a NumPy array: {name}={name}.compute()",
            )


def _check_one_sample(
    loss: lossdsl.Loss,
    mode: str,
    arrays: list[Any],
    kw: dict[str, Any],
    reduction: str | None,
    extra: dict[str, Any],
) -> tuple[lossdsl.Partials, lossdsl.Partials]:
    """Run the call's phases on one sample of zeros with the inputs' dtypes and axis lengths:
    every check that does not depend on the data happens now, with the error a NumPy call
    gives, and the kernels are compiled here once (workers load them from the cache).
    Returns that sample's (totals, adjoints): their layout is the one of every block."""
    one = []
    for inp, a in zip(loss.input_info, arrays, strict=True):
        core = a.shape[-1:] if inp.axis and a.ndim else ()
        one.append(np.zeros(core, a.dtype))
    opts = {name: None if a is None else np.ones((), a.dtype) for name, a in extra.items()}
    t = loss.partial_totals(*one, sample_weight=opts["sample_weight"], mode=mode, **kw)
    adj = loss.partial_adjoints(*one, totals=t, mode=mode, reduction=reduction, **opts, **kw)
    loss.finalize(*one, totals=t, adjoints=adj, mode=mode, reduction=reduction, **opts, **kw)
    return t, adj


def _aligned(
    da: Any, loss: lossdsl.Loss, arrays: list[Any], extra: dict[str, Any], batch: tuple[int, ...]
) -> tuple[list[Any], dict[str, Any]]:
    """Every array broadcast to the batch and chunked like the first differentiated input; an
    axis in one chunk (a block must hold whole rows: row sums and softmax need all of them)."""
    ref = arrays[loss.inputs.index(loss.wrt[0])].chunks[: len(batch)]
    out = []
    for inp, a in zip(loss.input_info, arrays, strict=True):
        core = a.shape[-1:] if inp.axis else ()
        if a.shape != batch + core:
            a = da.broadcast_to(a, batch + core)
        out.append(a.rechunk(ref + tuple((c,) for c in core)))
    shaped = {}
    for name, a in extra.items():
        if a is not None:
            try:
                a = da.broadcast_to(a, batch) if a.shape != batch else a
            except ValueError:
                raise SpecShapeError(
                    f"{name} of shape {a.shape} does not broadcast to the batch shape {batch}"
                ) from None
            a = a.rechunk(ref)
        shaped[name] = a
    return out, shaped


class _Graph:
    """The lazy phases of one call over the blocks of its (aligned) arrays."""

    def __init__(
        self,
        loss: lossdsl.Loss,
        mode: str,
        kw: dict[str, Any],
        reduction: str | None,
        arrays: list[Any],
        extra: dict[str, Any],
        first: tuple[lossdsl.Partials, lossdsl.Partials],
    ) -> None:
        self.da: Any = importlib.import_module("dask.array")
        self.dask: Any = importlib.import_module("dask")
        self.loss, self.mode, self.kw, self.reduction = loss, mode, kw, reduction
        self.arrays = arrays
        self.extra = {k: a for k, a in extra.items() if a is not None}
        self.first = first
        wrt = arrays[loss.inputs.index(loss.wrt[0])]
        self.dtype = wrt.dtype
        self.batch = wrt.shape[: wrt.ndim - (1 if self._axis(loss.wrt[0]) else 0)]
        info = zip(loss.input_info, arrays, strict=True)
        self.axis_len = next((a.shape[-1] for i, a in info if i.axis), 0)
        # Block indices: a letter per batch dimension, "_" for the axis (one chunk).
        self.index = "".join(chr(ord("a") + k) for k in range(len(self.batch)))
        base: Any = importlib.import_module("dask.base")
        self.token = base.tokenize(loss, mode, kw, reduction, *arrays, *self.extra.values())

    def _axis(self, name: str) -> bool:
        return next(i.axis for i in self.loss.input_info if i.name == name) is not None

    def outputs(self) -> tuple[Any, Any, Any]:
        reduce = (self.reduction or self.loss.reduction) != "none"
        weighted = "sample_weight" in self.extra or self.loss.definition.weight is not None
        mean = (self.reduction or self.loss.reduction) == "mean"
        totals, adjoints = self.first
        n = math.prod(self.batch)
        if self.loss.has_totals or (mean and weighted):
            totals = self._tree(self._blocks("totals"))
        else:  # the weight sum is the sample count
            totals = lossdsl.Partials("totals", totals.layout, np.array([float(n)]), n)
        if self.mode != "value" and adjoints.sums.size:
            adjoints = self._tree(self._blocks("adjoints", totals=totals))
        done = self._blocks("finalize", False, totals=totals, adjoints=adjoints)
        if reduce:
            shares = done.map_blocks(
                _share,
                len(self.batch),
                chunks=tuple((1,) * len(c) for c in done.chunks),
                dtype=np.float64,
                meta=np.empty((0,) * len(self.batch), np.float64),
            )
            value = shares.sum(dtype=np.float64).astype(self.dtype)
            if n == 0 and mean:  # as the mean of an empty NumPy batch
                value = self.da.full((), np.nan, self.dtype)
        else:
            value = self._pick(done, 0, False)
        grads = hess = None
        wrt = self.loss.wrt
        if self.mode != "value":
            grads = _one_or_tuple(
                [self._pick(done, 1 + j, self._axis(x)) for j, x in enumerate(wrt)]
            )
        if self.mode == "hess":
            k = 1 + len(wrt)
            hess = _one_or_tuple(
                [self._pick(done, k + j, self._axis(x)) for j, x in enumerate(wrt)]
            )
        return value, grads, hess

    def _blocks(self, step: str, one: bool = True, **given: Any) -> Any:
        """A task per block running `step` of the phases; its result is one object per block."""
        arrays = [*self.arrays, *self.extra.values()]
        if one:
            # The phases before the last read the inputs anew (their graph cloned): a block is
            # then never held from one phase to the next, so data larger than the cluster's
            # memory streams through each phase instead of filling memory and spilling.
            manipulation: Any = importlib.import_module("dask.graph_manipulation")
            cloned = manipulation.clone(*arrays, seed=step, assume_layers=True)
            arrays = list(cloned) if len(arrays) > 1 else [cloned]
        axis = ["_" if i.axis else "" for i in self.loss.input_info] + [""] * len(self.extra)
        pairs: list[Any] = []
        for a, tail in zip(arrays, axis, strict=True):
            pairs += [a, self.index + tail]
        fn = _Step(step, self.loss, self.mode, self.kw, self.reduction, tuple(self.extra))
        return self.da.blockwise(
            fn,
            self.index,
            *pairs,
            name=f"lossdsl-{self.loss.name}-{step}-{self.token}",
            dtype=object,
            meta=np.empty((0,) * len(self.batch), object),
            concatenate=True,
            adjust_chunks={c: 1 for c in self.index} if one else None,
            **given,
        )

    def _tree(self, blocks: Any) -> Any:
        """The Partials of every block added up, `SPLIT_EVERY` per task."""
        parts = list(blocks.to_delayed().ravel())
        add = self.dask.delayed(_add, pure=True)
        while len(parts) > 1:
            parts = [add(*parts[i : i + SPLIT_EVERY]) for i in range(0, len(parts), SPLIT_EVERY)]
        return parts[0]

    def _pick(self, done: Any, k: int, along: bool) -> Any:
        """Output `k` of every block's finalize, as one array (with the axis when `along`)."""
        chunks = done.chunks + (((self.axis_len,),) if along else ())
        return done.map_blocks(
            operator.getitem,
            k,
            chunks=chunks,
            new_axis=[len(self.batch)] if along else None,
            dtype=self.dtype,
            meta=np.empty((0,) * len(chunks), self.dtype),
        )


class _Step:
    """One phase on one block: the loss's inputs, then its sample weights and cotangent."""

    def __init__(
        self,
        step: str,
        loss: lossdsl.Loss,
        mode: str,
        kw: dict[str, Any],
        reduction: str | None,
        extra: tuple[str, ...],
    ) -> None:
        self.step, self.loss, self.mode = step, loss, mode
        self.kw, self.reduction, self.extra = kw, reduction, extra

    def __call__(self, *blocks: Any, totals: Any = None, adjoints: Any = None) -> Any:
        n = len(self.loss.inputs)
        inputs = blocks[:n]
        opts = dict(zip(self.extra, blocks[n:], strict=True))
        if self.step == "totals":
            sw = opts.get("sample_weight")
            return self.loss.partial_totals(*inputs, sample_weight=sw, mode=self.mode, **self.kw)
        common = dict(mode=self.mode, reduction=self.reduction, **opts, **self.kw)
        if self.step == "adjoints":
            return self.loss.partial_adjoints(*inputs, totals=totals, **common)
        value, grads, hess = self.loss.finalize(*inputs, totals=totals, adjoints=adjoints, **common)
        return (value, *_as_list(grads), *_as_list(hess))


def _share(result: tuple[Any, ...], ndim: int) -> np.ndarray:
    return np.full((1,) * ndim, result[0], np.float64)


def _add(*parts: lossdsl.Partials) -> lossdsl.Partials:
    return sum(parts[1:], parts[0])


def _as_list(x: Any) -> list[Any]:
    return [] if x is None else list(x) if isinstance(x, tuple) else [x]


def _one_or_tuple(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else tuple(items)


# -- .npy files on disk, block by block -------------------------------------------------------


def from_npy(path: str | os.PathLike[str], chunks: Any = "auto") -> Any:
    """A `.npy` file as a lazy Dask array: each block is a memory-mapped view of its part of the
    file, opened by the task that reads it (workers need the same file system). No data goes
    through the graph, so an array larger than any machine's memory streams from disk."""
    da: Any = importlib.import_module("dask.array")
    base: Any = importlib.import_module("dask.base")
    path = os.path.abspath(path)  # workers may run in another folder
    head = np.load(path, mmap_mode="r")  # the header only
    chunks = da.core.normalize_chunks(chunks, head.shape, dtype=head.dtype)
    token = base.tokenize(path, os.path.getmtime(path), chunks)
    return da.map_blocks(
        _read_block,
        path,
        name=f"from-npy-{token}",
        chunks=chunks,
        dtype=head.dtype,
        meta=np.empty((0,) * head.ndim, head.dtype),
    )


def to_npy(path: str | os.PathLike[str], x: Any, compute: bool = True) -> Any:
    """Write Dask array `x` to a `.npy` file: the file is made here (or an existing one of the
    same shape and dtype overwritten in place), each block is written into it by the task that
    computes it (workers need the same file system). With `compute=False`, the lazy store
    (compute it with other results that share its graph, e.g. the value of the same call)."""
    da: Any = importlib.import_module("dask.array")
    path = os.path.abspath(path)  # workers may run in another folder
    try:
        old = np.load(path, mmap_mode="r")
        reuse = old.shape == x.shape and old.dtype == x.dtype and old.flags.c_contiguous
    except (OSError, ValueError):
        reuse = False
    if not reuse:
        np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=x.shape).flush()
    return da.store(x, _NpyFile(path), lock=False, compute=compute)


def _read_block(path: str, block_info: Any = None) -> np.ndarray:
    where = block_info[None]["array-location"]
    view: np.ndarray = np.load(path, mmap_mode="r")[tuple(slice(a, b) for a, b in where)]
    return view


class _NpyFile:
    """A `.npy` file as a store target; it pickles as its path and the header's length."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
            (header or np.lib.format.read_array_header_2_0)(f)
            self.offset = f.tell()

    def __setitem__(self, where: tuple[slice, ...], block: np.ndarray) -> None:
        out = np.load(self.path, mmap_mode="r")
        rows = where[0].indices(out.shape[0]) if out.ndim else (0, 1, 1)
        whole = all(
            w.indices(n) == (0, n, 1) for w, n in zip(where[1:], out.shape[1:], strict=True)
        )
        if whole and rows[2] == 1:
            # Whole rows are one run of bytes: one write call (through a mapping, every page of
            # it would fault first: several times slower).
            row = out.itemsize * int(np.prod(out.shape[1:]))
            data = np.ascontiguousarray(block, out.dtype)
            with open(self.path, "r+b") as f:
                os.pwrite(f.fileno(), data.data, self.offset + rows[0] * row)
            return
        np.load(self.path, mmap_mode="r+")[where] = block


def dask_totals(b: Booster, label: Any, weight: Any, k: int | None) -> Totals:
    """`gbdt.Totals` over a Dask array of labels (and optional weights with the same rows)."""
    # Imported as Any: dask's partial annotations would leak untyped calls into this module.
    dask: Any = importlib.import_module("dask")
    da: Any = importlib.import_module("dask.array")

    y = da.asarray(label)
    blocks = y.to_delayed().ravel()
    if weight is None:
        weights: list[Any] = [None] * len(blocks)
    else:
        w = da.asarray(weight).rechunk(y.chunks[0])
        weights = list(w.to_delayed().ravel())

    def totals(c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        parts = dask.compute(
            *(dask.delayed(_block)(b, yb, wb, c, k) for yb, wb in zip(blocks, weights, strict=True))
        )
        value = sum(p[0] for p in parts)
        return value, sum(p[1] for p in parts), sum(p[2] for p in parts)

    return totals


def _block(
    b: Booster, y: np.ndarray, w: np.ndarray | None, c: np.ndarray, k: int | None
) -> tuple[float, np.ndarray, np.ndarray]:
    from lossdsl.integrations.gbdt import block_totals

    if y.shape[0] == 0:
        return 0.0, np.zeros(k or 1), np.zeros(k or 1)
    return block_totals(b, np.asarray(y, np.float64), w, c, k)
