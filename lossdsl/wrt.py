"""Differentiation sets chosen at call time: `wrt=` arguments -> a `LossDef` differentiating them.

A call such as `loss.value_and_grad(p, t, wrt=("pred", "target"))` runs the same definition with
another `wrt` tuple. The tuple is part of the definition's fingerprint, so the derivation,
the kernels and their disk-cache entries follow from it like any other specialisation; this
module only validates the names (as the checker does for a spec's own `wrt` clause) and makes
the definition. It derives and compiles nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lossdsl import ir, limits
from lossdsl.errors import SpecNameError, SpecShapeError, did_you_mean


def wrt_names(loss: ir.LossDef, wrt: str | Sequence[str]) -> tuple[str, ...]:
    """The inputs a `wrt=` argument names, validated, in the order given.

    Raises:
        SpecNameError: a name that is not an input, or one named twice.
        SpecShapeError: an empty set, an integer input (a label), or an input the reduction
            weight reads (a weight is held constant by the reduction).
    """
    names = (wrt,) if isinstance(wrt, str) else tuple(wrt)
    inputs = {i.name: i for i in loss.inputs}
    real = [name for name, i in inputs.items() if i.kind == "real"]
    if not names:
        raise SpecShapeError(
            f"wrt= of loss '{loss.name}' names no input",
            hint=f"name one or more of: {', '.join(real)}",
        )
    for k, name in enumerate(names):
        if not isinstance(name, str) or name not in inputs:
            raise SpecNameError(
                f"wrt= names {name!r}, which is not an input of loss '{loss.name}'",
                hint=did_you_mean(str(name), inputs) or f"inputs: {', '.join(inputs)}",
            )
        if name in names[:k]:
            raise SpecNameError(f"wrt= names '{name}' twice", hint="name each input once")
        if inputs[name].kind != "real":
            raise SpecShapeError(
                f"input '{name}' of loss '{loss.name}' holds integer labels and cannot be "
                "differentiated",
                hint=f"leave it out of wrt=; real inputs: {', '.join(real)}",
            )
    if loss.weight is not None:
        used = _input_refs(loss.weight)
        for name in names:
            if name in used:
                raise SpecShapeError(
                    f"the reduction weight of loss '{loss.name}' reads '{name}', so it cannot "
                    "be differentiated",
                    hint="differentiate the other inputs, or write the weight into the loss",
                )
    return names


def with_wrt(loss: ir.LossDef, wrt: str | Sequence[str]) -> ir.LossDef:
    """`loss` differentiating the inputs `wrt` names instead of its own `wrt` (see `wrt_names`)."""
    names = wrt_names(loss, wrt)
    return loss if names == loss.wrt else dataclasses.replace(loss, wrt=names)


def _input_refs(e: ir.Expr) -> set[str]:
    found: set[str] = set()
    seen: set[int] = set()
    stack = [e]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ir.Ref) and cur.role == "input":
            found.add(cur.name)
        stack.extend(limits.ir_children(cur))
    return found
