"""Names in generated modules: entry points, and the one allocator of every name a kernel assigns.

No SymPy here, so callers stay light.
"""

from __future__ import annotations

from collections.abc import Mapping

DTYPES = ("f32", "f64")
# "grad_hess" is "hess" without the value: no per-sample value, no reduction of it (what a
# gradient-boosting objective asks for every round).
MODES = ("value", "grad", "hess", "grad_hess")
HESSIAN_MODES = ("hess", "grad_hess")


def entry_name(mode: str, dtype: str) -> str:
    """The entry point of a kernel module for one mode and dtype."""
    return f"{mode}_{dtype}"


class Names:
    """Every name the functions of one entry point assign, each with the one role it plays.

    Printers take each name from here, so two roles (a batch accumulator and a CSE temporary,
    say) can never share one: `fresh` skips every name already taken and `claim` refuses a
    name that already has another role. `roles` is the record the tests compare with the
    generated source.
    """

    def __init__(self, fixed: Mapping[str, str]) -> None:
        self.roles: dict[str, str] = {}
        self._next: dict[str, int] = {}
        for name, role in fixed.items():
            self.claim(name, role)

    def claim(self, name: str, role: str) -> str:
        """`name` in `role` (again, or for the first time)."""
        had = self.roles.setdefault(name, role)
        if had != role:
            raise AssertionError(f"generated name '{name}' would be both a {had} and a {role}")
        return name

    def fresh(self, stem: str, role: str, counter: str | None = None, first: int = 0) -> str:
        """A name never handed out before: `stem` and the next free number of `counter`
        (default: the stem's own; numbers start at `first`)."""
        key = counter or stem
        while True:
            k = self._next.get(key, first)
            self._next[key] = k + 1
            name = f"{stem}{k}"
            if name not in self.roles:
                return self.claim(name, role)
