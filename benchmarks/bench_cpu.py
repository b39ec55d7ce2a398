"""CPU benchmark for issues 4 and 16: lossdsl against NumPy, torch (eager, compile) and jax.jit.

Run:  python benchmarks/bench_cpu.py [--quick] [--alloc warm|fresh] [--load N]
Every case computes value and gradient of a mean loss. Implementations are timed interleaved
(each round in a new random order, so machine noise hits all alike; each timed call follows
5 ms of back-to-back calls, as in a training loop) and reported as medians; throughput
is effective GB/s (bytes read + gradient written, once) and a fraction of a triad bandwidth
measured in the same run. torch and jax are optional: their columns read "-" when absent. Writes
benchmarks/results/cpu.json and cpu.md (other modes: cpu-<alloc>-load<N>.*).

Peers allocate their outputs on every call; lossdsl writes into `out=`. With `--alloc warm` (the
default) the process runs with glibc's allocator caching freed memory (MALLOC_MMAP_MAX_=0, a
trim threshold above any output), so every peer reuses warm pages as a training loop would and
the comparison is kernel against kernel; `--alloc fresh` keeps glibc's defaults, where each
large output is a fresh mmap and pays its page faults (the column "lossdsl_alloc" shows what that
costs lossdsl). `--load N` keeps N other processes spinning on the cores throughout ("loaded").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

# The benchmark times the fused kernels: compile them on first use, never serve with NumPy.
os.environ.setdefault("LOSSDSL_COMPILE", "sync")
import lossdsl

RESULTS = Path(__file__).resolve().parent / "results"
FOCAL = """
loss focal(logit, target; gamma: real = 2.0 >= 0, alpha: real = 0.25 in [0, 1]):
    p = sigmoid(logit)
    pt = target * p + (1 - target) * (1 - p)
    at = target * alpha + (1 - target) * (1 - alpha)
    return -at * (1 - pt)^gamma * log(max(pt, 1e-30))
"""
Impl = Callable[[], Any]


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


torch = _optional("torch")
jax = _optional("jax")
if jax is not None:
    # Without it JAX silently computes the float64 cases in float32 (half the bytes, float32
    # math): they would not be the same computation as the other columns'.
    jax.config.update("jax_enable_x64", True)
if torch is not None:
    # One compiled graph per case: allow them all (the default limit is 8).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 256


TRIAD_N = 20_000_000


@numba.njit(parallel=True, cache=True)
def _triad(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    for i in numba.prange(a.shape[0]):
        a[i] = b[i] + np.float32(3.0) * c[i]


def triad_impl() -> Impl:
    """STREAM triad a = b + s c (float32, all threads, 240 MB): the bandwidth ceiling. Timed
    among each case's implementations, so its median sees the same machine they do."""
    a, b, c = (np.ones(TRIAD_N, np.float32) for _ in range(3))
    _triad(a, b, c)
    return lambda: _triad(a, b, c)


def triad_gbs(seconds: float) -> float:
    return 3 * 4 * TRIAD_N / seconds / 1e9


def _time(f: Impl) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def _torch_fns(kind: str) -> tuple[Callable[..., Any], ...] | None:
    if torch is None:
        return None
    F = torch.nn.functional

    def loss(x: Any, *rest: Any) -> Any:
        if kind == "mse":
            return F.mse_loss(x, rest[0])
        if kind == "huber":
            return F.huber_loss(x, rest[0])
        if kind == "bce_with_logits":
            return F.binary_cross_entropy_with_logits(x, rest[0])
        if kind == "focal":
            p = torch.sigmoid(x)
            t = rest[0]
            pt = t * p + (1 - t) * (1 - p)
            at = t * 0.25 + (1 - t) * 0.75
            return (-at * (1 - pt) ** 2 * torch.log(pt.clamp_min(1e-30))).mean()
        if kind == "dice":
            t = rest[0]
            return 1 - (2 * (x * t).sum() + 1) / (x.sum() + t.sum() + 1)
        return F.cross_entropy(x, rest[0])

    def value_and_grad(x: Any, *rest: Any) -> Any:
        x = x.detach().requires_grad_(True)
        v = loss(x, *rest)
        (g,) = torch.autograd.grad(v, x)
        return v, g

    return (value_and_grad,)


def _jax_fn(kind: str) -> Callable[..., Any] | None:
    if jax is None:
        return None
    import jax.numpy as jnp

    def loss(x: Any, t: Any) -> Any:
        if kind == "mse":
            return jnp.mean((x - t) ** 2)
        if kind == "huber":
            r = jnp.abs(x - t)
            return jnp.mean(jnp.where(r <= 1, 0.5 * r * r, r - 0.5))
        if kind == "bce_with_logits":
            return jnp.mean(jax.nn.softplus(x) - x * t)
        if kind == "focal":
            p = jax.nn.sigmoid(x)
            pt = t * p + (1 - t) * (1 - p)
            at = t * 0.25 + (1 - t) * 0.75
            return jnp.mean(-at * (1 - pt) ** 2 * jnp.log(jnp.maximum(pt, 1e-30)))
        if kind == "dice":
            return 1 - (2 * jnp.sum(x * t) + 1) / (jnp.sum(x) + jnp.sum(t) + 1)
        if kind == "cross_entropy":
            return jnp.mean(-jnp.sum(t * jax.nn.log_softmax(x, axis=-1), axis=-1))
        lp = jax.nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(lp, t[:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss))


def _numpy_fn(kind: str) -> Callable[..., Any] | None:
    if kind == "mse":
        return lambda x, t: (np.mean((x - t) ** 2), 2 * (x - t) / x.size)
    if kind == "huber":

        def huber(x: np.ndarray, t: np.ndarray) -> Any:
            r = x - t
            a = np.abs(r)
            v = np.where(a <= 1, 0.5 * r * r, a - 0.5).mean()
            return v, np.clip(r, -1, 1) / x.size

        return huber
    if kind == "dice":

        def dice(x: np.ndarray, t: np.ndarray) -> Any:
            i, s = (x * t).sum(), x.sum() + t.sum() + 1
            return 1 - (2 * i + 1) / s, -(2 * t * s - (2 * i + 1)) / s**2

        return dice
    return None


def case_inputs(kind: str, n: int, dtype: Any, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if kind in ("cross_entropy", "sparse_cross_entropy"):
        logits = rng.standard_normal((n, 1000)).astype(dtype)
        if kind == "sparse_cross_entropy":
            return logits, rng.integers(0, 1000, n)
        t = rng.random((n, 1000)).astype(dtype)
        return logits, t / t.sum(1, keepdims=True)
    if kind == "dice":
        return rng.random(n).astype(dtype), (rng.random(n) > 0.5).astype(dtype)
    if kind in ("bce_with_logits", "focal"):
        return rng.standard_normal(n).astype(dtype), (rng.random(n) > 0.5).astype(dtype)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


def implementations(kind: str, args: tuple[np.ndarray, ...]) -> dict[str, Impl | None]:
    loss = lossdsl.compile(FOCAL) if kind == "focal" else lossdsl.get(kind)
    out = np.empty_like(args[0])
    impls: dict[str, Impl | None] = {
        "lossdsl": lambda: loss.value_and_grad(*args, out=out),
        "lossdsl_alloc": lambda: loss.value_and_grad(*args),
    }
    npf = _numpy_fn(kind)
    impls["numpy"] = (lambda: npf(*args)) if npf else None
    fns = _torch_fns(kind)
    if fns is not None:
        targs = [torch.from_numpy(a) for a in args]
        (vg,) = fns
        impls["torch"] = lambda: vg(*targs)
        compiled = torch.compile(vg)
        impls["torch.compile"] = lambda: compiled(*targs)
    else:
        impls["torch"] = impls["torch.compile"] = None
    jf = _jax_fn(kind)
    if jf is not None:
        jargs = [jax.device_put(a) for a in args]
        if jf(*jargs)[1].dtype != args[0].dtype:  # the same computation as the other columns
            raise RuntimeError(f"jax computed {kind} in {jf(*jargs)[1].dtype}")
        impls["jax.jit"] = lambda: jax.block_until_ready(jf(*jargs))
    else:
        impls["jax.jit"] = None
    return impls


def peak_extra_bytes(f: Impl) -> int:
    f()
    tracemalloc.start()
    f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def run_case(
    kind: str, n: int, dtype: Any, rounds: int, rng: np.random.Generator, triad: Impl
) -> dict[str, Any]:
    args = case_inputs(kind, n, dtype, rng)
    impls = {k: v for k, v in implementations(kind, args).items() if v is not None}
    impls["triad"] = triad
    if sum(a.nbytes for a in args) < 64e6:  # quick cases: more rounds against the noise
        rounds *= 4
    for f in impls.values():  # warm up: compile, first-touch
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in impls}
    order = list(impls)
    for _ in range(rounds):
        rng.shuffle(order)  # no implementation always follows the same other one
        for k in order:
            f = impls[k]
            # Let other runtimes' spinning worker threads (OpenMP, XLA) go idle, then keep the
            # cores busy with this implementation for 5 ms before the timed call: right after
            # an idle gap a call runs on cold cores (measured here: up to 1.8x slower on a 1 ms
            # call), which a training loop never sees.
            time.sleep(0.02)
            start = time.perf_counter()
            f()
            while time.perf_counter() - start < 0.005:
                f()
            times[k].append(_time(f))
    med = {k: float(np.median(v)) for k, v in times.items()}
    moved = sum(a.nbytes for a in args) + args[0].nbytes
    return {
        "case": kind,
        "shape": list(args[0].shape),
        "dtype": np.dtype(dtype).name,
        "rounds": rounds,
        "median_s": med,
        "bytes": moved,
        "gbs": moved / med["lossdsl"] / 1e9,
        "triad_gbs": triad_gbs(med.pop("triad")),
        "peak_extra_bytes_out": peak_extra_bytes(impls["lossdsl"]),
    }


def compile_times(name: str = "huber") -> dict[str, float]:
    """New processes: first use of a built-in with an empty cache (cold) and with the cache
    filled (cached), each split into `import lossdsl` and the first call (get, then parse,
    derive, generate, compile or load); plus the floor: importing numba and loading one cached
    kernel."""
    code = (
        "import time; t0=time.perf_counter(); import numpy as np, lossdsl; "
        f"t1=time.perf_counter(); l=lossdsl.get({name!r}); x=np.ones(1000, np.float32); "
        "l.value_and_grad(x, x); t2=time.perf_counter(); print(t1-t0, t2-t1, t2-t0)"
    )
    floor = (
        "import time; t=time.perf_counter(); import numba, numpy as np\n"
        "@numba.njit(cache=True)\ndef f(a):\n    return a.sum()\n"
        "f(np.ones(3)); print(time.perf_counter()-t)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LOSSDSL_CACHE_DIR=tmp)
        Path(tmp, "first_use.py").write_text(code)
        Path(tmp, "floor.py").write_text(floor)

        def seconds(script: str) -> list[float]:
            done = subprocess.run(
                [sys.executable, script],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=tmp,
            )
            return [float(v) for v in done.stdout.split()]

        cold = seconds("first_use.py")
        cached = min((seconds("first_use.py") for _ in range(5)), key=lambda r: r[-1])
        seconds("floor.py")
        base = min(seconds("floor.py")[0] for _ in range(5))
    return {
        "cold_s": cold[2],
        "cold_import_s": cold[0],
        "cold_first_use_s": cold[1],
        "warm_s": cached[2],
        "numba_floor_s": base,
        "warm_over_floor_s": cached[2] - base,
    }


def small_overhead(rng: np.random.Generator) -> dict[str, float]:
    """Whole value_and_grad call at N = 1e4 (float32 huber), median microseconds."""
    x, t = case_inputs("huber", 10_000, np.float32, rng)
    loss = lossdsl.get("huber")
    out = np.empty_like(x)
    res = {
        "lossdsl_us": float(
            np.median([_time(lambda: loss.value_and_grad(x, t, out=out)) for _ in range(2000)])
        )
        * 1e6
    }
    if torch is not None:
        (vg,) = _torch_fns("huber")
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        res["torch_us"] = float(np.median([_time(lambda: vg(tx, tt)) for _ in range(500)])) * 1e6
    return res


def markdown(report: dict[str, Any]) -> str:
    cols = ["lossdsl", "lossdsl_alloc", "numpy", "torch", "torch.compile", "jax.jit"]
    lines = [
        f"Machine: {report['machine']}; threads {report['threads']}; "
        f"triad {min(r['triad_gbs'] for r in report['cases']):.1f} to "
        f"{max(r['triad_gbs'] for r in report['cases']):.1f} GB/s (timed within each case).",
        f"Allocator: {report['alloc']}; {report['busy_processes']} busy process(es); "
        f"load average at the end {report['load_average']}.",
        f"Command: `{report['command']}`. Medians of {report['rounds']} interleaved rounds "
        f"({4 * report['rounds']} for inputs under 64 MB), ms.",
        "",
        "| case | shape | dtype | "
        + " | ".join(cols)
        + " | GB/s | % triad | vs best compiled | vs eager | peak extra (out=) |",
        "|---|---|---|" + "---|" * len(cols) + "---|---|---|---|---|",
    ]
    for r in report["cases"]:
        med = r["median_s"]
        cells = [f"{med[c] * 1e3:.2f}" if c in med else "-" for c in cols]
        best = min((med[c] for c in ("torch.compile", "jax.jit") if c in med), default=None)
        vs_best = f"{best / med['lossdsl']:.2f}x" if best else "-"
        vs_eager = f"{med['torch'] / med['lossdsl']:.2f}x" if "torch" in med else "-"
        lines.append(
            f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | "
            + " | ".join(cells)
            + f" | {r['gbs']:.1f} | {100 * r['gbs'] / r['triad_gbs']:.0f}%"
            + f" | {vs_best} | {vs_eager}"
            + f" | {r['peak_extra_bytes_out'] / 1024:.1f} KiB |"
        )
    c, s = report["compile"], report["small"]
    lines += [
        "",
        f"Compile (huber, new processes): cold {c['cold_s']:.2f} s "
        f"(import lossdsl {c['cold_import_s']:.2f} s, then first use "
        f"{c['cold_first_use_s']:.2f} s: parse, derive, generate, compile); "
        f"cached {c['warm_s']:.2f} s, import included; "
        f"numba import + one cached kernel {c['numba_floor_s']:.2f} s "
        f"(over by {c['warm_over_floor_s']:.2f} s).",
        f"N = 1e4 huber value_and_grad: lossdsl {s['lossdsl_us']:.1f} us"
        + (f", torch eager {s['torch_us']:.1f} us" if "torch_us" in s else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"


# glibc: no mmap for large blocks and no trimming, so freed outputs are reused warm.
WARM_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def _warm_allocator() -> None:
    """Re-run this script with the allocator settings (they are read at process start)."""
    if any(os.environ.get(k) != v for k, v in WARM_MALLOC.items()):
        env = {**os.environ, **WARM_MALLOC}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _busy(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` processes that keep a core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller cases")
    ap.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases (no files)")
    ap.add_argument("--alloc", choices=("warm", "fresh"), default="warm")
    ap.add_argument("--load", type=int, default=0, help="busy processes competing for cores")
    opts = ap.parse_args()
    if opts.alloc == "warm":
        _warm_allocator()
    busy = _busy(opts.load)
    try:
        _run(opts)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def _run(opts: argparse.Namespace) -> None:
    rounds = 5 if opts.quick else 15
    big = 10**6 if opts.quick else 10**7
    rows = 1024 if opts.quick else 8192
    rng = np.random.default_rng(0)
    cases = [
        ("mse", big, np.float32),
        ("huber", big, np.float32),
        ("bce_with_logits", big, np.float32),
        ("cross_entropy", rows, np.float32),
        ("sparse_cross_entropy", rows, np.float32),
        ("huber", 10**4, np.float32),
        ("huber", 10**5, np.float32),
        ("huber", 10**6, np.float32),
        ("huber", 10**6, np.float64),
        ("focal", 10**6, np.float64),
        ("dice", big, np.float32),
    ]
    report: dict[str, Any] = {
        "machine": (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.system()}"
        ),
        "threads": numba.get_num_threads(),
        "command": "python benchmarks/bench_cpu.py"
        + (" --quick" if opts.quick else "")
        + f" --alloc {opts.alloc} --load {opts.load}",
        "alloc": opts.alloc,
        "busy_processes": opts.load,
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "rounds": rounds,
        "cases": [],
    }
    if opts.only:
        cases = [c for c in cases if c[0] in opts.only]
    triad = triad_impl()
    for kind, n, dtype in cases:
        row = run_case(kind, n, dtype, rounds, rng, triad)
        print(
            row["case"],
            row["shape"],
            f"triad {row['triad_gbs']:.1f} GB/s",
            {k: round(v * 1e3, 3) for k, v in row["median_s"].items()},
            flush=True,
        )
        report["cases"].append(row)
    report["load_average"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if opts.only:  # a partial run for profiling: print, keep the full results as they are
        print(f"load average {report['load_average']}")
        return
    report["small"] = small_overhead(rng)
    report["compile"] = compile_times()
    stem = "cpu" if (opts.alloc, opts.load) == ("warm", 0) else f"cpu-{opts.alloc}-load{opts.load}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
