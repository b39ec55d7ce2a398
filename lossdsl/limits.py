"""The bounds of the front end: every limit on what a spec may ask of the compiler, in one place.

Parsing, checking, lowering and derivation call these checks so that the limit, never Python's
stack, SymPy's appetite or Numba, decides what is too big. Every walk here is iterative and
memoised by node identity (locals and composed losses are shared subtrees, so a tree walk would
be exponential). Each violation is a `LossDSLError` with a span and a hint. Sizes of composed
losses are counted on the DAG, as the trees lowering would build, without expanding them.
SymPy is imported only inside the functions that inspect SymPy expressions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossdsl import ir
from lossdsl import nodes as n
from lossdsl.errors import DerivationError, Span, SpecShapeError, SpecSyntaxError

if TYPE_CHECKING:
    import sympy as sp

MAX_IDENTIFIER = 64  # characters in a name
MAX_LOSSES = 64  # losses in one text
MAX_STATEMENTS = 256  # statements in one loss
MAX_INPUTS = 32  # inputs (and, separately, parameters) of one loss
MAX_DEPTH = 48  # nesting of an expression as written (a chain `a + b + c` counts once)
MAX_CHAIN = 16  # terms of a written chain kept left to right; longer ones are balanced
MAX_IR_DEPTH = 48  # nesting once locals and composed losses are substituted
MAX_TREE_NODES = 20_000  # operations once locals and composed losses are substituted
MAX_AGGREGATE_DEPTH = 3  # reductions nested inside reductions (their derivatives multiply)
MAX_EXPONENT = 1024.0  # magnitude of a constant exponent
MAX_LOWERED_NODES = 200_000  # IR nodes visited while lowering one loss
MAX_OPS = 40_000  # operations in a derivative
# CPU seconds of the deriving thread (a loaded machine must not turn a valid spec into an
# error); with MAX_OPS it keeps compiling any spec near 10 s on an idle core.
DERIVATION_DEADLINE_S = 6.0


# -- syntax --------------------------------------------------------------------------------------


def check_identifier(name: str, span: Span, source: str | None = None) -> None:
    """A name longer than `MAX_IDENTIFIER` characters is an error."""
    if len(name) > MAX_IDENTIFIER:
        raise SpecSyntaxError(
            f"name of {len(name)} characters (at most {MAX_IDENTIFIER})",
            span,
            source,
            "use a shorter name",
        )


def check_number(value: float, span: Span, source: str | None = None) -> None:
    """A literal that does not fit a float64 is an error (it would read as inf)."""
    if not math.isfinite(value):
        raise SpecSyntaxError(
            "number too large for a float64 (above 1.8e308)",
            span,
            source,
            "write a smaller constant; infinities are not allowed in specs",
        )


def bound_syntax(spec: n.Spec) -> None:
    """Counts of losses, statements and declarations, and the nesting depth of expressions."""
    if len(spec.losses) > MAX_LOSSES:
        _syntax(f"more than {MAX_LOSSES} losses in one text", spec.losses[MAX_LOSSES].span, spec)
    for loss in spec.losses:
        if len(loss.body) > MAX_STATEMENTS:
            _syntax(f"more than {MAX_STATEMENTS} statements", loss.body[MAX_STATEMENTS].span, spec)
        for decls, what in ((loss.inputs, "inputs"), (loss.params, "parameters")):
            if len(decls) > MAX_INPUTS:
                _syntax(f"more than {MAX_INPUTS} {what}", decls[MAX_INPUTS].span, spec)
        for stmt in loss.body:
            root = stmt.weight if isinstance(stmt, n.Reduce) else stmt.value
            if root is not None and not isinstance(root, str):
                _syntax_depth(root, spec)


def _syntax(message: str, span: Span, spec: n.Spec) -> None:
    raise SpecSyntaxError(message, span, spec.source, "split the text into smaller losses")


def _syntax_children(e: n.Expr) -> Iterable[n.Expr]:
    if isinstance(e, n.BinaryOp | n.Compare | n.BoolOp):
        return (e.left, e.right)
    if isinstance(e, n.UnaryOp):
        return (e.operand,)
    if isinstance(e, n.Index):
        return (e.base, e.index)
    if isinstance(e, n.Call):
        return (e.func, *e.args, *(k.value for k in e.kwargs))
    return ()


_CLASS = {"+": "sum", "-": "sum", "*": "product", "/": "product"}


def _links(parent: n.Expr, child: n.Expr) -> bool:
    """Whether `child` continues the left-associative chain of `parent` (a + b + c)."""
    return (
        isinstance(parent, n.BinaryOp)
        and isinstance(child, n.BinaryOp)
        and child is parent.left
        and _CLASS.get(parent.op, parent.op) == _CLASS.get(child.op, "")
    )


def left_chain(e: n.BinaryOp) -> list[n.BinaryOp]:
    """The links of the chain ending at `e`, innermost first (`a + b - c`: [a + b, _ - c])."""
    chain = [e]
    while _links(chain[-1], chain[-1].left):
        chain.append(chain[-1].left)  # type: ignore[arg-type]
    return chain[::-1]


def join_spans(a: Span, b: Span) -> Span:
    """From the start of `a` to the end of `b`."""
    return Span(a.file, a.line, a.column, b.end_line, b.end_column, a.start, b.end)


def _syntax_depth(root: n.Expr, spec: n.Spec) -> None:
    stack = [(root, 1)]
    while stack:
        e, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecSyntaxError(
                f"expression nested more than {MAX_DEPTH} deep",
                e.span,
                spec.source,
                "name intermediate results with local assignments",
            )
        stack.extend((c, depth + (not _links(e, c))) for c in _syntax_children(e))


# -- checked IR ----------------------------------------------------------------------------------


def ir_children(e: ir.Expr) -> tuple[ir.Expr, ...]:
    """The operands of an IR node (a composed loss's arguments and parameter values)."""
    if isinstance(e, ir.Apply):
        return e.args
    if isinstance(e, ir.AxisOp | ir.Total):
        return (e.arg,)
    if isinstance(e, ir.Gather):
        return (e.arg, e.index)
    if isinstance(e, ir.Inline):
        return e.args + tuple(v for _, v in e.params)
    return ()


@dataclass(frozen=True)
class _Measure:
    """Size (as an affine form of the loss's leaf sizes), depth and reduction depth."""

    const: int
    leaves: tuple[tuple[tuple[str, str], int], ...]
    depth: int
    aggregates: int

    def size(self) -> int:
        return self.const + sum(c for _, c in self.leaves)


def _combine(parts: Iterable[tuple[int, _Measure]]) -> dict[tuple[str, str], int]:
    leaves: dict[tuple[str, str], int] = {}
    for scale, m in parts:
        for key, c in m.leaves:
            leaves[key] = min(leaves.get(key, 0) + scale * c, MAX_TREE_NODES + 1)
    return leaves


class _Measurer:
    """Memoised, iterative measures of IR DAGs; one per checked loss, shared by its callees."""

    def __init__(self) -> None:
        self.memo: dict[int, _Measure] = {}
        self.keep: list[object] = []  # keeps measured nodes alive so ids stay unique

    def measure(self, root: ir.Expr) -> _Measure:
        stack: list[tuple[ir.Expr, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in self.memo:
                continue
            children = ir_children(node)
            if isinstance(node, ir.Inline) and not expanded:
                # The callee's body is measured first, on its own leaves.
                children = (*children, node.loss.value)
            if not expanded:
                stack.append((node, True))
                stack.extend((c, False) for c in children if id(c) not in self.memo)
                continue
            self.memo[id(node)] = self._one(node)
            self.keep.append(node)
        return self.memo[id(root)]

    def _one(self, node: ir.Expr) -> _Measure:
        kids = [self.memo[id(c)] for c in ir_children(node)]
        depth = 1 + max((k.depth for k in kids), default=0)
        agg = max((k.aggregates for k in kids), default=0)
        if isinstance(node, ir.Ref) and node.role in ("input", "param"):
            return _Measure(0, (((node.role, node.name), 1),), 1, 0)
        if isinstance(node, ir.AxisOp | ir.Gather | ir.Total):
            agg += 1
        if not isinstance(node, ir.Inline):
            leaves = _combine((1, k) for k in kids)
            return _Measure(
                min(1 + sum(k.const for k in kids), MAX_TREE_NODES + 1),
                tuple(sorted(leaves.items())),
                depth,
                agg,
            )
        body = self.memo[id(node.loss.value)]
        given = dict(node.params)
        uses = dict(body.leaves)
        parts = [
            (uses.get(("input", i.name), 0), self.memo[id(a)])
            for i, a in zip(node.loss.inputs, node.args, strict=True)
        ]
        const = 1 + body.const
        for p in node.loss.params:
            c = uses.get(("param", p.name), 0)
            if p.name in given:
                parts.append((c, self.memo[id(given[p.name])]))
            else:
                const += c
        const += sum(scale * m.const for scale, m in parts)
        leaves = _combine(parts)
        return _Measure(
            min(const, MAX_TREE_NODES + 1),
            tuple(sorted(leaves.items())),
            body.depth + depth,
            body.aggregates + agg,
        )


def bound_ir(exprs: Iterable[ir.Expr | None], loss_span: Span) -> None:
    """Size, depth and reduction nesting of a checked loss, with locals and callees substituted.

    Raises:
        SpecShapeError: a limit is exceeded (pointing at the deepest node, or at the loss).
    """
    measurer = _Measurer()
    for root in exprs:
        if root is None:
            continue
        m = measurer.measure(root)
        if m.size() > MAX_TREE_NODES:
            raise SpecShapeError(
                f"the loss expands to more than {MAX_TREE_NODES} operations once locals and "
                "called losses are substituted",
                loss_span,
                hint="a local (or a loss) used several times in the next one doubles the size; "
                "simplify the chain",
            )
        if m.depth > MAX_IR_DEPTH or m.aggregates > MAX_AGGREGATE_DEPTH:
            _too_deep(root, measurer, loss_span)


def _too_deep(root: ir.Expr, measurer: _Measurer, loss_span: Span) -> None:
    """Point at the outermost node whose operands are within the limits but which is not."""
    node = root
    while True:
        inner = [c for c in ir_children(node) if _over(measurer.memo[id(c)])]
        if not inner:
            break
        node = inner[0]
    m = measurer.memo[id(node)]
    span = node.span or loss_span
    if m.aggregates > MAX_AGGREGATE_DEPTH:
        raise SpecShapeError(
            f"reductions (sum, max, softmax, gathers, totals) nested more than "
            f"{MAX_AGGREGATE_DEPTH} deep",
            span,
            hint="each nested reduction multiplies the size of the derivative; flatten it",
        )
    raise SpecShapeError(
        f"expression nested more than {MAX_IR_DEPTH} deep once locals and called losses are "
        "substituted",
        span,
        hint="shorten the chain of locals or of composed losses",
    )


def _over(m: _Measure) -> bool:
    return m.depth > MAX_IR_DEPTH or m.aggregates > MAX_AGGREGATE_DEPTH


# -- constants -----------------------------------------------------------------------------------

_FOLD: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
}


def check_constants(exprs: Iterable[ir.Expr | None]) -> None:
    """Fold constant arithmetic in float64 and reject what would be inf, NaN or huge.

    SymPy would evaluate `9^9^9` exactly (hours) and Numba rejects `1/0`: both become located
    errors here, before any SymPy is built.

    Raises:
        SpecShapeError: a constant overflows, a division by a constant zero, or a constant
            exponent above `MAX_EXPONENT` in magnitude.
    """
    values: dict[int, float | None] = {}
    keep: list[ir.Expr] = []
    for root in exprs:
        if root is None:
            continue
        stack: list[tuple[ir.Expr, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in values:
                continue
            if not expanded:
                stack.append((node, True))
                stack.extend((c, False) for c in ir_children(node) if id(c) not in values)
                continue
            values[id(node)] = _fold(node, [values[id(c)] for c in ir_children(node)])
            keep.append(node)


def _fold(node: ir.Expr, args: list[float | None]) -> float | None:
    if isinstance(node, ir.Const):
        return node.value
    if not isinstance(node, ir.Apply):
        return None
    fn = node.fn
    if fn in ("div", "pow"):
        return _fold_div_pow(node, args)
    if fn == "neg" and args[0] is not None:
        return -args[0]
    if fn not in _FOLD or args[0] is None or args[1] is None:
        return None
    return _finite(_FOLD[fn](args[0], args[1]), node)


def _fold_div_pow(node: ir.Apply, args: list[float | None]) -> float | None:
    a, b = args
    if node.fn == "div":
        if b == 0:
            raise SpecShapeError(
                "division by a constant zero",
                node.span,
                hint="a constant divisor must be nonzero",
            )
        return None if a is None or b is None else _finite(a / b, node)
    if b is not None and abs(b) > MAX_EXPONENT:
        raise SpecShapeError(
            f"constant exponent {b:g} (at most {MAX_EXPONENT:g} in magnitude)",
            node.span,
            hint="rewrite with exp and log if a huge power is really meant",
        )
    if a is None or b is None:
        return None
    if a == 0 and b < 0:
        raise SpecShapeError("zero raised to a negative power", node.span)
    if a < 0 and not float(b).is_integer():
        raise SpecShapeError("a negative constant raised to a fractional power", node.span)
    try:
        return _finite(math.pow(a, b), node)
    except OverflowError:
        _overflow(node)
    return None


def check_power(node: ir.Apply, base: sp.Expr, exponent: sp.Expr) -> None:
    """The bounds of `check_constants` for a power whose operands become numbers only once
    locals and composed losses are inlined (`9^mse(81, 9)^9`: SymPy would evaluate it exactly,
    for hours)."""
    _fold_div_pow(node, [_number(base, node), _number(exponent, node)])


def _number(x: sp.Expr, node: ir.Expr) -> float | None:
    if not x.is_Number:
        return None
    try:
        return float(x)
    except OverflowError:  # an exact integer past float64
        _overflow(node)
    return None


def _finite(value: float, node: ir.Expr) -> float:
    if not math.isfinite(value):
        _overflow(node)
    return value


def _overflow(node: ir.Expr) -> None:
    raise SpecShapeError(
        "this constant overflows a float64",
        node.span,
        hint="constants must stay below 1.8e308 in magnitude",
    )


# -- lowering and derivation ---------------------------------------------------------------------


class Budget:
    """Counts work units (IR nodes lowered) and stops at a limit, with a located error."""

    def __init__(self, limit: int, span: Span, source: str | None) -> None:
        self.left = limit
        self.limit = limit
        self.span = span
        self.source = source

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise DerivationError(
                f"lowering visited more than {self.limit} nodes",
                self.span,
                self.source,
                "name repeated subexpressions or split the loss",
            )


def constant_value(value: sp.Expr, span: Span | None, source: str | None) -> sp.Expr:
    """A function of constants as a float, checked: `log(0)`, `sqrt(-1)` or `exp(exp(exp(9)))`
    are errors here, not towers of symbolic constants SymPy would later hang on. Every function
    and primitive evaluates at numbers, so no call of constants is left for the kernels."""
    import sympy as sp

    if value.has(sp.zoo, sp.nan, sp.I):
        number = sp.nan
    else:  # an exact number (an int label stays an Integer) or the function evaluated
        number = value if value.is_Number else value.evalf(20)
    if number.is_Number and math.isfinite(_as_float(number)):
        return number
    raise SpecShapeError(
        "this function of constants is undefined or infinite",
        span,
        source,
        "check the arguments against the function's domain",
    )


def tree_within(expr: sp.Expr, limit: int) -> bool:
    """Whether the expanded tree of `expr` has at most `limit` nodes (stops counting there)."""
    import sympy as sp

    return all(count < limit for count, _ in enumerate(sp.preorder_traversal(expr)))


def check_numbers(exprs: Iterable[Any], span: Span, source: str) -> None:
    """Every number in generated formulas is a finite float64 (Numba would reject the rest)."""
    import sympy as sp

    bad = (sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I)
    for expr in exprs:
        if not isinstance(expr, sp.Basic):
            continue
        for atom in expr.atoms(sp.Number, sp.NumberSymbol, type(sp.I)):
            if atom in bad or (atom.is_Number and not math.isfinite(_as_float(atom))):
                raise DerivationError(
                    "a constant in the derived formulas is infinite, undefined or overflows "
                    "a float64",
                    span,
                    source,
                    "rescale the constants of the loss",
                )
        if expr.has(sp.zoo, sp.nan):
            raise DerivationError("the derived formulas contain an undefined value", span, source)


def _as_float(number: Any) -> float:
    try:
        return float(number)
    except (OverflowError, TypeError, ValueError):
        return math.inf
