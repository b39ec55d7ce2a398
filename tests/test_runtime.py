"""Runtime: the content-addressed cache, no recompilation on new parameter values, and a
second process that loads kernels from disk instead of deriving and compiling them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lossdsl
from lossdsl import api, diskcache, runtime

SPEC = """\
loss scaled_huber(pred, target; delta: real = 1.0 > 0):
    r = pred - target
    return where(abs(r) <= delta, 0.5 * r^2, delta * (abs(r) - 0.5 * delta))
"""


def test_parameter_override_does_not_recompile(rng: np.random.Generator) -> None:
    # The default delta runs a kernel with delta fixed; every other value shares the generic
    # kernel, compiled once.
    loss = lossdsl.compile(SPEC)
    p, t = rng.normal(size=50), 3 * rng.normal(size=50)
    loss.value_and_grad(p, t, delta=0.3)
    module = loss._kernels()
    entry = module.grad_f64
    before = len(entry.signatures)
    for delta in (0.1, 0.5, 1.0, 2.0):
        v, g = loss.value_and_grad(p, t, delta=delta)
        r = p - t
        expected = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
        np.testing.assert_allclose(v, expected.mean(), rtol=1e-12)
        np.testing.assert_allclose(g, np.clip(r, -delta, delta) / r.size, rtol=1e-12)
    assert len(entry.signatures) == before == 1
    assert len(loss._modules) == 2


def test_source_is_written_once_to_a_content_addressed_file() -> None:
    loss = lossdsl.compile(SPEC).compile()
    path = loss.source_path
    assert path.exists()
    assert path.parent == runtime.cache_dir()
    # The file ends with a digest line that lets a later process verify it.
    assert diskcache.read_source(path) == loss.source()
    assert path.read_text().startswith(loss.source())
    other = lossdsl.compile(SPEC.replace("0.5 * r^2", "0.5 * r * r"))
    assert other.source_path != path


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import lossdsl
    loss = lossdsl.compile(sys.argv[1])
    v, g = loss.value_and_grad(np.linspace(-2, 2, 64), np.zeros(64), delta=0.7)
    entry = loss._kernels().grad_f64
    print(json.dumps({
        "value": float(v),
        "hits": sum(entry.stats.cache_hits.values()),
        "misses": sum(entry.stats.cache_misses.values()),
        "derived": loss._derived is not None,
        "seconds": time.perf_counter() - t0,
    }))
    """
)


def _child(cache: Path) -> dict[str, object]:
    env = {**os.environ, "LOSSDSL_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, SPEC], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_second_process_loads_from_disk_cache(tmp_path: Path) -> None:
    first = _child(tmp_path)
    second = _child(tmp_path)
    assert first["misses"] == 1
    assert first["hits"] == 0
    assert first["derived"]
    assert second["misses"] == 0
    assert second["hits"] == 1
    assert not second["derived"], "a cached kernel module must not re-run the derivation"
    assert second["value"] == first["value"]


def test_debug_env_prints_source_path(tmp_path: Path) -> None:
    env = {**os.environ, "LOSSDSL_CACHE_DIR": str(tmp_path), "LOSSDSL_DEBUG": "1"}
    code = "import lossdsl, numpy as np; lossdsl.get('mse')(np.ones(3), np.zeros(3))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "lossdsl: kernel module" in out.stderr
    assert str(tmp_path) in out.stderr
    assert "def grad_f64(" in out.stderr


def test_repeated_calls_reuse_one_compiled_signature(rng: np.random.Generator) -> None:
    # Regression: the first call passed read-only broadcast views, later ones writable arrays,
    # which made Numba compile the kernel a second time on the second call.
    loss = lossdsl.compile(
        "loss ce_once(logits[C], target[C]):\n    return -sum[C](target * log_softmax[C](logits))\n"
    )
    x, t = rng.normal(size=(64, 5)), rng.uniform(size=(64, 5))
    values = [loss.value_and_grad(x, t)[0] for _ in range(3)]
    assert values[0] == values[1] == values[2]
    assert len(loss._kernels().grad_f64.signatures) == 1


def test_precompile_fills_the_cache_for_default_and_other_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 4: one command compiles a built-in's kernels: the one with its defaults fixed and
    # the generic one other parameter values run. A later process finds both on disk.
    monkeypatch.setenv("LOSSDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(api, "_LOSSES", {})
    for name in [m for m in sys.modules if m.startswith("lossdsl_")]:  # as a new process
        monkeypatch.delitem(sys.modules, name)
    spent = lossdsl.precompile(["huber"], progress=False)
    assert list(spent) == ["huber"]
    modules = sorted(p.stem for p in tmp_path.glob("lossdsl_*.py"))
    assert len(modules) == 2
    for stem in modules:
        machine_code = list((tmp_path / "__pycache__").glob(f"{stem}.*.nbc"))
        # value, grad, hess and grad_hess in float32 and float64 (plus helpers)
        assert len(machine_code) >= 8, stem
