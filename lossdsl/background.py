"""Fused kernels made ready off the caller's path: a loader thread and a compile process.

Until a loss's fused kernels for a call's argument signature are ready, `lossdsl.api` serves
the call with the NumPy path (`eager.py`) and hands a `Request` to this module. One loader
thread per process takes requests in order: it loads kernels the disk cache already holds,
else has the compile process (`python -m lossdsl.compiler`, started on first need, one per
process, gone when its parent's pipe closes) generate, compile and cache them, then loads them
from the cache. Numba's compiler holds the GIL for most of its work, so it runs in the other
process; this thread only loads. The policy (`LOSSDSL_COMPILE` or a loss's `compile_mode`):
"background" (default), "sync" (compile on the calling thread, as a fused kernel's first call
always did), "never" (NumPy only).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from lossdsl import ir, runtime
from lossdsl.errors import KernelCompileError, UnsupportedError

if TYPE_CHECKING:
    import subprocess

POLICIES = ("background", "sync", "never")


def policy(explicit: str | None) -> str:
    """The compile policy: `explicit`, else `LOSSDSL_COMPILE`, else "background".

    Raises:
        UnsupportedError: not one of `POLICIES`.
    """
    chosen = explicit or os.environ.get("LOSSDSL_COMPILE") or "background"
    if chosen not in POLICIES:
        raise UnsupportedError(
            f"unknown compile policy {chosen!r}",
            hint=f"LOSSDSL_COMPILE / compile_mode is one of {', '.join(POLICIES)}",
        )
    return chosen


@dataclass(frozen=True)
class Request:
    """Kernels for one module (a loss with some parameters fixed) and one entry signature."""

    definition: ir.LossDef
    specialize: bool
    fixed: tuple[tuple[str, float], ...]
    entry: str
    described: tuple[Any, ...]
    # The loaded module (generated source read from the cache).
    load: Callable[[], ModuleType]


@dataclass
class Tracker:
    """One loss's requests by token (fixed parameters, entry signature)."""

    ready: set[Any] = field(default_factory=set)
    asked: set[Any] = field(default_factory=set)
    failed: set[Any] = field(default_factory=set)
    waiting: list[tuple[Any, Request]] = field(default_factory=list)

    def module(self, token: Any, request: Callable[[], Request]) -> ModuleType | None:
        """The fused module to run now, or None while the kernels are on their way (asked
        for by `release`, once the caller has its result).

        A request that failed in the background runs on the caller, which compiles and
        raises what a first call always raised.
        """
        if token in self.ready or token in self.failed:
            return request().load()
        if token not in self.asked:
            self.asked.add(token)
            self.waiting.append((token, request()))
        return None

    def release(self) -> None:
        """Hand the waiting requests to the loader. Called after the NumPy path has served the
        call: starting the compile process takes CPU time the first result should not wait for."""
        while self.waiting:
            token, request = self.waiting.pop()
            _loader().submit(self, token, request)


class _Loader:
    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Tracker, Any, Request]] = queue.Queue()
        self.idle = threading.Condition()
        self.pending = 0
        self.child = _Child()
        threading.Thread(target=self.serve, name="lossdsl-loader", daemon=True).start()

    def submit(self, tracker: Tracker, token: Any, request: Request) -> None:
        with self.idle:
            self.pending += 1
        self.queue.put((tracker, token, request))

    def serve(self) -> None:
        while True:
            tracker, token, request = self.queue.get()
            try:
                self.fulfil(request)
                tracker.ready.add(token)
            except Exception:
                tracker.failed.add(token)
            with self.idle:
                self.pending -= 1
                self.idle.notify_all()

    def fulfil(self, request: Request) -> None:
        # The compile process finds the kernels in the cache or compiles them; only then does
        # this thread import Numba and load them (from the cache), off the caller's first calls.
        self.child.compile(request)
        module = request.load()
        if not runtime.load_cached_entry(module, request.entry, request.described):
            runtime.compile_entry(module, request.entry, request.described)


class _Child:
    """The compile process: pickled jobs in on stdin, one line per job out on stdout."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def compile(self, request: Request) -> None:
        job = (
            str(runtime.cache_dir()),
            request.definition,
            request.specialize,
            request.fixed,
            request.entry,
            request.described,
        )
        import pickle

        proc = self.start()
        stdin, stdout = _pipes(proc)
        try:
            pickle.dump(job, stdin)
            stdin.flush()
            reply = stdout.readline().decode()
        except OSError:
            reply = ""
        if not reply:
            self.close()
            raise KernelCompileError("the lossdsl compile process exited")
        if reply != "ok\n":
            raise KernelCompileError(reply.removeprefix("error ").strip())

    def start(self) -> subprocess.Popen[bytes]:
        import subprocess  # only once a kernel is wanted: `import lossdsl` stays light

        if self.proc is None or self.proc.poll() is not None:
            root = str(Path(__file__).resolve().parent.parent)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lossdsl.compiler"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        return self.proc

    def close(self) -> None:
        """Close the pipe: the process exits after the job it is on."""
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc = None


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    return proc.stdin, proc.stdout


_LOADER: _Loader | None = None
_START = threading.Lock()


def _loader() -> _Loader:
    global _LOADER
    with _START:
        if _LOADER is None:
            _LOADER = _Loader()
            atexit.register(_LOADER.child.close)
    return _LOADER


def wait(timeout: float | None = None) -> bool:
    """Block until every request made so far is ready or failed; False on timeout."""
    loader = _LOADER
    if loader is None:
        return True
    with loader.idle:
        return loader.idle.wait_for(lambda: loader.pending == 0, timeout)


def close() -> None:
    """Let the compile process exit (after its current job); a later request starts another."""
    if _LOADER is not None:
        _LOADER.child.close()
