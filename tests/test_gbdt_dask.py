"""lossdsl objectives on Dask (issue 12): `xgboost.dask` and `lightgbm.dask` on a LocalCluster
of two worker processes give the model single-machine training gives on the same data, with
start scores reduced on the cluster and kernels loaded from the on-disk cache in each worker.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
xgb = pytest.importorskip("xgboost")
xgb_dask = pytest.importorskip("xgboost.dask")
lgb = pytest.importorskip("lightgbm")

from lossdsl.integrations import lightgbm as ll  # noqa: E402
from lossdsl.integrations import xgboost as lx  # noqa: E402

N, ROUNDS = 400, 3


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # Worker processes inherit LOSSDSL_CACHE_DIR (set by conftest) from this process.
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(14)
    x = rng.integers(0, 10, size=(N, 3)).astype(np.float64)  # exact histogram cuts
    return x, x[:, 0] / 3 + rng.normal(size=N), rng.uniform(0.5, 2.0, N)


def _kernels_in_workers(client: Any) -> list[tuple[int, int]]:
    """Per worker: (kernel signatures loaded from Numba's cache, signatures compiled)."""

    def stats() -> tuple[int, int]:
        hits = misses = 0
        for name, module in list(sys.modules.items()):
            if name.startswith("lossdsl_"):
                for fn in vars(module).values():
                    s = getattr(fn, "stats", None)
                    if s is not None and hasattr(s, "cache_misses"):
                        hits += sum(s.cache_hits.values())
                        misses += sum(s.cache_misses.values())
        return hits, misses

    return list(client.run(stats).values())


def _assert_loaded_not_compiled(client: Any) -> None:
    for hits, misses in _kernels_in_workers(client):
        assert hits > 0
        assert misses == 0


def test_xgboost_dask_matches_single_machine(client: Any) -> None:
    x, y, w = _data()
    obj = lx.Objective("pseudo_huber")
    params = {"max_depth": 3, "eta": 0.3, "tree_method": "hist", "nthread": 1}
    single = xgb.train({**params, **obj.params(y, w)}, xgb.DMatrix(x, y, weight=w), ROUNDS, obj=obj)
    X, Y, W = (da.from_array(a, chunks=N // 2) for a in (x, y, w))
    start = obj.base_score(Y, W)  # Newton steps reduced chunk by chunk on the workers
    np.testing.assert_allclose(start, obj.base_score(y, w), rtol=1e-12)
    dtrain = xgb_dask.DaskDMatrix(client, X, Y, weight=W)
    out = xgb_dask.train(client, {**params, **obj.params(Y, W)}, dtrain, ROUNDS, obj=obj)
    margins = xgb_dask.predict(client, out["booster"], X, output_margin=True).compute()
    np.testing.assert_allclose(
        margins, single.predict(xgb.DMatrix(x), output_margin=True), atol=1e-6
    )
    _assert_loaded_not_compiled(client)


def test_lightgbm_dask_matches_single_machine(client: Any) -> None:
    x, y, w = _data()
    kw = {"n_estimators": ROUNDS, "num_leaves": 7, "learning_rate": 0.3, "verbose": -1,
          "deterministic": True, "force_row_wise": True}  # fmt: skip
    local = ll.Objective("mse", hessian="lightgbm")
    single = lgb.LGBMRegressor(objective=local, n_jobs=1, **kw).fit(
        x, y, sample_weight=w, callbacks=local.callbacks
    )
    X, Y, W = (da.from_array(a, chunks=N // 2) for a in (x, y, w))
    # Each worker sees part of the data: the start score is computed on the cluster first.
    start = ll.Objective("mse", hessian="lightgbm").start_score(Y, W)
    obj = ll.Objective("mse", hessian="lightgbm", start=start)
    model = lgb.DaskLGBMRegressor(client=client, objective=obj, **kw).fit(
        X, Y, sample_weight=W, callbacks=obj.callbacks
    )
    raw = model.predict(X, raw_score=True).compute()
    np.testing.assert_allclose(raw, single.predict(x, raw_score=True), atol=1e-6)
    _assert_loaded_not_compiled(client)
