"""Training-step benchmark for issue 11: a loss's forward + backward inside each framework (CPU).

Run:  python benchmarks/bench_frameworks.py [--scale 0.1] [--rounds 7]
Cases (float32): softmax cross-entropy 8192 x 1000 with integer labels, Huber on 1e7 values,
Dice on 1e7 values. Columns: lossdsl through `lossdsl.integrations.torch` in eager mode, the
native torch loss eager and under `torch.compile`, lossdsl through `lossdsl.integrations.jax`
under `jax.jit(value_and_grad)` and the native jax.numpy loss under the same. Each step computes
the loss and the gradient of its input. Implementations are timed interleaved on warm buffers
(each round in a new random order) and reported as medians; ratios are lossdsl over the best
native time of the same framework. The fused kernels are compiled before timing
(`LOSSDSL_COMPILE=sync`): a training loop's steady state, not the NumPy path that serves calls
while a kernel compiles in the background. Writes benchmarks/results/frameworks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("LOSSDSL_COMPILE", "sync")  # before lossdsl reads it

from lossdsl.integrations import jax as ljax
from lossdsl.integrations import torch as ltorch

RESULTS = Path(__file__).resolve().parent / "results"
Step = Callable[[], Any]


def _torch_dice(p: Any, t: Any) -> Any:
    return 1 - (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)


def _jax_dice(p: Any, t: Any) -> Any:
    return 1 - (2 * jnp.sum(p * t) + 1.0) / (jnp.sum(p) + jnp.sum(t) + 1.0)


def _jax_huber(p: Any, t: Any) -> Any:
    r = jnp.abs(p - t)
    return jnp.mean(jnp.where(r <= 1.0, 0.5 * r * r, r - 0.5))


def _jax_ce(x: Any, y: Any) -> Any:
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x), y[:, None], -1))


CASES: dict[str, tuple[str, Callable[..., Any], Callable[..., Any]]] = {
    "softmax_ce": ("sparse_cross_entropy", F.cross_entropy, _jax_ce),
    "huber": ("huber", F.huber_loss, _jax_huber),
    "dice": ("dice", _torch_dice, _jax_dice),
}


def _inputs(case: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if case == "softmax_ce":
        n = max(1, int(8192 * scale))
        return rng.normal(size=(n, 1000)).astype(np.float32), rng.integers(0, 1000, n)
    n = max(1, int(1e7 * scale))
    x = rng.uniform(0.01, 0.99, n).astype(np.float32)
    return x, (rng.uniform(size=n) > 0.5).astype(np.float32)


def _torch_step(fn: Callable[..., Any], x: np.ndarray, y: np.ndarray) -> Step:
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.from_numpy(y)

    def step() -> Any:
        xt.grad = None
        fn(xt, yt).backward()
        return xt.grad

    return step


def _jax_step(fn: Callable[..., Any], x: np.ndarray, y: np.ndarray) -> Step:
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    compiled = jax.jit(jax.value_and_grad(fn))

    def step() -> Any:
        return jax.block_until_ready(compiled(xj, yj))

    return step


def steps(case: str, scale: float) -> dict[str, Step]:
    spec, torch_native, jax_native = CASES[case]
    x, y = _inputs(case, scale)
    return {
        "lossdsl_torch": _torch_step(ltorch.loss_fn(spec), x, y),
        "torch_eager": _torch_step(torch_native, x, y),
        "torch_compile": _torch_step(torch.compile(torch_native), x, y),
        "lossdsl_jax": _jax_step(ljax.loss_fn(spec), x, y),
        "jax_jit": _jax_step(jax_native, x, y),
    }


def measure(impls: dict[str, Step], rounds: int) -> dict[str, float]:
    for step in impls.values():  # compile and warm every buffer
        step()
        step()
    times: dict[str, list[float]] = {k: [] for k in impls}
    order = list(impls)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            impls[name]()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, Any] = {"scale": args.scale, "threads": torch.get_num_threads()}
    results["load_before"] = os.getloadavg()
    for case in CASES:
        t = measure(steps(case, args.scale), args.rounds)
        t["ratio_torch"] = t["lossdsl_torch"] / min(t["torch_eager"], t["torch_compile"])
        t["ratio_jax"] = t["lossdsl_jax"] / t["jax_jit"]
        results[case] = t
        shown = "  ".join(
            f"{k} {v * 1e3:.2f} ms" if not k.startswith("ratio") else f"{k} {v:.2f}"
            for k, v in t.items()
        )
        print(f"{case:<12} {shown}", flush=True)
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "frameworks.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
