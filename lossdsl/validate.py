"""Call-time argument checks: Python values -> NumPy arrays and numbers a kernel can take.

`api.py` binds a call's arguments to a loss's inputs and parameters; this module turns each
value into a native-byte-order numeric array or a typed scalar, or raises a `LossDSLError`
naming the argument, what it expects and what it got. Nothing here looks at a loss's formula
or runs a kernel.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from lossdsl import ir
from lossdsl.errors import SpecDomainError, SpecShapeError

# Integer parameters and labels are int64 in the kernels.
_INT64_MAX = 2**63 - 1


def describe(value: Any) -> str:
    """A short account of a value for an error message: its type and a clipped repr."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def numeric_array(value: Any, what: str) -> np.ndarray:
    """`value` as a NumPy array of booleans, integers or floats in native byte order.

    Raises:
        SpecShapeError: a ragged list, strings, objects, complex numbers or anything NumPy
            cannot turn into a numeric array.
    """
    try:
        a = np.asarray(value)
    except Exception as exc:  # ragged nesting, or an object whose __array__ fails
        raise SpecShapeError(
            f"{what} must be an array of numbers, got {describe(value)} ({exc})",
        ) from None
    if a.dtype.kind not in "biuf":
        raise SpecShapeError(
            f"{what} must hold real numbers, got {describe(value)}",
            hint="pass a float or integer NumPy array",
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def labels(a: np.ndarray, what: str) -> np.ndarray:
    """Integer labels as int32 or int64: integral floats are converted, anything else rejected."""
    if a.dtype.kind in "iu":
        if a.dtype.kind == "u" and a.size and int(a.max()) > _INT64_MAX:
            raise SpecShapeError(f"{what} has labels above the int64 range")
        return a if a.dtype in (np.int32, np.int64) else a.astype(np.int64)
    if a.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            exact = np.isfinite(a) & (a == np.round(a)) & (np.abs(a) <= _INT64_MAX)
        if np.all(exact):
            return a.astype(np.int64)
    raise SpecShapeError(
        f"{what} holds integer labels, got dtype {a.dtype}"
        + (" with values that are not integers in the int64 range" if a.dtype.kind == "f" else ""),
        hint="pass labels as an integer array, e.g. labels.astype(np.int64)",
    )


def scalar_param(p: ir.Param, value: Any, dtype: np.dtype[Any]) -> Any:
    """A scalar parameter's value, typed for the kernel (int64, or the compute dtype).

    Raises:
        SpecShapeError: not a real number (a string, an array, complex, None...).
        SpecDomainError: NaN, a non-integer for an int parameter, out of range or domain.
    """
    what = f"parameter '{p.name}'"
    if isinstance(value, bool | np.bool_ | int | np.integer):
        number: int | float = int(value)
    else:
        a = numeric_array(value, what) if not isinstance(value, str | bytes) else None
        if a is None or a.ndim != 0:
            shown = f"an array of shape {a.shape}" if a is not None else describe(value)
            raise SpecShapeError(f"{what} must be a single real number, got {shown}")
        number = a.item()
    if isinstance(number, float) and math.isnan(number):
        raise SpecDomainError(f"{what} is NaN", p.span)
    if p.kind == "int":
        if isinstance(number, float) and not number.is_integer():
            raise SpecDomainError(f"{what} must be an integer, got {value!r}", p.span)
        if abs(number) > _INT64_MAX:
            raise SpecDomainError(f"{what} = {value!r} is outside the int64 range", p.span)
        _check_domain(p, float(number), value)
        return np.int64(int(number))
    if isinstance(number, int) and abs(number) > sys.float_info.max:  # float() would overflow
        raise SpecDomainError(f"{what} = {describe(value)} is too large for a float", p.span)
    _check_domain(p, float(number), value)
    with np.errstate(over="ignore"):  # an overflow is reported just below
        typed = dtype.type(number)
    if math.isinf(typed) and not math.isinf(number):
        raise SpecDomainError(f"{what} = {value!r} overflows {dtype}", p.span)
    return typed


def axis_param(p: ir.Param, value: Any, dtype: np.dtype[Any], axis_len: int) -> np.ndarray:
    """A per-class parameter: a scalar (repeated) or a vector of the axis length, in domain."""
    what = f"parameter '{p.name}'"
    a = numeric_array(value, what).astype(dtype)
    if a.ndim == 0:
        a = np.full(axis_len, a, dtype)
    if a.shape != (axis_len,):
        raise SpecShapeError(f"{what} needs shape ({axis_len},), got {a.shape}")
    bad = np.isnan(a) if p.domain is None else ~_inside(p.domain, a)
    if np.any(bad):
        where = f"its domain {p.domain}" if p.domain is not None else "the real numbers (NaN)"
        raise SpecDomainError(f"{what} has {int(bad.sum())} value(s) outside {where}", p.span)
    return np.ascontiguousarray(a)


def sample_weight(value: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """Per-sample weights as finite numbers of the compute dtype (not yet broadcast)."""
    w = numeric_array(value, "sample_weight").astype(dtype)
    if not np.all(np.isfinite(w)):
        raise SpecDomainError(
            f"sample_weight has {int(np.size(w) - np.isfinite(w).sum())} NaN or infinite value(s)",
            hint="give a zero weight to a sample that must not count",
        )
    return w


def reduction_name(reduction: Any, default: str, modes: dict[str, int]) -> int:
    """The kernel's reduction mode for `reduction` (None: the loss's own default)."""
    chosen = default if reduction is None else reduction
    if not isinstance(chosen, str) or chosen not in modes:
        shown = repr(chosen) if isinstance(chosen, str) else describe(chosen)
        raise SpecShapeError(
            f"unknown reduction {shown}",
            hint="reduction is 'mean', 'sum' or 'none'",
        )
    return modes[chosen]


def _check_domain(p: ir.Param, number: float, shown: Any) -> None:
    if p.domain is not None and not p.domain.contains(number):
        raise SpecDomainError(
            f"parameter '{p.name}' = {shown!r} is outside its domain {p.domain}", p.span
        )


def _inside(domain: ir.Domain, a: np.ndarray) -> np.ndarray:
    """Elementwise `domain.contains` (NaN is never inside)."""
    ok: np.ndarray = ~np.isnan(a)
    if domain.low is not None:
        ok &= a >= domain.low if domain.low_closed else a > domain.low
    if domain.high is not None:
        ok &= a <= domain.high if domain.high_closed else a < domain.high
    return ok
