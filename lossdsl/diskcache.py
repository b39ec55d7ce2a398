"""The kernel cache on disk: where it lives, and files that prove their own integrity.

Every file the cache holds is written whole under a temporary name and renamed into place, so
a reader sees an old file or a new one, never half of one, whatever other processes do. Each
carries a SHA-256 of its content: generated source as a last comment line, Numba's index and
data files (which Numba would unpickle, and a flipped bit there can crash the interpreter) as
a header. A file that does not verify is removed and rebuilt, never executed. A cache
directory that cannot be written is replaced, with one warning, by a temporary one.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import pickle
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from lossdsl.errors import KernelCompileError

_TRAILER = "# lossdsl-sha256: "
_MAGIC = b"lossdsl-numba-cache-1\n"
_DIGEST = 32
# Configured directory -> the directory used instead (itself when it is writable).
_USABLE: dict[Path, Path] = {}


def usable_dir(configured: Path) -> Path:
    """`configured` if this process can create files in it, else a temporary directory."""
    chosen = _USABLE.get(configured)
    if chosen is None:
        try:
            configured.mkdir(parents=True, exist_ok=True)
            import tempfile  # these functions run once a kernel is needed, not at import

            fd, probe = tempfile.mkstemp(dir=configured, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            chosen = configured
        except OSError as exc:
            chosen = _temporary_dir(configured, exc)
        _USABLE[configured] = chosen
    return chosen


def abandon_dir(configured: Path, exc: OSError) -> Path:
    """Give up on a directory that failed a write after all (disk full, made read-only)."""
    _USABLE[configured] = _temporary_dir(configured, exc)
    return _USABLE[configured]


def _temporary_dir(configured: Path, exc: OSError) -> Path:
    try:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="lossdsl-kernels-"))
    except OSError as err:
        raise KernelCompileError(
            f"no writable kernel cache: {configured} ({exc.strerror}) nor a temporary "
            f"directory ({err.strerror})",
            hint="set LOSSDSL_CACHE_DIR to a writable directory",
        ) from None
    import shutil

    atexit.register(shutil.rmtree, path, ignore_errors=True)
    warnings.warn(
        f"lossdsl: kernel cache {configured} is not writable ({exc.strerror}); "
        f"this process compiles into {path}, which is removed at exit",
        RuntimeWarning,
        stacklevel=3,
    )
    return path


def write_source(path: Path, text: str) -> None:
    """Write generated source with a digest of it as the last line, atomically."""
    body = (text if text.endswith("\n") else text + "\n").encode("utf-8")
    _write_atomic(path, body + f"{_TRAILER}{hashlib.sha256(body).hexdigest()}\n".encode())


def read_source(path: Path) -> str | None:
    """The generated source at `path`, or None if it is missing or fails its digest (removed)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    cut = raw.rfind(b"\n", 0, len(raw) - 1) + 1
    body, last = raw[:cut], raw[cut:]
    if last != f"{_TRAILER}{hashlib.sha256(body).hexdigest()}\n".encode():
        _discard(path)
        return None
    return body.decode("utf-8")


def guard_numba_caches(module: ModuleType) -> None:
    """Make every Numba cache of `module`'s functions verify its files before unpickling.

    Numba compiles lazily, on a function's first call, and only then reads its cache: this runs
    right after the import, before any call.
    """
    from numba.core.caching import IndexDataCacheFile

    verified_class = _verified_class()
    for obj in vars(module).values():
        cache: Any = getattr(obj, "_cache", None)
        plain: Any = getattr(cache, "_cache_file", None)
        if type(plain) is IndexDataCacheFile and obj.py_func.__module__ == module.__name__:
            base = plain._index_name.removesuffix(".nbi")
            cache._cache_file = verified_class(plain._cache_path, base, plain._source_stamp)


@functools.cache
def _verified_class() -> Any:
    """The verified cache file class, made on first use: importing Numba is slow, and only
    the processes that load kernels need it."""
    from numba.core.caching import IndexDataCacheFile

    return type("VerifiedCacheFile", (_Verified, IndexDataCacheFile), {})


class _Verified:
    """Numba's index and data files, each prefixed by a magic line and a SHA-256 of the rest.

    Numba's own layout: the index is a pickled version string and a pickled (source stamp,
    {signature key: data file name}); a data file is a pickled code library. Here the index
    payload is one pickled (version, stamp, overloads).
    """

    # Set by Numba's IndexDataCacheFile, the class this is mixed into.
    _index_path: str
    _cache_path: str
    _version: Any
    _source_stamp: Any
    _dump: Any

    def _load_index(self) -> dict[Any, str]:
        payload = _read_verified(Path(self._index_path))
        if payload is None:
            return {}
        try:
            version, stamp, overloads = pickle.loads(payload)
        except Exception:  # written by this class, so only another lossdsl version gets here
            return {}
        if version != self._version or stamp != self._source_stamp:
            return {}
        return overloads  # type: ignore[no-any-return]

    def _save_index(self, overloads: dict[Any, str]) -> None:
        self._save_verified(self._index_path, (self._version, self._source_stamp, overloads))

    def _load_data(self, name: str) -> Any:
        path = Path(self._cache_path) / name
        payload = _read_verified(path)
        if payload is None:
            # Numba's load() takes an OSError as "not cached" and compiles.
            raise FileNotFoundError(str(path))
        return pickle.loads(payload)

    def _save_data(self, name: str, data: Any) -> None:
        self._save_verified(str(Path(self._cache_path) / name), data)

    def _save_verified(self, path: str, obj: Any) -> None:
        payload = self._dump(obj)
        # On a failed write the kernel still runs; only its cached machine code is lost.
        with contextlib.suppress(OSError):
            _write_atomic(Path(path), _MAGIC + hashlib.sha256(payload).digest() + payload)


def _read_verified(path: Path) -> bytes | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    start = len(_MAGIC) + _DIGEST
    payload = raw[start:]
    if raw[: len(_MAGIC)] != _MAGIC or raw[len(_MAGIC) : start] != hashlib.sha256(payload).digest():
        _discard(path)
        return None
    return payload


def _discard(path: Path) -> None:
    warnings.warn(
        f"lossdsl: removed a corrupted kernel cache file {path}; it is rebuilt",
        RuntimeWarning,
        stacklevel=2,
    )
    path.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
