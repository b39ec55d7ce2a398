"""Spec-text fuzzer: mutated built-in specs through the whole public pipeline, in sandboxed workers.

Cases are grammar-aware mutations of `specs/*.loss` (swap, duplicate or delete subtrees, insert
operators, deep nesting, huge constants, odd names, control and non-ASCII characters) and
byte-level ones (flips, inserts, deletes, splices, invalid UTF-8). Each case is decoded, compiled
with `lossdsl.compile`, derived and printed to kernel source; a sampled fraction also compiles
and calls the kernel on small inputs. A case runs in a worker process under a time limit and an
address-space limit and is classified: ok, error (a LossDSLError), crash (any other exception or a
dead worker), hang (over the time limit) or memory (over the memory limit).

    python -m tests.fuzz.text --n 100000 --seed 1 --workers 2 --save /tmp/fuzz-text
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing as mp
import os
import random
import resource
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

SPECS = Path(__file__).resolve().parents[2] / "specs"
OUTCOMES = ("ok", "error", "crash", "hang", "memory")

_CONSTANTS = ["1e308", "1e400", "9^9^9", "0/0", "1/0", "2^2^2^2^2", "1e-400", "0", "-0", "1e-320"]
_CONSTANTS += ["4294967296", "1" + "0" * 400, "10^308", "(-8)^(1/3)", "log(0)", "sqrt(-1)", ".5e"]
_NAMES = ["lambda", "class", "loss", "return", "_x", "None", "e", "pi", "inf", "β", "sum", "a" * 80]
_NAMES += ["total", "where", "C", "x1", "print", "exp", "np", "math", "_c", "_coef", "_q0"]
_CHARS = ["\f", "\x0b", "\x85", "\u2028", "\ufeff", "\x00", "\t", "\r", "é", "\U0001f600", "\\"]
_CHARS += ["(", ")", "[", "]", ",", ";", ":", "=", "#", '"', '"""', "\n", "    ", "if ", " then "]
_OPS = [" + ", " - ", " * ", " / ", " ^ ", " > ", " == ", " and ", " or "]
_WRAPS = ["-", "exp(", "log(", "softmax[C](", "sum[C](", "max[C](", "total(", "where(x > 0, "]


@dataclass(frozen=True)
class Result:
    outcome: str
    detail: str
    seconds: float
    peak_mb: float
    cpu_s: float = 0.0  # the worker's CPU time: the case's cost on a shared machine


# -- mutations -----------------------------------------------------------------------------------


# Built-ins whose own derivation takes seconds: left out of the quick slice in the test run.
SLOW_SEEDS = ("box_iou", "triplet_margin")


def seeds(exclude: tuple[str, ...] = ()) -> list[str]:
    paths = sorted(p for p in SPECS.glob("*.loss") if p.stem not in exclude)
    return [p.read_text(encoding="utf-8") for p in paths]


def _expr_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every expression node of `text`, if it parses."""
    from lossdsl import limits
    from lossdsl import nodes as n
    from lossdsl.errors import LossDSLError
    from lossdsl.parse import parse_spec

    try:
        spec = parse_spec(text)
    except LossDSLError:
        return []
    out: list[tuple[int, int, str]] = []
    stack: list[Any] = []
    for loss in spec.losses:
        for stmt in loss.body:
            root = stmt.weight if isinstance(stmt, n.Reduce) else stmt.value
            if root is not None and not isinstance(root, str):
                stack.append(root)
    while stack:
        e = stack.pop()
        out.append((e.span.start, e.span.end, type(e).__name__))
        stack.extend(limits._syntax_children(e))
    return [s for s in out if 0 <= s[0] < s[1] <= len(text)]


def mutate_text(text: str, rng: random.Random, others: list[str]) -> str:
    spans = _expr_spans(text)
    kind = rng.randrange(9)
    if not spans or kind == 8:
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + rng.choice(_CHARS) * rng.choice((1, 1, 2, 50)) + text[pos:]
    a, b, _ = rng.choice(spans)
    piece = text[a:b]
    if kind == 0:  # swap in another subtree
        c, d, _ = rng.choice(spans)
        new = text[c:d]
    elif kind == 1:  # delete
        new = rng.choice(("", "x", "0"))
    elif kind == 2:  # insert an operator
        c, d, _ = rng.choice(spans)
        new = f"({piece}{rng.choice(_OPS)}{text[c:d]})"
    elif kind == 3:  # deep nesting
        wrap = rng.choice(_WRAPS)
        depth = rng.choice((2, 5, 20, 70, 300))
        close = ")" * wrap.count("(")
        new = wrap * depth + piece + close * depth
    elif kind == 4:
        new = rng.choice(_CONSTANTS)
    elif kind == 5:
        new = rng.choice(_NAMES)
    elif kind == 6:  # duplicate: a chain that doubles
        new = f"({piece}) * ({piece})" * rng.choice((1, 2))
    else:  # a call of another loss
        new = f"{rng.choice(('mse', 'huber', 'hinge', 'f', 'bce'))}({piece}, {piece})"
        if others and rng.random() < 0.3:
            return rng.choice(others) + "\n" + text[:a] + new + text[b:]
    return text[:a] + new + text[b:]


def mutate_bytes(data: bytes, rng: random.Random, others: list[str]) -> bytes:
    kind = rng.randrange(6)
    pos = rng.randrange(len(data) + 1)
    if kind == 0 and data:
        pos = min(pos, len(data) - 1)
        return data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
    if kind == 1:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos:]
    if kind == 2:
        return data[:pos] + data[pos + rng.randrange(1, 40) :]
    if kind == 3:
        other = rng.choice(others).encode()
        c = rng.randrange(len(other) + 1)
        return data[:pos] + other[c : c + rng.randrange(1, 200)] + data[pos:]
    if kind == 4:
        bad = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"))
        return data[:pos] + bad + data[pos:]
    return data[:pos] + data[pos : pos + rng.randrange(1, 80)] * 2 + data[pos:]


def make_case(rng: random.Random, pool: list[str]) -> str | bytes:
    text = rng.choice(pool)
    if rng.random() < 0.3:
        data = text.encode()
        for _ in range(rng.randrange(1, 4)):
            data = mutate_bytes(data, rng, pool)
        return data
    for _ in range(rng.randrange(1, 4)):
        text = mutate_text(text, rng, pool)
    return text


def cases(n: int, seed: int, exclude: tuple[str, ...] = ()) -> list[str | bytes]:
    rng = random.Random(seed)
    pool = seeds(exclude)
    return [make_case(rng, pool) for _ in range(n)]


# -- running one case ----------------------------------------------------------------------------


_DERIVED: set[str] = set()


def run_case(case: str | bytes, stage: str = "source") -> str:
    """The public pipeline on one spec text up to `stage` ("check", "source": derived and
    printed, "kernel": compiled and called on small inputs); raises what the pipeline raises."""
    import numpy as np

    import lossdsl
    from lossdsl import ir
    from lossdsl.cli import _random_inputs
    from lossdsl.parse import decode_spec

    text = decode_spec(case) if isinstance(case, bytes) else case
    loss = lossdsl.compile(text)
    key = ir.fingerprint(loss.definition)
    if stage != "check" and key not in _DERIVED:  # many mutants check to a loss already derived
        loss.source()
        _DERIVED.add(key)
    if stage == "kernel":
        inputs = _random_inputs(loss, 4, 3, np.dtype("float64"))
        loss.value_and_grad(*inputs)
    return "ok"


def _peak_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(conn: Connection, memory_mb: int, cache_dir: str) -> None:
    os.environ["LOSSDSL_CACHE_DIR"] = cache_dir
    from lossdsl.errors import KernelCompileError, LossDSLError

    run_case("loss warm(x, y):\n    return (x - y)^2\n", False)
    limit = _vm_bytes() + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        case, stage = msg
        _peak_reset()
        start, cpu = time.monotonic(), time.process_time()
        try:
            outcome, detail = run_case(case, stage), ""
        except KernelCompileError as exc:
            outcome, detail = "crash", f"KernelCompileError: {exc.message}"
        except LossDSLError as exc:
            outcome, detail = "error", type(exc).__name__
        except MemoryError:
            outcome, detail = "memory", "MemoryError"
        except BaseException as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            outcome, detail = "crash", f"{type(exc).__name__}: {str(exc)[:200]} at {where}"
        wall, cpu = time.monotonic() - start, time.process_time() - cpu
        conn.send(Result(outcome, detail, wall, _peak_mb(), cpu))


class Sandbox:
    """One worker process, restarted after a hang or a death."""

    def __init__(self, timeout: float, memory_mb: int, cache_dir: str) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.cache_dir = cache_dir
        self.proc: Any = None
        self.conn: Connection | None = None

    def _start(self) -> None:
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.memory_mb, self.cache_dir))
        self.proc.daemon = True
        self.proc.start()
        self.conn = parent
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def send(self, case: str | bytes, stage: str) -> None:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        assert self.conn is not None
        self.conn.send((case, stage))
        self.sent = time.monotonic()

    def receive(self, wait: float) -> Result | None:
        """The result if ready within `wait` s, else None; a hang or death yields a result."""
        assert self.conn is not None
        if self.conn.poll(wait):
            try:
                result: Result = self.conn.recv()
                return result
            except EOFError:
                return self._dead()
        if not self.proc.is_alive():
            return self._dead()
        if time.monotonic() - self.sent > self.timeout:
            self.stop()
            return Result("hang", f"over {self.timeout:g} s", self.timeout, 0.0)
        return None

    def _dead(self) -> Result:
        code = self.proc.exitcode
        self.proc = None
        return Result("crash", f"worker died (exit code {code})", 0.0, 0.0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None


def run_all(
    items: list[str | bytes],
    workers: int = 2,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    kernel_fraction: float = 0.0,
    seed: int = 0,
    derive_fraction: float = 1.0,
) -> list[Result]:
    """Run every case in a pool of sandboxed workers; results in case order.

    A case is derived and printed with probability `derive_fraction` (else only checked), and
    its kernel compiled and called with probability `kernel_fraction`.
    """
    rng = random.Random(seed)
    stages = [
        "kernel"
        if rng.random() < kernel_fraction
        else "source"
        if rng.random() < derive_fraction
        else "check"
        for _ in items
    ]
    results: list[Result | None] = [None] * len(items)
    with tempfile.TemporaryDirectory(prefix="lossdsl-fuzz-") as cache_dir:
        boxes = [Sandbox(timeout, memory_mb, cache_dir) for _ in range(workers)]
        busy: dict[int, int] = {}
        todo = list(range(len(items)))[::-1]
        while todo or busy:
            for k, box in enumerate(boxes):
                if k not in busy and todo:
                    i = todo.pop()
                    box.send(items[i], stages[i])
                    busy[k] = i
            for k in list(busy):
                result = boxes[k].receive(0.01)
                if result is not None:
                    results[busy.pop(k)] = result
        for box in boxes:
            if box.conn is not None and box.proc is not None:
                box.conn.send(None)
                box.proc.join(5)
            box.stop()
    return [r for r in results if r is not None]


def _save(directory: Path, i: int, case: str | bytes, result: Result) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = case if isinstance(case, bytes) else case.encode("utf-8", "surrogatepass")
    stem = f"{result.outcome}-{i}"
    (directory / f"{stem}.loss").write_bytes(data)
    (directory / f"{stem}.txt").write_text(
        f"{result.detail} ({result.seconds:.1f} s wall, {result.cpu_s:.1f} s CPU)\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="a case over it is a hang")
    parser.add_argument("--slow", type=float, default=10.0, help="count cases over this many s")
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--kernel-fraction", type=float, default=0.002)
    parser.add_argument("--chunk", type=int, default=5000, help="cases generated at a time")
    parser.add_argument("--save", type=Path, help="write non-ok, non-error cases here")
    args = parser.parse_args(argv)
    counts: collections.Counter[str] = collections.Counter()
    details: collections.Counter[str] = collections.Counter()
    worst = (0.0, 0.0, -1, -1)
    worst_cpu = (0.0, -1)
    start = time.monotonic()
    for first in range(0, args.n, args.chunk):
        count = min(args.chunk, args.n - first)
        items = cases(count, args.seed * 1_000_003 + first)
        results = run_all(
            items, args.workers, args.timeout, args.memory_mb, args.kernel_fraction, first
        )
        for j, (case, r) in enumerate(zip(items, results, strict=True)):
            counts[r.outcome] += 1
            counts["slow"] += r.seconds > args.slow
            counts["slow_cpu"] += r.cpu_s > args.slow
            if r.outcome in ("crash", "hang", "memory"):
                details[r.detail] += 1
            slow = r.seconds > args.slow or r.cpu_s > args.slow
            if args.save and (r.outcome in ("crash", "hang", "memory") or slow):
                _save(args.save, first + j, case, r)
            if r.seconds > worst[0]:
                worst = (r.seconds, worst[1], first + j, worst[3])
            worst_cpu = max(worst_cpu, (r.cpu_s, first + j))
            if r.peak_mb > worst[1]:
                worst = (worst[0], r.peak_mb, worst[2], first + j)
        spent = time.monotonic() - start
        print(f"{first + count} cases, {spent:.0f} s: {dict(counts)}", flush=True)
    print(
        "outcomes:",
        {k: counts[k] for k in OUTCOMES},
        f"over {args.slow:g} s: {counts['slow']} (wall), {counts['slow_cpu']} (CPU)",
    )
    print(
        f"slowest case {worst[2]}: {worst[0]:.2f} s wall; most CPU: case {worst_cpu[1]}, "
        f"{worst_cpu[0]:.2f} s; largest case {worst[3]}: {worst[1]:.0f} MB"
    )
    for detail, k in details.most_common(20):
        print(f"  {k:6d}  {detail}")
    return 0 if counts["crash"] + counts["hang"] + counts["memory"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
