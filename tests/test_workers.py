"""Work sharing of the CPU kernels (lossdsl/workers.py, issue 16): blocks are claimed inside the
kernels by whichever thread is free, and results are bitwise the same for any thread count and
schedule."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import lossdsl
from lossdsl import runtime, workers

numba = pytest.importorskip("numba")


def _threads(count: int) -> None:
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))


def _huber_args(n: int = 300_000) -> tuple[np.ndarray, np.ndarray]:
    # Above the serial threshold: the threaded path runs.
    rng = np.random.default_rng(5)
    return rng.normal(size=n), rng.normal(size=n)


def test_the_caller_runs_and_then_releases_the_helpers() -> None:
    sched = np.zeros(3, np.int64)
    seen: list[tuple[int, int]] = []
    arrived = threading.Semaphore(0)

    def kernel(helper: int) -> str:
        seen.append((helper, int(sched[2])))
        if helper:
            arrived.release()
        return "caller" if helper == 0 else "helper"

    assert workers.run(kernel, 3, sched, 0) == "caller"
    assert sched[2] == 1
    for _ in range(2):
        assert arrived.acquire(timeout=10)
    assert sorted(h for h, _ in seen) == [0, 1, 1]
    assert (0, 0) in seen  # the caller ran before it marked itself back


def test_an_error_in_the_callers_kernel_reaches_the_caller() -> None:
    sched = np.zeros(3, np.int64)

    def kernel(helper: int) -> None:
        raise ValueError("cannot compile")

    with pytest.raises(ValueError, match="cannot compile"):
        workers.run(kernel, 2, sched, 0)
    assert sched[2] == 1  # helpers are not left spinning


def test_every_block_is_written_once_by_two_threads() -> None:
    loss = lossdsl.get("huber")
    x, t = _huber_args(1_000_003)  # a partial last block
    before = numba.get_num_threads()
    try:
        _threads(2)
        grad = np.full_like(x, np.nan)
        value = loss.value_and_grad(x, t, out=grad)[0]
    finally:
        numba.set_num_threads(before)
    r = x - t
    np.testing.assert_allclose(grad, np.clip(r, -1, 1) / x.size, rtol=1e-15, atol=0)
    a = np.abs(r)
    np.testing.assert_allclose(value, np.where(a <= 1, 0.5 * r * r, a - 0.5).mean(), rtol=1e-12)


def test_helpers_that_never_run_do_not_hold_the_call() -> None:
    """Every helper thread is stuck (as on a descheduled core): the caller does every block,
    and the helpers, once free, find none left."""
    loss = lossdsl.get("huber")
    x, t = _huber_args()
    before = numba.get_num_threads()
    gate = threading.Event()
    stuck = threading.Semaphore(0)

    def hold(helper: int) -> None:
        stuck.release()
        gate.wait()

    try:
        _threads(2)
        expected = loss.value_and_grad(x, t)  # starts the helper thread
        for _ in workers._HELPERS:
            workers._JOBS.put(workers._Job(hold))
        for _ in workers._HELPERS:
            assert stuck.acquire(timeout=10)
        value, grad = loss.value_and_grad(x, t)
    finally:
        gate.set()
        numba.set_num_threads(before)
    assert value == expected[0]
    assert grad.tobytes() == expected[1].tobytes()


@pytest.mark.parametrize("name", ["huber", "cross_entropy", "dice"])
def test_results_are_bitwise_equal_for_one_and_two_threads(name: str) -> None:
    loss = lossdsl.get(name)
    rng = np.random.default_rng(5)
    if name == "cross_entropy":
        logits = rng.normal(size=(3000, 100)).astype(np.float32)
        target = rng.uniform(size=(3000, 100)).astype(np.float32)
        args: tuple[np.ndarray, ...] = (logits, target / target.sum(-1, keepdims=True))
    elif name == "dice":  # batch totals: three phases, each threaded
        args = (rng.uniform(size=300_000), (rng.uniform(size=300_000) > 0.5).astype(float))
    else:
        args = _huber_args()
    before = numba.get_num_threads()
    results = []
    try:
        for count in (1, 2, 2):
            _threads(count)
            v, g, h = loss.value_grad_hess(*args)
            results.append((np.asarray(v).tobytes(), g.tobytes(), h.tobytes()))
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_the_caller_waits_asleep_for_a_helpers_last_block() -> None:
    """The caller's kernel gave up polling (NaN, -1: a helper still holds a block): the call
    waits for that block, then adds the block sums in order itself."""
    blocks = 5

    def fn(helper: int, count: int, sched: np.ndarray, p0: Any, p1: Any, parts: Any) -> Any:
        if not helper:
            return np.nan, -1.0, 0.5
        time.sleep(0.05)  # descheduled mid-block
        parts[:] = np.arange(2 * count, dtype=float).reshape(count, 2)
        sched[1] = count
        return 0.0, 0.0, 1.0

    phase = runtime.Phase("fake", fn, 2, None, None)
    value, bad = runtime.run_phases((phase,), (), (), blocks, 2)
    assert value == 0.5 * sum(range(0, 2 * blocks, 2))
    assert bad == sum(range(1, 2 * blocks, 2))
