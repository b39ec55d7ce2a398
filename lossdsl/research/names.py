"""Losses named on a command line or in a call: registered names, spec files, `K=V` parameters."""

from __future__ import annotations

import difflib
from pathlib import Path

import lossdsl


def resolve(spec: str) -> lossdsl.Loss:
    """A registered name, or a spec file (`FILE:NAME` picks one loss of a file with several).

    Raises:
        UnknownLossError: no such loss (the hint lists close names).
    """
    path, _, name = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    if Path(path).suffix == ".loss" or Path(path).exists():
        return lossdsl.load(path, name or None)
    return lossdsl.get(spec)


def parse_params(items: list[str]) -> dict[str, float]:
    """`["delta=0.5", "q=0.9"]` -> {"delta": 0.5, "q": 0.9}.

    Raises:
        LossDSLError: an item that is not NAME=NUMBER.
    """
    params: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        try:
            if not sep or not key.strip():
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
    """Every given parameter belongs to at least one of the losses (catches typos).

    Raises:
        LossDSLError: a parameter no loss declares, with the declared names.
    """
    declared = {p.name for loss in losses for p in loss.params}
    for key in params:
        if key not in declared:
            close = difflib.get_close_matches(key, sorted(declared), n=3)
            listing = ", ".join(close if close else sorted(declared)) or "none"
            raise lossdsl.LossDSLError(
                f"no loss here has a parameter '{key}'",
                hint=("did you mean: " if close else "parameters: ") + listing,
            )
