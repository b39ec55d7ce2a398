"""Lark's parse errors -> `SpecSyntaxError` with a span a user can act on.

Names terminals in words, points an unclosed bracket at the bracket left open (not at the end of
the text), hints `where(...)` for an attempted if/then/else, and counts lines by newline only,
as Lark does. Used by `parse.py` only; nothing else here.
"""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from lossdsl.errors import Span, SpecSyntaxError

# What a user reads instead of Lark's terminal names.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "_NL": "end of line",
    "$END": "end of input",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "SEMICOLON": "';'",
    "EQUAL": "'='",
    "COMPARE_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "POW_OP": "'^'",
}


def token_span(token: Token, file: str) -> Span:
    line = token.line or 1
    column = token.column or 1
    end_line = token.end_line or line
    end_column = token.end_column or column + max(len(str(token)), 1)
    return Span(file, line, column, end_line, end_column, token.start_pos or 0, token.end_pos or 0)


def syntax_error(exc: UnexpectedInput, file: str, source: str) -> SpecSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        line, col, pos = exc.line, exc.column, exc.pos_in_stream or 0
        bad = source[pos] if pos < len(source) else ""
        span = Span(file, line, col, line, col + 1, pos, pos + 1)
        return SpecSyntaxError(f"unexpected character {bad!r}", span, source, _char_hint(bad))
    token: Token | None = getattr(exc, "token", None)
    expected = {str(t) for t in (getattr(exc, "expected", None) or ())}
    if isinstance(exc, UnexpectedEOF) or token is None or token.type == "$END":
        opened = _open_bracket(source, len(source))
        if opened is not None:
            return _unclosed(opened, file, source)
        span = _position_span(file, source, len(source.rstrip("\n")))
        return SpecSyntaxError("unexpected end of input", span, source, _expected(expected))
    span = token_span(token, file)
    shown = "end of line" if token.type == "_NL" else repr(str(token))
    hint = _expected(expected)
    opened = _open_bracket(source, token.start_pos or 0)
    if opened is not None and source.count("\n", opened, token.start_pos or 0):
        error = _unclosed(opened, file, source)
        error.hint = f"{shown} on line {span.line} comes while it is still open; {error.hint}"
        return error
    if _CONDITIONAL.search(_line_of(source, token.start_pos or 0)):
        hint = "there is no if/then/else; write where(condition, value_if_true, value_if_false)"
    return SpecSyntaxError(f"unexpected {shown}", span, source, hint)


_CONDITIONAL = re.compile(r"\b(if|then|else|elif)\b")
_PAIRS = {"(": ")", "[": "]"}


def _open_bracket(source: str, end: int) -> int | None:
    """The offset of the innermost bracket still open at `end` (comments and strings skipped)."""
    stack: list[int] = []
    i = 0
    while i < end:
        ch = source[i]
        if ch == "#":
            i = _find(source, "\n", i)
        elif ch == '"':
            quote = '"""' if source.startswith('"""', i) else '"'
            i = _find(source, quote, i + len(quote)) + len(quote) - 1
        elif ch in _PAIRS:
            stack.append(i)
        elif ch in ")]" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def _find(source: str, what: str, start: int) -> int:
    at = source.find(what, start)
    return len(source) if at < 0 else at


def _unclosed(offset: int, file: str, source: str) -> SpecSyntaxError:
    span = _position_span(file, source, offset)
    opener = source[offset]
    return SpecSyntaxError(
        f"'{opener}' is never closed", span, source, f"close it with '{_PAIRS[opener]}'"
    )


def _position_span(file: str, source: str, offset: int) -> Span:
    """A one-character span at a character offset; lines counted by '\\n' only, as Lark does."""
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return Span(file, line, column, line, column + 1, offset, offset + 1)


def _line_of(source: str, offset: int) -> str:
    return source[source.rfind("\n", 0, offset) + 1 : _find(source, "\n", offset)]


def _char_hint(bad: str) -> str | None:
    if bad in "'`":
        return "strings use double quotes, and only as a docstring"
    if bad == "=":
        return "use '==' to compare"
    if bad in "&|!":
        return "use 'and', 'or', 'not'"
    return None


def _expected(expected: set[str] | frozenset[str]) -> str | None:
    words = sorted({_TERMINAL_WORDS.get(t, repr(t.lower())) for t in expected if t != "$END"})
    if not words:
        return None
    if len(words) > 8:
        words = [*words[:8], "..."]
    return "expected " + ", ".join(words)
