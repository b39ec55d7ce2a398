"""Search and tooling metadata of a checked loss: parameter roles, input encodings, ranges.

`annotate` takes a `LossDef` from `check.py` and the body statements it came from, applies the
`role`, `encoding` and `range` statements, infers what the spec leaves out, and returns the
`LossDef` with every `Param.role`, `Param.search`, `Input.encoding` and `activation` filled in.
It computes no numbers and touches no SymPy. The meaning of `activation` is fixed here: the
last layer the *model* must have, never a link the loss applies itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from lossdsl import ir
from lossdsl import nodes as n
from lossdsl.errors import SpecDomainError, SpecNameError, SpecSyntaxError, did_you_mean

ROLES = {
    "hyperparameter": "changes what the loss optimises: a search should tune it",
    "switch": "an on/off option (0 or 1) of the formula; a search may try both",
    "convention": "fixed by the data or a framework's convention (ignore_index, eps, class "
    "weights, input scale): a search leaves it at its default",
}
ENCODINGS = {
    "real": "any real number (a regression output or target, a score, an embedding)",
    "logits": "raw scores; the loss applies the sigmoid (one value) or softmax (an axis) itself",
    "probability": "in [0, 1] (along an axis: a distribution or a one-hot row)",
    "log_probability": "<= 0: a log-probability (log_softmax output)",
    "binary": "0/1 labels (soft labels in [0, 1] allowed)",
    "pm1": "-1/+1 labels",
    "label": "an integer class index",
    "nonnegative": ">= 0: counts, rates, variances, distances",
}
# The model's last layer that an encoding of the differentiated input implies, where it does.
_LAST_LAYER = {
    "logits": ("identity",),
    "probability": ("sigmoid", "softmax"),
    "log_probability": ("log_softmax",),
}
_INT_ENCODINGS = ("label", "pm1", "binary")
_SCALES = ("linear", "log")


def annotate(loss: ir.LossDef, body: Sequence[n.Statement]) -> ir.LossDef:
    """Fill in roles, search ranges, encodings and the activation of a checked loss.

    Raises:
        SpecNameError: an unknown name, role or encoding.
        SpecSyntaxError: a name annotated twice the same way.
        SpecDomainError: a range outside the declared domain, or an activation that
            contradicts the differentiated input's encoding.
    """
    notes: dict[tuple[str, str], n.Annotation] = {}
    for stmt in body:
        if isinstance(stmt, n.Annotation):
            _check_note(loss, stmt)
            if (stmt.key, stmt.name) in notes:
                raise SpecSyntaxError(f"a second '{stmt.key} {stmt.name}'", stmt.span)
            notes[stmt.key, stmt.name] = stmt
    inputs = tuple(_encode(loss, i, notes.get(("encoding", i.name))) for i in loss.inputs)
    params = tuple(
        _param(p, notes.get(("role", p.name)), notes.get(("range", p.name))) for p in loss.params
    )
    first = next(i for i in inputs if i.name == loss.wrt[0])
    activation = _activation(loss, first, body)
    return dataclasses.replace(loss, inputs=inputs, params=params, activation=activation)


def _check_note(loss: ir.LossDef, note: n.Annotation) -> None:
    on_input = note.key == "encoding"
    pool = [i.name for i in loss.inputs] if on_input else [p.name for p in loss.params]
    if note.name not in pool:
        what = "input" if on_input else "parameter"
        raise SpecNameError(
            f"'{note.key}' names no {what} '{note.name}'",
            note.span,
            hint=did_you_mean(note.name, pool) or f"{what}s: {', '.join(pool) or 'none'}",
        )
    allowed = {"role": tuple(ROLES), "encoding": tuple(ENCODINGS), "range": _SCALES}[note.key]
    if note.value not in allowed:
        raise SpecNameError(
            f"unknown {note.key} '{note.value}'" if note.key != "range" else "unknown scale",
            note.span,
            hint=did_you_mean(note.value, allowed) or f"one of: {', '.join(allowed)}",
        )


# -- inputs -----------------------------------------------------------------------------------


def _encode(loss: ir.LossDef, inp: ir.Input, note: n.Annotation | None) -> ir.Input:
    if note is None:
        return dataclasses.replace(inp, encoding=_infer_encoding(loss, inp))
    if inp.kind == "int" and note.value not in _INT_ENCODINGS:
        raise SpecDomainError(
            f"the int input '{inp.name}' cannot have encoding '{note.value}'",
            note.span,
            hint=f"an int input is one of: {', '.join(_INT_ENCODINGS)}",
        )
    if inp.kind == "real" and note.value == "label":
        raise SpecDomainError(
            f"encoding 'label' needs an int input, and '{inp.name}' is real",
            note.span,
            hint=f"declare it '{inp.name}: int'",
        )
    return dataclasses.replace(inp, encoding=note.value)


def _infer_encoding(loss: ir.LossDef, inp: ir.Input) -> str:
    d = inp.domain
    between = (d.low, d.high) if d is not None else (None, None)
    if between == (-1.0, 1.0):
        return "pm1"
    if inp.kind == "int":
        return "label"
    if between == (0.0, 1.0):
        differentiated = inp.name in loss.wrt
        if differentiated or inp.axis is not None:
            return "probability"
        return "binary" if loss.task in ("binary", "multilabel", "segmentation") else "probability"
    if d is not None and d.low is None and d.high == 0.0:
        return "log_probability"
    if d is not None and d.high is None and d.low == 0.0:
        return "nonnegative"
    return "logits" if inp.name in ("logit", "logits") else "real"


def _activation(loss: ir.LossDef, first: ir.Input, body: Sequence[n.Statement]) -> str:
    implied = _LAST_LAYER.get(first.encoding)
    if not loss.activation:
        if implied is None:
            return "identity"
        return "softmax" if implied[0] == "sigmoid" and first.axis is not None else implied[0]
    if implied is not None and loss.activation not in implied:
        span = next(
            (s.span for s in body if isinstance(s, n.Meta) and s.key == "activation"), loss.span
        )
        raise SpecDomainError(
            f"'activation {loss.activation}' contradicts '{first.name}', which is "
            f"{first.encoding}: activation names the model's last layer",
            span,
            hint=f"write 'activation {' or '.join(implied)}', or change the encoding",
        )
    return loss.activation


# -- parameters -------------------------------------------------------------------------------


def _param(p: ir.Param, role: n.Annotation | None, rng: n.Annotation | None) -> ir.Param:
    kind = role.value if role is not None else _infer_role(p)
    if kind != "hyperparameter":
        if rng is not None:
            raise SpecSyntaxError(
                f"'range {p.name}' on a {kind}: only hyperparameters are searched",
                rng.span,
                hint=f"drop the range, or write 'role {p.name} hyperparameter'",
            )
        return dataclasses.replace(p, role=kind)
    search = _explicit_range(p, rng) if rng is not None else _infer_range(p)
    return dataclasses.replace(p, role=kind, search=search)


def _infer_role(p: ir.Param) -> str:
    d = p.domain
    if p.kind == "int" and d is not None and (d.low, d.high) == (0.0, 1.0):
        return "switch"
    if (p.kind == "int" and d is None) or p.axis is not None or p.name == "eps":
        return "convention"
    return "hyperparameter"


def _explicit_range(p: ir.Param, note: n.Annotation) -> ir.SearchRange:
    d = note.domain
    if d is None or d.low is None or d.high is None or d.low >= d.high:
        raise SpecSyntaxError(
            f"a search range is an interval 'in [lo, hi]' with lo < hi, for '{p.name}'",
            note.span,
            hint=f"range {p.name} in [0.1, 10] log",
        )
    log = note.value == "log"
    inside = p.domain is None or (p.domain.contains(d.low) and p.domain.contains(d.high))
    if not inside or (log and d.low <= 0) or (p.kind == "int" and not _integral(d.low, d.high)):
        raise SpecDomainError(
            f"the search range of '{p.name}' must lie in its domain"
            + (f" ({p.domain})" if p.domain else "")
            + (", be positive on a log scale" if log else "")
            + (", and have integer ends" if p.kind == "int" else ""),
            note.span,
        )
    return ir.SearchRange(d.low, d.high, log)


def _integral(*values: float) -> bool:
    return all(float(v).is_integer() for v in values)


def _infer_range(p: ir.Param) -> ir.SearchRange:
    """A default range: the domain where it is bounded, else a span around the default."""
    d = p.domain
    low, high = (d.low, d.high) if d is not None else (None, None)
    spread = max(abs(p.default), 1.0)
    if d is not None and low is not None and high is not None:
        if p.kind == "real":  # keep open ends out of the search's reach
            margin = 0.01 * (high - low)
            low, high = low + (not d.low_closed) * margin, high - (not d.high_closed) * margin
        return ir.SearchRange(low, high, False)
    if d is not None and low == 0 and not d.low_closed and p.default > 0:
        # A positive scale (delta, pos_weight): a decade either side, on a log scale.
        return ir.SearchRange(p.default / 10, p.default * 10, True)
    if low is not None:
        high = low + max(2 * (p.default - low), 1.0)
    elif high is not None:
        low = high - 2 * spread
    else:
        low, high = p.default - spread, p.default + spread
    if p.kind == "int":
        return ir.SearchRange(float(math.floor(low)), float(math.ceil(high)), False)
    return ir.SearchRange(low, high, False)
