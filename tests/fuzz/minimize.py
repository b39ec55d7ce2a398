"""Delta debugging on a failing case: the smallest variant that still fails the same way.

Greedy: try edits from the biggest cut to the smallest (drop the helper call, the weights,
sample weights, the reduction override; replace a subtree by a constant or by one of its
children; drop unused locals, inputs and parameters; shrink the batch) and keep the first one
whose outcome has the same signature (failure class, plus the exception type for crashes and
rejections). A variant whose torch reference is not finite is never kept: an edit must not
leave the safe domain (log(abs(x) + 0.1) cut to log(x)) and fail for that reason.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tests.fuzz.gen import names_in
from tests.fuzz.oracle import draw, reference

Case = dict[str, Any]
Tester = Callable[[Case], tuple[str, str]]
_BOOL = ("cmp", "and", "or", "not")
_TRUE = ["cmp", ">", ["num", 1], ["num", 0]]


def signature(outcome: tuple[str, str]) -> str:
    cls, detail = outcome
    if cls in (
        "crash",
        "reject-check",
        "reject-derive",
        "reject-codegen",
        "reject-compile",
        "reject-call",
    ):
        return cls + ":" + detail.split(":", 1)[0]
    return cls


def minimize(case: Case, test: Tester, budget_s: float = 300.0, max_tries: int = 400) -> Case:
    """The smallest variant of `case` found whose outcome has the same signature."""
    want = signature(test(case))
    start, tries = time.monotonic(), 0
    best = case
    improved = True
    while improved:
        improved = False
        for cand in _candidates(best):
            if time.monotonic() - start > budget_s or tries >= max_tries:
                return best
            if _size(cand) >= _size(best) or not _finite(cand):
                continue
            tries += 1
            if signature(test(cand)) == want:
                best, improved = cand, True
                break
    return best


def _size(case: Case) -> int:
    return len(json.dumps([case["loss"], case["helper"], case["call"]]))


def _finite(case: Case) -> bool:
    try:
        over, defaults = draw(case)
        for data in (over, defaults):
            ref = reference(case, data)
            arrays = [np.asarray(ref.value), *ref.grads, *ref.hess]
            if not all(np.all(np.isfinite(a)) for a in arrays):
                return bool(case["call"].get("nan"))
    except Exception:  # a variant the oracle cannot even evaluate is not a reduction
        return False
    return True


def _candidates(case: Case) -> Iterator[Case]:
    yield from _global_edits(case)
    for path in _paths(case):
        node = _get(case, path)
        for repl in _replacements(node):
            c = copy.deepcopy(case)
            _set(c, path, repl)
            yield _prune(c)
    yield from _drop_declarations(case)


def _global_edits(case: Case) -> Iterator[Case]:
    edits: list[Callable[[Case], None]] = [
        lambda c: c["loss"].update(weight=None),
        lambda c: c["call"].update(sample_weight=None),
        lambda c: c["call"].update(reduction=None),
        lambda c: c["call"].update(cotangent=False),
        lambda c: c["call"].update(nan=False),
        lambda c: c["loss"].update(reduce="sum"),
        lambda c: c["call"].update(batch=1),
        lambda c: c["call"].update(batch=2),
        lambda c: c["call"].update(classes=3),
    ]
    for edit in edits:
        c = copy.deepcopy(case)
        edit(c)
        if c != case:
            yield _prune(c)


def _drop_declarations(case: Case) -> Iterator[Case]:
    loss = case["loss"]
    for name in loss["wrt"]:
        if len(loss["wrt"]) > 1:
            c = copy.deepcopy(case)
            c["loss"]["wrt"].remove(name)
            yield _prune(c)
    for i in range(len(loss["locals"])):
        c = copy.deepcopy(case)
        name, tree = c["loss"]["locals"][i]
        c["loss"] = _replace_let(c["loss"], name, tree)
        yield _prune(c)


def _replace_let(loss: dict[str, Any], name: str, tree: Any) -> dict[str, Any]:
    def sub(t: Any) -> Any:
        if isinstance(t, list):
            return copy.deepcopy(tree) if t == ["let", name] else [sub(x) for x in t]
        if isinstance(t, dict):
            return {k: sub(v) for k, v in t.items()}
        return t

    out = dict(loss)
    out["locals"] = [[n, sub(t)] for n, t in loss["locals"] if n != name]
    out["value"] = sub(loss["value"])
    return out


def _prune(case: Case) -> Case:
    """Drop locals, helper, inputs and parameters nothing refers to."""
    loss = case["loss"]
    trees = [loss["value"], loss.get("weight")]
    used_lets = set()
    for _ in range(3):  # locals may use earlier locals
        used_lets = names_in(trees + [t for n, t in loss["locals"] if n in used_lets], "let") | (
            used_lets
        )
    loss["locals"] = [[n, t] for n, t in loss["locals"] if n in used_lets]
    everything = trees + [t for _, t in loss["locals"]]
    if not _has_call(everything):
        case["helper"] = None
    used_in = names_in(everything, "in") | set(loss["wrt"])
    loss["inputs"] = [i for i in loss["inputs"] if i["name"] in used_in]
    used_par = names_in(everything, "par")
    loss["params"] = [p for p in loss["params"] if p["name"] in used_par]
    return case


def _has_call(t: Any) -> bool:
    if isinstance(t, list):
        return t[:1] == ["call"] or any(_has_call(x) for x in t)
    return isinstance(t, dict) and any(_has_call(x) for x in t.values())


Path = tuple[Any, ...]


def _paths(case: Case) -> list[Path]:
    """Positions of every expression node, outermost first."""
    roots: list[Path] = [("loss", "value")]
    roots += [("loss", "locals", i, 1) for i in range(len(case["loss"]["locals"]))]
    if case["loss"].get("weight") is not None:
        roots.append(("loss", "weight"))
    if case.get("helper") is not None:
        roots.append(("helper", "value"))
    out: list[Path] = []
    frontier = roots
    while frontier:
        out += frontier
        nxt: list[Path] = []
        for p in frontier:
            nxt += [p + c for c in _child_slots(_get(case, p))]
        frontier = nxt
    return out


def _child_slots(t: Any) -> list[Path]:
    if not isinstance(t, list) or not t or not isinstance(t[0], str):
        return []
    if t[0] == "call":
        return [(1, 0), (1, 1)] + [(2, k) for k in t[2]]
    return [(i,) for i, x in enumerate(t) if isinstance(x, list)]


def _replacements(t: Any) -> list[Any]:
    if not isinstance(t, list) or t[0] in ("num", "int", "in", "par", "let", "const", "axis"):
        return []
    kids = [_get(t, s) for s in _child_slots(t)]
    if t[0] in _BOOL:
        return [_TRUE] + [k for k in kids if k[0] in _BOOL]
    real_kids = [k for k in kids if k[0] not in _BOOL]
    return [["num", 1], *real_kids]


def _get(root: Any, path: Path) -> Any:
    for k in path:
        root = root[k]
    return root


def _set(root: Any, path: Path, value: Any) -> None:
    _get(root, path[:-1])[path[-1]] = value
