"""The `lossdsl` command (also `python -m lossdsl`): list, check, show, run, precompile, fmt,
catalog.

Talks to the terminal and nothing else: every subcommand calls the public API. A
`LossDSLError` is printed as the rendered message (file:line:col, the line, a caret, a hint)
on stderr with exit code 2; a traceback would be a bug in lossdsl.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossdsl import api
from lossdsl.errors import LossDSLError
from lossdsl.format import format_spec
from lossdsl.parse import parse_spec, read_spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return int(args.run(args))
    except LossDSLError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (say `head`) closed the pipe: stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossdsl", description="Compile loss functions to fused gradient/Hessian kernels."
    )
    from lossdsl import __version__

    parser.add_argument("--version", action="version", version=f"lossdsl {__version__}")
    sub = parser.add_subparsers(metavar="command")

    p = sub.add_parser("list", help="list the registered losses")
    p.add_argument("--task", help="only losses for this task (regression, multiclass, ...)")
    p.set_defaults(run=_list)

    p = sub.add_parser("check", help="check spec files; errors point at the text")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(run=_check)

    p = sub.add_parser("show", help="formulas of value, gradient and Hessian")
    p.add_argument("loss", help="a registered name or a spec file")
    p.add_argument("--name", help="which loss of a file with several")
    p.add_argument(
        "--source",
        action="store_true",
        help="print the kernel module a call with default parameters runs",
    )
    p.add_argument(
        "--generic", action="store_true", help="with --source: the kernel for any parameter values"
    )
    p.add_argument("--latex", action="store_true", help="formulas as LaTeX")
    p.add_argument("--target", default="cpu", help="code generation target (default cpu)")
    p.set_defaults(run=_show)

    p = sub.add_parser("run", help="compile a loss and evaluate it on random inputs")
    p.add_argument("loss", help="a registered name or a spec file")
    p.add_argument("--name", help="which loss of a file with several")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--classes", type=int, default=10, help="length of the axis, if any")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value")
    p.add_argument(
        "--check", action="store_true", help="gradient and Hessian against finite differences"
    )
    p.set_defaults(run=_run)

    p = sub.add_parser("precompile", help="compile losses into the on-disk kernel cache")
    p.add_argument("names", nargs="*", help="losses to compile (default: every registered one)")
    p.set_defaults(run=_precompile)

    p = sub.add_parser("fmt", help="print spec files in canonical layout")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(run=_fmt)

    p = sub.add_parser("catalog", help="print the built-in catalog as Markdown")
    p.set_defaults(run=_catalog)

    # The research bench (analyze, plot, compare) lives in its own subpackage.
    from lossdsl.research.commands import register

    register(sub)
    return parser


def _resolve(spec: str, name: str | None, target: str = "cpu") -> api.Loss:
    path = Path(spec)
    if path.suffix == ".loss" or path.exists():
        return api.load(path, name, target)
    return api.get(spec, target)


def _list(args: argparse.Namespace) -> int:
    from lossdsl.catalog import counterpart

    if args.task is not None:
        api.available(task=args.task)  # an unknown task is an error with close matches
    names = api.available()
    width = max((len(n) for n in names), default=0)
    failed = False
    for name in names:
        try:
            loss = api.get(name)
        except LossDSLError as exc:
            # One broken spec on the search path must not hide every other loss.
            print(str(exc), file=sys.stderr)
            failed = True
            continue
        if args.task is None or loss.task == args.task:
            matches = counterpart(loss)
            shown = f"  [{matches}]" if matches else ""
            print(f"{name:<{width}}  {loss.task:<12}  {loss.definition.summary}{shown}")
    return 2 if failed else 0


def _check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            source = read_spec(path)
            losses = api.check_source(source, str(path))
        except LossDSLError as exc:
            print(str(exc), file=sys.stderr)
            failed = True
            continue
        names = ", ".join(loss.name for loss in losses)
        print(f"{path}: ok ({names})")
    return 2 if failed else 0


def _show(args: argparse.Namespace) -> int:
    loss = _resolve(args.loss, args.name, args.target)
    path = Path(args.loss)
    if args.name is None and path.is_file():
        names = [d.name for d in api.check_source(path.read_text(encoding="utf-8"), str(path))]
        if len(names) > 1:
            print(
                f"note: {path} defines {', '.join(names)}; showing '{loss.name}' (the last one;"
                " pick another with --name)",
                file=sys.stderr,
            )
    if args.source:
        print(loss.source(defaults=not args.generic), end="")
    else:
        print(loss.explain(latex=args.latex))
    return 0


def _run(args: argparse.Namespace) -> int:
    from lossdsl.research.names import check_params_used, parse_params

    loss = _resolve(args.loss, args.name)
    params: dict[str, Any] = parse_params(args.param)
    check_params_used([loss], params)
    inputs = _random_inputs(loss, args.batch, args.classes, np.dtype(args.dtype))
    start = time.perf_counter()
    value, grads = loss.value_and_grad(*inputs, **params)
    first = time.perf_counter() - start
    start = time.perf_counter()
    loss.value_and_grad(*inputs, **params)
    again = time.perf_counter() - start
    grads = grads if isinstance(grads, tuple) else (grads,)
    shape = ", ".join(f"{n}{tuple(a.shape)}" for n, a in zip(loss.inputs, inputs, strict=True))
    given = "".join(f", {k}={v:g}" for k, v in params.items())
    print(f"{loss.name}({shape}{given}), {args.dtype}, reduction {loss.reduction}")
    print(f"  value     {float(value):.6g}")
    for name, g in zip(loss.wrt, grads, strict=True):
        print(f"  grad {name}: shape {g.shape}, |g|_max {float(np.max(np.abs(g))):.4g}")
    print(f"  first call {first * 1e3:.1f} ms (compile or cache load), next {again * 1e3:.3f} ms")
    if args.check:
        from lossdsl.research.fdcheck import finite_difference_check

        report = finite_difference_check(loss, inputs, params)
        print(report.text())
        return 0 if report.ok else 1
    return 0


def _random_inputs(loss: api.Loss, batch: int, classes: int, dtype: np.dtype) -> list[np.ndarray]:
    """Inputs drawn from each input's declared domain (labels in [0, classes))."""
    rng = np.random.default_rng(0)
    out = []
    for inp in loss.definition.inputs:
        shape = (batch, classes) if inp.axis else (batch,)
        if inp.kind == "int":
            out.append(rng.integers(0, classes if loss.definition.axis else 2, size=shape))
            continue
        d = inp.domain
        low = d.low if d is not None and d.low is not None else -2.0
        high = d.high if d is not None and d.high is not None else low + 4.0
        if d is not None and d.high is not None and (d.low is None):
            low = high - 4.0
        out.append(rng.uniform(low, high, size=shape).astype(dtype))
    return out


def _precompile(args: argparse.Namespace) -> int:
    from lossdsl.precompile import precompile

    spent = precompile(args.names or None, progress=True)
    print(f"{len(spent)} losses in the cache ({sum(spent.values()):.1f} s)")
    return 0


def _fmt(args: argparse.Namespace) -> int:
    for path in args.files:
        print(format_spec(parse_spec(read_spec(path), str(path))), end="")
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from lossdsl.catalog import render_catalog

    print(render_catalog(), end="")
    return 0
