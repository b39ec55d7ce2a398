"""Compare losses by training small models with each: the tables of the classic loss articles.

`compare` trains a model (`trainers.py`, or trees boosted with the loss as their XGBoost
objective: `boosting.py`) per loss, learning rate, penalty and seed on one data set
(`datasets.py`) and scores it on the held-out part: MAE / RMSE / R² (and the error of the
fitted slopes where the truth is known) for regression, accuracy / F1 / TPR / FPR for binary
tasks, accuracy and top-k for multiclass, plus epochs to converge and seconds. The result
prints as Markdown, CSV or JSON (mean ± std over seeds) and plots its learning curves.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

import lossdsl
from lossdsl.research.boosting import Boosted, boost, objective_for
from lossdsl.research.datasets import DATASETS, Split, load
from lossdsl.research.names import resolve
from lossdsl.research.trainers import Link, Run, link_for, train

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Progress = Callable[[int, int, str], None]
MODELS = ("linear", "mlp", "gbdt")


@dataclass
class Row:
    """One setting (loss, learning rate, penalty): metrics per seed and the mean curve."""

    label: str
    lr: float
    l1: float
    l2: float
    metrics: dict[str, list[float]] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)

    def summary(self, key: str) -> tuple[float, float]:
        values = np.asarray(self.metrics[key])
        return float(values.mean()), float(values.std())


@dataclass
class Comparison:
    data: str
    task: str
    model: str
    seeds: int
    rows: list[Row]

    def columns(self) -> list[str]:
        return list(self.rows[0].metrics) if self.rows else []

    def to_markdown(self) -> str:
        """A Markdown table, mean ± std over seeds."""
        head = ["loss", "lr", "L1", "L2", *self.columns()]
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in self.rows:
            cells = [r.label, f"{r.lr:g}", f"{r.l1:g}", f"{r.l2:g}"]
            cells += [_pm(*r.summary(k)) for k in self.columns()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        stats = [f"{k}_{s}" for k in self.columns() for s in ("mean", "std")]
        writer.writerow(["loss", "lr", "l1", "l2", *stats])
        for r in self.rows:
            values = [v for k in self.columns() for v in r.summary(k)]
            writer.writerow([r.label, r.lr, r.l1, r.l2, *(f"{v:.6g}" for v in values)])
        return out.getvalue()

    def to_json(self) -> str:
        rows = [
            {"loss": r.label, "lr": r.lr, "l1": r.l1, "l2": r.l2, "per_seed": r.metrics,
             "curve": r.curve}
            for r in self.rows
        ]  # fmt: skip
        meta = {"data": self.data, "task": self.task, "model": self.model, "seeds": self.seeds}
        return json.dumps({**meta, "rows": rows}, indent=1)

    def plot_curves(self) -> Figure:
        """The training objective per epoch (mean over seeds), one line per setting."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        for r in self.rows:
            ax.plot(np.arange(1, len(r.curve) + 1), r.curve, label=_setting(r))
        ax.set_xlabel("epoch")
        ax.set_ylabel("training objective")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{self.data} ({self.model})")
        ax.legend()
        return fig


def compare(
    losses: Sequence[str],
    data: str,
    seeds: int = 3,
    model: str = "linear",
    epochs: int = 200,
    lrs: Sequence[float] = (0.05,),
    penalties: Sequence[tuple[float, float]] = ((0.0, 0.0),),
    params: dict[str, float] | None = None,
    outlier_fraction: float = 0.1,
    progress: Progress | None = None,
) -> Comparison:
    """Train and score one model per loss x learning rate x penalty x seed.

    Args:
        losses: names or spec files; `NAME@sigmoid` (or `@softmax`, `@identity`) forces the
            link from model scores to the loss's prediction (MSE on probabilities).
        data: a name in `datasets.DATASETS`.
        model: "linear" (linear/logistic/softmax regression), "mlp" (one tanh layer) or "gbdt"
            (XGBoost with the loss as its objective: `epochs` rounds, learning rate `lrs`).
        penalties: (l1, l2) pairs on the weight matrices, through `lossdsl.Penalized`.
        params: loss parameters; each loss takes those it declares.
        progress: called with (done, total, what) after each run.

    Raises:
        LossDSLError: an unknown loss, data set or model, a loss that does not fit the task
            (or, for "gbdt", cannot be an XGBoost objective), or "gbdt" without xgboost.
    """
    if model not in MODELS:
        raise lossdsl.LossDSLError(f"unknown model '{model}'", hint=", ".join(MODELS))
    task = DATASETS[data][0] if data in DATASETS else load(data, 0).task  # load names the error
    links = [(spec, _link(spec, task, params or {})) for spec in losses]
    splits = [load(data, seed, outlier_fraction) for seed in range(seeds)]
    if model == "gbdt" and splits:
        for _, link in links:  # refuse a loss that is no objective before training any
            objective_for(link, splits[0])
    settings = [(s, lk, lr, pen) for s, lk in links for lr in lrs for pen in penalties]
    total = len(settings) * seeds
    rows: list[Row] = []
    for spec, link, lr, (l1, l2) in settings:
        row = Row(spec + _params_text(link), lr, l1, l2)
        curves = []
        for seed, split in enumerate(splits):
            curves.append(_fit(row, link, split, model, epochs, seed))
            if progress is not None:
                progress(len(rows) * seeds + seed + 1, total, f"{row.label} seed {seed}")
        row.curve = list(np.mean(curves, axis=0))
        rows.append(row)
    return Comparison(data, task, model, seeds, rows)


def _fit(row: Row, link: Link, split: Split, model: str, epochs: int, seed: int) -> list[float]:
    """Train one seed, add its test metrics to the row, return its learning curve."""
    run: Run | Boosted
    if model == "gbdt":
        run = boost(link, split, epochs, row.lr, row.l1, row.l2, seed)
        found = score(link, split, run.scores(split.x_test), None)
    else:
        hidden = 32 if model == "mlp" else 0
        run = train(link, split, hidden, epochs, row.lr, row.l1, row.l2, seed)
        slopes = None if hidden else run.model.weights[0]  # an MLP's first layer is not one
        found = score(link, split, run.model.scores(split.x_test), slopes)
    found.update(epochs_to_converge=run.converged_at, seconds=run.seconds)
    for key, value in found.items():
        row.metrics.setdefault(key, []).append(float(value))
    return run.curve


def _link(spec: str, task: str, params: dict[str, float]) -> Link:
    name, _, force = spec.partition("@")
    if force and force not in ("identity", "sigmoid", "softmax", "log_softmax"):
        raise lossdsl.LossDSLError(
            f"unknown link '@{force}' in '{spec}'", hint="@identity, @sigmoid or @softmax"
        )
    return link_for(resolve(name), task, force or None, params)


def score(link: Link, split: Split, z: np.ndarray, linear: np.ndarray | None) -> dict[str, float]:
    """Test metrics of model scores `z` (n, outputs)."""
    y = split.y_test
    if split.task == "regression":
        pred = z[:, 0]
        out = {
            "MAE": float(np.mean(np.abs(pred - y))),
            "RMSE": float(np.sqrt(np.mean((pred - y) ** 2))),
            "R2": float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)),
        }
        if split.coef is not None and linear is not None:
            out["coef_error"] = float(np.linalg.norm(linear[:, 0] - split.coef))
        return out
    if split.task == "multiclass":
        k = 5 if split.classes >= 10 else 2
        top = np.argsort(-z, axis=1)[:, :k]
        return {
            "accuracy": float(np.mean(top[:, 0] == y)),
            f"top{k}": float(np.mean((top == y[:, None]).any(axis=1))),
        }
    return _binary_metrics(link, z[:, 0], y)


def _binary_metrics(link: Link, z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = link.inputs(z, y, 2)[0]
    # A loss on logits or on ±1 labels decides at 0; one on probabilities or 0/1 values at 1/2.
    first = next(i for i in link.loss.input_info if i.differentiated)
    at_zero = link.output == "identity" and (first.encoding == "logits" or link.target == "pm1")
    yes = pred > (0.0 if at_zero else 0.5)
    tp, fp = np.sum(yes & (y == 1)), np.sum(yes & (y == 0))
    fn, tn = np.sum(~yes & (y == 1)), np.sum(~yes & (y == 0))
    return {
        "accuracy": float((tp + tn) / y.size),
        "F1": float(2 * tp / max(2 * tp + fp + fn, 1)),
        "TPR": float(tp / max(tp + fn, 1)),
        "FPR": float(fp / max(fp + tn, 1)),
    }


def _params_text(link: Link) -> str:
    return "".join(f" {k}={v:g}" for k, v in link.params)


def _setting(r: Row) -> str:
    extra = (f" L1={r.l1:g}" if r.l1 else "") + (f" L2={r.l2:g}" if r.l2 else "")
    return f"{r.label} lr={r.lr:g}{extra}"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4g} ± {std:.2g}"
