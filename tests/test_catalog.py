"""The built-in catalog against the frameworks that define each loss (issue 3).

For every row of `oracles.ORACLES`: value and gradient in float64 against torch autograd (or a
transcription of the Keras / Optax / torchvision formula in torch ops) over every option,
reduction and input case; float32 kernels against the float64 reference; finite-difference
gradient and Hessian-diagonal checks; composition; task metadata for hyperparameter searches;
and the generated catalog page being up to date.
"""

from __future__ import annotations

import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    ATOL32,
    FD_ATOL,
    FD_RTOL,
    RTOL32,
    assert_close,
    fd_grad,
    fd_hess_diag,
    has_hessian,
)
from oracles import ORACLES, WEIGHTED, Inputs, Oracle

import lossdsl
from lossdsl.catalog import render_catalog
from lossdsl.registry import specs_dir

DOCS = Path(__file__).resolve().parent.parent / "docs" / "losses.md"


@cache
def _cases(oracle: Oracle) -> dict[str, Inputs]:
    return oracle.cases(np.random.default_rng(zlib.crc32(oracle.spec.encode())))


def _grid(oracles: tuple[Oracle, ...]) -> list[Any]:
    rows = []
    for o in oracles:
        for k in range(len(o.options)):
            for case in _cases(o):
                if (k, case) in o.skip:
                    continue
                for r in o.reductions:
                    rows.append(pytest.param(o, k, r, case, id=f"{o.spec}-{k}-{r}-{case}"))
    return rows


def _as_tuple(g: object) -> tuple[np.ndarray, ...]:
    return g if isinstance(g, tuple) else (g,)  # type: ignore[return-value]


def _torch_reference(
    oracle: Oracle,
    loss: lossdsl.Loss,
    inputs: Inputs,
    reduction: str,
    params: dict[str, Any],
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The reference value and the gradient of its sum with respect to each `wrt` input."""
    torch = pytest.importorskip("torch")
    tensors = []
    for name, a in zip(loss.inputs, inputs, strict=True):
        if a.dtype.kind == "f":
            tensors.append(torch.tensor(a, dtype=torch.float64, requires_grad=name in loss.wrt))
        else:
            tensors.append(torch.tensor(a, dtype=torch.int64))
    kw = dict(params)
    if "sample_weight" in kw:
        kw["sample_weight"] = torch.tensor(kw["sample_weight"], dtype=torch.float64)
    value = oracle.reference(*tensors, reduction=reduction, **kw)
    wrt = [t for name, t in zip(loss.inputs, tensors, strict=True) if name in loss.wrt]
    grads = torch.autograd.grad(value.sum(), wrt, allow_unused=True)
    grads = tuple(
        np.zeros(w.shape) if g is None else g.numpy() for g, w in zip(grads, wrt, strict=True)
    )
    return value.detach().numpy(), grads


def _compare(oracle: Oracle, option: int, reduction: str, case: str, **extra: Any) -> None:
    loss = lossdsl.get(oracle.spec)
    inputs = _cases(oracle)[case]
    params = {**oracle.options[option], **extra}
    ours_kw = dict(params)
    sw = ours_kw.pop("sample_weight", None)
    value, grads = loss.value_and_grad(*inputs, reduction=reduction, sample_weight=sw, **ours_kw)
    ref_value, ref_grads = _torch_reference(oracle, loss, inputs, reduction, params)
    assert_close(value, ref_value)
    for ours, ref in zip(_as_tuple(grads), ref_grads, strict=True):
        assert_close(ours, ref)


@pytest.mark.torch
@pytest.mark.parametrize(("oracle", "option", "reduction", "case"), _grid(ORACLES))
def test_float64_matches_framework(oracle: Oracle, option: int, reduction: str, case: str) -> None:
    _compare(oracle, option, reduction, case)


@pytest.mark.torch
@pytest.mark.parametrize(("oracle", "option", "reduction", "case"), _grid(WEIGHTED))
def test_per_element_weight_matches_torch(
    oracle: Oracle, option: int, reduction: str, case: str
) -> None:
    n = _cases(oracle)[case][0].shape[0]
    weights = np.linspace(0.0, 2.0, n)
    _compare(oracle, option, reduction, case, sample_weight=weights)


@pytest.mark.torch
@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.spec)
def test_float32_matches_framework(oracle: Oracle) -> None:
    loss = lossdsl.get(oracle.spec)
    as32 = tuple(
        a.astype(np.float32) if a.dtype.kind == "f" else a for a in _cases(oracle)["typical"]
    )
    value, grads = loss.value_and_grad(*as32)
    # The reference sees exactly the float32 inputs, in float64.
    up = tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in as32)
    ref_value, ref_grads = _torch_reference(oracle, loss, up, loss.reduction, {})
    assert np.asarray(value).dtype == np.float32
    np.testing.assert_allclose(value, ref_value, rtol=RTOL32, atol=ATOL32)
    for ours, ref in zip(_as_tuple(grads), ref_grads, strict=True):
        assert ours.dtype == np.float32
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(ours, ref, rtol=RTOL32, atol=ATOL32 * scale)


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.spec)
def test_gradient_and_hessian_match_finite_differences(oracle: Oracle) -> None:
    loss = lossdsl.get(oracle.spec)
    inputs = list(_cases(oracle)["typical"])
    names = list(loss.inputs)
    hessians = _as_tuple(loss.hessian_diag(*inputs)) if has_hessian(loss, *inputs) else None
    grads = _as_tuple(loss.grad(*inputs))
    for k, wrt in enumerate(loss.wrt):
        at = names.index(wrt)

        def value(x: np.ndarray, at: int = at) -> float:
            return float(loss(*inputs[:at], x, *inputs[at + 1 :]))

        def grad(x: np.ndarray, at: int = at, k: int = k) -> np.ndarray:
            return _as_tuple(loss.grad(*inputs[:at], x, *inputs[at + 1 :]))[k]

        x = inputs[at]
        np.testing.assert_allclose(grads[k], fd_grad(value, x), rtol=FD_RTOL, atol=FD_ATOL)
        if hessians is not None:
            np.testing.assert_allclose(hessians[k], fd_hess_diag(grad, x), rtol=1e-4, atol=1e-6)


# -- composition -------------------------------------------------------------------------------


def test_composed_spec_equals_its_parts(rng: np.random.Generator) -> None:
    blend = lossdsl.compile(
        "loss blend(pred, target; w: real = 0.7 in [0, 1]):\n"
        "    task regression\n"
        "    return w * huber(pred, target; delta=0.5) + (1 - w) * mae(pred, target)\n"
    )
    p, t = rng.normal(size=9), rng.normal(size=9)
    for w in (0.7, 0.2):
        v, g = blend.value_and_grad(p, t, w=w)
        vh, gh = lossdsl.get("huber").value_and_grad(p, t, delta=0.5)
        vm, gm = lossdsl.get("mae").value_and_grad(p, t)
        assert_close(v, w * vh + (1 - w) * vm)
        assert_close(g, w * gh + (1 - w) * gm)


@pytest.mark.parametrize(
    ("composed", "parts"),
    [("l1", ["mae"]), ("squared_hinge", []), ("gan_discriminator", []), ("triplet_margin", [])],
)
def test_builtins_built_by_composition_resolve(composed: str, parts: list[str]) -> None:
    # These specs call other losses by name; checking them inlines the callee.
    assert lossdsl.get(composed).definition.value is not None
    for name in parts:
        assert lossdsl.is_builtin(name)


# -- discovery ---------------------------------------------------------------------------------

EXPECTED_TASKS = {
    "regression": {"mse", "mae", "l1", "rmse", "huber", "smooth_l1", "log_cosh", "msle", "mape",
                   "poisson_nll", "gaussian_nll", "quantile", "pseudo_huber", "gamma_nll",
                   "tweedie_nll", "fair", "squared_log_error", "weighted_huber"},
    "probabilistic": {"kl_div", "kl_div_batchmean", "kl_divergence"},
    "binary": {"bce", "bce_with_logits", "sigmoid_focal", "hinge", "squared_hinge",
               "soft_margin", "binary_focal_crossentropy"},
    "multiclass": {"cross_entropy", "sparse_cross_entropy", "liger_cross_entropy", "nll",
                   "softmax_focal", "poly1",
                   "categorical_hinge", "multi_margin", "poly_cross_entropy",
                   "multiclass_hinge", "categorical_crossentropy",
                   "sparse_categorical_crossentropy", "categorical_focal_crossentropy"},
    "multilabel": {"multilabel_soft_margin"},
    "ranking": {"margin_ranking"},
    "embedding": {"hinge_embedding", "cosine_embedding", "cosine_similarity", "triplet_margin",
                  "pairwise_distance", "cosine_distance", "triplet_margin_optax"},
    "segmentation": {"dice", "tversky", "jaccard", "dice_loss", "binary_dice_loss",
                     "multiclass_generalized_dice_loss"},
    "detection": {"box_iou"},
    "generative": {"wasserstein", "wasserstein_generator", "gan_generator", "gan_discriminator"},
}  # fmt: skip


def test_every_builtin_has_an_oracle_and_a_task() -> None:
    specs = {p.stem for p in specs_dir().glob("*.loss")}
    assert specs == {o.spec for o in ORACLES}
    listed = set().union(*EXPECTED_TASKS.values())
    assert specs == listed


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_search_enumerates_losses_and_parameters_per_task(task: str) -> None:
    found = set(lossdsl.available(task=task))
    assert EXPECTED_TASKS[task] <= found
    for name in found:
        loss = lossdsl.get(name)
        assert loss.task == task
        for p in loss.params:
            # Every default is a valid point of its declared domain, so a search can start there.
            domain = loss.definition.param(p.name).domain
            assert domain is None or domain.contains(p.default), (name, p)
            assert p.kind in ("real", "int")
            # A search passes values as keyword arguments without recompiling.
            assert p.name not in loss.inputs


def _above(a: np.ndarray, domain: object) -> np.ndarray:
    """`a` moved above a domain's lower bound, if it has one."""
    low = getattr(domain, "low", None)
    return a if low is None else low + 0.1 + np.abs(a)


def test_hyperparameter_grid_runs_without_recompiling(rng: np.random.Generator) -> None:
    results = {}
    for name in lossdsl.available(task="regression"):
        loss = lossdsl.get(name)
        # The encodings and domains say what to feed: counts and variances are non-negative,
        # squared_log_error's inputs lie above -1.
        args = [rng.normal(size=8) for _ in loss.input_info]
        args = [
            _above(np.abs(a) if i.encoding == "nonnegative" else a, d.domain)
            for a, i, d in zip(args, loss.input_info, loss.definition.inputs, strict=True)
        ]
        for info in loss.params:
            if info.kind == "real" and info.axis is None:
                results[(name, info.name)] = float(loss(*args, **{info.name: info.default}))
    assert all(np.isfinite(v) for v in results.values())
    assert ("huber", "delta") in results
    assert ("quantile", "q") in results


# -- the catalog page --------------------------------------------------------------------------


def test_docs_losses_md_is_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_catalog(), (
        "docs/losses.md is stale: regenerate it with lossdsl.catalog.render_catalog()"
    )


def test_every_builtin_names_its_framework_counterpart(capsys: pytest.CaptureFixture[str]) -> None:
    from lossdsl.catalog import counterpart
    from lossdsl.cli import main

    found = {o.spec: counterpart(lossdsl.get(o.spec)) for o in ORACLES}
    assert all(found.values()), [name for name, text in found.items() if not text]
    # Wrapped header lines are joined: the whole call, not a cut at the line end.
    assert found["categorical_crossentropy"] == (
        "keras.losses.CategoricalCrossentropy(from_logits=False, label_smoothing=)"
    )
    assert main(["list", "--task", "multilabel"]) == 0
    out = capsys.readouterr().out
    assert "[torch.nn.functional.multilabel_soft_margin_loss(weight=)]" in out
