"""The research bench's subcommands of `lossdsl`: analyze (and the shared argument helpers).

`register` adds the subcommands to the main parser in `lossdsl/cli.py`; each command parses its
arguments, calls the research functions and prints. Errors are `LossDSLError`s, which the main
command prints with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lossdsl


def register(sub: Any) -> None:
    """Add the research subcommands to an argparse subparsers object."""
    p = sub.add_parser("analyze", help="convexity, gradient bounds, best constant of losses")
    p.add_argument("losses", nargs="+", metavar="NAME|FILE", help="registered names or spec files")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("plot", help="plot losses, gradients (and Hessians) against their variable")
    p.add_argument("losses", nargs="+", metavar="NAME|FILE", help="registered names or spec files")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value")
    p.add_argument("--hessian", action="store_true", help="add the second derivative")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), help="range of x")
    p.add_argument("-o", "--output", default="losses.png", help="PNG, SVG or PDF file")
    p.set_defaults(run=_plot)


def resolve(spec: str) -> lossdsl.Loss:
    """A registered name, or a spec file (`FILE:NAME` picks one loss of a file)."""
    path, _, name = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    if Path(path).suffix == ".loss" or Path(path).exists():
        return lossdsl.load(path, name or None)
    return lossdsl.get(spec)


def parse_params(items: list[str]) -> dict[str, float]:
    """`["delta=0.5", "q=0.9"]` -> {"delta": 0.5, "q": 0.9}."""
    params: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError(item)
            params[key.strip()] = float(text)
        except ValueError:
            raise lossdsl.LossDSLError(
                f"--param '{item}' is not NAME=NUMBER", hint="for example: --param delta=0.5"
            ) from None
    return params


def params_for(loss: lossdsl.Loss, params: dict[str, float]) -> dict[str, float]:
    """The subset of `params` this loss declares (several losses share one --param list)."""
    names = {p.name for p in loss.params}
    return {k: v for k, v in params.items() if k in names}


def check_params_used(losses: list[lossdsl.Loss], params: dict[str, float]) -> None:
    declared = {p.name for loss in losses for p in loss.params}
    for key in params:
        if key not in declared:
            raise lossdsl.LossDSLError(
                f"no loss here has a parameter '{key}'",
                hint="parameters: " + (", ".join(sorted(declared)) or "none"),
            )


def _analyze(args: argparse.Namespace) -> int:
    from lossdsl.research.analyze import analysis_table, analyze, as_dict

    losses = [resolve(s) for s in args.losses]
    params = parse_params(args.param)
    check_params_used(losses, params)
    results = [analyze(loss, params_for(loss, params)) for loss in losses]
    if args.json:
        print(json.dumps([as_dict(a) for a in results], indent=2, ensure_ascii=False))
    else:
        print(analysis_table(results))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from lossdsl.research.plot import plot_losses, save_figure

    losses = [resolve(s) for s in args.losses]
    params = parse_params(args.param)
    check_params_used(losses, params)
    x_range = tuple(args.range) if args.range else None
    fig = plot_losses(losses, params, hessian=args.hessian, x_range=x_range)
    print(save_figure(fig, args.output))
    return 0
