"""Latency of a new spec in a warm process (issue 16): lossdsl against jax.jit's first call.

Run:  python benchmarks/bench_latency.py [--rows 256] [--classes 10]
A process that has already used lossdsl and JAX (one other spec and one other jitted function,
the background compile of that spec finished) meets a new class-axis spec with a batch total.
Timed, in one process, with an empty kernel cache: `jax.jit(jax.value_and_grad(f))`'s first call
on the same loss written in jax.numpy; lossdsl's first value_and_grad (compile + first result),
a new parameter value, the first Hessian diagonal, then calls every 10 ms until the fused kernel
has taken over (the slowest of those calls, and when the switch happened); and the same first
gradient with compile_mode="sync" (the fused kernel compiled on the caller, as before the NumPy
path). Writes benchmarks/results/latency.json and latency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SPEC = """
loss dice_ce{tag}(logits[C], target[C]; smooth: real = 1.0 >= 0):
    p = softmax[C](logits)
    inter = total(sum[C](p * target))
    dice = 1 - (2 * inter + smooth) / (total(sum[C](p)) + total(sum[C](target)) + smooth)
    return dice - sum[C](target * log_softmax[C](logits))
"""
WARM = """
loss warm_up(pred[C], target[C]):
    return sum[C]((pred - target)^2) + total(sum[C](pred))
"""


def _jax_loss(jnp: Any, jax: Any) -> Any:
    def loss(x: Any, t: Any, smooth: float = 1.0) -> Any:
        p = jax.nn.softmax(x, axis=-1)
        dice = 1 - (2 * jnp.sum(p * t) + smooth) / (jnp.sum(p) + jnp.sum(t) + smooth)
        return jnp.mean(dice - jnp.sum(t * jax.nn.log_softmax(x, axis=-1), axis=-1))

    return loss


def _since(t: float) -> float:
    return time.perf_counter() - t


def measure(rows: int, classes: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import lossdsl
    from lossdsl import background

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, classes)).astype(np.float32)
    y = rng.random((rows, classes)).astype(np.float32)
    # Warm process: lossdsl and JAX have each been used once.
    lossdsl.compile(WARM).value_and_grad(x, y)
    background.wait(600)
    jax.jit(jax.value_and_grad(lambda a, b: jnp.sum((a - b) ** 2)))(x, y)[1].block_until_ready()
    out: dict[str, Any] = {"rows": rows, "classes": classes}

    t = time.perf_counter()
    jax.jit(jax.value_and_grad(_jax_loss(jnp, jax)))(x, y)[1].block_until_ready()
    out["jax_first_s"] = _since(t)

    t = time.perf_counter()
    loss = lossdsl.compile(SPEC.format(tag=""))
    _, g = loss.value_and_grad(x, y)
    out["first_grad_s"] = _since(t)
    t = time.perf_counter()
    loss.value_and_grad(x, y, smooth=0.5)
    out["new_param_s"] = _since(t)
    t = time.perf_counter()
    loss.hessian_diag(x, y)
    out["first_hess_s"] = _since(t)

    # Until the fused kernel serves the default call: the slowest call meanwhile.
    start, slowest, calls = time.perf_counter(), 0.0, 0
    while not loss._tracker.ready and _since(start) < 600:
        t = time.perf_counter()
        loss.value_and_grad(x, y)
        slowest = max(slowest, _since(t))
        calls += 1
        time.sleep(0.01)
    out["takeover_s"] = _since(start)
    out["slowest_call_meanwhile_s"] = slowest
    out["calls_meanwhile"] = calls
    t = time.perf_counter()
    _, g2 = loss.value_and_grad(x, y)
    out["fused_call_s"] = _since(t)
    out["numpy_vs_fused_max_abs_diff"] = float(np.max(np.abs(g2 - g)))
    background.wait(600)

    sync = lossdsl.Loss(lossdsl.compile(SPEC.format(tag="_sync")).definition, compile_mode="sync")
    t = time.perf_counter()
    sync.value_and_grad(x, y)
    out["sync_first_grad_s"] = _since(t)
    return out


def markdown(r: dict[str, Any]) -> str:
    return (
        f"New class-axis spec with a batch total ({r['rows']} x {r['classes']}, float32), warm "
        f"process, empty kernel cache; load average {r['load']}.\n\n"
        "| measure | seconds |\n|---|---|\n"
        f"| jax.jit(value_and_grad) first call | {r['jax_first_s']:.3f} |\n"
        f"| lossdsl first value_and_grad (NumPy path) | {r['first_grad_s']:.3f} |\n"
        f"| lossdsl new parameter value | {r['new_param_s']:.4f} |\n"
        f"| lossdsl first Hessian diagonal | {r['first_hess_s']:.4f} |\n"
        f"| fused kernel took over after | {r['takeover_s']:.2f} |\n"
        f"| slowest of {r['calls_meanwhile']} calls meanwhile | "
        f"{r['slowest_call_meanwhile_s']:.4f} |\n"
        f"| a call on the fused kernel | {r['fused_call_s']:.5f} |\n"
        f"| first value_and_grad, compile_mode='sync' | {r['sync_first_grad_s']:.3f} |\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LOSSDSL_CACHE_DIR"] = tmp  # a new spec: nothing cached
        os.environ.pop("LOSSDSL_COMPILE", None)
        report = measure(opts.rows, opts.classes)
    report["load"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "latency.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
