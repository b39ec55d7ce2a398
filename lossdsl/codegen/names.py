"""Names shared by generated modules and their callers (no SymPy, so callers stay light)."""

from __future__ import annotations

DTYPES = ("f32", "f64")
MODES = ("value", "grad", "hess")


def entry_name(mode: str, dtype: str) -> str:
    """The entry point of a kernel module for one mode and dtype."""
    return f"{mode}_{dtype}"
