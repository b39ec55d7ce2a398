"""Value and gradient over arrays on disk: lossdsl on Dask vs NumPy on a memmap vs in memory.

Writes `pred` and `target` (float32, `--size` GB together) as .npy files, then times value and
gradient of each loss (`mse`: one pass; `dice`: batch totals, three passes), the gradient
written back to a .npy file, for:

- lossdsl on a Dask LocalCluster of 1 and 2 worker processes (one thread each), reading the
  files block by block (`integrations.dask.from_npy` / `to_npy`);
- lossdsl's phases API in this process over memory maps (`partial_totals`, `finalize`);
- NumPy over memory maps in this process, chunk by chunk (the same formulas, hand-written);
- the in-memory kernel (`value_and_grad(..., out=)`) on the part that fits (`--fit` GB);
- and, as the floor of Dask itself, `(pred + target).sum()` over the same blocks and workers.

Throughput is input bytes per second; the read bandwidth of the files (page cache or disk,
whichever holds them) and the memory copy bandwidth are measured in the same run, and each
result is also given as a fraction of them. Each case runs `--repeats` times; the best is kept.

    python benchmarks/bench_dask.py [--size 4] [--fit 1] [--chunk 4e6] [--dir /tmp/bench-dask]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lossdsl
from lossdsl.integrations.dask import from_npy, to_npy

GB = 1e9


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _write_inputs(folder: Path, n: int, chunk: int) -> tuple[Path, Path]:
    """pred in (0, 1), target in {0, 1}: written chunk by chunk, never whole in memory."""
    rng = np.random.default_rng(0)
    paths = folder / "pred.npy", folder / "target.npy"
    for path, draw in zip(
        paths, (rng.uniform, lambda lo, hi, k: rng.integers(0, 2, k)), strict=True
    ):
        if path.exists() and np.load(path, mmap_mode="r").shape == (n,):
            continue
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n,))
        for a in range(0, n, chunk):
            out[a : a + chunk] = draw(0.01, 0.99, min(chunk, n - a))
        out.flush()
        del out
    return paths


def _read_bandwidth(paths: tuple[Path, ...]) -> float:
    """GB/s of reading the files into a reused buffer."""
    buf = bytearray(64 << 20)
    total, t = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while (k := f.readinto(buf)) > 0:
                total += k
    return total / GB / (time.perf_counter() - t)


def _memory_bandwidth() -> float:
    """GB/s of a large copy, counting the bytes read (as the loss throughput does)."""
    a = np.ones(1 << 27, np.float32)
    b = np.empty_like(a)
    return a.nbytes / GB / _best(lambda: np.copyto(b, a), 3)


# -- NumPy over memory maps, chunk by chunk (the formulas by hand) ----------------------------


def _numpy_mse(p: np.ndarray, t: np.ndarray, g: np.ndarray, chunk: int) -> float:
    n, value = p.shape[0], 0.0
    for a in range(0, n, chunk):
        r = p[a : a + chunk] - t[a : a + chunk]
        value += float(np.dot(r, r))
        g[a : a + chunk] = r * np.float32(2.0 / n)
    return value / n


def _numpy_dice(p: np.ndarray, t: np.ndarray, g: np.ndarray, chunk: int) -> float:
    n, pt, sp, st = p.shape[0], 0.0, 0.0, 0.0
    for a in range(0, n, chunk):
        pc, tc = p[a : a + chunk], t[a : a + chunk]
        pt += float(np.dot(pc, tc))
        sp += float(pc.sum(dtype=np.float64))
        st += float(tc.sum(dtype=np.float64))
    num, den = 2 * pt + 1.0, sp + st + 1.0
    for a in range(0, n, chunk):
        g[a : a + chunk] = (num / den**2 - 2 * t[a : a + chunk] / den).astype(np.float32)
    return 1 - num / den


NUMPY = {"mse": _numpy_mse, "dice": _numpy_dice}


def _phases(loss: lossdsl.Loss, p: np.ndarray, t: np.ndarray, g: np.ndarray, chunk: int) -> float:
    parts = [slice(a, a + chunk) for a in range(0, p.shape[0], chunk)]
    totals = sum(loss.partial_totals(p[s], t[s]) for s in parts)
    adjoints = sum(loss.partial_adjoints(p[s], t[s], totals=totals) for s in parts)
    value = 0.0
    for s in parts:
        value += loss.finalize(p[s], t[s], totals=totals, adjoints=adjoints, out=g[s])[0]
    return value


def _dask(loss: lossdsl.Loss, client: Any, paths: tuple[Path, ...], out: Path, chunk: int) -> float:
    pred, target = (from_npy(path, chunks=chunk) for path in paths)
    value, grad = loss.value_and_grad(pred, target)
    futures = client.compute([value, to_npy(out, grad, compute=False)])
    return float(futures[0].result())


def _dask_sum(client: Any, paths: tuple[Path, ...], chunk: int) -> float:
    """Dask's own floor on the same blocks: read both files and add them up."""
    pred, target = (from_npy(path, chunks=chunk) for path in paths)
    return float(client.compute((pred + target).sum(), sync=True))


def _rates(name: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """GB/s of each case for one loss."""
    from dask.distributed import Client, LocalCluster

    loss, chunk, repeats = lossdsl.get(name), int(args.chunk), args.repeats
    p, t, g, pm, tm, gm = (data[k] for k in ("p", "t", "g", "pm", "tm", "gm"))
    nbytes = p.nbytes + t.nbytes
    loss.value_and_grad(pm[:1000], tm[:1000])  # compile before timing
    rates = {
        "in memory (kernel)": (pm.nbytes + tm.nbytes)
        / GB
        / _best(lambda: loss.value_and_grad(pm, tm, out=gm), repeats),
        "phases on memmap": nbytes / GB / _best(lambda: _phases(loss, p, t, g, chunk), repeats),
        "NumPy on memmap": nbytes / GB / _best(lambda: NUMPY[name](p, t, g, chunk), repeats),
    }
    out = data["folder"] / "grad-dask.npy"
    for k in args.workers:
        with (
            LocalCluster(n_workers=k, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            _dask(loss, client, data["paths"], out, chunk)  # the workers load the kernels
            secs = _best(lambda: _dask(loss, client, data["paths"], out, chunk), repeats)
            rates[f"dask, {k} worker{'s' * (k > 1)}"] = nbytes / GB / secs
            secs = _best(lambda: _dask_sum(client, data["paths"], chunk), repeats)
            rates[f"(reference: dask sum(p + t), {k} worker{'s' * (k > 1)})"] = nbytes / GB / secs
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=4.0, help="GB of inputs on disk (both arrays)")
    ap.add_argument("--fit", type=float, default=1.0, help="GB of inputs for the in-memory run")
    ap.add_argument("--chunk", type=float, default=4e6, help="samples per block")
    ap.add_argument("--dir", default=None, help="folder for the .npy files (default: a temp dir)")
    ap.add_argument("--losses", nargs="+", default=["mse", "dice"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-dask-"))
    folder.mkdir(parents=True, exist_ok=True)
    n = int(args.size * GB / 8)
    paths = _write_inputs(folder, n, int(args.chunk))
    read_bw, mem_bw = _read_bandwidth(paths), _memory_bandwidth()
    print(
        f"inputs: {n:.3g} samples, {8 * n / GB:.2f} GB float32 in {folder} ({os.cpu_count()} "
        f"CPUs); file read {read_bw:.2f} GB/s, memory copy {mem_bw:.2f} GB/s"
    )
    p, t = (np.load(path, mmap_mode="r") for path in paths)
    fit = min(n, int(args.fit * GB / 8))
    data = {
        "folder": folder, "paths": paths, "p": p, "t": t,
        "g": np.lib.format.open_memmap(folder / "grad.npy", "w+", np.float32, (n,)),
        "pm": np.array(p[:fit]), "tm": np.array(t[:fit]), "gm": np.empty(fit, np.float32),
    }  # fmt: skip
    print("\n| loss | case | GB/s | of file read | of memory copy |\n|---|---|---|---|---|")
    for name in args.losses:
        for case, rate in _rates(name, data, args).items():
            print(f"| {name} | {case} | {rate:.2f} | {rate / read_bw:.0%} | {rate / mem_bw:.0%} |")


if __name__ == "__main__":
    main()
