"""Work sharing of the CPU kernels (lossdsl/workers.py, issue 16): blocks are claimed by
whichever thread is free, and results are bitwise the same for any thread count and schedule."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import lossdsl
from lossdsl import workers

numba = pytest.importorskip("numba")


def test_runs_cover_every_block_once() -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def kernel(lo: int, hi: int) -> tuple[int, int]:
        with lock:
            seen.append((lo, hi))
        return lo, hi

    workers.run(kernel, 1000, 2)
    covered = sorted(b for lo, hi in seen for b in range(lo, hi))
    assert covered == list(range(1000))
    assert len(seen) > 2  # shrinking runs, not one static half per thread


def test_a_helper_that_never_runs_does_not_hold_the_call() -> None:
    """Every helper thread is stuck (as on a descheduled core): the caller does every block."""
    workers.run(lambda lo, hi: None, 8, 3)  # two helpers exist from here on
    gate = threading.Event()
    stuck = threading.Semaphore(0)

    def hold(lo: int, hi: int) -> None:
        stuck.release()
        gate.wait()

    for _ in workers._HELPERS:
        workers._JOBS.put(workers._Runs(hold, 1, 1))
    for _ in workers._HELPERS:
        stuck.acquire()
    try:
        done: list[tuple[int, int]] = []
        workers.run(lambda lo, hi: done.append((lo, hi)), 64, 3)
        assert sorted(b for lo, hi in done for b in range(lo, hi)) == list(range(64))
    finally:
        gate.set()


def test_an_error_in_a_run_reaches_the_caller() -> None:
    def kernel(lo: int, hi: int) -> None:
        if lo > 0:
            raise ValueError("bad block")

    with pytest.raises(ValueError, match="bad block"):
        workers.run(kernel, 100, 2)


@pytest.mark.parametrize("name", ["huber", "cross_entropy"])
def test_results_are_bitwise_equal_for_one_and_two_threads(name: str) -> None:
    loss = lossdsl.get(name)
    rng = np.random.default_rng(5)
    if name == "huber":  # above the serial threshold: the threaded path runs
        args: tuple[np.ndarray, ...] = (rng.normal(size=300_000), rng.normal(size=300_000))
    else:
        logits = rng.normal(size=(3000, 100)).astype(np.float32)
        target = rng.uniform(size=(3000, 100)).astype(np.float32)
        args = (logits, target / target.sum(-1, keepdims=True))
    before = numba.get_num_threads()
    results = []
    try:
        for count in (1, 2, 2):
            numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
            v, g, h = loss.value_grad_hess(*args)
            results.append((np.asarray(v).tobytes(), g.tobytes(), h.tobytes()))
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1] == results[2]
