"""Which losses exist, by name: built-in specs, `LOSSDSL_PATH` directories, registered files.

Discovers `specs/*.loss` (the file stem is the name) and user spec files, parses and checks a
loss only when first asked for, and memoises the result. A user loss never silently shadows a
built-in: registering one needs `replace=True`. Composition (a spec calling another loss) is
resolved here, with recursion detected. No kernels or Numba here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from lossdsl import ir
from lossdsl.check import check_spec
from lossdsl.errors import LossDSLError, SpecNameError, UnknownLossError, did_you_mean


def specs_dir() -> Path:
    """The built-in specs: inside the installed package, else beside the source tree."""
    from importlib import resources  # with tempfile, zipfile, ...: on first use, not at import

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
    """Loss definitions by name; each is parsed and checked at most once.

    Composition: a built-in spec calls built-ins only (the definitions it was written
    against, whatever a user registers later). A user spec calls what is registered under the
    name when it is checked; registering a loss over an existing name makes every user loss
    be checked again on its next use, so the result never depends on the order of calls.
    """

    def __init__(self, builtin_dir: Path | None = None, search_path: str | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._builtins: dict[str, _Entry] = {}
        # Checked definitions: of built-in entries, and of the user entries now registered.
        self._builtin_defs: dict[str, ir.LossDef] = {}
        self._defs: dict[str, ir.LossDef] = {}
        self._resolving: list[str] = []
        directory = builtin_dir if builtin_dir is not None else specs_dir()
        for path in sorted(directory.glob("*.loss")):
            self._builtins[path.stem] = self._entries[path.stem] = _Entry(
                path.stem, path, None, True
            )
        path_var = search_path if search_path is not None else os.environ.get("LOSSDSL_PATH", "")
        for folder in filter(None, path_var.split(os.pathsep)):
            for path in sorted(Path(folder).glob("*.loss")):
                try:
                    self._register_spec_file(path, replace=False)
                except LossDSLError as exc:
                    # One bad file on the search path costs only itself.
                    where = exc.span or path
                    warnings.warn(f"lossdsl: skipped {where}: {exc.message}", stacklevel=2)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def is_builtin(self, name: str) -> bool:
        return name in self._entries and self._entries[name].builtin

    def definition(self, name: str) -> ir.LossDef:
        """The checked loss called `name`.

        Raises:
            UnknownLossError: no such loss (the hint names close matches).
        """
        if name not in self._entries:
            raise UnknownLossError(
                f"unknown loss '{name}'",
                hint=did_you_mean(name, self._entries) or "see `lossdsl list`",
            )
        return self._checked(self._entries[name])

    def resolve(self, name: str) -> ir.LossDef | None:
        """Composition lookup: the loss called `name`, or None if there is none."""
        if name not in self._entries:
            return None
        return self.definition(name)

    def _resolve_builtin(self, name: str) -> ir.LossDef | None:
        """Composition lookup for built-in specs: built-ins only, never a user's shadow."""
        entry = self._builtins.get(name)
        return self._checked(entry) if entry is not None else None

    def _checked(self, entry: _Entry) -> ir.LossDef:
        memo, table = (
            (self._builtin_defs, self._builtins) if entry.builtin else (self._defs, self._entries)
        )
        if entry.name in memo:
            return memo[entry.name]
        if entry.name in self._resolving:
            chain = " -> ".join([*self._resolving, entry.name])
            raise SpecNameError(f"losses call each other in a cycle: {chain}")
        self._resolving.append(entry.name)
        try:
            from lossdsl.parse import parse_spec, read_spec  # Lark: on first use, not at import

            source = entry.source
            if source is None:
                assert entry.path is not None
                source = read_spec(entry.path)
            file = str(entry.path) if entry.path else "<string>"
            resolver = self._resolve_builtin if entry.builtin else self.resolve
            for loss in check_spec(parse_spec(source, file), resolver, tuple(self.names())):
                # Only names this same file is registered for: another may shadow one.
                owner = table.get(loss.name)
                if owner is not None and (owner.path, owner.source) == (entry.path, entry.source):
                    memo.setdefault(loss.name, loss)
        finally:
            self._resolving.pop()
        if entry.name not in memo:
            raise UnknownLossError(f"{entry.path} does not define a loss named '{entry.name}'")
        return memo[entry.name]

    def register_file(self, path: Path, replace: bool = False) -> list[str]:
        """Register every loss of a spec file (or every `*.loss` in a directory)."""
        path = Path(path)
        if path.is_dir():
            names: list[str] = []
            for child in sorted(path.glob("*.loss")):
                names += self.register_file(child, replace)
            return names
        return self._register_spec_file(path, replace)

    def _register_spec_file(self, path: Path, replace: bool) -> list[str]:
        """All of a file's losses, or none of them (on a read, syntax or name error)."""
        from lossdsl.parse import parse_spec, read_spec

        spec = parse_spec(read_spec(path), str(path))
        entries = [_Entry(loss.name, path, None, False) for loss in spec.losses]
        for entry in entries:
            self._check_free(entry, replace)
        for entry in entries:
            self._add(entry)
        return [entry.name for entry in entries]

    def register_definition(self, loss: ir.LossDef, replace: bool = False) -> None:
        """Register an already checked loss (for example one compiled from a string)."""
        entry = _Entry(loss.name, None, loss.source, False)
        self._check_free(entry, replace)
        self._add(entry)
        self._defs[loss.name] = loss

    def _check_free(self, entry: _Entry, replace: bool) -> None:
        old = self._entries.get(entry.name)
        if old is not None and not replace and old.path != entry.path:
            where = "a built-in" if old.builtin else f"already registered from {old.path}"
            raise SpecNameError(
                f"loss '{entry.name}' is {where}",
                hint="rename it, or pass replace=True to shadow it deliberately",
            )

    def _add(self, entry: _Entry) -> None:
        if entry.name in self._entries:
            # A user loss may call the one replaced: check them all again when next used.
            self._defs.clear()
        self._entries[entry.name] = entry
