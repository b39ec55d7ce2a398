"""Kernel source -> callables: the content-addressed cache and the Numba import.

Generated source is written once to `<cache>/<module>.py` (atomically) and imported from that
real file, so tracebacks are readable and Numba's own `cache=True` stores machine code beside
it: a second process imports and loads instead of compiling. The key covers the loss's
canonical IR, the target and the versions of lossdsl, the code generator and Numba, so a
source file never needs to be regenerated (it is the derivation cache, too).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numba

from lossdsl.errors import KernelCompileError

# Bump when generated code changes shape, so old cache entries are not reused.
CODEGEN_VERSION = "1"


def cache_dir() -> Path:
    """`LOSSDSL_CACHE_DIR`, else `$XDG_CACHE_HOME/lossdsl`, else `~/.cache/lossdsl`."""
    explicit = os.environ.get("LOSSDSL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lossdsl"


def cache_key(fingerprint: str, target: str) -> str:
    from lossdsl import __version__

    text = "\n".join([fingerprint, target, __version__, CODEGEN_VERSION, numba.__version__])
    return hashlib.sha256(text.encode()).hexdigest()


def module_path(key: str) -> Path:
    return cache_dir() / f"lossdsl_{key[:40]}.py"


def load_module(key: str, make_source: Callable[[], str]) -> ModuleType:
    """Import the generated module for `key`, writing it first if the cache lacks it."""
    path = module_path(key)
    name = path.stem
    if name in sys.modules:
        return sys.modules[name]
    if not path.exists():
        _write_atomic(path, make_source())
    if os.environ.get("LOSSDSL_DEBUG"):
        print(f"lossdsl: kernel module {path}", file=sys.stderr)
        print(path.read_text(encoding="utf-8"), file=sys.stderr)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise KernelCompileError(f"cannot import generated kernels from {path}", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise KernelCompileError(
            f"generated kernels failed to import: {exc}",
            str(path),
            hint=f"delete {path} and retry; report the spec if it persists",
        ) from exc
    return module


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_kernel(module: ModuleType, entry: str, args: tuple[Any, ...]) -> Any:
    """Call one entry point; a Numba compilation failure becomes `KernelCompileError`."""
    fn = getattr(module, entry)
    try:
        return fn(*args)
    except numba.core.errors.NumbaError as exc:
        raise KernelCompileError(
            f"numba could not compile '{entry}': {str(exc).splitlines()[0]}",
            module.__file__,
            hint=f"the generated source is {module.__file__}",
        ) from exc
