"""Search spaces: the losses of a task and the ranges of their hyperparameters, as data.

`search_space` reads the metadata every checked loss carries (`Loss.params`, `Loss.input_info`,
`Loss.activation`) and returns plain frozen dataclasses a hyperparameter-search library can
consume; `lossdsl.research.search` turns them into Optuna suggestions. Nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lossdsl.api import available, get


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: `kind` is "float", "int" or "categorical" (then `choices`)."""

    name: str
    kind: str
    low: float
    high: float
    log: bool
    default: float
    choices: tuple[float, ...] = ()


@dataclass(frozen=True)
class LossSpace:
    """A loss, what its inputs must hold, and the dimensions a search tunes."""

    loss: str
    task: str
    activation: str
    encodings: tuple[tuple[str, str], ...]
    dimensions: tuple[Dimension, ...]


def search_space(
    task: str | None = None, losses: Iterable[str] | None = None, switches: bool = True
) -> tuple[LossSpace, ...]:
    """The search space over the registered losses of a task (or the named losses).

    Args:
        task: keep the losses with this task tag (`lossdsl list --task`); None keeps all.
        losses: restrict to these names (checked); None means every registered loss.
        switches: also search the 0/1 switches (as categorical choices).

    Returns:
        One `LossSpace` per loss, sorted by name. Parameters whose role is "convention"
        (ignore_index, eps, class weights, input scales) never appear.

    Raises:
        UnknownLossError: an unknown task or loss name, with close matches.
    """
    names = available(task=task)  # checks the task tag
    if losses is not None:
        names = sorted(losses)
    spaces = []
    for name in names:
        loss = get(name)
        if task is not None and loss.task != task:
            continue
        dims = []
        for p in loss.params:
            if p.role == "switch" and switches:
                dims.append(Dimension(p.name, "categorical", 0, 1, False, p.default, (0, 1)))
            elif p.role == "hyperparameter" and p.search is not None:
                kind = "int" if p.kind == "int" else "float"
                s = p.search
                dims.append(Dimension(p.name, kind, s.low, s.high, s.log, p.default))
        encodings = tuple((i.name, i.encoding) for i in loss.input_info)
        spaces.append(LossSpace(name, loss.task, loss.activation, encodings, tuple(dims)))
    return tuple(spaces)
