"""Syntax tree -> checked IR (`nodes.Spec` -> `ir.LossDef`s).

Resolves names (inputs, parameters, locals, axis sizes, built-in functions, other registered
losses), checks arity, kinds (real / int label / bool) and axes, `wrt`, `reduce` and parameter
domains, and inlines locals. Every error points at the offending text. No SymPy here.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass, field

from lossdsl import ir, limits
from lossdsl import nodes as n
from lossdsl.errors import (
    LossDSLError,
    Span,
    SpecDomainError,
    SpecNameError,
    SpecShapeError,
    SpecSyntaxError,
    UnsupportedError,
    did_you_mean,
)
from lossdsl.functions import AXIS_FUNCTIONS, CONSTANTS, FUNCTIONS
from lossdsl.metadata import annotate

Resolver = Callable[[str], ir.LossDef | None]

TASKS = (
    "regression",
    "binary",
    "multiclass",
    "multilabel",
    "segmentation",
    "detection",
    "embedding",
    "ranking",
    "generative",
    "probabilistic",
    "quantile",
    "any",
)
ACTIVATIONS = ("identity", "sigmoid", "softmax", "log_softmax", "exp", "tanh", "softplus")
REDUCTIONS = ("mean", "sum", "none")
_ARITH = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow"}
_COMPARE = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


def check_spec(
    spec: n.Spec, resolve: Resolver | None = None, losses: tuple[str, ...] = ()
) -> tuple[ir.LossDef, ...]:
    """Check every loss of a parsed spec.

    Args:
        spec: the parsed text.
        resolve: looks up other losses by name for composition (losses earlier in the same
            text are found first).
        losses: the registered loss names, offered as close matches for an unknown call.

    Returns:
        One `LossDef` per `loss` in the text, in order.

    Raises:
        SpecNameError, SpecShapeError, SpecDomainError, SpecSyntaxError, UnsupportedError.
    """
    done: dict[str, ir.LossDef] = {}

    def lookup(name: str) -> ir.LossDef | None:
        if name in done:
            return done[name]
        return resolve(name) if resolve else None

    try:
        for node in spec.losses:
            if node.name in done:
                raise SpecNameError(f"loss '{node.name}' is defined twice in this file", node.span)
            known = (*losses, *done)
            done[node.name] = _LossChecker(node, spec, lookup, known).run()
    except LossDSLError as exc:
        raise exc.with_source(spec.source) from None
    return tuple(done.values())


@dataclass
class _LossChecker:
    node: n.LossNode
    spec: n.Spec
    lookup: Resolver
    losses: tuple[str, ...] = ()  # registered loss names, for did-you-mean hints
    inputs: dict[str, ir.Input] = field(default_factory=dict)
    params: dict[str, ir.Param] = field(default_factory=dict)
    locals: dict[str, ir.Expr] = field(default_factory=dict)
    axis: str | None = None

    def run(self) -> ir.LossDef:
        node = self.node
        _check_identifier(node.name, node.span, "loss")
        for decl in node.inputs:
            self._declare_input(decl)
        for pdecl in node.params:
            self._declare_param(pdecl)
        value, weight, reduction, meta = self._body()
        limits.check_constants((value, weight))
        limits.bound_ir((value, weight), node.span)
        wrt = self._wrt()
        if weight is not None:
            self._weight_is_constant(weight, wrt)
        doc = meta.get("doc") or node.comment
        loss = ir.LossDef(
            name=node.name,
            inputs=tuple(self.inputs.values()),
            params=tuple(self.params.values()),
            axis=self.axis,
            wrt=wrt,
            value=value,
            weight=weight,
            reduction=reduction,
            task=meta.get("task", "any"),
            activation=meta.get("activation", ""),  # "" is inferred by annotate
            doc=doc,
            file=self.spec.file,
            source=self.spec.source,
            span=node.span,
        )
        return annotate(loss, node.body)

    # -- declarations -------------------------------------------------------------------------

    def _taken(self, name: str) -> bool:
        return (
            name in self.inputs or name in self.params or name in self.locals or name == self.axis
        )

    def _declare_name(self, name: str, span: Span, what: str) -> None:
        _check_identifier(name, span, what)
        if self._taken(name):
            raise SpecNameError(f"'{name}' is already defined", span, hint="choose another name")

    def _use_axis(self, axis: str | None, span: Span) -> None:
        if axis is None:
            return
        _check_identifier(axis, span, "axis")
        if self.axis is None:
            if axis in self.inputs or axis in self.params:
                raise SpecNameError(f"axis '{axis}' clashes with an input or parameter", span)
            self.axis = axis
        elif axis != self.axis:
            raise UnsupportedError(
                f"a second axis '{axis}' (this loss already uses '{self.axis}')",
                span,
                hint="a loss has at most one trailing axis; declare every such input with "
                f"[{self.axis}]",
            )

    def _declare_input(self, decl: n.InputDecl) -> None:
        self._declare_name(decl.name, decl.span, "input")
        if decl.type not in ("real", "int"):
            raise SpecNameError(
                f"unknown input type '{decl.type}'", decl.span, hint="input types are real, int"
            )
        if decl.type == "int" and decl.axis is not None:
            raise SpecShapeError(
                f"int input '{decl.name}' cannot have an axis",
                decl.span,
                hint="int inputs are per-sample labels; use a real input for a per-class target",
            )
        self._use_axis(decl.axis, decl.span)
        domain = _domain(decl.domain)
        self.inputs[decl.name] = ir.Input(decl.name, decl.type, decl.axis, domain, decl.span)

    def _declare_param(self, decl: n.ParamDecl) -> None:
        self._declare_name(decl.name, decl.span, "parameter")
        if decl.type not in ("real", "int"):
            raise SpecNameError(
                f"unknown parameter type '{decl.type}'",
                decl.span,
                hint="parameter types are real, int",
            )
        if (
            decl.axis is not None
            and self.axis is None
            and decl.axis not in (i.axis for i in self.inputs.values())
        ):
            raise SpecShapeError(
                f"parameter axis '{decl.axis}' is not the axis of any input", decl.span
            )
        self._use_axis(decl.axis, decl.span)
        domain = _domain(decl.domain)
        if decl.type == "int" and not float(decl.default).is_integer():
            raise SpecDomainError(
                f"int parameter '{decl.name}' has a non-integer default", decl.span
            )
        if domain is not None and not domain.contains(decl.default):
            raise SpecDomainError(
                f"default {decl.default:g} of '{decl.name}' is outside its domain {domain}",
                decl.span,
            )
        self.params[decl.name] = ir.Param(
            decl.name, decl.type, decl.axis, decl.default, domain, decl.span
        )

    # -- body ---------------------------------------------------------------------------------

    def _body(self) -> tuple[ir.Expr, ir.Expr | None, str, dict[str, str]]:
        value: ir.Expr | None = None
        weight: ir.Expr | None = None
        reduction: str | None = None
        meta: dict[str, str] = {}
        for stmt in self.node.body:
            if isinstance(stmt, n.Assign):
                self._declare_name(stmt.name, stmt.span, "local")
                if stmt.name in FUNCTIONS or stmt.name in AXIS_FUNCTIONS:
                    raise SpecNameError(
                        f"local '{stmt.name}' would hide the built-in function", stmt.span
                    )
                self.locals[stmt.name] = self.expr(stmt.value)
            elif isinstance(stmt, n.Return):
                if value is not None:
                    raise SpecSyntaxError("a second 'return'", stmt.span, hint="one per loss")
                value = self._per_sample_real(self.expr(stmt.value), stmt.value.span, "the loss")
            elif isinstance(stmt, n.Reduce):
                if reduction is not None:
                    raise SpecSyntaxError("a second 'reduce'", stmt.span)
                if stmt.mode not in REDUCTIONS:
                    raise SpecSyntaxError(
                        f"unknown reduction '{stmt.mode}'",
                        stmt.span,
                        hint="reduce mean, reduce sum or reduce none",
                    )
                reduction = stmt.mode
                if stmt.weight is not None:
                    weight = self._per_sample_real(
                        self.expr(stmt.weight), stmt.weight.span, "a weight"
                    )
                    # Totals are weighted sums: a weight cannot be made of them.
                    _no_total(
                        weight,
                        "total() in a reduction weight",
                        "weights are per sample: use inputs and parameters only",
                    )
            elif isinstance(stmt, n.Meta):
                self._meta(stmt, meta)
        if value is None:
            raise SpecSyntaxError(
                f"loss '{self.node.name}' has no 'return'",
                self.node.span,
                hint="end the body with: return <expression>",
            )
        return value, weight, reduction or "mean", meta

    def _meta(self, stmt: n.Meta, meta: dict[str, str]) -> None:
        if stmt.key in meta:
            raise SpecSyntaxError(f"a second '{stmt.key}'", stmt.span)
        allowed = {"task": TASKS, "activation": ACTIVATIONS}.get(stmt.key)
        if allowed is not None and stmt.value not in allowed:
            raise SpecNameError(
                f"unknown {stmt.key} '{stmt.value}'",
                stmt.span,
                hint=did_you_mean(stmt.value, allowed) or f"one of: {', '.join(allowed)}",
            )
        meta[stmt.key] = stmt.value

    def _per_sample_real(self, e: ir.Expr, span: Span, what: str) -> ir.Expr:
        if e.axis is not None:
            raise SpecShapeError(
                f"{what} must be one number per sample, but this varies along axis '{e.axis}'",
                span,
                hint=f"reduce the axis, e.g. sum[{e.axis}](...) or mean[{e.axis}](...)",
            )
        if e.kind == "bool":
            raise SpecShapeError(
                f"{what} is a condition, not a number", span, hint="use where(cond, 1, 0)"
            )
        return e

    def _wrt(self) -> tuple[str, ...]:
        if not self.node.wrt:
            first = next(iter(self.inputs.values()))
            if first.kind != "real":
                raise SpecShapeError(
                    f"the first input '{first.name}' is an int label and cannot be differentiated",
                    first.span,
                    hint="put the differentiated input first or add 'wrt <name>'",
                )
            return (first.name,)
        names: list[str] = []
        for ref in self.node.wrt:
            if ref.name not in self.inputs:
                raise SpecNameError(
                    f"'wrt' names '{ref.name}', which is not an input",
                    ref.span,
                    hint=did_you_mean(ref.name, self.inputs),
                )
            if self.inputs[ref.name].kind != "real":
                raise SpecShapeError(f"int input '{ref.name}' cannot be differentiated", ref.span)
            if ref.name in names:
                raise SpecNameError(f"'{ref.name}' is listed twice in 'wrt'", ref.span)
            names.append(ref.name)
        return tuple(names)

    def _weight_is_constant(self, weight: ir.Expr, wrt: tuple[str, ...]) -> None:
        used = _input_refs(weight)
        for name in wrt:
            if name in used:
                raise SpecShapeError(
                    f"the reduction weight depends on '{name}', which is differentiated",
                    weight.span,
                    hint="weights may use labels, targets and parameters only",
                )

    # -- expressions --------------------------------------------------------------------------

    def expr(self, e: n.Expr) -> ir.Expr:
        if isinstance(e, n.Number):
            return ir.Const(e.value, "int" if e.is_int else "real", span=e.span)
        if isinstance(e, n.Name):
            return self._name(e)
        if isinstance(e, n.BinaryOp):
            return self._binary(e)
        if isinstance(e, n.UnaryOp):
            operand = self.expr(e.operand)
            if e.op == "not":
                self._want(operand, "bool", e.operand.span)
                return ir.Apply("not", (operand,), "bool", operand.axis, e.span)
            self._want(operand, "real", e.operand.span)
            return ir.Apply("neg", (operand,), operand.kind, operand.axis, e.span)
        if isinstance(e, n.Compare):
            left, right = self.expr(e.left), self.expr(e.right)
            self._want(left, "real", e.left.span)
            self._want(right, "real", e.right.span)
            axis = self._join_axes(left, right, e.span)
            return ir.Apply(_COMPARE[e.op], (left, right), "bool", axis, e.span)
        if isinstance(e, n.BoolOp):
            left, right = self.expr(e.left), self.expr(e.right)
            self._want(left, "bool", e.left.span)
            self._want(right, "bool", e.right.span)
            axis = self._join_axes(left, right, e.span)
            return ir.Apply(e.op, (left, right), "bool", axis, e.span)
        if isinstance(e, n.Index):
            return self._gather(e)
        return self._call(e)

    def _name(self, e: n.Name) -> ir.Expr:
        name = e.name
        if name in self.locals:
            return self.locals[name]
        if name in self.inputs:
            i = self.inputs[name]
            return ir.Ref(name, "input", i.kind, i.axis, e.span)
        if name in self.params:
            p = self.params[name]
            return ir.Ref(name, "param", p.kind, p.axis, e.span)
        if name == self.axis:
            return ir.Ref(name, "axis", "int", None, e.span)
        if name in CONSTANTS:
            return ir.Const(CONSTANTS[name], "real", span=e.span)
        if name in FUNCTIONS or name in AXIS_FUNCTIONS:
            raise SpecNameError(f"'{name}' is a function", e.span, hint=f"call it: {name}(...)")
        visible = [*self.inputs, *self.params, *self.locals, *CONSTANTS]
        if self.axis:
            visible.append(self.axis)
        raise SpecNameError(f"unknown name '{name}'", e.span, hint=did_you_mean(name, visible))

    def _binary(self, e: n.BinaryOp) -> ir.Expr:
        # A long written chain `a + b - c + ...` is walked iteratively and, past
        # limits.MAX_CHAIN terms, built as a balanced tree (SymPy flattens sums and products,
        # so the result is the same) to keep every later walk shallow.
        chain = limits.left_chain(e)
        terms = [(chain[0].left, "+")] + [(link.right, link.op) for link in chain]
        checked = [(self._operand(node), op, node.span) for node, op in terms]
        if len(checked) > limits.MAX_CHAIN:
            return self._balanced(checked)
        out = checked[0][0]
        for link, (right, _, _) in zip(chain, checked[1:], strict=True):
            out = self._arith(link.op, out, right, link.span)
        return out

    def _operand(self, node: n.Expr) -> ir.Expr:
        value = self.expr(node)
        self._want(value, "real", node.span)
        return value

    def _arith(self, op: str, left: ir.Expr, right: ir.Expr, span: Span) -> ir.Expr:
        axis = self._join_axes(left, right, span)
        kind = "int" if left.kind == right.kind == "int" and op in "+-*" else "real"
        return ir.Apply(_ARITH[op], (left, right), kind, axis, span)

    def _balanced(self, terms: list[tuple[ir.Expr, str, Span]]) -> ir.Expr:
        """Sum (or product) of signed terms as a balanced tree; the first term's op is + or *."""
        unit = "+" if terms[-1][1] in "+-" else "*"
        level = [
            (value if op in "+*" else self._arith(op, _unit(unit), value, span), span)
            for value, op, span in terms[1:]
        ]
        level.insert(0, (terms[0][0], terms[0][2]))
        while len(level) > 1:
            pairs = []
            for k in range(0, len(level) - 1, 2):
                (a, sa), (b, sb) = level[k], level[k + 1]
                span = limits.join_spans(sa, sb)
                pairs.append((self._arith(unit, a, b, span), span))
            level = pairs + level[len(level) - len(level) % 2 :]
        return level[0][0]

    def _want(self, e: ir.Expr, kind: str, span: Span | None) -> None:
        if kind == "real" and e.kind == "bool":
            raise SpecShapeError(
                "a condition is used as a number", span, hint="use where(cond, 1, 0)"
            )
        if kind == "bool" and e.kind != "bool":
            raise SpecShapeError(
                "a number is used as a condition", span, hint="compare it, e.g. x > 0"
            )

    def _join_axes(self, a: ir.Expr, b: ir.Expr, span: Span) -> str | None:
        if a.axis is None or b.axis is None or a.axis == b.axis:
            return a.axis or b.axis
        raise SpecShapeError(f"axes '{a.axis}' and '{b.axis}' do not match", span)

    def _gather(self, e: n.Index) -> ir.Expr:
        if (
            isinstance(e.base, n.Name)
            and e.base.name in AXIS_FUNCTIONS
            and (e.base.name not in self.locals)
        ):
            raise SpecSyntaxError(
                f"'{e.base.name}[...]' needs arguments", e.span, hint=f"{e.base.name}[C](x)"
            )
        base = self.expr(e.base)
        index = self.expr(e.index)
        if base.axis is None:
            raise SpecShapeError(
                "only an expression along an axis can be indexed",
                e.base.span,
                hint="declare the input with an axis, e.g. logits[C]",
            )
        if index.kind != "int" or index.axis is not None:
            raise SpecShapeError(
                "an index must be an integer label (an int input, int parameter or integer)",
                e.index.span,
            )
        return ir.Gather(base, index, base.kind, span=e.span)

    def _call(self, e: n.Call) -> ir.Expr:
        func = e.func
        if isinstance(func, n.Index) and isinstance(func.base, n.Name):
            return self._axis_call(e, func.base, func.index)
        if not isinstance(func, n.Name):
            raise SpecSyntaxError("only a function name can be called", func.span)
        name = func.name
        if name in self.locals or name in self.inputs or name in self.params:
            raise SpecNameError(f"'{name}' is a value, not a function", func.span)
        if name in AXIS_FUNCTIONS and name not in FUNCTIONS:
            axis = self.axis or "C"
            raise SpecSyntaxError(
                f"'{name}' works along an axis", func.span, hint=f"write {name}[{axis}](...)"
            )
        if name in FUNCTIONS:
            return self._builtin(e, name)
        other = self.lookup(name)
        if other is not None:
            return self._inline(e, other)
        known = [*FUNCTIONS, *AXIS_FUNCTIONS, *self.losses]
        raise SpecNameError(f"unknown function '{name}'", func.span, hint=did_you_mean(name, known))

    def _builtin(self, e: n.Call, name: str) -> ir.Expr:
        fn = FUNCTIONS[name]
        if e.kwargs:
            raise SpecSyntaxError(f"'{name}' takes no keyword arguments", e.kwargs[0].span)
        if not fn.min_args <= len(e.args) <= fn.max_args:
            want = (
                str(fn.min_args)
                if fn.min_args == fn.max_args
                else f"{fn.min_args} to {fn.max_args}"
            )
            raise SpecShapeError(
                f"'{name}' takes {want} argument(s), got {len(e.args)}", e.span, hint=fn.doc
            )
        args = tuple(self.expr(a) for a in e.args)
        for pos, (arg, node) in enumerate(zip(args, e.args, strict=True)):
            self._want(arg, fn.arg_kind(pos), node.span)
        if name == "total":
            return self._total(args[0], e)
        axes = {a.axis for a in args if a.axis is not None}
        if len(axes) > 1:
            raise SpecShapeError(f"axes {sorted(axes)} do not match", e.span)
        return ir.Apply(name, args, fn.result, axes.pop() if axes else None, e.span)

    def _total(self, arg: ir.Expr, e: n.Call) -> ir.Expr:
        _no_total(
            arg,
            "total() inside total()",
            "an inner total is one number for the whole batch: factor it out, "
            "e.g. total(x * total(y)) is total(x) * total(y)",
        )
        return ir.Total(arg, arg.axis, span=e.span)

    def _axis_call(self, e: n.Call, fname: n.Name, axis_expr: n.Expr) -> ir.Expr:
        if fname.name not in AXIS_FUNCTIONS:
            raise SpecNameError(
                f"'{fname.name}' is not an axis function",
                fname.span,
                hint=did_you_mean(fname.name, AXIS_FUNCTIONS)
                or "axis functions: " + ", ".join(AXIS_FUNCTIONS),
            )
        if not isinstance(axis_expr, n.Name) or axis_expr.name != self.axis:
            shown = axis_expr.name if isinstance(axis_expr, n.Name) else "this"
            raise SpecShapeError(
                f"'{shown}' is not an axis of this loss",
                axis_expr.span,
                hint=f"the axis is '{self.axis}'" if self.axis else "declare an input like x[C]",
            )
        if len(e.args) != 1 or e.kwargs:
            raise SpecShapeError(f"'{fname.name}[{self.axis}]' takes one argument", e.span)
        arg = self.expr(e.args[0])
        self._want(arg, "real", e.args[0].span)
        fn = AXIS_FUNCTIONS[fname.name]
        return ir.AxisOp(fn.name, self.axis, arg, "real", None if fn.reduces else self.axis, e.span)

    def _inline(self, e: n.Call, other: ir.LossDef) -> ir.Expr:
        if len(e.args) != len(other.inputs):
            raise SpecShapeError(
                f"loss '{other.name}' takes {len(other.inputs)} inputs "
                f"({', '.join(i.name for i in other.inputs)}), got {len(e.args)}",
                e.span,
            )
        args = []
        for node, inp in zip(e.args, other.inputs, strict=True):
            arg = self.expr(node)
            self._want(arg, "real", node.span)
            if inp.kind == "int" and arg.kind != "int":
                raise SpecShapeError(
                    f"input '{inp.name}' of '{other.name}' is an int label", node.span
                )
            if inp.axis is not None and self.axis is None:
                raise SpecShapeError(
                    f"input '{inp.name}' of '{other.name}' has an axis, but this loss has none",
                    node.span,
                )
            if inp.axis is None and arg.axis is not None:
                raise SpecShapeError(
                    f"input '{inp.name}' of '{other.name}' is per-sample, but this varies along "
                    f"'{arg.axis}'",
                    node.span,
                )
            args.append(arg)
        params = []
        for kw in e.kwargs:
            if kw.name not in {p.name for p in other.params}:
                raise SpecNameError(
                    f"loss '{other.name}' has no parameter '{kw.name}'",
                    kw.span,
                    hint=did_you_mean(kw.name, [p.name for p in other.params]),
                )
            value = self.expr(kw.value)
            self._want(value, "real", kw.value.span)
            if value.axis is not None:
                raise SpecShapeError("a parameter value cannot vary along an axis", kw.span)
            params.append((kw.name, value))
        return ir.Inline(other, tuple(args), tuple(params), span=e.span)


def _unit(op: str) -> ir.Expr:
    return ir.Const(0.0 if op == "+" else 1.0, "int")


def _domain(d: n.Domain | None) -> ir.Domain | None:
    if d is None:
        return None
    if d.low is not None and d.high is not None and d.low > d.high:
        raise SpecDomainError("empty domain: low bound above high bound", d.span)
    return ir.Domain(d.low, d.high, d.low_closed, d.high_closed)


# Keywords of `Loss` calls (besides inputs and parameters): no input or parameter may take them.
CALL_KEYWORDS = frozenset(("reduction", "sample_weight", "out", "cotangent", "wrt"))


def _check_identifier(name: str, span: Span, what: str) -> None:
    if name.startswith("_"):
        raise SpecNameError(
            f"{what} name '{name}' starts with '_', which is reserved", span, hint="rename it"
        )
    if keyword.iskeyword(name) and what == "loss":
        raise SpecNameError(f"loss name '{name}' is a Python keyword", span, hint="rename it")
    if name in CALL_KEYWORDS and what in ("input", "parameter"):
        # Inputs and parameters are passed by keyword beside these options of every call.
        raise SpecNameError(
            f"{what} name '{name}' is a keyword of every loss call", span, hint="rename it"
        )


def _input_refs(e: ir.Expr) -> set[str]:
    return {cur.name for cur in _nodes(e) if isinstance(cur, ir.Ref) and cur.role == "input"}


def _no_total(e: ir.Expr, what: str, hint: str) -> None:
    """Raise at a `total()` in `e`, or at the call of a named loss that has one (each node of
    the DAG and each called loss looked at once: shared locals must not multiply the walk)."""
    memo: dict[int, bool] = {}
    for cur in _nodes(e):
        where = None
        if isinstance(cur, ir.Total):
            where = ""
        elif isinstance(cur, ir.Inline) and _inlined_total(cur.loss.value, memo):
            where = f" (loss '{cur.loss.name}', called here, uses total())"
        if where is not None:
            raise UnsupportedError(f"{what} is not supported{where}", cur.span, hint=hint)


def _inlined_total(e: ir.Expr, memo: dict[int, bool]) -> bool:
    """Whether `e` or a loss it calls has a total; `memo` by the identity of loss bodies."""
    if id(e) not in memo:
        memo[id(e)] = any(
            isinstance(cur, ir.Total)
            or (isinstance(cur, ir.Inline) and _inlined_total(cur.loss.value, memo))
            for cur in _nodes(e)
        )
    return memo[id(e)]


def _nodes(e: ir.Expr) -> list[ir.Expr]:
    """Every node of a DAG once (shared locals are visited once, not once per use)."""
    seen: dict[int, ir.Expr] = {}
    stack = [e]
    while stack:
        cur = stack.pop()
        if id(cur) not in seen:
            seen[id(cur)] = cur
            stack.extend(limits.ir_children(cur))
    return list(seen.values())
