"""Kernel source -> callables: the content-addressed cache and the Numba import.

Generated source is written once to `<cache>/<module>.py` (atomically) and imported from that
real file, so tracebacks are readable and Numba's own `cache=True` stores machine code beside
it: a second process imports and loads instead of compiling. The key covers the loss's
canonical IR, the target and the versions of lossdsl, the code generator and Numba, so a
source file never needs to be regenerated (it is the derivation cache, too).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from lossdsl import diskcache, workers
from lossdsl.errors import KernelCompileError

if TYPE_CHECKING:
    from numba.core.types import Type

# Targets whose modules Numba compiles: their cache keys carry Numba's version (the array
# target's module is plain Python, and computing its key must not import Numba).
NUMBA_TARGETS = ("cpu", "cuda")

# Bump when generated code changes shape, so old cache entries are not reused.
CODEGEN_VERSION = "3"


def cache_dir() -> Path:
    """`LOSSDSL_CACHE_DIR`, else `$XDG_CACHE_HOME/lossdsl`, else `~/.cache/lossdsl`."""
    explicit = os.environ.get("LOSSDSL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lossdsl"


def cache_key(fingerprint: str, target: str) -> str:
    from lossdsl import __version__

    parts = [fingerprint, target, __version__, CODEGEN_VERSION, _code_digest()]
    if target in NUMBA_TARGETS:
        import numba

        parts.append(numba.__version__)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.cache
def _code_digest() -> str:
    """A digest of lossdsl's own source: generated code depends on every stage, so an edited
    stage (a development checkout, an upgrade without a version bump) never reuses old files."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.lark")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def module_path(key: str) -> Path:
    """Where the module for `key` lives: in the cache directory, or the stand-in for it."""
    return diskcache.usable_dir(cache_dir()) / f"lossdsl_{key[:40]}.py"


def load_module(key: str, make_source: Callable[[], str]) -> ModuleType:
    """Import the generated module for `key`, writing it first if the cache lacks it (or holds
    a copy that fails its digest)."""
    path = module_path(key)
    name = path.stem
    with _LOADING:  # the background loader and callers may ask for one module at once
        if name in sys.modules:
            return sys.modules[name]
        return _load_new(key, path, make_source)


def _load_new(key: str, path: Path, make_source: Callable[[], str]) -> ModuleType:
    name = path.stem
    text = diskcache.read_source(path)
    if text is None:
        text = make_source()
        try:
            diskcache.write_source(path, text)
        except OSError as exc:
            path = diskcache.abandon_dir(cache_dir(), exc) / path.name
            diskcache.write_source(path, text)
    if os.environ.get("LOSSDSL_DEBUG"):
        print(f"lossdsl: kernel module {path}", file=sys.stderr)
        print(text, file=sys.stderr)
    module = _import_source(name, path, text)
    if hasattr(module, "PHASES"):  # a Numba module (the array target's is plain Python)
        diskcache.guard_numba_caches(module)
    return module


def _import_source(name: str, path: Path, text: str) -> ModuleType:
    """Run the verified `text` of `path` as module `name`.

    Not the import system's loader: it would read the file again (after the check) and use a
    `.pyc` that nothing verifies. The code still names `path`, so tracebacks show its lines
    and Numba's `cache=True` finds its file.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise KernelCompileError(f"cannot import generated kernels from {path}", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(text, str(path), "exec"), module.__dict__)
    except Exception as exc:
        del sys.modules[name]
        raise KernelCompileError(
            f"generated kernels failed to import: {exc}",
            str(path),
            hint=f"delete {path} and retry; report the spec if it persists",
        ) from exc
    return module


def run_kernel(module: ModuleType, entry: str, args: tuple[Any, ...]) -> Any:
    """Call one entry point; a Numba compilation failure becomes `KernelCompileError`."""
    fn = getattr(module, entry)
    try:
        return fn(*args)
    except Exception as exc:
        _reraise(exc, module.__file__, entry)


def _reraise(exc: Exception, file: str | None, entry: str) -> NoReturn:
    from numba.core.errors import NumbaError

    if isinstance(exc, NumbaError):
        raise KernelCompileError(
            f"numba could not compile '{entry}': {str(exc).splitlines()[0]}",
            file,
            hint=f"the generated source is {file}",
        ) from exc
    raise exc


def numba_signature(described: tuple[Any, ...]) -> tuple[Type, ...]:
    """Numba's argument types from `describe` records (see `lossdsl.host.describe`)."""
    import numba
    from numba.core import types

    scalars = {"int": types.int64, "float": types.float64, "bool": types.boolean}
    out: list[Any] = []
    for d in described:
        if d is None:
            out.append(types.none)
        elif isinstance(d, tuple):
            dtype, ndim, layout, readonly, aligned = d
            element = numba.from_dtype(np.dtype(dtype))
            out.append(types.Array(element, ndim, layout, readonly=readonly, aligned=aligned))
        else:
            out.append(scalars.get(d) or numba.from_dtype(np.dtype(d)))
    return tuple(out)


def load_cached_entry(module: ModuleType, entry: str, described: tuple[Any, ...]) -> bool:
    """Load every phase of `entry` for one signature from Numba's disk cache, compiling nothing;
    False when a phase is not there. (Numba's own `compile` without its fallback.)"""
    from numba.core.compiler_lock import global_compiler_lock

    signature = numba_signature(described)
    with global_compiler_lock:
        for suffix, *_ in module.PHASES[entry]:
            fn = getattr(module, entry + suffix)
            if signature in fn.overloads:
                continue
            cres = fn._cache.load_overload(signature, fn.targetctx)
            if cres is None:
                return False
            fn.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            fn.add_overload(cres)
    return True


def compile_entry(module: ModuleType, entry: str, described: tuple[Any, ...]) -> None:
    """Compile (or load from Numba's cache) every phase of `entry` for one argument signature."""
    signature = numba_signature(described)
    for suffix, *_ in module.PHASES[entry]:
        fn = getattr(module, entry + suffix)
        try:
            fn.compile(signature)
        except Exception as exc:
            _reraise(exc, module.__file__, entry + suffix)


# Read-only stand-in for the block sums of a phase that did not run.
_NO_PARTS = np.zeros((0, 1))
_WORKSPACE = threading.local()
_LOADING = threading.RLock()


def threads() -> int:
    """Threads for a parallel call: Numba's setting (`numba.set_num_threads`, NUMBA_NUM_THREADS)."""
    import numba

    return int(numba.get_num_threads())


def workspace(key: Any, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """A scratch array kept per calling thread and reused while `key`, shape and dtype repeat.

    The kernels overwrite every element they later read, so it is never cleared.
    """
    cache: dict[Any, np.ndarray] | None = getattr(_WORKSPACE, "arrays", None)
    if cache is None:
        cache = _WORKSPACE.arrays = {}
    a = cache.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = cache[key] = np.empty(shape, dtype)
    return a


@dataclass(frozen=True)
class Phase:
    """One phase of an entry point, looked up once: its kernel, the columns of its block sums
    and which later-phase argument (_P0, _P1) receives those (None: the last phase)."""

    name: str
    fn: Any
    columns: int
    earlier: int | None
    file: str | None


def entry_phases(
    module: ModuleType, entry: str, weighted_mean: bool, axis_len: int = 0
) -> tuple[Phase, ...]:
    """The phases of `entry` that a call runs: the totals phase only where it is always
    needed or the call is a weighted mean (its weight sum); per-class totals take one column
    per position of the axis."""
    return tuple(
        _phase(module, entry, k, axis_len)
        for k, (_, _, _, always) in enumerate(module.PHASES[entry])
        if always or weighted_mean
    )


def _phase(module: ModuleType, entry: str, k: int, axis_len: int) -> Phase:
    suffix, width, per_class, _ = module.PHASES[entry][k]
    name = entry + suffix
    columns = width + per_class * axis_len
    return Phase(name, getattr(module, name), columns, _EARLIER.get(suffix), module.__file__)


def run_phases(
    phases: tuple[Phase, ...],
    head: tuple[Any, ...],
    tail: tuple[Any, ...],
    blocks: int,
    threads: int,
    given: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> tuple[float, float]:
    """Run an entry point's phases over `blocks` fixed blocks; returns (value, bad rows).

    Each phase writes one row of block sums per block; the next phase (for the value, the last
    phase itself) adds the rows in block order, so with any number of threads every sum is
    taken in the same order: results are bitwise identical whatever `threads` is and whichever
    thread computes a block (see `lossdsl.workers`: blocks are claimed one at a time, so a busy
    core does not hold the call).

    `given` replaces the sums of the totals and the adjoints phases (rows of sums over the
    whole batch, see `phase_sums`): those phases do not run, and this batch is one chunk.
    """
    p0, p1 = given
    previous = [_NO_PARTS if p0 is None else p0, _NO_PARTS if p1 is None else p1]
    result: tuple[float, float, float] = (0.0, 0.0, 1.0)
    for phase in phases:
        if phase.earlier is not None and given[phase.earlier] is not None:
            continue
        parts = np.empty((blocks, phase.columns))
        result = _run(phase, head, blocks, (previous[0], previous[1], parts, *tail), threads)
        if phase.earlier is not None:
            previous[phase.earlier] = parts
    total, bad, scale = result
    if bad < 0:  # the caller's kernel returned before a helper's last block: add them here
        total, bad = 0.0, 0.0
        for v, b in parts.tolist():  # in block order, as the kernels add them: same bits
            total += v
            bad += b
    return total * scale, bad


def phase_sums(
    module: ModuleType,
    entry: str,
    suffix: str,
    head: tuple[Any, ...],
    tail: tuple[Any, ...],
    blocks: int,
    threads: int,
    axis_len: int,
    totals: np.ndarray | None = None,
) -> np.ndarray:
    """One earlier phase ("_pre": totals and weight sum, "_adj": adjoints, given the `totals`
    row) over `blocks` blocks: its block sums added in block order, one float64 row."""
    k = next(k for k, p in enumerate(module.PHASES[entry]) if p[0] == suffix)
    phase = _phase(module, entry, k, axis_len)
    parts = np.empty((blocks, phase.columns))
    totals = _NO_PARTS if totals is None else totals
    _run(phase, head, blocks, (totals, _NO_PARTS, parts, *tail), threads)
    row = np.zeros(phase.columns)
    for b in range(blocks):  # in block order, as the kernels add them
        row += parts[b]
    return row


# Phases whose block sums a later phase reads, and which argument (_P0, _P1) receives them.
_EARLIER = {"_pre": 0, "_adj": 1}


def _run(
    phase: Phase, head: tuple[Any, ...], blocks: int, rest: tuple[Any, ...], threads: int
) -> tuple[float, float, float]:
    """One phase on up to `threads` threads: the caller and helpers call the kernel with one
    shared schedule (next block, blocks done, caller back); returns the caller's result."""
    sched = np.zeros(3, np.int64)

    def kernel(helper: int) -> Any:
        try:
            return phase.fn(*head, helper, blocks, sched, *rest)
        except Exception as exc:
            _reraise(exc, phase.file, phase.name)

    if threads > 1 and blocks >= 2:
        return workers.run(kernel, min(threads, blocks), sched, blocks)  # type: ignore[no-any-return]
    return kernel(0)  # type: ignore[no-any-return]
