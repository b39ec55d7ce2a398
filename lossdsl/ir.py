"""The checked, resolved IR: what a loss *means*, independent of syntax and of SymPy.

`check.py` produces a `LossDef`; `lower.py` turns its expressions into SymPy. Every expression
node carries its `kind` ('real', 'int' or 'bool') and its `axis` (None for one value per sample,
else the name of the trailing axis). Locals are already inlined. All nodes are immutable.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from lossdsl.errors import Span


@dataclass(frozen=True)
class Domain:
    low: float | None
    high: float | None
    low_closed: bool
    high_closed: bool

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_closed)
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not self.high_closed))
        )

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            lo = "[" if self.low_closed else "("
            hi = "]" if self.high_closed else ")"
            return f"in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        if self.low is not None:
            return (">= " if self.low_closed else "> ") + _num(self.low)
        return ("<= " if self.high_closed else "< ") + _num(self.high or 0.0)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class SearchRange:
    """The range a hyperparameter search draws a parameter from (see metadata.py)."""

    low: float
    high: float
    log: bool


@dataclass(frozen=True)
class Input:
    """A per-sample input; `domain` documents valid values (used by docs and tests), `encoding`
    what the values mean (metadata.ENCODINGS)."""

    name: str
    kind: str
    axis: str | None
    domain: Domain | None
    span: Span = field(compare=False, repr=False)
    encoding: str = "real"


@dataclass(frozen=True)
class Param:
    """A parameter; `role` (metadata.ROLES) and `search` tell a search what to do with it."""

    name: str
    kind: str
    axis: str | None
    default: float
    domain: Domain | None
    span: Span = field(compare=False, repr=False)
    role: str = "hyperparameter"
    search: SearchRange | None = None


@dataclass(frozen=True)
class Const:
    value: float
    kind: str
    axis: None = None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Ref:
    """An input, a parameter, or an axis size (`role` says which)."""

    name: str
    role: str
    kind: str
    axis: str | None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Apply:
    """An operator or an elementwise built-in function, by its table name."""

    fn: str
    args: tuple[Expr, ...]
    kind: str
    axis: str | None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AxisOp:
    """`sum[C](x)` and friends: a reduction (axis None) or a map along the axis (axis C)."""

    fn: str
    over: str
    arg: Expr
    kind: str
    axis: str | None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Gather:
    """`x[label]`: the element of a per-axis expression at an integer index."""

    arg: Expr
    index: Expr
    kind: str
    axis: None = None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Total:
    """`total(x)`: the sum of `x` over the batch, weighted by each sample's frequency weight.

    Of an axis-valued `x` it keeps the axis (one total per position: per-class totals).
    """

    arg: Expr
    axis: str | None = None
    kind: str = "real"
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Inline:
    """A call of another registered loss; its per-sample value, parameters bound."""

    loss: LossDef
    args: tuple[Expr, ...]
    params: tuple[tuple[str, Expr], ...]
    kind: str = "real"
    axis: None = None
    span: Span | None = field(default=None, compare=False, repr=False)


Expr = Const | Ref | Apply | AxisOp | Gather | Total | Inline


@dataclass(frozen=True)
class LossDef:
    name: str
    inputs: tuple[Input, ...]
    params: tuple[Param, ...]
    axis: str | None
    wrt: tuple[str, ...]
    value: Expr
    weight: Expr | None
    reduction: str
    task: str
    activation: str
    doc: str
    file: str = field(compare=False)
    source: str = field(compare=False, repr=False)
    span: Span = field(compare=False, repr=False)

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def summary(self) -> str:
        """The first line of the docstring or leading comment."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


def fingerprint(node: Any) -> str:
    """A canonical text of an IR value without spans or file names: the stable cache key input.

    Iterative and memoised by identity: locals and called losses are shared subtrees, and a
    called loss, or any part longer than `_DIGEST_OVER` characters, enters its parent's text as a
    digest, so the text grows linearly with the DAG rather than with its expansion.
    """
    memo: dict[int, str] = {}
    keep: list[Any] = []  # holds every visited value so that ids stay unique meanwhile
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:
        cur, expanded = stack.pop()
        if id(cur) in memo:
            continue
        parts = _parts(cur)
        if not expanded:
            stack.append((cur, True))
            stack.extend((p, False) for _, p in parts if id(p) not in memo)
            continue
        keep.append(cur)
        memo[id(cur)] = _text(cur, [(name, _embedded(memo[id(p)], p)) for name, p in parts])
    return memo[id(node)]


_DIGEST_OVER = 512


def _parts(value: Any) -> list[tuple[str, Any]]:
    if is_dataclass(value) and not isinstance(value, type):
        return [
            (f.name, getattr(value, f.name))
            for f in fields(value)
            if f.name not in ("span", "file", "source")
        ]
    if isinstance(value, tuple | list):
        return [("", v) for v in value]
    return []


def _text(value: Any, parts: list[tuple[str, str]]) -> str:
    if is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__name__}({','.join(f'{k}={v}' for k, v in parts)})"
    if isinstance(value, tuple | list):
        return "(" + ",".join(v for _, v in parts) + ")"
    return repr(value)


def _embedded(text: str, value: Any) -> str:
    if isinstance(value, LossDef) or len(text) > _DIGEST_OVER:
        return "#" + hashlib.sha256(text.encode()).hexdigest()
    return text
