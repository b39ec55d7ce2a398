"""Source positions and the one error hierarchy every stage raises.

`Span` locates a piece of spec text; `LossDSLError` carries a message, an optional span, the
source text and a hint, and renders itself as ``file:line:col: error: message`` followed by the
source line, a caret line under the span and the hint. This module imports nothing from lossdsl.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of spec text: 1-based lines and columns, 0-based byte offsets (end exclusive)."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class LossDSLError(Exception):
    """Base of every error lossdsl raises on behalf of a user's spec or call."""

    kind = "error"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.hint = hint

    def with_source(self, source: str) -> LossDSLError:
        """Attach the spec text (if not already known) so the error can show the line."""
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        return render(self)


class SpecSyntaxError(LossDSLError):
    """The text does not follow the grammar."""


class SpecNameError(LossDSLError):
    """An unknown identifier, or a name defined twice."""


class SpecShapeError(LossDSLError, ValueError):
    """Wrong arity, a mismatched axis, a label used as a real, or a bad argument at call time."""


class SpecDomainError(LossDSLError, ValueError):
    """A parameter value outside its declared domain, or a malformed domain."""


class DerivationError(LossDSLError):
    """The symbolic stage cannot differentiate or simplify within its limits."""


class UnsupportedError(LossDSLError):
    """A target or stage lacks a mapping for a construct."""


class KernelCompileError(LossDSLError):
    """Numba rejected generated code; `path` names the cached source file."""

    def __init__(self, message: str, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class UnknownLossError(LossDSLError, LookupError):
    """The registry has no loss of that name."""


def render(error: LossDSLError) -> str:
    """Render ``file:line:col: error: message``, the source line, a caret line and a hint."""
    span = error.span
    if span is None:
        lines = [f"error: {error.message}"]
    else:
        lines = [f"{span}: error: {error.message}"]
        snippet = _snippet(span, error.source)
        if snippet:
            lines.extend(snippet)
    if error.hint:
        lines.append(f"hint: {error.hint}")
    return "\n".join(lines)


def _snippet(span: Span, source: str | None) -> list[str]:
    if source is None:
        return []
    # Lines are counted by "\n" only, as the parser counts them (str.splitlines would also
    # split at form feeds, \x85 and U+2028 and move the caret onto the wrong line).
    text_lines = source.split("\n")
    if not 1 <= span.line <= len(text_lines):
        return []
    line = _visible(text_lines[span.line - 1].rstrip("\r"))
    start = max(span.column - 1, 0)
    if span.end_line == span.line:
        width = max(span.end_column - span.column, 1)
    else:
        width = max(len(line) - start, 1)
    width = min(width, max(len(line) - start, 1))
    return [f"    {line}", "    " + " " * start + "^" + "~" * (width - 1)]


def _visible(line: str) -> str:
    """One printable character per source character, so the caret stays under its column."""
    return "".join(" " if c == "\t" else c if c.isprintable() else "?" for c in line)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidates to a misspelt name, or None."""
    import difflib  # only when a name is wrong

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
