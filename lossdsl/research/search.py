"""Optuna helpers: suggest a loss and its hyperparameters from a trial.

`suggest_loss` draws a loss name, then each searched parameter of that loss, from an
`optuna.Trial`, using `lossdsl.search_space`. Parameter names are prefixed with the loss name
(`huber.delta`), so each loss keeps its own conditional dimensions in the study. Optuna itself
is not imported: any object with Optuna's `suggest_*` methods works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lossdsl


def suggest_loss(
    trial: Any,
    task: str | None = None,
    losses: Iterable[str] | None = None,
    switches: bool = True,
    key: str = "loss",
) -> tuple[lossdsl.Loss, dict[str, float]]:
    """Suggest a loss and its parameters.

    Args:
        trial: an `optuna.Trial` (or anything with `suggest_categorical/int/float`).
        task: draw among the losses of this task.
        losses: draw among these names only (with `task`, both must hold).
        switches: also draw the 0/1 switches of the chosen loss.
        key: the name of the categorical dimension holding the loss name.

    Returns:
        The chosen `Loss` and the keyword arguments to call it with.

    Raises:
        UnknownLossError: an unknown task or loss; LossDSLError if nothing is left to choose.
    """
    spaces = {s.loss: s for s in lossdsl.search_space(task, losses, switches)}
    if not spaces:
        raise lossdsl.LossDSLError(
            f"no loss to search for task '{task}' among {sorted(losses or [])}",
            hint="check the task tag with: lossdsl list --task T",
        )
    name = trial.suggest_categorical(key, sorted(spaces))
    params: dict[str, float] = {}
    for d in spaces[name].dimensions:
        label = f"{name}.{d.name}"
        if d.kind == "categorical":
            params[d.name] = trial.suggest_categorical(label, list(d.choices))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(label, int(d.low), int(d.high), log=d.log)
        else:
            params[d.name] = trial.suggest_float(label, d.low, d.high, log=d.log)
    return lossdsl.get(name), params
