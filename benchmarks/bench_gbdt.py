"""Gradient-boosting objectives: lossdsl vs hand-written NumPy vs jax.grad twice, and training.

Part 1 times one boosting round's objective call (gradient and Hessian of every sample, as
XGBoost hands it: float32 scores) for the binary logistic loss at several n and for a 10-class
softmax at 1e6: lossdsl's `Objective` (the gradient-and-Hessian-only kernel), the full kernel
that also computes the value (`value_grad_hess`, for comparison), a hand-written NumPy objective
writing into reused buffers, and the jaxboost approach (`jax.grad` of the summed loss, then
`jax.grad` of that for the Hessian diagonal; `jax.hessian` per row for softmax), jitted and
warmed up. Part 2 times whole XGBoost and LightGBM training runs with the lossdsl objective
against the built-in one. Medians (and interquartile ranges) of interleaved repeats; ratios
of medians are printed in the same run, with the load average before and after (a loaded
machine makes OpenMP training erratic: `--threads 1` runs the libraries and the kernels on one
thread each).

    python benchmarks/bench_gbdt.py [--sizes 1e5 1e6 1e7] [--train-sizes 1e5 1e6] [--rounds 10]
        [--repeats 7] [--threads N] [--parts objective training]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lossdsl.integrations import lightgbm as ll
from lossdsl.integrations import xgboost as lx

Fn = Callable[[], Any]

# Steady state: kernels compiled (or loaded from the cache) on the first call. Under the
# default "background" policy a new process serves its first seconds of calls with NumPy
# while the kernels load, which the warm-up call would not cover.
os.environ.setdefault("LOSSDSL_COMPILE", "sync")


# A pause before each timed call: thread pools that spin after their work (XLA's, OpenMP's)
# would otherwise take the cores from the next contestant.
SETTLE_S = 0.05


Times = dict[str, list[float]]


def _times_ms(fns: dict[str, Fn], repeats: int) -> Times:
    """Interleaved repeats (one call of each per round, after a warm-up call each), the order
    rotated every round so that no contestant always follows the same one; milliseconds."""
    times: Times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    order = list(fns.items())
    for r in range(repeats):
        for name, fn in order[r % len(order) :] + order[: r % len(order)]:
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t))
    return times


# -- hand-written NumPy objectives (buffers reused, as a careful user would write them) -------


def _numpy_logistic(s: np.ndarray, y: np.ndarray) -> Fn:
    p, g, h = np.empty_like(s), np.empty_like(s), np.empty_like(s)

    def run() -> tuple[np.ndarray, np.ndarray]:
        np.negative(s, out=p)
        np.exp(p, out=p)
        np.add(p, 1, out=p)
        np.reciprocal(p, out=p)
        np.subtract(p, y, out=g)
        np.subtract(1, p, out=h)
        np.multiply(h, p, out=h)
        return g, h

    return run


def _numpy_softmax(s: np.ndarray, y: np.ndarray) -> Fn:
    p, h = np.empty_like(s), np.empty_like(s)
    rows = np.arange(s.shape[0])
    labels = y.astype(np.int64)

    def run() -> tuple[np.ndarray, np.ndarray]:
        np.subtract(s, s.max(axis=1, keepdims=True), out=p)
        np.exp(p, out=p)
        np.divide(p, p.sum(axis=1, keepdims=True), out=p)
        np.subtract(1, p, out=h)
        np.multiply(h, p, out=h)
        p[rows, labels] -= 1  # p - onehot, in place
        return p, h

    return run


# -- the jaxboost approach: jax.grad twice ----------------------------------------------------


def _jax_logistic(s: np.ndarray, y: np.ndarray) -> Fn:
    import jax
    import jax.numpy as jnp

    def total(s: Any, y: Any) -> Any:
        return jnp.sum(jnp.logaddexp(0.0, s) - y * s)

    grad = jax.grad(total)
    hess = jax.grad(lambda s, y: jnp.sum(grad(s, y)))
    both = jax.jit(lambda s, y: (grad(s, y), hess(s, y)))
    return lambda: tuple(np.asarray(a) for a in both(s, y))


def _jax_softmax(s: np.ndarray, y: np.ndarray) -> Fn:
    import jax
    import jax.numpy as jnp

    def row(s: Any, y: Any) -> Any:
        return jax.nn.logsumexp(s) - s[y]

    grad = jax.vmap(jax.grad(row))
    hess = jax.vmap(lambda s, y: jnp.diag(jax.hessian(row)(s, y)))
    both = jax.jit(lambda s, y: (grad(s, y), hess(s, y)))
    labels = y.astype(np.int32)
    return lambda: tuple(np.asarray(a) for a in both(s, labels))


def objective_rows(sizes: list[int], repeats: int) -> list[tuple[str, Times]]:
    rng = np.random.default_rng(0)
    rows = []
    cases = [("logistic", n, 0) for n in sizes] + [("softmax K=10", 1_000_000, 10)]
    for name, n, k in cases:
        s = rng.normal(size=(n, k) if k else n).astype(np.float32)
        if k:
            y = rng.integers(0, k, n).astype(np.float32)
            obj, numpy_fn, jax_fn = (
                lx.Objective("sparse_cross_entropy"),
                _numpy_softmax,
                _jax_softmax,
            )
        else:
            y = (rng.uniform(size=n) < 0.3).astype(np.float32)
            obj, numpy_fn, jax_fn = lx.Objective("bce_with_logits"), _numpy_logistic, _jax_logistic
        labels = obj.labels(y, s)
        fns = {
            "lossdsl": lambda obj=obj, s=s, y=y: obj.gradients(s, y),
            "full kernel": lambda obj=obj, s=s, y=labels: obj.loss.value_grad_hess(
                s, y, reduction="sum"
            ),
            "numpy": numpy_fn(s, y),
            "jax.grad x2": jax_fn(s, y),
        }
        rows.append((f"{name}, n={n:.0e}", _times_ms(fns, repeats)))
    return rows


# -- whole training runs -----------------------------------------------------------------------


def training_rows(
    sizes: list[int], rounds: int, repeats: int, threads: int
) -> list[tuple[str, Times]]:
    rng = np.random.default_rng(1)
    rows = []
    for n in sizes:
        x = rng.normal(size=(n, 10)).astype(np.float32)
        y = (x[:, 0] + rng.normal(size=n) > 0.5).astype(np.float32)
        case = f"logistic, n={n:.0e}, {rounds} rounds"
        rows.append((f"XGBoost {case}", _xgboost(x, y, rounds, repeats, threads)))
        rows.append((f"LightGBM {case}", _lightgbm(x, y, rounds, repeats, threads)))
    return rows


def _xgboost(x: np.ndarray, y: np.ndarray, rounds: int, repeats: int, threads: int) -> Times:
    import xgboost as xgb

    d = xgb.DMatrix(x, label=y, nthread=threads)
    obj = lx.Objective("bce_with_logits")
    params = {"max_depth": 6, "eta": 0.3, "tree_method": "hist", "nthread": threads}
    ours = {**params, **obj.params(y)}
    builtin = {**params, "objective": "binary:logistic"}
    fns = {
        "lossdsl": lambda: xgb.train(ours, d, rounds, obj=obj),
        "built-in": lambda: xgb.train(builtin, d, rounds),
    }
    return _times_ms(fns, repeats)


def _lightgbm(x: np.ndarray, y: np.ndarray, rounds: int, repeats: int, threads: int) -> Times:
    import lightgbm as lgb

    obj = ll.Objective("bce_with_logits")
    params = {"num_leaves": 63, "learning_rate": 0.3, "verbose": -1, "num_threads": threads}
    ds = lgb.Dataset(x, y, params=params, free_raw_data=False).construct()
    fns = {
        "lossdsl": lambda: lgb.train(
            {**params, "objective": obj}, ds, rounds, callbacks=obj.callbacks
        ),
        "built-in": lambda: lgb.train({**params, "objective": "binary"}, ds, rounds),
    }
    return _times_ms(fns, repeats)


def _print(title: str, rows: list[tuple[str, Times]], base: str) -> None:
    """Medians with their interquartile range, and the ratios of the medians."""
    names = list(rows[0][1])
    print(f"\n{title}\n")
    print(
        "| case | "
        + " | ".join(f"{k} ms (IQR)" for k in names)
        + " | "
        + " | ".join(f"{k} / {base}" for k in names if k != base)
        + " |"
    )
    print("|---" * (2 * len(names)) + "|")
    for case, times in rows:
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = []
        for k in names:
            q1, _, q3 = statistics.quantiles(times[k], n=4)
            cells.append(f"{med[k]:.3g} ({q1:.3g}-{q3:.3g})")
        ratios = " | ".join(f"{med[k] / med[base]:.2f}x" for k in names if k != base)
        print(f"| {case} | " + " | ".join(cells) + f" | {ratios} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--train-sizes", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument(
        "--parts", nargs="+", choices=("objective", "training"), default=["objective", "training"]
    )
    args = parser.parse_args()
    threads = args.threads or (os.cpu_count() or 1)
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    print(f"threads: {threads}; load average before: {_load()}")
    if "objective" in args.parts:
        rows = objective_rows([int(n) for n in args.sizes], args.repeats)
        title = "Objective call per boosting round (gradient + Hessian, float32 scores)"
        _print(title, rows, "lossdsl")
    if "training" in args.parts:
        train = training_rows(
            [int(n) for n in args.train_sizes], args.rounds, max(3, args.repeats // 2), threads
        )
        _print("Training time, lossdsl objective vs built-in", train, "built-in")
    print(f"\nload average after: {_load()}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
