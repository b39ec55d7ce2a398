"""Spec text -> syntax tree (`nodes.Spec`).

Loads `grammar/lossdsl.lark` once (LALR, positions kept), drops newlines inside brackets,
bounds the size of what it accepts, and turns Lark's tree into frozen nodes. Lark exceptions
never leave this module: they become `SpecSyntaxError` with a span. No name resolution here.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from lossdsl import limits
from lossdsl import nodes as n
from lossdsl.errors import LossDSLError, Span, SpecSyntaxError
from lossdsl.parse_errors import syntax_error, token_span

MAX_SOURCE_BYTES = 256 * 1024
MAX_TOKENS = 50_000
MAX_STATEMENT_TOKENS = 2_000
MAX_BRACKET_DEPTH = 48

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}


def grammar_path() -> Path:
    """The grammar file: inside the installed package, else beside the source tree."""
    packaged = resources.files("lossdsl").joinpath("grammar/lossdsl.lark")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "grammar" / "lossdsl.lark"


class _BracketNewlines(lark.lark.PostLex):
    """Drops newlines inside brackets (so calls may span lines) and bounds nesting and size."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        total = 0
        in_statement = 0
        for token in stream:
            total += 1
            in_statement += 1
            if total > MAX_TOKENS or in_statement > MAX_STATEMENT_TOKENS:
                raise _TooLarge(
                    token, "statement" if in_statement > MAX_STATEMENT_TOKENS else "spec"
                )
            if token.type == "NAME" and len(token) > limits.MAX_IDENTIFIER:
                raise _TooLarge(token, "name")
            if token.type == "_NL":
                if depth > 0:
                    continue
                in_statement = 0
            elif token.type in _OPEN:
                depth += 1
                if depth > MAX_BRACKET_DEPTH:
                    raise _TooLarge(token, "nesting")
            elif token.type in _CLOSE:
                depth = max(depth - 1, 0)
            yield token


class _TooLarge(Exception):
    def __init__(self, token: Token, what: str) -> None:
        super().__init__(what)
        self.token = token
        self.what = what


@functools.cache
def _parser() -> Lark:
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        postlex=_BracketNewlines(),
        maybe_placeholders=True,
        # Building the LALR tables costs ~0.2 s; Lark keeps them in a temporary-dir cache file
        # keyed by the grammar text and its own version.
        cache=True,
    )


def parse_spec(source: str, file: str = "<string>") -> n.Spec:
    """Parse spec text into a `nodes.Spec`.

    Args:
        source: the text of one or more `loss` definitions.
        file: the name errors show for this text.

    Returns:
        The syntax tree, losses in file order.

    Raises:
        SpecSyntaxError: the text does not follow the grammar or exceeds the size limits.
    """
    source = source.removeprefix("\ufeff")
    if len(source.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
        span = Span(file, 1, 1, 1, 2)
        raise SpecSyntaxError(
            f"spec is larger than {MAX_SOURCE_BYTES // 1024} KiB",
            span,
            source,
            "split it into several files",
        )
    text = source if source.endswith("\n") else source + "\n"
    try:
        tree = _parser().parse(text)
    except _TooLarge as exc:
        raise _too_large(exc, file, source) from None
    except UnexpectedInput as exc:
        raise syntax_error(exc, file, source) from None
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        losses = _ToNodes(file, source).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, LossDSLError):
            raise exc.orig_exc.with_source(source) from None
        raise
    finally:
        sys.setrecursionlimit(limit)
    spec = n.Spec(tuple(losses), source, file)
    limits.bound_syntax(spec)
    return spec


def decode_spec(data: bytes, file: str = "<bytes>") -> str:
    """The text of a spec file's bytes: UTF-8, a leading byte order mark dropped.

    Raises:
        SpecSyntaxError: the bytes are not UTF-8 (the span points at the first bad byte).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line = good.count("\n") + 1
        column = len(good) - (good.rfind("\n") + 1) + 1
        span = Span(file, line, column, line, column + 1, len(good), len(good) + 1)
        shown = data.decode("utf-8", "replace")
        raise SpecSyntaxError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            span,
            shown,
            "save the spec as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


def read_spec(path: Path) -> str:
    """The text of a spec file: a regular file of at most `MAX_SOURCE_BYTES`, in UTF-8.

    Raises:
        SpecSyntaxError: not UTF-8 or too large. LossDSLError: not a readable regular file.
    """
    try:
        # Non-blocking open: a FIFO must be refused, not waited on.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
            os.close(fd)
            raise LossDSLError(f"spec file {path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise LossDSLError(f"cannot read spec file {path}: {exc.strerror}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise SpecSyntaxError(
            f"spec file {path} is larger than {MAX_SOURCE_BYTES // 1024} KiB",
            hint="split it into several files",
        )
    return decode_spec(data, str(path))


def _too_large(exc: _TooLarge, file: str, source: str) -> SpecSyntaxError:
    span = token_span(exc.token, file)
    if exc.what == "name":
        msg = f"name of {len(exc.token)} characters (at most {limits.MAX_IDENTIFIER})"
        hint = "use a shorter name"
        span = Span(file, span.line, span.column, span.line, span.column + 1, span.start)
    elif exc.what == "nesting":
        msg = f"brackets nested more than {MAX_BRACKET_DEPTH} deep"
        hint = "name intermediate results with local assignments"
    elif exc.what == "statement":
        msg = f"statement longer than {MAX_STATEMENT_TOKENS} tokens"
        hint = "split it into local assignments"
    else:
        msg = f"spec longer than {MAX_TOKENS} tokens"
        hint = "split it into several files"
    return SpecSyntaxError(msg, span, source, hint)


def _leading_comment(source: str, line: int) -> str:
    """The block of `#` lines directly above line `line` (1-based), without the `#`."""
    lines = source.split("\n")
    out: list[str] = []
    i = line - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        out.append(lines[i].lstrip()[1:].strip())
        i -= 1
    return "\n".join(reversed(out)).strip()


@v_args(meta=True)
class _ToNodes(Transformer[Token, Any]):
    """Lark tree -> nodes. Method names are the grammar's rule and alias names."""

    def __init__(self, file: str, source: str) -> None:
        super().__init__()
        self.file = file
        self.source = source

    def _span(self, meta: Any) -> Span:
        return Span(
            self.file,
            meta.line,
            meta.column,
            meta.end_line,
            meta.end_column,
            meta.start_pos,
            meta.end_pos,
        )

    def start(self, meta: Any, items: list[Any]) -> list[n.LossNode]:
        return [item for item in items if isinstance(item, n.LossNode)]

    def loss_def(self, meta: Any, items: list[Any]) -> n.LossNode:
        _kw, name, inputs, params, wrt, body = items
        span = self._span(meta)
        return n.LossNode(
            name=str(name),
            inputs=tuple(inputs),
            params=tuple(params or ()),
            wrt=tuple(wrt or ()),
            body=tuple(body),
            comment=_leading_comment(self.source, span.line),
            span=token_span(name, self.file),
        )

    def input_list(self, meta: Any, items: list[Any]) -> list[Any]:
        return items

    param_list = input_list
    body = input_list

    def input_decl(self, meta: Any, items: list[Any]) -> n.InputDecl:
        name, axis, type_name, type_axis, domain = items
        if axis is not None and type_axis is not None:
            raise SpecSyntaxError(
                f"input '{name}' declares its axis twice", self._span(meta), self.source
            )
        kind = str(type_name) if type_name else "real"
        return n.InputDecl(str(name), kind, axis or type_axis, domain, self._span(meta))

    def axis(self, meta: Any, items: list[Any]) -> str:
        return str(items[0])

    def param_decl(self, meta: Any, items: list[Any]) -> n.ParamDecl:
        name, type_name, axis, default, domain = items
        return n.ParamDecl(str(name), str(type_name), axis, default, domain, self._span(meta))

    def signed_number(self, meta: Any, items: list[Any]) -> float:
        sign, number = items
        value = float(number)
        limits.check_number(value, token_span(number, self.file), self.source)
        return -value if sign == "-" else value

    def bound(self, meta: Any, items: list[Any]) -> n.Domain:
        op, value = items
        span = self._span(meta)
        if op in (">", ">="):
            return n.Domain(value, None, op == ">=", False, span)
        if op in ("<", "<="):
            return n.Domain(None, value, False, op == "<=", span)
        raise SpecSyntaxError(
            f"a domain is '> x', '>= x', '< x', '<= x' or 'in [lo, hi]', not '{op}'",
            span,
            self.source,
        )

    def interval(self, meta: Any, items: list[Any]) -> n.Domain:
        _in, open_, low, high, close = items
        return n.Domain(low, high, open_ == "[", close == "]", self._span(meta))

    def open_bound(self, meta: Any, items: list[Any]) -> str:
        return str(items[0])

    close_bound = open_bound

    def wrt_clause(self, meta: Any, items: list[Any]) -> list[n.Name]:
        return [n.Name(str(t), token_span(t, self.file)) for t in items[1:]]

    def assign(self, meta: Any, items: list[Any]) -> n.Assign:
        return n.Assign(str(items[0]), items[1], self._span(meta))

    def return_stmt(self, meta: Any, items: list[Any]) -> n.Return:
        return n.Return(items[1], self._span(meta))

    def reduce_stmt(self, meta: Any, items: list[Any]) -> n.Reduce:
        _kw, mode, _weighted, weight = items
        return n.Reduce(str(mode), weight, self._span(meta))

    def task_stmt(self, meta: Any, items: list[Any]) -> n.Meta:
        return n.Meta("task", str(items[1]), self._span(meta))

    def activation_stmt(self, meta: Any, items: list[Any]) -> n.Meta:
        return n.Meta("activation", str(items[1]), self._span(meta))

    def role_stmt(self, meta: Any, items: list[Any]) -> n.Annotation:
        return n.Annotation("role", str(items[1]), str(items[2]), None, self._span(meta))

    def encoding_stmt(self, meta: Any, items: list[Any]) -> n.Annotation:
        return n.Annotation("encoding", str(items[1]), str(items[2]), None, self._span(meta))

    def range_stmt(self, meta: Any, items: list[Any]) -> n.Annotation:
        _kw, name, domain, scale = items
        value = str(scale) if scale is not None else "linear"
        return n.Annotation("range", str(name), value, domain, self._span(meta))

    def docstring(self, meta: Any, items: list[Any]) -> n.Meta:
        text = str(items[0])
        text = text[3:-3] if text.startswith('"""') else text[1:-1]
        return n.Meta("doc", _dedent(text), self._span(meta))

    def bool_op(self, meta: Any, items: list[Any]) -> n.BoolOp:
        return n.BoolOp(str(items[1]), items[0], items[2], self._span(meta))

    def not_op(self, meta: Any, items: list[Any]) -> n.UnaryOp:
        return n.UnaryOp("not", items[1], self._span(meta))

    def compare(self, meta: Any, items: list[Any]) -> n.Compare:
        return n.Compare(str(items[1]), items[0], items[2], self._span(meta))

    def binary_op(self, meta: Any, items: list[Any]) -> n.BinaryOp:
        op = "^" if items[1] == "**" else str(items[1])
        return n.BinaryOp(op, items[0], items[2], self._span(meta))

    def unary_op(self, meta: Any, items: list[Any]) -> n.Expr:
        operand = items[1]
        if items[0] == "+":
            return operand  # type: ignore[no-any-return]
        return n.UnaryOp("-", operand, self._span(meta))

    def index(self, meta: Any, items: list[Any]) -> n.Index:
        return n.Index(items[0], items[1], self._span(meta))

    def call(self, meta: Any, items: list[Any]) -> n.Call:
        func, arg_list = items
        args = [a for a in (arg_list or []) if not isinstance(a, n.Keyword)]
        kwargs = [a for a in (arg_list or []) if isinstance(a, n.Keyword)]
        return n.Call(func, tuple(args), tuple(kwargs), self._span(meta))

    def arg_list(self, meta: Any, items: list[Any]) -> list[Any]:
        seen_keyword = False
        for item in items:
            if isinstance(item, n.Keyword):
                seen_keyword = True
            elif seen_keyword:
                raise SpecSyntaxError(
                    "positional argument after a keyword argument",
                    _expr_span(item),
                    self.source,
                    "put keyword arguments last",
                )
        return items

    def keyword(self, meta: Any, items: list[Any]) -> n.Keyword:
        return n.Keyword(str(items[0]), items[1], self._span(meta))

    def number(self, meta: Any, items: list[Any]) -> n.Number:
        token = items[0]
        text = str(token)
        is_int = text.isdigit()
        span = token_span(token, self.file)
        limits.check_number(float(text), span, self.source)
        return n.Number(float(text), is_int, span)

    def name(self, meta: Any, items: list[Any]) -> n.Name:
        return n.Name(str(items[0]), token_span(items[0], self.file))


def _expr_span(expr: n.Expr) -> Span:
    return expr.span


def _dedent(text: str) -> str:
    import textwrap

    lines = text.strip("\n").splitlines()
    if not lines:
        return ""
    first, rest = lines[0].strip(), textwrap.dedent("\n".join(lines[1:]))
    return (first + ("\n" + rest if rest else "")).strip()
