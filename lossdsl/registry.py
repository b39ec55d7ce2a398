"""Which losses exist, by name: built-in specs, `LOSSDSL_PATH` directories, registered files.

Discovers `specs/*.loss` (the file stem is the name) and user spec files, parses and checks a
loss only when first asked for, and memoises the result. A user loss never silently shadows a
built-in: registering one needs `replace=True`. Composition (a spec calling another loss) is
resolved here, with recursion detected. No kernels or Numba here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lossdsl import ir
from lossdsl.check import check_spec
from lossdsl.errors import LossDSLError, SpecNameError, UnknownLossError, did_you_mean
from lossdsl.parse import parse_spec


def specs_dir() -> Path:
    """The built-in specs: inside the installed package, else beside the source tree."""
    packaged = resources.files("lossdsl").joinpath("specs")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "specs"


@dataclass(frozen=True)
class _Entry:
    name: str
    path: Path | None
    source: str | None
    builtin: bool


class Registry:
    """Loss definitions by name; each is parsed and checked at most once."""

    def __init__(self, builtin_dir: Path | None = None, search_path: str | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._defs: dict[str, ir.LossDef] = {}
        self._resolving: list[str] = []
        directory = builtin_dir if builtin_dir is not None else specs_dir()
        for path in sorted(directory.glob("*.loss")):
            self._entries[path.stem] = _Entry(path.stem, path, None, True)
        path_var = search_path if search_path is not None else os.environ.get("LOSSDSL_PATH", "")
        for folder in filter(None, path_var.split(os.pathsep)):
            for path in sorted(Path(folder).glob("*.loss")):
                self.register_file(path)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def is_builtin(self, name: str) -> bool:
        return name in self._entries and self._entries[name].builtin

    def definition(self, name: str) -> ir.LossDef:
        """The checked loss called `name`.

        Raises:
            UnknownLossError: no such loss (the hint names close matches).
        """
        if name in self._defs:
            return self._defs[name]
        if name not in self._entries:
            raise UnknownLossError(
                f"unknown loss '{name}'",
                hint=did_you_mean(name, self._entries) or "see `lossdsl list`",
            )
        entry = self._entries[name]
        if name in self._resolving:
            chain = " -> ".join([*self._resolving, name])
            raise SpecNameError(f"losses call each other in a cycle: {chain}")
        self._resolving.append(name)
        try:
            source = entry.source
            if source is None:
                assert entry.path is not None
                source = entry.path.read_text(encoding="utf-8")
            file = str(entry.path) if entry.path else "<string>"
            for loss in check_spec(parse_spec(source, file), self.resolve, tuple(self.names())):
                self._defs.setdefault(loss.name, loss)
        finally:
            self._resolving.pop()
        if name not in self._defs:
            raise UnknownLossError(f"{entry.path} does not define a loss named '{name}'")
        return self._defs[name]

    def resolve(self, name: str) -> ir.LossDef | None:
        """Composition lookup: the loss called `name`, or None if there is none."""
        if name not in self._entries:
            return None
        return self.definition(name)

    def register_file(self, path: Path, replace: bool = False) -> list[str]:
        """Register every loss of a spec file (or every `*.loss` in a directory)."""
        path = Path(path)
        if path.is_dir():
            names: list[str] = []
            for child in sorted(path.glob("*.loss")):
                names += self.register_file(child, replace)
            return names
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LossDSLError(f"cannot read spec file {path}: {exc.strerror}") from None
        spec = parse_spec(source, str(path))
        names = [loss.name for loss in spec.losses]
        for name in names:
            self._add(_Entry(name, path, None, False), replace)
        return names

    def register_definition(self, loss: ir.LossDef, replace: bool = False) -> None:
        """Register an already checked loss (for example one compiled from a string)."""
        self._add(_Entry(loss.name, None, loss.source, False), replace)
        self._defs[loss.name] = loss

    def _add(self, entry: _Entry, replace: bool) -> None:
        old = self._entries.get(entry.name)
        if old is not None and not replace and old.path != entry.path:
            where = "a built-in" if old.builtin else f"already registered from {old.path}"
            raise SpecNameError(
                f"loss '{entry.name}' is {where}",
                hint="rename it, or pass replace=True to shadow it deliberately",
            )
        self._entries[entry.name] = entry
        self._defs.pop(entry.name, None)
