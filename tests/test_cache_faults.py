"""The kernel cache under faults (issue 10): concurrent writers, corrupted source and Numba
files, a process killed while compiling, a cache directory that cannot be written.

Each scenario runs the loss in a fresh process (a crash must be observable as an exit status,
and Numba reads its cache files only in a new process) against a closed-form reference. The
default run takes one case of each kind; `-m slow` runs every scenario.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl import diskcache

SPEC = """\
loss faulty_huber(pred, target; delta: real = 1.0 > 0):
    r = pred - target
    return where(abs(r) <= delta, 0.5 * r^2, delta * (abs(r) - 0.5 * delta))
"""
DELTA = 0.7
SLOW = pytest.mark.slow
CHILD = """
import json, sys
import numpy as np
import lossdsl
loss = lossdsl.compile(sys.argv[1])
v, g = loss.value_and_grad(np.linspace(-2, 2, 16), np.zeros(16), delta=float(sys.argv[2]))
entry = loss._kernels().grad_f64
print(json.dumps({
    "value": float(v),
    "grad": g.tolist(),
    "hits": sum(entry.stats.cache_hits.values()),
    "misses": sum(entry.stats.cache_misses.values()),
}))
"""


def _reference() -> tuple[float, np.ndarray]:
    r = np.linspace(-2, 2, 16)
    value = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))
    return float(value.mean()), np.clip(r, -DELTA, DELTA) / r.size


def _start(cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LOSSDSL_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, SPEC, repr(DELTA)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(child: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    """The child's report, after checking it exited normally with the exact result."""
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, f"exit status {child.returncode}\n{err}"
    report = json.loads(out.strip().splitlines()[-1])
    value, grad = _reference()
    np.testing.assert_allclose(report["value"], value, rtol=1e-12)
    np.testing.assert_allclose(report["grad"], grad, rtol=1e-12, atol=1e-15)
    return report, err


def _run(cache: Path) -> tuple[dict[str, object], str]:
    return _finish(_start(cache))


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the spec's source and Numba's files for it."""
    cache = tmp_path_factory.mktemp("populated")
    report, _ = _run(cache)
    assert report["misses"] == 1
    return cache


def _copy(populated: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(populated, cache)
    return cache


def _numba_files(cache: Path, suffix: str) -> list[Path]:
    files = sorted((cache / "__pycache__").glob(f"lossdsl_*{suffix}"))
    assert files, f"no {suffix} files in {cache}"
    return files


def _corrupt(path: Path, how: str, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "random":
        start = int(rng.integers(0, len(data) - 64))
        data[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    elif how == "bitflip":
        bit = int(rng.integers(0, 8 * len(data)))
        data[bit // 8] ^= 1 << (bit % 8)
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@SLOW
def test_eight_processes_compile_one_new_spec_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    children = [_start(cache) for _ in range(8)]
    for child in children:
        _finish(child)
    report, _ = _run(cache)
    assert report["misses"] == 0
    assert report["hits"] == 1


@pytest.mark.parametrize(
    "how",
    [
        "edit-literal",
        *(pytest.param(h, marks=SLOW) for h in ("truncate", "random", "bitflip", "empty")),
    ],
)
def test_corrupted_source_is_detected_and_rebuilt(
    populated: Path, tmp_path: Path, how: str
) -> None:
    cache = _copy(populated, tmp_path)
    (source,) = cache.glob("lossdsl_*.py")
    if how == "edit-literal":
        text = source.read_text()
        assert "0.5" in text
        # An edit that still imports and runs: it must not be used silently.
        source.write_text(text.replace("0.5", "0.25"))
    else:
        _corrupt(source, how, np.random.default_rng(1))
    _, err = _run(cache)
    assert "removed a corrupted kernel cache file" in err
    assert diskcache.read_source(source) is not None


@pytest.mark.parametrize(
    ("suffix", "how"),
    [
        (".nbc", "bitflip"),
        *(
            pytest.param(suffix, how, marks=SLOW)
            for suffix in (".nbi", ".nbc")
            for how in ("truncate", "random", "bitflip")
            if (suffix, how) != (".nbc", "bitflip")
        ),
    ],
)
def test_corrupted_numba_files_are_rebuilt_never_loaded(
    populated: Path, tmp_path: Path, suffix: str, how: str
) -> None:
    cache = _copy(populated, tmp_path)
    rng = np.random.default_rng(7)
    for path in _numba_files(cache, suffix):
        _corrupt(path, how, rng)
    report, err = _run(cache)
    assert "removed a corrupted kernel cache file" in err
    assert report["misses"] == 1  # compiled again, not loaded
    healed, err = _run(cache)
    assert healed["hits"] == 1
    assert "corrupted" not in err


@SLOW
def test_plain_numba_files_are_not_trusted(populated: Path, tmp_path: Path) -> None:
    # Files in Numba's own format (written without the digest) are never unpickled.
    cache = _copy(populated, tmp_path)
    for path in _numba_files(cache, ".nbc"):
        data = path.read_bytes()
        path.write_bytes(data[data.index(b"\n") + 1 + 32 :])
    report, err = _run(cache)
    assert "removed a corrupted kernel cache file" in err
    assert report["misses"] == 1


@SLOW
def test_process_killed_while_compiling(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    child = _start(cache)
    deadline = time.monotonic() + 120
    # Wait for the source to appear: Numba compiles (and writes its files) after that.
    while not list(cache.glob("lossdsl_*.py")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    _run(cache)
    report, _ = _run(cache)
    assert report["hits"] == 1


def _in_process(name: str) -> tuple[lossdsl.Loss, float, np.ndarray]:
    """The spec under a new name (so this process has not loaded it), evaluated here."""
    loss = lossdsl.compile(SPEC.replace("faulty_huber", name))
    value, grad = loss.value_and_grad(np.linspace(-2, 2, 16), np.zeros(16), delta=DELTA)
    return loss, value, grad


def test_uncreatable_cache_dir_falls_back_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, where chmod stops no write: a directory below a regular file can
    # never be created, for any user.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="is not writable") as record:
        loss, value, grad = _in_process("fallback_huber")
    assert len([w for w in record if "not writable" in str(w.message)]) == 1
    assert loss.source_path.exists()
    assert blocker not in loss.source_path.parents
    expected_value, expected_grad = _reference()
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lossdsl.compile(SPEC.replace("faulty_huber", "fallback_again")).compile()


def test_failed_write_falls_back_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "full"
    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(configured))
    original = diskcache.write_source

    def disk_full(path: Path, text: str) -> None:
        if path.parent == configured:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(path, text)

    monkeypatch.setattr(diskcache, "write_source", disk_full)
    with pytest.warns(RuntimeWarning, match="No space left"):
        loss, value, grad = _in_process("full_disk_huber")
    np.testing.assert_allclose(value, _reference()[0], rtol=1e-12)
    np.testing.assert_allclose(grad, _reference()[1], rtol=1e-12, atol=1e-15)
    assert configured not in loss.source_path.parents
