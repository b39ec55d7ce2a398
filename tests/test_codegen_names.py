"""Every name a generated kernel assigns has exactly one role (issue 9).

A CSE temporary and a batch-total accumulator were once both printed as `_t2`, silently mixing
two values. Names now come from one allocator per entry point (`codegen.names.Names`), which
records each name's role and refuses a second role. This test reads the generated source back
with `ast` and checks, for every built-in (CPU generic and defaults-specialised, CUDA) and a set
of varied specs: every name a kernel function assigns (loop variables and arguments included)
is in the allocator's record, and every temporary is assigned exactly once in its function
(a temporary that shares its name with anything else is assigned more than once).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest
from test_builtin_specs import SPECS

import lossdsl
from lossdsl.codegen import TARGETS
from lossdsl.codegen.base import KernelSource
from lossdsl.derive import derive
from lossdsl.lower import lower

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
SINGLE = {"temporary", "select operand", "hoisted value", "derivative", "memo read"}

VARIED = {
    "gathers-and-clamps": """
loss v1(logits[C], label: int, t[C]; gamma: real = 2, k: int = 1) wrt logits, t:
    z = log_softmax[C](logits)
    m = min(sum[C](t), mean[C](logits))
    c = where(label == k, relu(sum[C](t)), clip(max[C](logits), -1, 1))
    return -z[label] * (1 - exp(z[label]))^gamma + max[C](t * logits) + m + c
""",
    "totals-two-inputs": """
loss v2(p, t; s: real = 1) wrt p, t:
    d = 1 - (2 * total(p * t) + s) / (total(p^2) + total(t) + s)
    return d + total(abs(p - t)) * max(p, 0) + max(p, t)
""",
    "weighted-rows": """
loss v3(x[C], y[C], label: int; w: real[C] = 1) wrt x, y:
    return logsumexp[C](x - y) - (x - y)[label] + norm[C](x - y + 1)
    reduce mean weighted w[label]
""",
}


def _assigned(fn: ast.FunctionDef) -> Counter[str]:
    """How often each name is bound in `fn` (assignments, loop targets, arguments)."""
    count: Counter[str] = Counter(a.arg for a in fn.args.args)
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            count[node.id] += 1
    return count


def _check(source: KernelSource) -> None:
    tree = ast.parse(source.text)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in source.names]
    assert {f.name for f in functions} == set(source.names), "a recorded function is missing"
    for fn in functions:
        roles = source.names[fn.name]
        for name, times in _assigned(fn).items():
            assert name in roles, f"{fn.name}: '{name}' was assigned without the allocator"
            if roles[name] in SINGLE:
                assert times == 1, f"{fn.name}: {roles[name]} '{name}' assigned {times} times"


def _sources(loss: lossdsl.Loss) -> list[KernelSource]:
    d = loss.derived()
    out = [TARGETS["cpu"](d), TARGETS["cuda"](d)]
    if loss.params:
        fixed = {p.name: p.default for p in loss.definition.params}
        out.append(TARGETS["cpu"](derive(lower(loss.definition, fixed))))
    return out


@pytest.mark.parametrize("name", SPECS)
def test_builtin_kernel_names_have_one_role(name: str) -> None:
    for source in _sources(lossdsl.get(name)):
        _check(source)


@pytest.mark.parametrize(
    "text",
    [pytest.param(t, id=k) for k, t in VARIED.items()]
    + [
        pytest.param(p.read_text(), id=p.stem)
        for p in sorted(REGRESSIONS.glob("miscompile-*.loss"))
    ],
)
def test_varied_spec_kernel_names_have_one_role(text: str) -> None:
    for source in _sources(lossdsl.compile(text)):
        _check(source)
