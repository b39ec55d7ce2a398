"""Work sharing for the CPU kernels: runs of blocks claimed by whichever thread is free.

A phase of a kernel covers blocks [0, blocks). The calling thread and up to `threads - 1`
helpers take runs of consecutive blocks from one counter, largest first (each a share of what
is left), so a thread the operating system has descheduled holds up at most its current run:
the others take the rest, and the call waits for the runs taken, never for an idle helper to
wake. Which thread computes a block never changes a result: every block writes its own row of
partial sums and the caller adds rows in block order. Threads call the nogil kernels directly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

# Smallest run, in blocks: a run is one kernel call (about 1.5 us of dispatch), a block about
# 16k elements.
MIN_RUN = 2

Kernel = Callable[[int, int], Any]


class _Runs:
    """One phase's blocks, handed out in shrinking runs; `done` is set once every block
    handed out has been computed and none is left."""

    def __init__(self, kernel: Kernel, blocks: int, threads: int) -> None:
        self.kernel, self.blocks, self.threads = kernel, blocks, threads
        self.lock = threading.Lock()
        self.next = 0
        self.left = blocks
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def claim(self) -> tuple[int, int] | None:
        with self.lock:
            lo = self.next
            if lo >= self.blocks:
                return None
            size = max(MIN_RUN, (self.blocks - lo) // (2 * self.threads))
            self.next = min(self.blocks, lo + size)
            return lo, self.next

    def work(self) -> None:
        while (run := self.claim()) is not None:
            lo, hi = run
            try:
                result = self.kernel(lo, hi)
            except BaseException as exc:
                self.finish(hi - lo, None, exc)
                return
            self.finish(hi - lo, result, None)

    def finish(self, count: int, result: Any, error: BaseException | None) -> None:
        with self.lock:
            if result is not None and self.result is None:
                self.result = result
            if error is not None and self.error is None:
                # Nothing more is handed out; the blocks never handed out count as done.
                self.error = error
                count += self.blocks - self.next
                self.next = self.blocks
            self.left -= count
            if self.left == 0:
                self.done.set()


_JOBS: queue.SimpleQueue[_Runs] = queue.SimpleQueue()
_HELPERS: list[threading.Thread] = []
_START = threading.Lock()


def _helper() -> None:
    while True:
        _JOBS.get().work()


def run(kernel: Kernel, blocks: int, threads: int) -> Any:
    """Call `kernel(lo, hi)` over runs covering [0, blocks) on up to `threads` threads (the
    caller included); returns the result of one of the calls (they differ only in their block
    range's sums, which the caller reads from the block rows)."""
    runs = _Runs(kernel, blocks, threads)
    helpers = min(threads, blocks) - 1
    with _START:
        while len(_HELPERS) < helpers:
            t = threading.Thread(target=_helper, name="lossdsl-worker", daemon=True)
            t.start()
            _HELPERS.append(t)
    for _ in range(helpers):
        _JOBS.put(runs)
    runs.work()
    runs.done.wait()
    if runs.error is not None:
        raise runs.error
    return runs.result
