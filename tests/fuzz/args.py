"""Argument fuzzer over the public API: random built-in losses called with mutated arguments.

Each case draws a built-in loss, a method, valid inputs from the declared domains, then one to
three mutations: wrong dtypes (float16, complex, object, strings, bool), shapes (0-d, empty,
mismatched), layouts (strided, reversed, Fortran, read-only, big-endian, lists), NaN and inf,
labels out of range, parameters out of domain or of the wrong type, bad reductions, sample
weights and out= arrays, wrong argument counts and keywords. Outcomes:

- ok: a result; where every mutation only changes the layout, it must equal the plain call;
- error: a LossDSLError;
- crash: any other exception, or the worker process dying;
- wrong: a layout-only mutation changed the result;
- hang: no answer within the time limit.

Cases run in worker processes (a crash or hang costs one case). The long campaign:
`python -m tests.fuzz.args --n 10000 --seed 1 --workers 2` draws from `CAMPAIGN`, 17 built-ins
that cover every kind of input, parameter and reduction (`--all`: every built-in, which
compiles many more kernel variants first).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("__call__", "value_and_grad", "grad", "hessian_diag", "value_grad_hess")
# Losses the default test run draws from: each kind of input and parameter, few kernels.
QUICK = (
    "huber",
    "sparse_cross_entropy",
    "multi_margin",
    "gaussian_nll",
    "triplet_margin",
    "cross_entropy",
)
# The long campaign's losses: every kind of input, parameter, reduction and batch total.
CAMPAIGN = (
    *QUICK,
    *("mse", "poisson_nll", "kl_div_batchmean", "nll", "box_iou", "cosine_embedding"),
    *("hinge_embedding", "dice", "rmse", "sigmoid_focal", "margin_ranking"),
)


@dataclass
class Case:
    """One call: loss, method, inputs (positional unless `by_keyword`), keywords, out=."""

    loss: str
    method: str
    inputs: dict[str, Any]
    kw: dict[str, Any] = field(default_factory=dict)
    extra: list[Any] = field(default_factory=list)
    by_keyword: bool = False
    out: Any = None
    mutations: list[str] = field(default_factory=list)
    layout_only: bool = True

    def call(self) -> Any:
        import lossdsl

        fn = getattr(lossdsl.get(self.loss), self.method)
        args = [] if self.by_keyword else list(self.inputs.values())
        kw = dict(self.kw)
        if self.by_keyword:
            kw.update(self.inputs)
        if self.out is not None:
            kw["out"] = self.out
        return fn(*args, *self.extra, **kw)


def _valid_inputs(definition: Any, rng: np.random.Generator, dtype: type) -> dict[str, Any]:
    batch = [(), (1,), (int(rng.integers(2, 7)),), (2, int(rng.integers(1, 4)))][rng.integers(4)]
    classes = int(rng.integers(1, 5))
    out: dict[str, Any] = {}
    for inp in definition.inputs:
        shape = (*batch, classes) if inp.axis else batch
        d = inp.domain
        if inp.kind == "int":
            if d is not None and d.low is not None and d.high is not None:
                out[inp.name] = rng.choice([int(d.low), int(d.high)], size=shape)
            else:
                out[inp.name] = rng.integers(0, classes if definition.axis else 2, size=shape)
            continue
        if d is None or (d.low is None and d.high is None):
            a = rng.normal(size=shape)
        elif d.low is not None and d.high is not None:
            a = rng.uniform(
                d.low + 0.05 * (d.high - d.low), d.high - 0.05 * (d.high - d.low), shape
            )
        elif d.low is not None:
            a = d.low + 0.1 + np.abs(rng.normal(size=shape))
        else:
            a = d.high - 0.1 - np.abs(rng.normal(size=shape))
        out[inp.name] = np.asarray(a, dtype)
    return out


def _pick(rng: np.random.Generator, items: Any) -> Any:
    return items[int(rng.integers(len(items)))]


# -- layout mutations: the result must not change ---------------------------------------------


def _strided(a: np.ndarray) -> np.ndarray:
    buf = np.zeros((*a.shape, 2), a.dtype)
    buf[..., 0] = a
    return buf[..., 0]


def _reversed(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1])[::-1] if a.ndim else a.copy()


def _readonly(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flags.writeable = False
    return b


def _layout(case: Case, rng: np.random.Generator, wrt: tuple[str, ...]) -> None:
    name = _pick(rng, list(case.inputs))
    a = np.asarray(case.inputs[name])
    kind = _pick(rng, ["strided", "reversed", "fortran", "readonly", "big-endian", "list",
                       "keyword", "int-labels", "out-fresh", "out-alias"])  # fmt: skip
    if kind == "strided":
        case.inputs[name] = _strided(a)
    elif kind == "reversed":
        case.inputs[name] = _reversed(a)
    elif kind == "fortran":
        case.inputs[name] = np.asfortranarray(a)
    elif kind == "readonly":
        case.inputs[name] = _readonly(a)
    elif kind == "big-endian":
        case.inputs[name] = a.astype(a.dtype.newbyteorder(">"))
    elif kind == "list" and (a.dtype == np.float64 or name not in wrt):
        case.inputs[name] = a.tolist()
    elif kind == "keyword":
        case.by_keyword = True
    elif kind == "int-labels" and a.dtype.kind == "i":
        case.inputs[name] = a.astype(_pick(rng, [np.int8, np.int32, np.float32, np.uint8]))
        if case.inputs[name].dtype == np.uint8 and a.min() < 0:
            case.inputs[name] = a
    elif kind in ("out-fresh", "out-alias") and case.method in ("grad", "hessian_diag"):
        outs = [_native_empty(case.inputs[x]) for x in wrt]
        if kind == "out-alias":
            same = [n for n in case.inputs if _shape_dtype(case.inputs[n]) == _shape_dtype(outs[0])]
            if same:
                alias = _pick(rng, same)
                case.inputs[alias] = outs[0] = np.array(case.inputs[alias])
        case.out = outs[0] if len(outs) == 1 else tuple(outs)
    else:
        return
    case.mutations.append(f"{kind}:{name}")


def _native_empty(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return np.empty(a.shape, a.dtype.newbyteorder("="))


def _shape_dtype(a: Any) -> tuple[Any, ...]:
    return (np.shape(a), getattr(a, "dtype", None))


# -- value and type mutations: a result or a LossDSLError -------------------------------------

BAD_VALUES: list[Any] = [
    float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 10**30, -(10**30), 0.5, -1, 0, 2,
    True, "1", "abc", None, [1.0, 2.0], [], np.ones(3), np.float32(1.5), np.int8(3), 1 + 2j,
    b"1", object(), {"a": 1}, np.array(2.0), np.array([np.nan]), np.datetime64("2020-01-01"),
]  # fmt: skip


INPUT_MUTATIONS = (
    *("float16", "complex", "object", "str", "bool", "int", "longdouble", "0-d", "empty"),
    *("grow", "extra-dim", "nan", "inf", "huge", "label-high", "label-negative"),
    *("label-fraction", "none", "ragged", "datetime"),
)


def _input_value(a: np.ndarray, rng: np.random.Generator, classes: int) -> tuple[str, Any]:
    kind = _pick(rng, INPUT_MUTATIONS)
    if a.dtype.kind not in "biufc":  # an earlier mutation left no numbers to mutate (None)
        return "none", None
    casts = {"float16": np.float16, "complex": np.complex128, "object": object, "str": str,
             "bool": bool, "int": np.int64, "longdouble": np.longdouble}  # fmt: skip
    if kind in casts:
        return kind, a.astype(casts[kind])
    if kind == "0-d":
        return kind, a.reshape(-1)[0] if a.size else np.float64(1.0)
    if kind == "empty":
        return kind, np.zeros((0, *a.shape[1:]), a.dtype)
    if kind == "grow":
        return kind, np.concatenate([a, a]) if a.ndim else np.stack([a, a])
    if kind == "extra-dim":
        return kind, a[..., None]
    if kind in ("nan", "inf", "huge") and a.size:
        b = a.astype(np.float64)
        b.reshape(-1)[int(rng.integers(a.size))] = {"nan": np.nan, "inf": np.inf, "huge": 1e308}[
            kind
        ]
        return kind, b
    if kind.startswith("label") and a.size:
        b = a.astype(np.float64 if kind == "label-fraction" else np.int64)
        value = {"label-high": classes + int(rng.integers(0, 3)), "label-negative": -1}
        b.reshape(-1)[int(rng.integers(a.size))] = value.get(kind, 0.5)
        return kind, b
    if kind == "ragged":
        return kind, [[1.0, 2.0], [3.0]]
    if kind == "datetime":
        return kind, np.zeros(a.shape, "datetime64[s]")
    return "none", None


def _mutate(case: Case, rng: np.random.Generator, loss: Any, classes: int) -> None:
    defn = loss.definition
    kind = _pick(rng, ["input", "input", "param", "param", "reduction", "sample_weight", "out",
                       "extra", "missing", "unknown", "twice"])  # fmt: skip
    if kind == "input" and case.inputs:
        name = _pick(rng, list(case.inputs))
        what, case.inputs[name] = _input_value(np.asarray(case.inputs[name]), rng, classes)
        kind = f"input-{what}:{name}"
    elif kind == "param" and defn.params:
        p = _pick(rng, defn.params)
        choices = [*BAD_VALUES]
        if p.domain is not None:
            choices += [v for v in (p.domain.low, p.domain.high) if v is not None]
            choices += [
                v + d for v in (p.domain.low, p.domain.high) if v is not None for d in (-1, 1)
            ]
        case.kw[p.name] = _pick(rng, choices)
        kind = f"param:{p.name}={case.kw[p.name]!r}"
    elif kind == "reduction":
        case.kw["reduction"] = _pick(
            rng, [["mean"], "avg", 1, b"mean", "MEAN", None, "none", "sum"]
        )
        kind = f"reduction={case.kw['reduction']!r}"
    elif kind == "sample_weight":
        first = defn.inputs[0]
        shape = np.shape(case.inputs.get(first.name, 0))
        n = int(np.prod(shape[:-1] if first.axis and shape else shape))
        weights = [["a"] * n, np.full(n, np.nan), -np.ones(n), np.ones(n + 1), 2.0, 1j]
        weights += [np.ones(n, ">f4"), np.zeros(n), [None] * n, np.ones((n, 2))]
        case.kw["sample_weight"] = _pick(rng, weights)
        kind = "sample_weight"
    elif kind == "out" and case.method in ("grad", "hessian_diag", "value_and_grad"):
        first = np.asarray(case.inputs[defn.wrt[0]])
        case.out = _pick(rng, [np.empty(3), np.empty_like(first, np.float16), _readonly(first),
                               _strided(np.empty_like(first)), first.tolist(), (first, first),
                               np.empty_like(first, ">f8"), "out"])  # fmt: skip
    elif kind == "extra" and case.inputs:
        case.extra.append(np.asarray(next(iter(case.inputs.values()))))
    elif kind == "missing" and case.inputs:
        case.inputs.pop(_pick(rng, list(case.inputs)))
    elif kind == "unknown":
        case.kw[_pick(rng, ["sigma", "deltaa", "out", "weights", "target", "dtype"])] = 1.0
    elif kind == "twice" and case.inputs:
        name = _pick(rng, list(case.inputs))
        case.kw[name] = case.inputs[name]
    else:
        return
    case.mutations.append(kind)
    case.layout_only = False


def make_case(seed: int, index: int, losses: tuple[str, ...] | None = None) -> Case:
    """The case `index` of campaign `seed` (the same on every machine and run)."""
    import lossdsl

    rng = np.random.default_rng([seed, index])
    names = losses or tuple(sorted(n for n in lossdsl.available() if lossdsl.is_builtin(n)))
    loss = lossdsl.get(_pick(rng, names))
    dtype = _pick(rng, [np.float32, np.float64])
    inputs = _valid_inputs(loss.definition, rng, dtype)
    case = Case(loss.name, _pick(rng, METHODS), inputs)
    classes = max((np.shape(a)[-1] for n, a in inputs.items() if loss.definition.input(n).axis),
                  default=2)  # fmt: skip
    if rng.random() < 0.3:
        case.kw["reduction"] = _pick(rng, ["mean", "sum", "none"])
    for _ in range(int(rng.integers(1, 4))):
        layout = rng.random() < 0.4
        try:
            if layout:
                _layout(case, rng, loss.wrt)
            else:
                _mutate(case, rng, loss, classes)
        except (KeyError, ValueError):
            # A mutation that needs what an earlier one removed (an input, an array shape):
            # the call keeps the earlier mutation only.
            continue
    return case


def _plain(case: Case) -> Case:
    """The case without its layout mutations: contiguous native copies, positional, no out=."""
    inputs = {}
    for name, value in case.inputs.items():
        a = np.asarray(value)
        # np.array, not np.ascontiguousarray: that one makes a 0-d array 1-d.
        inputs[name] = np.array(a, a.dtype.newbyteorder("="), order="C")
    return Case(case.loss, case.method, inputs, dict(case.kw))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and all(map(_same, a, b))
    if a is None or b is None:
        return a is b
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return x.shape == y.shape and np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True)


def run_case(case: Case) -> dict[str, Any]:
    """Call the case (in this process) and classify what happened."""
    from lossdsl.errors import LossDSLError

    plain = _plain(case) if case.layout_only else None
    expected = None
    if plain is not None:
        try:
            expected = plain.call()
        except LossDSLError:
            plain = None
    try:
        result = case.call()
    except LossDSLError as exc:
        return {"outcome": "error", "detail": type(exc).__name__}
    except Exception as exc:
        return {"outcome": "crash", "detail": "".join(traceback.format_exception(exc)[-3:])}
    if plain is not None and not _same(result, expected):
        return {"outcome": "wrong", "detail": f"{result!r} != {expected!r}"}
    return {"outcome": "ok", "detail": ""}


def _serve() -> None:
    """Worker loop: read `seed index losses` JSON lines, answer with an outcome line each."""
    import warnings

    warnings.simplefilter("ignore")
    for line in sys.stdin:
        seed, index, losses = json.loads(line)
        started = time.perf_counter()
        try:
            case = make_case(seed, index, tuple(losses) if losses else None)
            report = run_case(case)
            report["mutations"] = case.mutations
        except Exception as exc:  # a bug of the fuzzer itself, reported as such
            report = {"outcome": "fuzzer-bug", "detail": repr(exc)}
        report["seconds"] = time.perf_counter() - started
        report["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(report), flush=True)


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.args", "--serve"],
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self.job: tuple[int, float] | None = None

    def send(self, seed: int, index: int, losses: tuple[str, ...] | None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([seed, index, losses]) + "\n")
        self.proc.stdin.flush()
        self.job = (index, time.monotonic())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def campaign(
    n: int,
    seed: int,
    workers: int = 2,
    timeout: float = 120.0,
    losses: tuple[str, ...] | None = None,
    start: int = 0,
    progress: int = 0,
) -> dict[int, dict[str, Any]]:
    """Run cases start..start+n in `workers` processes; results by case index."""
    pending = list(range(start, start + n))[::-1]
    results: dict[int, dict[str, Any]] = {}
    pool = [_Worker() for _ in range(min(workers, n))]
    try:
        while len(results) < n:
            for w in pool:
                if w.job is None and pending:
                    w.send(seed, pending.pop(), losses)
            busy = {w.proc.stdout.fileno(): w for w in pool if w.job is not None}  # type: ignore[union-attr]
            ready, _, _ = select.select(list(busy), [], [], 1.0)
            for fd in ready:
                w = busy[fd]
                line = w.proc.stdout.readline()  # type: ignore[union-attr]
                index = w.job[0]  # type: ignore[index]
                if line:
                    results[index] = json.loads(line)
                    w.job = None
                    if progress and results[index]["outcome"] not in ("ok", "error"):
                        print(f"case {seed}/{index}: {line.strip()}", file=sys.stderr, flush=True)
                    if progress and len(results) % progress == 0:
                        print(json.dumps(summary(results)), file=sys.stderr, flush=True)
                    continue
                status = w.proc.wait()
                results[index] = {"outcome": "crash", "detail": f"worker died ({status})"}
                pool[pool.index(w)] = _Worker()
            for w in list(pool):
                if w.job is not None and time.monotonic() - w.job[1] > timeout:
                    results[w.job[0]] = {"outcome": "hang", "detail": f"over {timeout} s"}
                    w.stop()
                    pool[pool.index(w)] = _Worker()
    finally:
        for w in pool:
            w.stop()
    return results


def summary(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in results.values())
    seconds = [r.get("seconds", 0.0) for r in results.values()]
    return {
        "cases": len(results),
        "outcomes": dict(sorted(counts.items())),
        "over_10s": sum(s > 10 for s in seconds),
        "max_seconds": round(max(seconds, default=0.0), 2),
        "max_rss_mb": round(max((r.get("maxrss_mb", 0.0) for r in results.values()), default=0), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a hang")
    parser.add_argument("--quick", action="store_true", help="only the losses of the test slice")
    parser.add_argument("--all", action="store_true", help="every built-in loss")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve()
        return 0
    losses = QUICK if args.quick else None if args.all else CAMPAIGN
    results = campaign(args.n, args.seed, args.workers, args.timeout, losses, args.start, 500)
    for index, r in sorted(results.items()):
        if r["outcome"] in ("crash", "wrong", "hang"):
            print(f"case {args.seed}/{index}: {r['outcome']} {r.get('mutations')}\n{r['detail']}")
    print(json.dumps(summary(results)))
    return 1 if any(r["outcome"] in ("crash", "wrong", "hang") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
