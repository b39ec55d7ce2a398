"""The syntax tree: frozen dataclasses, one per grammar rule that carries meaning.

`parse.py` builds these from Lark's tree; `check.py` reads them. Every node has a `span` so a
later stage can point at the text it came from. No resolution or typing happens here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossdsl.errors import Span


@dataclass(frozen=True)
class Number:
    value: float
    is_int: bool
    span: Span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span


@dataclass(frozen=True)
class BinaryOp:
    """Arithmetic `+ - * / ^`."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    """`-x`, `+x` or `not x`."""

    op: str
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class BoolOp:
    """`and` / `or`."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Index:
    """`base[index]`: a gather by label, or the axis of a reduction such as `sum[C]`."""

    base: Expr
    index: Expr
    span: Span


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    span: Span


Expr = Number | Name | BinaryOp | UnaryOp | Compare | BoolOp | Index | Call


@dataclass(frozen=True)
class Domain:
    """`> 0`, `>= 0`, `< 1`, `<= 1`, or an interval `in [lo, hi]` with open or closed ends."""

    low: float | None
    high: float | None
    low_closed: bool
    high_closed: bool
    span: Span


@dataclass(frozen=True)
class InputDecl:
    name: str
    type: str
    axis: str | None
    domain: Domain | None
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    name: str
    type: str
    axis: str | None
    default: float
    domain: Domain | None
    span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Reduce:
    mode: str
    weight: Expr | None
    span: Span


@dataclass(frozen=True)
class Meta:
    """`task NAME`, `activation NAME` or a docstring."""

    key: str
    value: str
    span: Span


@dataclass(frozen=True)
class Annotation:
    """`role NAME ROLE`, `encoding NAME ENCODING` or `range NAME in [lo, hi] [log]`."""

    key: str
    name: str
    value: str
    domain: Domain | None
    span: Span


Statement = Assign | Return | Reduce | Meta | Annotation


@dataclass(frozen=True)
class LossNode:
    name: str
    inputs: tuple[InputDecl, ...]
    params: tuple[ParamDecl, ...]
    wrt: tuple[Name, ...]
    body: tuple[Statement, ...]
    comment: str
    span: Span


@dataclass(frozen=True)
class Spec:
    """A parsed file or string: its losses, in order, and the text they came from."""

    losses: tuple[LossNode, ...]
    source: str
    file: str
