"""CUDA benchmark for issue 5: every built-in's value + gradient on the GPU.

Run:  python benchmarks/bench_cuda.py [--quick] [--elements N] [--classes C] [NAME ...]
Each case times a mean loss's value and gradient for inputs already on the device: lossdsl's
fused kernels (torch tensors in, torch tensors out, no host copy), PyTorch CUDA eager (forward +
backward) and torch.compile of the same reference (tests/oracles.py), plus a device-to-device
copy of the bytes the case must move (inputs read + gradients written), measured in the same
run: the fraction of copy bandwidth is how close the fused kernel comes to the memory limit.
Implementations run interleaved (round-robin) and report medians. Without a GPU it prints a
message and exits 0; under NUMBA_ENABLE_CUDASIM=1 it runs tiny sizes (a smoke test, no torch).
Writes benchmarks/results/cuda.json and cuda.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lossdsl

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))
Impl = Callable[[], Any]


def _torch() -> Any:
    """torch, when it has a CUDA device; else None (the torch columns read '-')."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def host_inputs(loss: lossdsl.Loss, n: int, classes: int, rng: np.random.Generator) -> list[Any]:
    """Inputs drawn inside each input's declared domain (labels in range), float32."""
    out: list[Any] = []
    for inp in loss.definition.inputs:
        shape = (n, classes) if inp.axis else (n,)
        d = inp.domain
        if inp.kind == "int":
            low = int(d.low) if d is not None and d.low is not None else 0
            high = int(d.high) + 1 if d is not None and d.high is not None else classes
            out.append(rng.integers(low, high if loss.definition.axis else min(high, 2), shape))
            continue
        low = d.low if d is not None and d.low is not None else None
        high = d.high if d is not None and d.high is not None else None
        if low is not None and high is not None:
            span = high - low
            x = rng.uniform(low + 0.05 * span, high - 0.05 * span, shape)
        elif low is not None:
            x = low + 0.1 + np.abs(rng.normal(size=shape))
        elif high is not None:
            x = high - 0.1 - np.abs(rng.normal(size=shape))
        else:
            x = rng.normal(size=shape)
        out.append(x.astype(np.float32))
    return out


def to_device(arrays: list[np.ndarray], torch: Any) -> list[Any]:
    if torch is not None:
        return [torch.from_numpy(a).cuda() for a in arrays]
    from numba import cuda

    return [cuda.to_device(a) for a in arrays]


def synchronize(torch: Any) -> None:
    from numba import cuda

    cuda.synchronize()
    if torch is not None:
        torch.cuda.synchronize()


def copy_impl(nbytes: int, torch: Any) -> Impl:
    """A device-to-device copy moving `nbytes` in total (half read, half written)."""
    count = max(1, nbytes // 8)  # float32 elements per side: 4 bytes read + 4 written each
    if torch is not None:
        src = torch.ones(count, device="cuda")
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    from numba import cuda

    src, dst = cuda.to_device(np.ones(count, np.float32)), cuda.device_array(count, np.float32)
    return lambda: dst.copy_to_device(src)


def torch_impls(name: str, loss: lossdsl.Loss, args: list[Any], torch: Any) -> dict[str, Impl]:
    """Eager and compiled PyTorch value + backward through the oracle's reference."""
    if torch is None:
        return {}
    try:
        from oracles import BY_SPEC
    except ImportError:
        return {}
    oracle = BY_SPEC.get(name)
    if oracle is None:
        return {}
    wrt = [loss.inputs.index(w) for w in loss.wrt]
    leaves = [a.clone().requires_grad_(k in wrt) for k, a in enumerate(args)]

    def step(fn: Callable[..., Any]) -> Impl:
        def run() -> Any:
            for k in wrt:
                leaves[k].grad = None
            value = fn(*leaves, reduction="mean")
            value.backward()
            return value

        return run

    out = {"torch eager": step(oracle.reference)}
    out["torch.compile"] = step(torch.compile(oracle.reference, dynamic=False))
    return out


def seconds(impl: Impl, torch: Any, repeat: int) -> float:
    synchronize(torch)
    start = time.perf_counter()
    for _ in range(repeat):
        impl()
    synchronize(torch)
    return (time.perf_counter() - start) / repeat


def run_case(
    name: str, n: int, classes: int, torch: Any, rounds: int, repeat: int
) -> dict[str, Any]:
    loss = lossdsl.get(name, target="cuda")
    args = to_device(host_inputs(loss, n, classes, np.random.default_rng(0)), torch)
    rows = n * (classes if loss.definition.axis else 1)
    nbytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in args)
    nbytes += sum(int(np.prod(args[loss.inputs.index(w)].shape)) * 4 for w in loss.wrt)
    impls: dict[str, Impl] = {"lossdsl": lambda: loss.value_and_grad(*args)}
    impls.update(torch_impls(name, loss, args, torch))
    impls["copy"] = copy_impl(nbytes, torch)
    times: dict[str, list[float]] = {k: [] for k in impls}
    for key, impl in list(impls.items()):
        try:
            impl()  # compile / warm up
        except Exception as exc:  # a reference that rejects these inputs: report, go on
            print(f"  {name}: {key} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            del impls[key], times[key]
    for _ in range(rounds):
        for key, impl in impls.items():
            times[key].append(seconds(impl, torch, repeat))
    med = {k: statistics.median(v) for k, v in times.items()}
    gbs = {k: nbytes / t / 1e9 for k, t in med.items()}
    return {
        "name": name,
        "elements": rows,
        "bytes": nbytes,
        "ms": {k: t * 1e3 for k, t in med.items()},
        "gbs": gbs,
        "fraction_of_copy": gbs["lossdsl"] / gbs["copy"],
    }


def markdown(report: dict[str, Any]) -> str:
    cols = ["lossdsl", "torch eager", "torch.compile", "copy"]
    lines = [
        f"# CUDA benchmark ({report['device']})",
        "",
        "Mean loss, value + gradient, float32, inputs on the device; milliseconds (median).",
        "",
        "| loss | elements | " + " | ".join(cols) + " | lossdsl GB/s | of copy |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for c in report["cases"]:
        ms = [f"{c['ms'][k]:.3f}" if k in c["ms"] else "-" for k in cols]
        lines.append(
            f"| {c['name']} | {c['elements']} | "
            + " | ".join(ms)
            + f" | {c['gbs']['lossdsl']:.0f} | {c['fraction_of_copy']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="built-ins to run (default: all)")
    parser.add_argument("--elements", type=int, default=1 << 24, help="elements per input")
    parser.add_argument("--classes", type=int, default=128, help="length of a class axis")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller inputs")
    args = parser.parse_args()
    from numba import cuda
    from numba.core import config

    if not cuda.is_available():
        print("bench_cuda: no CUDA GPU is available; nothing to measure.")
        return 0
    simulated = bool(config.ENABLE_CUDASIM)
    torch = None if simulated else _torch()
    if simulated or args.quick:
        args.elements = 64 if simulated else 1 << 20
        args.classes = 4 if simulated else args.classes
    rounds, repeat = (1, 1) if simulated else ((3, 5) if args.quick else (7, 20))
    device = "simulator" if simulated else cuda.get_current_device().name.decode()
    report: dict[str, Any] = {"device": device, "python": platform.python_version(), "cases": []}
    for name in args.names or lossdsl.available():
        n = (
            max(1, args.elements // args.classes)
            if lossdsl.get(name).definition.axis
            else args.elements
        )
        case = run_case(name, n, args.classes, torch, rounds, repeat)
        report["cases"].append(case)
        print(
            f"{name:24s} "
            + "  ".join(f"{k} {v:.3f} ms" for k, v in case["ms"].items())
            + f"  ({case['fraction_of_copy']:.0%} of copy)",
            flush=True,
        )
    if not simulated:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cuda.json").write_text(json.dumps(report, indent=2))
        (RESULTS / "cuda.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
