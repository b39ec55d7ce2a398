"""The research bench's subcommands of `lossdsl`: analyze, plot and compare.

`register` adds them to the main parser in `lossdsl/cli.py`; each parses its arguments, calls
the research functions and prints. Errors are `LossDSLError`s, which the main command prints
with exit code 2. matplotlib, scikit-learn and optuna load only when a command needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lossdsl.research.datasets import DATASETS, DEFAULT_FOR_TASK
from lossdsl.research.names import check_params_used, params_for, parse_params, resolve

_PARAM_HELP = "a loss parameter (repeatable); each loss takes those it declares"


def register(sub: Any) -> None:
    """Add the research subcommands to an argparse subparsers object."""
    p = sub.add_parser("analyze", help="convexity, gradient bounds, best constant of losses")
    p.add_argument("losses", nargs="+", metavar="NAME|FILE", help="registered names or spec files")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help=_PARAM_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("plot", help="plot losses, gradients (and Hessians) against their variable")
    p.add_argument("losses", nargs="+", metavar="NAME|FILE", help="registered names or spec files")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help=_PARAM_HELP)
    p.add_argument("--hessian", action="store_true", help="add the second derivative")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), help="range of x")
    p.add_argument("-o", "--output", default="losses.png", help="PNG, SVG or PDF file")
    p.set_defaults(run=_plot)

    p = sub.add_parser("compare", help="train small models with each loss and tabulate")
    p.add_argument(
        "losses", nargs="+", metavar="LOSS", help="names or files; NAME@sigmoid forces a link"
    )
    p.add_argument("--task", choices=sorted(DEFAULT_FOR_TASK), help="use this task's default data")
    p.add_argument("--data", choices=sorted(DATASETS), help="the data set (overrides --task)")
    p.add_argument(
        "--model", choices=["linear", "mlp", "gbdt"], default="linear",
        help="gbdt: XGBoost with each loss as its objective (--epochs rounds, --lr its eta)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, action="append", help="learning rate (repeat to sweep)")
    p.add_argument("--l1", type=float, default=0.0, help="L1 weight on the weight matrices")
    p.add_argument("--l2", type=float, default=0.0, help="squared-L2 weight")
    p.add_argument("--outliers", type=float, default=0.1, help="outlier fraction (outliers data)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help=_PARAM_HELP)
    p.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    p.add_argument("--curves", type=Path, help="write the learning curves to this image file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=_compare)


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
    x_range = (args.range[0], args.range[1]) if args.range else None
    fig = plot_losses(losses, params, hessian=args.hessian, x_range=x_range)
    print(save_figure(fig, args.output))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lossdsl.research.compare import compare
    from lossdsl.research.plot import save_figure

    params = parse_params(args.param)
    check_params_used([resolve(s.partition("@")[0]) for s in args.losses], params)
    data = args.data or DEFAULT_FOR_TASK[args.task or "regression"]
    penalties = [(args.l1, args.l2)] if (args.l1 or args.l2) else [(0.0, 0.0)]
    result = compare(
        args.losses, data, args.seeds, args.model, args.epochs, args.lr or [0.05], penalties,
        params, args.outliers, None if args.no_progress else _progress,
    )  # fmt: skip
    text = {"markdown": result.to_markdown, "csv": result.to_csv, "json": result.to_json}
    print(text[args.format]().rstrip("\n"))
    if args.curves is not None:
        print(save_figure(result.plot_curves(), args.curves), file=sys.stderr)
    return 0


def _progress(done: int, total: int, what: str) -> None:
    width = 24
    bar = "#" * (width * done // total)
    end = "\n" if done == total else ""
    sys.stderr.write(f"\r[{bar:<{width}}] {done}/{total} {what:<40.40}{end}")
    sys.stderr.flush()
