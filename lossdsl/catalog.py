"""The catalog page of the built-in losses (docs/losses.md), generated from the specs themselves.

`render_catalog` groups every built-in loss by task and prints, for each, its header comment
(formula, input domains, the framework function it matches), its parameters with defaults and
domains, and the derivation as `Loss.explain()` prints it. The spec text comes from the checked
definitions the registry returns; this module reads no files and writes none.
"""

from __future__ import annotations

from lossdsl import api, ir
from lossdsl.check import TASKS

_TITLE = """\
# Built-in losses

Generated from `specs/*.loss` by `lossdsl.catalog.render_catalog()` (`lossdsl catalog`);
do not edit by hand. Each entry shows the spec's header comment (formula, input domains and
the framework function it matches), its parameters, and the value, gradient and Hessian
diagonal that lossdsl derives (`Loss.explain()`; `qN` are the lifted row and batch aggregates).
Parameters are kernel arguments: pass them per call, e.g. `loss(pred, target, delta=0.5)`.
"""


def render_catalog() -> str:
    """Markdown for every built-in loss, grouped by task in the order of `check.TASKS`.

    Returns:
        The whole page, ending in a newline; byte-identical across runs.
    """
    names = [n for n in api.available() if api.is_builtin(n)]
    losses = [api.get(n) for n in names]
    parts = [_TITLE, _index(losses)]
    for task in TASKS:
        group = [loss for loss in losses if loss.task == task]
        if group:
            parts.append(f"## {task}\n")
            parts += [_entry(loss) for loss in group]
    return "\n".join(parts)


def _index(losses: list[api.Loss]) -> str:
    rows = ["| loss | task | matches |", "|---|---|---|"]
    for loss in losses:
        rows.append(f"| [`{loss.name}`](#{loss.name}) | {loss.task} | {_reference(loss)} |")
    return "\n".join(rows) + "\n"


def _entry(loss: api.Loss) -> str:
    d = loss.definition
    lines = [f"### {loss.name}\n", f"{d.summary}\n" if d.summary else ""]
    lines.append(f"Inputs: {_inputs(d)}; differentiated: {', '.join(d.wrt)}. ")
    lines.append(f"Model's last layer: `{d.activation}`; default reduction: `{d.reduction}`.\n")
    lines += ["```text", header_comment(d), "```", ""]
    if d.params:
        lines += [
            "| parameter | kind | default | domain | role | search range |",
            "|---|---|---|---|---|---|",
        ]
        for p in loss.params:
            kind = f"{p.kind}[{p.axis}]" if p.axis else p.kind
            s = p.search
            where = f"[{s.low:g}, {s.high:g}]" + (" log" if s.log else "") if s else ""
            cells = [f"`{p.name}`", kind, f"{p.default:g}", p.domain or "any", p.role, where]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["```text", loss.explain(), "```", ""]
    return "\n".join(lines)


def _inputs(d: ir.LossDef) -> str:
    out = []
    for i in d.inputs:
        text = i.name + (f"[{i.axis}]" if i.axis else "") + (": int" if i.kind == "int" else "")
        if i.domain is not None:
            text += f" {i.domain}"
        out.append(f"`{text}` ({i.encoding})")
    return ", ".join(out)


def header_comment(d: ir.LossDef) -> str:
    """The `#` block directly above the loss, without the markers (indentation kept)."""
    lines = d.source.splitlines()
    out: list[str] = []
    i = d.span.line - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        out.append(lines[i].lstrip()[1:].removeprefix(" ").rstrip())
        i -= 1
    return "\n".join(reversed(out))


def _reference(loss: api.Loss) -> str:
    """The framework function on the header's `Matches` line, up to its first clause break."""
    for line in header_comment(loss.definition).splitlines():
        if "Matches " in line:
            return _first_clause(line.split("Matches ", 1)[1]).replace("|", "\\|")
    return ""


def _first_clause(text: str) -> str:
    """`text` up to the first ',', ';', ' (' or sentence end outside parentheses."""
    depth = 0
    for k, ch in enumerate(text):
        if ch == "(" and depth == 0 and text[k - 1 : k] == " ":
            return text[: k - 1]
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and (ch in ",;" or text[k : k + 2] == ". " or text[k:] == "."):
            return text[:k]
    return text.strip()
