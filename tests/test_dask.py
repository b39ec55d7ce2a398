"""Dask arrays in, Dask arrays out (issue 13), and the phases API they run on.

Chunked results must equal the in-memory NumPy call (the reference here: its own correctness is
tested against PyTorch and finite differences elsewhere) for every built-in, random specs of the
differential tester and every reduction, weighting and cotangent, with chunks of one sample and
uneven chunks; on the synchronous, threaded and distributed schedulers; and out of core.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, draw_inputs

import lossdsl
from lossdsl.registry import specs_dir

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
from lossdsl.integrations.dask import from_npy, to_npy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(p.stem for p in specs_dir().glob("*.loss"))
PER_CLASS_DICE = """
loss per_class_dice(pred[C], target[C]; smooth: real = 1.0 >= 0):
    return mean[C](1 - (2 * total(pred * target) + smooth) / (total(pred) + total(target) + smooth))
"""


def _lazy(a: Any, chunks: Any) -> Any:
    return da.from_array(a, chunks=chunks) if a is not None else None


def _compute(*xs: Any, scheduler: str = "sync") -> Any:
    return dask.compute(*xs, scheduler=scheduler)


def _listed(x: Any) -> list[Any]:
    return list(x) if isinstance(x, tuple | list) else [x]


def _same(lazy: Any, eager: Any) -> None:
    for a, b in zip(_listed(lazy), _listed(eager), strict=True):
        assert_close(a, b)


def _check_call(loss: lossdsl.Loss, method: str, inputs: list[Any], chunks: Any, **kw: Any) -> None:
    """`method` on Dask arrays chunked `chunks` (the batch dimension; an axis whole) gives
    what it gives on the NumPy arrays, lazily, with outputs chunked like the inputs."""
    eager = getattr(loss, method)(*inputs, **kw)
    lazy_kw = {
        k: _lazy(v, chunks) if k in ("sample_weight", "cotangent") else v for k, v in kw.items()
    }
    arrays = [_lazy(a, (chunks, *a.shape[1:])) for a in inputs]
    lazy = getattr(loss, method)(*arrays, **lazy_kw)
    outs = lazy if isinstance(lazy, tuple) else (lazy,)
    for out in outs:
        for x in _listed(out):
            assert isinstance(x, da.Array)
    computed = _compute(*outs)
    _same(computed if isinstance(lazy, tuple) else computed[0], eager)
    if method != "__call__":
        grads = _listed(outs[1] if isinstance(lazy, tuple) and method != "grad" else outs[0])
        assert grads[0].chunks[0] == arrays[0].chunks[0]


# -- every built-in ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_every_builtin_chunked_equals_numpy(name: str, rng: np.random.Generator) -> None:
    loss = lossdsl.get(name)
    inputs = list(draw_inputs(loss.definition, rng, batch=7).values())
    try:
        loss.value_grad_hess(*inputs)
        method = "value_grad_hess"
    except lossdsl.DerivationError:  # no Hessian for this loss: value and gradient
        method = "value_and_grad"
    for chunks in ((1,) * 7, (3, 1, 3)):
        _check_call(loss, method, inputs, chunks)


# -- reductions, weights, cotangents, totals ---------------------------------------------------

CHUNKINGS = [(1,) * 13, (5, 1, 6, 1), (13,)]


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["ones", "uneven", "one-chunk"])
@pytest.mark.parametrize("name", ["dice", "sparse_cross_entropy"])
def test_every_reduction_weighting_and_mode(
    name: str, chunks: tuple[int, ...], rng: np.random.Generator
) -> None:
    loss = lossdsl.get(name)
    inputs = list(draw_inputs(loss.definition, rng, batch=13, classes=3).values())
    sw = rng.uniform(0.2, 2.0, 13)
    sw[2] = 0.0
    ct = rng.normal(size=13)
    for reduction in ("mean", "sum", "none"):
        for weight in (None, sw):
            _check_call(
                loss, "value_grad_hess", inputs, chunks, reduction=reduction, sample_weight=weight
            )
        _check_call(loss, "__call__", inputs, chunks, reduction=reduction, sample_weight=sw)
    _check_call(
        loss, "value_and_grad", inputs, chunks, reduction="none", cotangent=ct, sample_weight=sw
    )
    _check_call(loss, "grad_hess", inputs, chunks, sample_weight=sw)


def test_ignore_index_class_weights_and_float32(rng: np.random.Generator) -> None:
    loss = lossdsl.get("sparse_cross_entropy")
    logits = rng.normal(size=(11, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 11)
    labels[[0, 7]] = -100
    kw = dict(weight=rng.uniform(0.5, 2.0, 5), label_smoothing=0.1)
    eager = loss.value_and_grad(logits, labels, **kw)
    lazy = loss.value_and_grad(da.from_array(logits, chunks=(4, 2)), labels, **kw)
    v, g = _compute(*lazy)
    assert g.dtype == np.float32
    assert v.dtype == np.float32
    assert_close(v, eager[0], rtol=1e-6)
    assert_close(g, eager[1], rtol=1e-6, atol=1e-7)
    # The class axis was split over two chunks: it is rechunked whole, the batch kept.
    assert lazy[1].chunks == ((4, 4, 3), (5,))


def test_per_class_totals_on_a_two_dimensional_batch(rng: np.random.Generator) -> None:
    loss = lossdsl.compile(PER_CLASS_DICE)
    pred, target = rng.uniform(0.05, 0.95, (6, 5, 4)), rng.uniform(0, 1, (6, 5, 4))
    sw = rng.uniform(0.5, 1.5, (6, 5))
    eager = loss.value_and_grad(pred, target, sample_weight=sw)
    lazy = loss.value_and_grad(
        da.from_array(pred, chunks=(4, 2, 3)), target, sample_weight=da.from_array(sw, chunks=2)
    )
    _same(_compute(*lazy, scheduler="threads"), eager)
    assert lazy[1].chunks == ((4, 2), (2, 2, 1), (4,))


def test_broadcast_target_and_weights(rng: np.random.Generator) -> None:
    dice = lossdsl.get("dice")
    pred, target = rng.uniform(size=(4, 6)), rng.uniform(size=6)
    eager = dice.value_and_grad(pred, target, sample_weight=np.arange(1.0, 7.0))
    lazy = dice.value_and_grad(
        da.from_array(pred, chunks=(3, 4)), target, sample_weight=np.arange(1.0, 7.0)
    )
    _same(_compute(*lazy), eager)


# -- random specs of the differential tester ---------------------------------------------------


def _fuzz_cases(count: int, totals: bool) -> list[tuple[int, str]]:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.gen import generate, nests_totals
    from tests.fuzz.render import render_case

    found = []
    seed = 13_000
    while len(found) < count:
        case = generate(seed, frozenset({"perclass", "wtotals", "cotangent"}))
        seed += 1
        text = render_case(case)
        if nests_totals(case["loss"]) or ("total(" in text) != totals:
            continue
        try:
            lossdsl.check_source(text)
        except lossdsl.LossDSLError:  # a located resource limit: not a spec to run
            continue
        found.append((seed - 1, text))
    return found


FUZZ = _fuzz_cases(3, True) + _fuzz_cases(1, False)


@pytest.mark.parametrize("seed_text", FUZZ, ids=[f"seed{seed}" for seed, _ in FUZZ])
def test_random_specs_chunked_equal_numpy(seed_text: tuple[int, str]) -> None:
    seed, text = seed_text
    loss = lossdsl.compile(text)
    rng = np.random.default_rng(seed)
    inputs = []
    for inp in loss.input_info:
        shape = (9, 3) if inp.axis else (9,)
        inputs.append(rng.integers(0, 3, 9) if inp.kind == "int" else rng.uniform(0.1, 0.9, shape))
    sw = rng.uniform(0.5, 2.0, 9)
    sw[4] = 0.0
    for reduction in ("mean", "none"):
        _check_call(
            loss, "value_and_grad", inputs, (4, 1, 4), reduction=reduction, sample_weight=sw
        )


# -- the phases API on NumPy chunks ------------------------------------------------------------


def test_phases_over_numpy_chunks_equal_one_call(rng: np.random.Generator) -> None:
    tversky = lossdsl.get("tversky")
    p, t, w = rng.uniform(size=20), rng.uniform(size=20), rng.uniform(size=20)
    kw = dict(alpha=0.3, beta=0.7)
    parts = [slice(0, 1), slice(1, 12), slice(12, 12), slice(12, 20)]
    totals = sum(tversky.partial_totals(p[s], t[s], sample_weight=w[s], **kw) for s in parts)
    assert isinstance(totals, lossdsl.Partials)
    assert totals.count == 20
    assert totals.weight_sum == pytest.approx(w.sum(), rel=1e-12)
    adjoints = sum(
        tversky.partial_adjoints(p[s], t[s], totals=totals, sample_weight=w[s], **kw) for s in parts
    )
    shares = [
        tversky.finalize(p[s], t[s], totals=totals, adjoints=adjoints, sample_weight=w[s], **kw)
        for s in parts
    ]
    value, grad = tversky.value_and_grad(p, t, sample_weight=w, **kw)
    assert_close(sum(v for v, _, _ in shares), value)
    assert_close(np.concatenate([g for _, g, _ in shares]), grad)
    with pytest.raises(lossdsl.SpecShapeError, match="other parameters"):
        tversky.finalize(p, t, totals=totals, adjoints=adjoints, sample_weight=w, alpha=0.5)
    with pytest.raises(lossdsl.SpecShapeError, match="needs their adjoints"):
        tversky.finalize(p, t, totals=totals, sample_weight=w, **kw)
    other = lossdsl.get("dice").partial_totals(p, t)
    with pytest.raises(lossdsl.SpecShapeError, match="cannot add"):
        _ = totals + other


# -- laziness and errors -----------------------------------------------------------------------


def _explode(block: np.ndarray) -> np.ndarray:
    raise RuntimeError("computed before the caller asked")


def test_nothing_is_computed_until_asked(rng: np.random.Generator) -> None:
    dice = lossdsl.get("dice")
    p = da.from_array(rng.uniform(size=10), chunks=5)
    never = p.map_blocks(_explode, dtype=p.dtype)
    value, grad = dice.value_and_grad(never, p)
    assert value.shape == ()
    assert grad.chunks == p.chunks
    with pytest.raises(RuntimeError, match="computed before"):
        value.compute(scheduler="sync")


def test_bad_calls_are_errors_before_any_compute(rng: np.random.Generator) -> None:
    ce = lossdsl.get("sparse_cross_entropy")
    x = da.from_array(rng.normal(size=(6, 3)), chunks=2)
    y = da.from_array(np.array([0, 1, 2, 3, 1, 0]), chunks=2)
    with pytest.raises(lossdsl.SpecShapeError, match="no parameter or input 'smoothing'"):
        ce(x, y, smoothing=0.1)
    with pytest.raises(lossdsl.SpecShapeError, match="out= is not supported"):
        ce.grad(x, y, out=np.empty((6, 3)))
    with pytest.raises(lossdsl.SpecShapeError, match="is a Dask array"):
        ce(x, y, weight=da.ones(3, chunks=3))
    with pytest.raises(lossdsl.SpecShapeError, match="unknown size"):
        ce(x[x[:, 0] > 0], y[x[:, 0] > 0])
    with pytest.raises(lossdsl.SpecShapeError, match="cotangent= needs reduction='none'"):
        ce.grad(x, y, cotangent=da.ones(6, chunks=2))
    with pytest.raises(lossdsl.UnsupportedError, match="CPU kernels"):
        lossdsl.get("mse", target="cuda")(da.ones(3), da.ones(3))
    # A label outside the class axis is found by the kernel of its block, at compute time.
    lazy = ce(x, y)
    with pytest.raises(lossdsl.SpecShapeError, match="label outside"):
        lazy.compute(scheduler="sync")


# -- a cluster of worker processes, and data larger than their memory ---------------------------

MEMORY_LIMIT = 350e6


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # Worker processes inherit LOSSDSL_CACHE_DIR (set by conftest) from this process.
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=MEMORY_LIMIT,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _kernel_compiles() -> int:
    """Entry points this process compiled rather than loaded from the on-disk cache."""
    misses = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("lossdsl_"):
            for value in vars(module).values():
                stats = getattr(value, "stats", None)
                if stats is not None and hasattr(value, "signatures"):
                    misses += len(stats.cache_misses)
    return misses


def test_local_cluster_of_processes(client: Any, rng: np.random.Generator) -> None:
    ce = lossdsl.get("sparse_cross_entropy")
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 4, 40)
    y[3] = -100
    eager = ce.value_and_grad(x, y, label_smoothing=0.2)
    lazy = ce.value_and_grad(da.from_array(x, chunks=(7, 4)), y, label_smoothing=0.2)
    _same(client.compute(list(lazy), sync=True), eager)
    dice = lossdsl.get("dice")
    p, t = rng.uniform(size=50), rng.uniform(size=50)
    lazy = dice.value_and_grad(da.from_array(p, chunks=9), da.from_array(t, chunks=9))
    _same(client.compute(list(lazy), sync=True), dice.value_and_grad(p, t))
    # The call compiled the kernels here; every worker loaded them from the cache.
    assert sum(client.run(_kernel_compiles).values()) == 0


def test_out_of_core(client: Any, tmp_path: Path) -> None:
    """Inputs 1.5x the workers' memory limit, .npy files on disk read block by block; the
    gradient goes back to a .npy file the same way."""
    n = int(0.75 * MEMORY_LIMIT / 8)
    rng = np.random.default_rng(0)
    for name in ("pred", "target"):
        np.save(tmp_path / f"{name}.npy", rng.uniform(0.0, 1.0, n))
    pred = from_npy(tmp_path / "pred.npy", chunks=1_000_000)
    target = from_npy(tmp_path / "target.npy", chunks=1_000_000)
    dice = lossdsl.get("dice")
    value, grad = dice.value_and_grad(pred, target)
    stored = to_npy(tmp_path / "grad.npy", grad, compute=False)
    # One graph: the value and the stored gradient share their phases.
    futures = client.compute([value, stored])
    distributed.wait(futures, timeout=300)
    p, t = np.load(tmp_path / "pred.npy"), np.load(tmp_path / "target.npy")
    eager = dice.value_and_grad(p, t)
    assert_close(futures[0].result(), eager[0])
    assert_close(np.load(tmp_path / "grad.npy"), eager[1])


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Dask example runs as written (in a scratch folder), and its result is the
    in-memory one; then the phases example over memory maps gives the same again."""
    from conftest import readme_snippet

    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(readme_snippet("### On Dask: larger than memory, across machines"), scope)
    p, t = np.load("pred.npy"), np.load("target.npy")
    value, grad = lossdsl.get("dice").value_and_grad(p, t)
    assert_close(scope["value"], value, rtol=1e-6)
    assert_close(np.load("grad.npy"), grad, rtol=1e-5, atol=1e-12)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index("**Phases without Dask.**") :]
    start = after.index("```python\n") + len("```python\n")
    exec(after[start : after.index("```\n", start)], scope)
    assert_close(scope["value"], value, rtol=1e-6)
    assert_close(np.load("grad.npy"), grad, rtol=1e-5, atol=1e-12)


def test_npy_files_round_trip(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    """Blocks of whole rows and blocks of part of a row are written and read back alike, on
    worker processes, from a path relative to this process's folder (regression: the workers
    resolved it in their own folder)."""
    monkeypatch.chdir(tmp_path)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    for chunks in ((3, 5), (2, 2)):
        to_npy("x.npy", da.from_array(x, chunks=chunks))
        np.testing.assert_array_equal(np.load("x.npy"), x)
        back = from_npy("x.npy", chunks=(4, 3))
        assert back.chunks == ((4, 3), (3, 2))
        np.testing.assert_array_equal(client.compute(back, sync=True), x)
