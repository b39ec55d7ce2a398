"""Runs one generated case through lossdsl and the oracle, and names how they disagree.

Checks, in order (the first failure names the case's class):
- the spec must check, derive, print and compile (`reject-check`, `reject-derive`,
  `reject-codegen`, `reject-call`; any other exception is a `crash`), unless it nests totals
  without the `nested` feature, which must be rejected at check time (`unexpected-accept`);
- `f64`: the generic kernel with every parameter overridden, value/gradient/Hessian diagonal
  from `value_grad_hess`, against torch in float64 (`wrong-value`, `wrong-grad`, `wrong-hess`);
- `value`: the value-only entry point, the same way (`wrong-value`);
- `grad_hess`: the gradient-and-Hessian-only entry point (`Loss.grad_hess`, no cotangent), the
  same way (`wrong-grad`, `wrong-hess`);
- `grad64`: `value_and_grad` only (a cheaper compile than `f64`, for short runs);
- `spec`: with parameters at their defaults, the generic kernel against torch (the same
  classes), then the defaults-specialised kernel against the generic one (`spec-mismatch`);
- `f32`: float32 inputs against the float64 reference (`f32-mismatch`);
- `eager`: the NumPy path that serves calls while kernels compile (`compile_mode="never"`):
  `f64`, `value` and `f32` again, each failure classed `eager-mismatch` (no compile: cheap);
- `cuda`: the CUDA kernels, float64 (`cuda-mismatch`; run it in a simulator worker, see
  tests/fuzz/worker.py).

Tolerances (relative to each array's largest reference magnitude M, elementwise):
float64: |a - r| <= 1e-7 |r| + 1e-9 (1 + M);
float32: |a - r| <= 2e-3 |r| + 1e-4 (1 + M) + 8 |r32 - r|, where r32 is torch's own float32
result (the spec's conditioning: cancellation costs torch too).
Float64 differences between correct kernels are rounding (1e-13 to 1e-10 here); a miscompile is
off by far more, so the floor leaves room for ill-conditioned trees without hiding bugs.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any

import numpy as np
import torch

import lossdsl
from lossdsl.api import check_source
from lossdsl.errors import DerivationError, KernelCompileError, LossDSLError
from tests.fuzz.gen import has_total, nests_totals
from tests.fuzz.oracle import Data, draw, reference
from tests.fuzz.render import render_case

RTOL64, FLOOR64 = 1e-7, 1e-9
RTOL32, FLOOR32, SLACK32 = 2e-3, 1e-4, 8.0
CHECKS = ("f64", "value", "grad_hess", "spec", "f32", "eager")
# The checks a minimisation reruns for a class, where the failing check named in the outcome
# does not say (see failing_check).
CLASS_CHECKS = {
    "spec-mismatch": ("spec",),
    "f32-mismatch": ("f32",),
    "cuda-mismatch": ("cuda",),
    "eager-mismatch": ("eager",),
}

Outcome = tuple[str, str]  # (class, detail); class "ok" passes
OK: Outcome = ("ok", "")


class Mismatch(Exception):
    """A comparison failed: `cls` is the failure class."""

    def __init__(self, cls: str, detail: str) -> None:
        super().__init__(detail)
        self.cls = cls


def run_case(case: dict[str, Any], checks: tuple[str, ...] = CHECKS) -> Outcome:
    """The outcome of one case: ("ok", "") or (failure class, "[check] what differed")."""
    at = ["check"]  # the step running, named in the detail
    try:
        return _run(case, checks, at)
    except Mismatch as m:
        return m.cls, f"[{at[0]}] {m}"
    except KernelCompileError as e:
        return "reject-compile", f"[{at[0]}] {_first_line(e)}"
    except LossDSLError as e:
        return "reject-call", f"[{at[0]}] {_first_line(e)}"
    except Exception as e:
        return "crash", f"[{at[0]}] {type(e).__module__}.{type(e).__name__}: {_short_tb(e)}"


def failing_check(detail: str) -> str | None:
    """The check named in an outcome's detail ('[f32] ...' -> 'f32')."""
    if detail.startswith("[") and "]" in detail:
        name = detail[1 : detail.index("]")]
        return name if name in (*CHECKS, "grad64", "cuda") else None
    return None


def _run(case: dict[str, Any], checks: tuple[str, ...], at: list[str]) -> Outcome:
    text = render_case(case)
    must_reject = nests_totals(case["loss"]) and "nested" not in case.get("features", ())
    try:
        definition = check_source(text)[-1]
    except LossDSLError as e:
        if (must_reject or _LIMIT in str(e)) and e.span is not None:
            return OK
        return "reject-check", _first_line(e)
    if must_reject:
        return "unexpected-accept", "total(total(...)) passed the check"
    # The kernels compile on the caller ("sync"): the checks compare the path they name.
    generic = lossdsl.Loss(definition, specialize=False, compile_mode="sync")
    _stage("reject-derive", generic.derived)
    _stage("reject-codegen", generic.source)
    over, defaults = draw(case)
    steps = {
        "f64": lambda: _compare64(case, generic, over),
        "value": lambda: _compare_value(case, generic, over),
        "grad_hess": lambda: _compare_grad_hess(case, generic, over),
        "grad64": lambda: _compare_grad(case, generic, over),
        "spec": lambda: _compare_specialised(case, definition, generic, defaults),
        "f32": lambda: _compare32(case, generic, over),
        "cuda": lambda: _compare_cuda(case, definition, over),
        "eager": lambda: _compare_eager(case, definition, over),
    }
    for name in checks:
        at[0] = name
        if name != "spec" or case["loss"]["params"]:
            steps[name]()
    return OK


def _stage(cls: str, fn: Any) -> None:
    try:
        fn()
    except LossDSLError as e:
        raise Mismatch(cls, _first_line(e)) from None


def call_kwargs(case: dict[str, Any], data: Data, dtype: Any = np.float64) -> dict[str, Any]:
    """Keyword arguments of a lossdsl call for this data (inputs positional, see call_args)."""
    kw: dict[str, Any] = dict(data.params)
    if case["call"]["reduction"] is not None:
        kw["reduction"] = case["call"]["reduction"]
    if data.sample_weight is not None:
        kw["sample_weight"] = data.sample_weight.astype(dtype)
    if data.cotangent is not None:
        kw["cotangent"] = data.cotangent.astype(dtype)
    return kw


def call_args(case: dict[str, Any], data: Data, dtype: Any = np.float64) -> list[np.ndarray]:
    return [
        a if a.dtype.kind == "i" else a.astype(dtype)
        for a in (data.inputs[i["name"]] for i in case["loss"]["inputs"])
    ]


def evaluate(
    loss: lossdsl.Loss, case: dict[str, Any], data: Data
) -> tuple[Any, list[Any], list[Any]]:
    """lossdsl's value, gradients and Hessian diagonals (lists, one per wrt input)."""
    args, kw = call_args(case, data), call_kwargs(case, data)
    v, g, h = loss.value_grad_hess(*args, **kw)
    return v, _listed(g), _listed(h)


def _listed(x: Any) -> list[Any]:
    return list(x) if isinstance(x, tuple) else [x]


# A documented resource bound (lossdsl/limits.py) the generator may exceed: a located rejection.
_LIMIT = "nested more than"

# The Hessians lossdsl documents as unsupported, with a located error (README: "Batch totals
# and weights", and the size bound of lossdsl/limits.py): value and gradient are still compared.
_UNSUPPORTED_HESSIAN = ("Hessian diagonal through a per-class total", "grew past")


def _unsupported_hessian(e: DerivationError) -> bool:
    text = e.message
    return (
        e.span is not None
        and text.startswith("the Hessian diagonal")
        and any(m in text for m in _UNSUPPORTED_HESSIAN)
    )


def _compare64(case: dict[str, Any], loss: lossdsl.Loss, data: Data) -> None:
    try:
        v, g, h = evaluate(loss, case, data)
    except DerivationError as e:
        if not _unsupported_hessian(e):
            raise
        _compare_grad(case, loss, data)
        return
    ref = reference(case, data)
    check("wrong-value", v, ref.value, RTOL64, FLOOR64)
    skip = _nan_rows(case, data)
    for name, a, r in zip(case["loss"]["wrt"], g, ref.grads, strict=True):
        check("wrong-grad", a, r, RTOL64, FLOOR64, f"gradient of {name}", skip=skip)
    for name, a, r in zip(case["loss"]["wrt"], h, ref.hess, strict=True):
        check("wrong-hess", a, r, RTOL64, FLOOR64, f"Hessian diagonal of {name}", skip=skip)


def _compare_grad(case: dict[str, Any], loss: lossdsl.Loss, data: Data) -> None:
    ref = reference(case, data, hess=False)
    v, g = loss.value_and_grad(*call_args(case, data), **call_kwargs(case, data))
    check("wrong-value", v, ref.value, RTOL64, FLOOR64)
    for name, a, r in zip(case["loss"]["wrt"], _listed(g), ref.grads, strict=True):
        check(
            "wrong-grad", a, r, RTOL64, FLOOR64, f"gradient of {name}", skip=_nan_rows(case, data)
        )


def _compare_value(case: dict[str, Any], loss: lossdsl.Loss, data: Data) -> None:
    ref = reference(case, data, hess=False)
    value = loss(*call_args(case, data), **_no_cotangent(call_kwargs(case, data)))
    check("wrong-value", value, ref.value, RTOL64, FLOOR64, "value entry")


def _compare_grad_hess(case: dict[str, Any], loss: lossdsl.Loss, data: Data) -> None:
    data = dataclasses.replace(data, cotangent=None)  # grad_hess takes none
    kw = call_kwargs(case, data)
    kw.setdefault("reduction", loss.reduction)  # grad_hess's own default is "sum"
    try:
        g, h = loss.grad_hess(*call_args(case, data), **kw)
    except DerivationError as e:
        if not _unsupported_hessian(e):
            raise
        return  # as hessian_diag: the f64 check compares value and gradient
    ref = reference(case, data)
    skip = _nan_rows(case, data)
    for name, a, r in zip(case["loss"]["wrt"], _listed(g), ref.grads, strict=True):
        check("wrong-grad", a, r, RTOL64, FLOOR64, f"grad_hess gradient of {name}", skip=skip)
    for name, a, r in zip(case["loss"]["wrt"], _listed(h), ref.hess, strict=True):
        check("wrong-hess", a, r, RTOL64, FLOOR64, f"grad_hess Hessian of {name}", skip=skip)


def _no_cotangent(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k != "cotangent"}


def _compare_specialised(
    case: dict[str, Any], definition: Any, generic: lossdsl.Loss, data: Data
) -> None:
    _compare64(case, generic, data)  # the generic kernel at the defaults
    special = lossdsl.Loss(definition, compile_mode="sync")
    v0, g0, h0 = _evaluate_supported(generic, case, data)
    v, g, h = _evaluate_supported(special, case, data)
    skip = _nan_rows(case, data)
    if skip is None:
        check("spec-mismatch", v, v0, RTOL64, FLOOR64, "value")
    else:
        # Defaults known at compile time make more identities exact (p * x is 0 for p = 0, even
        # where x is NaN: README "Numerical conventions"), so the NaN sample's value may differ;
        # the per-sample values (the same kernels) are compared around it.
        args, kw = call_args(case, data), _no_cotangent(call_kwargs(case, data))
        kw["reduction"] = "none"
        check(
            "spec-mismatch",
            special(*args, **kw),
            generic(*args, **kw),
            RTOL64,
            FLOOR64,
            "per-sample value",
            skip=skip,
        )
    if len(h) != len(h0):
        # Defaults can turn a per-class total into a batch total (p * x with p[C] = 1): one of
        # the two then has a Hessian, the other the documented unsupported one.
        h, h0 = [], []
    for a, r in zip(g + h, g0 + h0, strict=True):
        check("spec-mismatch", a, r, RTOL64, FLOOR64, "gradient or Hessian", skip=skip)


def _evaluate_supported(
    loss: lossdsl.Loss, case: dict[str, Any], data: Data
) -> tuple[Any, list[Any], list[Any]]:
    """As `evaluate`, without the Hessian where lossdsl documents it as unsupported."""
    try:
        return evaluate(loss, case, data)
    except DerivationError as e:
        if not _unsupported_hessian(e):
            raise
    v, g = loss.value_and_grad(*call_args(case, data), **call_kwargs(case, data))
    return v, _listed(g), []


def _compare32(case: dict[str, Any], loss: lossdsl.Loss, data: Data) -> None:
    ref = reference(case, data, hess=False)
    ref32 = reference(case, data, torch.float32, hess=False)
    args, kw = call_args(case, data, np.float32), call_kwargs(case, data, np.float32)
    v, g = loss.value_and_grad(*args, **kw)
    slack = np.abs(np.asarray(ref32.value) - ref.value)
    check("f32-mismatch", v, ref.value, RTOL32, FLOOR32, "value", slack)
    for name, a, r, r32 in zip(
        case["loss"]["wrt"], _listed(g), ref.grads, ref32.grads, strict=True
    ):
        check("f32-mismatch", a, r, RTOL32, FLOOR32, name, np.abs(r32 - r), _nan_rows(case, data))


def _compare_eager(case: dict[str, Any], definition: Any, data: Data) -> None:
    """The NumPy path against torch: float64 value, gradient and Hessian, the value entry,
    float32; any mismatch is `eager-mismatch`."""
    loss = lossdsl.Loss(definition, specialize=False, compile_mode="never")
    try:
        _compare64(case, loss, data)
        _compare_value(case, loss, data)
        _compare32(case, loss, data)
    except Mismatch as m:
        raise Mismatch("eager-mismatch", str(m)) from None


def _compare_cuda(case: dict[str, Any], definition: Any, data: Data) -> None:
    """The CUDA kernels (host arrays in and out) in float64 against torch."""
    v, g, h = _evaluate_supported(lossdsl.Loss(definition, target="cuda"), case, data)
    ref = reference(case, data, hess=bool(h))
    check("cuda-mismatch", v, ref.value, RTOL64, FLOOR64, "value")
    for a, r in zip(g + h, ref.grads + (ref.hess if h else []), strict=True):
        check(
            "cuda-mismatch",
            a,
            r,
            RTOL64,
            FLOOR64,
            "gradient or Hessian",
            skip=_nan_rows(case, data),
        )


def _nan_rows(case: dict[str, Any], data: Data) -> int | slice | None:
    """The derivative rows whose NaN convention is the framework's choice: the NaN sample's,
    and every row once a batch total or a weighted mean's weight sum carries the NaN to all
    samples (README: "Numerical conventions"; values are still compared everywhere)."""
    if data.nan_sample is not None and (has_total(case) or case["loss"]["weight"] is not None):
        return slice(None)
    return data.nan_sample


def check(
    cls: str,
    actual: Any,
    expected: Any,
    rtol: float,
    floor: float,
    what: str = "value",
    slack: Any = 0.0,
    skip: int | slice | None = None,
) -> None:
    """Raise Mismatch(cls) unless `actual` matches `expected` elementwise (NaN where NaN),
    except in sample `skip` (a per-sample array's row)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise Mismatch(cls, f"{what}: shape {a.shape}, expected {e.shape}")
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    finite = e[~nan_e]
    scale = float(np.max(np.abs(finite[np.isfinite(finite)]), initial=0.0))
    tol = rtol * np.abs(e) + floor * (1.0 + scale) + SLACK32 * np.nan_to_num(slack, nan=np.inf)
    with np.errstate(invalid="ignore"):
        bad = (nan_a != nan_e) | (~nan_e & ~(np.abs(a - e) <= tol) & (a != e))
    if skip is not None and bad.ndim:
        bad.reshape(bad.shape[0], -1)[skip] = False
    if np.any(bad):
        k = int(np.flatnonzero(bad.reshape(-1))[0])
        raise Mismatch(
            cls,
            f"{what}: got {a.reshape(-1)[k]!r}, expected {e.reshape(-1)[k]!r} at flat index {k} "
            f"({int(bad.sum())} of {bad.size} differ)",
        )


def _first_line(e: BaseException) -> str:
    text = str(e)
    lines = [ln for ln in text.splitlines() if "error:" in ln] or text.splitlines() or [""]
    return f"{type(e).__name__}: {lines[0].strip()}"


def _short_tb(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames))
    return f"{str(e).splitlines()[0][:200] if str(e) else ''} [{where}]"
