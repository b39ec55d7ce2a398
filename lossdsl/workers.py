"""Work sharing for the CPU kernels: blocks claimed by whichever thread is free.

A phase of a kernel covers blocks [0, blocks). The calling thread and up to `threads - 1`
helpers call the same nogil kernel with one shared schedule array (next block, blocks done,
caller back); inside the kernel each thread claims the next block with an atomic add, so
claiming needs neither a lock nor the GIL, and a thread the operating system has descheduled
holds up at most the one block it is on. The caller starts at once and never waits for a
helper to wake: a helper that arrives late finds fewer blocks (or none) left. Which thread
computes a block never changes a result: every block writes its own row of partial sums,
added in block order.

Waking a sleeping thread costs tens of microseconds on some machines (virtual CPUs), so
threads poll briefly where they wait in the kernel: the caller for the helpers' last blocks,
a helper for the caller to hold the GIL again. Polling is bounded (a busy machine may have
descheduled the thread polled for): the caller then waits here, asleep.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# kernel(helper): one thread's share of a phase; helper is 0 for the caller, 1 for helpers.
Kernel = Callable[[int], Any]


class _Job:
    """One phase's kernel as handed to the helpers; `returned` is notified as each returns."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.returned = threading.Condition()

    def help(self) -> None:
        # A kernel fails only at dispatch (compiling), before it claims a block: the caller's
        # own call fails the same way and reports it, or does every block.
        with contextlib.suppress(BaseException):
            self.kernel(1)
        with self.returned:
            self.returned.notify_all()


_JOBS: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_HELPERS: list[threading.Thread] = []
_START = threading.Lock()


def _helper() -> None:
    while True:
        _JOBS.get().help()


def run(kernel: Kernel, threads: int, sched: np.ndarray, blocks: int) -> Any:
    """Call `kernel` on `threads` threads, the caller included, sharing schedule `sched` of
    `blocks` blocks; returns the caller's result once every block is done."""
    helpers = threads - 1
    with _START:
        while len(_HELPERS) < helpers:
            t = threading.Thread(target=_helper, name="lossdsl-worker", daemon=True)
            t.start()
            _HELPERS.append(t)
    job = _Job(kernel)
    for _ in range(helpers):
        _JOBS.put(job)
    try:
        result = kernel(0)
    finally:
        sched[2] = 1  # the caller is back: helpers polling in the kernel may return
    if sched[1] < blocks:  # a helper is still on its last block
        with job.returned:
            # The timeout only guards against a missed notification; each helper that took
            # a block returns right after finishing it.
            while sched[1] < blocks:
                job.returned.wait(0.01)
    return result
