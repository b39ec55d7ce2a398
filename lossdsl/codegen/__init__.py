"""Code generation targets, by name. Each target turns a `Derived` bundle into module text.

The table names each target's module; `TARGETS` (name -> generate function) imports them on
first use, so loading cached kernels never imports SymPy.
"""

from __future__ import annotations

import importlib
from typing import Any

# Target name -> module defining NAME, FUNCTIONS and generate(derived).
MODULES: dict[str, str] = {
    "cpu": "lossdsl.codegen.cpu",
    "cuda": "lossdsl.codegen.cuda",
    "array": "lossdsl.codegen.array",
}


def __getattr__(name: str) -> Any:
    if name == "TARGETS":
        return {target: importlib.import_module(mod).generate for target, mod in MODULES.items()}
    raise AttributeError(f"module 'lossdsl.codegen' has no attribute {name!r}")
