"""Dask support for the boosting adapters: exact start scores of data spread over a cluster.

`dask_totals` sums a loss's value, gradient and Hessian at a constant score chunk by chunk on
the workers (each worker loads the kernels from the on-disk cache: a `Loss` pickles by its
definition) and adds the chunk sums on the client, so Newton's method in `gbdt` runs on the
whole data set without collecting it. Training itself is `xgboost.dask` / `lightgbm.dask`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lossdsl.integrations.gbdt import Booster
    from lossdsl.integrations.start import Totals


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
