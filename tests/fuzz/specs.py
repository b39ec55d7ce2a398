"""The random-spec differential tester: a long campaign over generated losses.

    python -m tests.fuzz.specs --n 5000 --seed 1 [--workers K] [--out DIR] [--features LIST]

Each spec (tests/fuzz/gen.py) runs in a worker process with a time limit (tests/fuzz/worker.py)
and is compared with the PyTorch reference (tests/fuzz/compare.py); every `--cuda-every`-th
spec also runs on the CUDA simulator. The campaign prints the count per outcome class and the
time per spec, saves each failing case under OUT/failures/<class>/, and minimises the first
`--minimize` failures of each class into `--found` (default tests/fuzz/found/) as
`miscompile-<hash>.loss` (the spec) and `.json` (the case: tree, call, data seed, class). Move a
found case to tests/regressions/ once its fix has landed; tests/test_fuzz_specs.py replays it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

from tests.fuzz.compare import CHECKS, CLASS_CHECKS, failing_check
from tests.fuzz.gen import DEFAULT_FEATURES, FEATURES, generate
from tests.fuzz.minimize import minimize
from tests.fuzz.render import render_case
from tests.fuzz.worker import Worker

FOUND = Path(__file__).resolve().parent / "found"


def save_case(case: dict[str, Any], outcome: tuple[str, str], mode: str, folder: Path) -> Path:
    """Write `miscompile-<hash>.loss` and `.json` for a (minimised) case; returns the .json."""
    record = {"class": outcome[0], "detail": outcome[1], "mode": mode, "case": case}
    digest = hashlib.sha256(json.dumps(case, sort_keys=True).encode()).hexdigest()[:10]
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"miscompile-{digest}"
    stem.with_suffix(".loss").write_text(
        f"# {outcome[0]}: {outcome[1][:200]}\n" + render_case(case), encoding="utf-8"
    )
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return stem.with_suffix(".json")


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fuzz.specs", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=200, help="number of specs")
    ap.add_argument("--seed", type=int, default=1, help="first seed; spec i uses seed + i")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument(
        "--features",
        default=",".join(DEFAULT_FEATURES),
        help=f"comma list of {', '.join(FEATURES)} (default: all but nested; '' for none)",
    )
    ap.add_argument("--checks", default=",".join(CHECKS), help="comma list of checks")
    ap.add_argument("--cuda-every", type=int, default=10, help="0: no CUDA simulator runs")
    ap.add_argument(
        "--rotate",
        action="store_true",
        help="run f64 and one other check per spec, in turn (about half the compiles)",
    )
    ap.add_argument("--limit-s", type=float, default=180.0, help="time limit per spec")
    ap.add_argument("--time-s", type=float, default=float("inf"), help="stop starting specs after")
    ap.add_argument("--minimize", type=int, default=2, help="failures minimised per class")
    ap.add_argument("--budget-s", type=float, default=600.0, help="time per minimisation")
    ap.add_argument("--found", type=Path, default=FOUND)
    ap.add_argument(
        "--minimize-files",
        type=Path,
        nargs="*",
        default=[],
        help="only minimise these saved failures (OUT/failures/<class>/<seed>.json)",
    )
    return ap.parse_args()


def main() -> None:
    args = _parse()
    features = frozenset(f for f in args.features.split(",") if f)
    unknown = features - set(FEATURES)
    if unknown:
        raise SystemExit(f"unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    checks = tuple(c for c in args.checks.split(",") if c)
    cache = str(args.out / "kernels")
    if args.minimize_files:
        records = [json.loads(p.read_text()) for p in args.minimize_files]
        _minimize_records(records, args, checks)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "results.jsonl").open("a", encoding="utf-8")
    jobs: queue.Queue[int] = queue.Queue()
    for i in range(args.n):
        jobs.put(args.seed + i)
    results: list[tuple[int, str, str, str, float]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def work() -> None:
        worker = Worker("jit", cache)
        sim = Worker("cudasim", cache, recycle=200)
        while True:
            if time.monotonic() - start > args.time_s:
                break  # out of time: report what ran
            try:
                seed = jobs.get_nowait()
            except queue.Empty:
                break
            case = generate(seed, features)
            t0 = time.monotonic()
            run = checks
            if args.rotate:  # f64 always, then one other check in turn: fewer compiles
                extra = [c for c in checks if c != "f64"]
                run = ("f64", extra[seed % len(extra)]) if extra else checks
            cls, detail = worker.run(case, run, args.limit_s)
            mode = "jit"
            if cls == "ok" and args.cuda_every and seed % args.cuda_every == 0:
                cls, detail = sim.run(case, ("cuda",), args.limit_s)
                mode = "cudasim"
            with lock:
                results.append((seed, cls, detail, mode, time.monotonic() - t0))
                log.write(json.dumps(results[-1]) + "\n")
                log.flush()
                _progress(results, args.n, start)
        worker.close()
        sim.close()

    threads = [threading.Thread(target=work) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _report(results, time.monotonic() - start, args, features, checks)


def _progress(results: list[tuple[int, str, str, str, float]], n: int, start: float) -> None:
    seed, cls, detail, _, dt = results[-1]
    if cls != "ok":
        print(f"seed {seed}: {cls} ({dt:.1f} s): {detail[:160]}", flush=True)
    if len(results) % 25 == 0:
        counts = collections.Counter(r[1] for r in results)
        rate = (time.monotonic() - start) / len(results)
        print(f"[{len(results)}/{n}] {dict(counts)}  {rate:.2f} s/spec", flush=True)


def _report(
    results: list[tuple[int, str, str, str, float]],
    wall: float,
    args: argparse.Namespace,
    features: frozenset[str],
    checks: tuple[str, ...],
) -> None:
    counts = collections.Counter(r[1] for r in results)
    times = sorted(r[4] for r in results)
    last = max((r[0] for r in results), default=args.seed)
    print(
        f"\n{len(results)} specs, seeds {args.seed}..{last}, "
        f"checks {','.join(checks)}, features {','.join(sorted(features)) or 'none'}"
    )
    print(
        f"wall {wall:.0f} s, {wall / max(len(results), 1):.2f} s/spec "
        f"(median {times[len(times) // 2]:.2f} s, max {times[-1]:.1f} s per spec)"
    )
    for cls, k in counts.most_common():
        print(f"  {cls:20s} {k}")
    failures: dict[str, list[tuple[int, str, str, str, float]]] = collections.defaultdict(list)
    for r in sorted(results):
        if r[1] != "ok":
            failures[r[1]].append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "counts": counts,
                "seeds": [args.seed, args.n],
                "wall_s": wall,
                "failures": {c: [r[0] for r in rs] for c, rs in failures.items()},
            },
            indent=1,
        )
    )
    records = []
    for cls, rs in failures.items():
        folder = args.out / "failures" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for seed, _, detail, mode, _ in rs:
            record = {
                "class": cls,
                "detail": detail,
                "mode": mode,
                "case": generate(seed, features),
            }
            (folder / f"{seed}.json").write_text(json.dumps(record, indent=1))
            if len([r for r in records if r["class"] == cls]) < args.minimize:
                records.append(record)
    _minimize_records(records, args, checks)


def _minimize_records(
    records: list[dict[str, Any]], args: argparse.Namespace, checks: tuple[str, ...]
) -> None:
    """Minimise each failure with the checks its class needs; save it under --found."""
    cache = str(args.out / "kernels")
    workers = {"jit": Worker("jit", cache), "cudasim": Worker("cudasim", cache)}
    for record in records:
        cls = record["class"]
        if cls in ("timeout", "worker-died"):
            continue
        w = workers[record["mode"]]
        named = failing_check(record["detail"])
        run_checks = (named,) if named else CLASS_CHECKS.get(cls, checks)
        small = minimize(
            record["case"],
            lambda c, w=w, k=run_checks: w.run(c, k, args.limit_s),
            budget_s=args.budget_s,
        )
        outcome = w.run(small, run_checks, args.limit_s)
        path = save_case(small, outcome, record["mode"], args.found)
        print(
            f"minimised seed {record['case']['seed']} ({cls}) -> {path}\n{render_case(small)}",
            flush=True,
        )
    for w in workers.values():
        w.close()


if __name__ == "__main__":
    main()
