"""Call arguments (issue 10): every wrong type or value is a LossDSLError naming the argument,
what it expects and what it got, raised before any kernel runs; unusual but valid arrays
(0-d, empty, strided, reversed, read-only, other byte order) give the exact result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import assert_close, draw_inputs

import lossdsl
from lossdsl.errors import LossDSLError, SpecDomainError, SpecShapeError
from lossdsl.registry import Registry

X = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
LABELS = np.array([0, 3, 1])
P, T = np.linspace(-1.0, 2.0, 5), np.linspace(0.5, -0.5, 5)


def _sce(**kw: Any) -> Any:
    return lossdsl.get("sparse_cross_entropy")(X, LABELS, **kw)


def _huber(*args: Any, **kw: Any) -> Any:
    return lossdsl.get("huber")(*(args or (P, T)), **kw)


def _grad(name: str, *args: Any, **kw: Any) -> Callable[[], Any]:
    return lambda: lossdsl.get(name).grad(*args, **kw)


RO = np.ones(5)
RO.flags.writeable = False
TRIPLET = [np.ones((2, 3)) * k for k in (1.0, 2.0, 3.0)]
SHARED = np.empty((2, 3))

# (call, error class, fragment of the message)
CASES: list[tuple[str, Callable[[], Any], type[LossDSLError], str]] = [
    ("int-param-huge", lambda: _sce(ignore_index=1e300), SpecDomainError, "int64 range"),
    ("int-param-bigint", lambda: _sce(ignore_index=10**30), SpecDomainError, "int64 range"),
    ("int-param-fraction", lambda: _sce(ignore_index=1.5), SpecDomainError, "must be an integer"),
    ("int-param-nan", lambda: _sce(ignore_index=float("nan")), SpecDomainError, "is NaN"),
    ("int-param-str", lambda: _sce(ignore_index="1"), SpecShapeError, "got str '1'"),
    ("axis-param-str", lambda: _sce(weight="abc"), SpecShapeError, "'weight' must hold real"),
    ("axis-param-shape", lambda: _sce(weight=[1.0, 2.0]), SpecShapeError, "needs shape (4,)"),
    ("axis-param-nan", lambda: _sce(weight=[1, np.nan, 1, 1]), SpecDomainError, "outside its"),
    ("axis-param-domain", lambda: _sce(weight=[1, -1, 1, 1]), SpecDomainError, "domain >= 0"),
    ("axis-param-object", lambda: _sce(weight=[1, None, 1, 1]), SpecShapeError, "must hold real"),
    ("reduction-list", lambda: _sce(reduction=["mean"]), SpecShapeError, "unknown reduction list"),
    ("reduction-name", lambda: _sce(reduction="avg"), SpecShapeError, "unknown reduction 'avg'"),
    ("reduction-none-type", lambda: _sce(reduction=1), SpecShapeError, "unknown reduction int"),
    (
        "sample-weight-str",
        lambda: _sce(sample_weight=["a", "b", "c"]),
        SpecShapeError,
        "sample_weight must hold real numbers",
    ),
    (
        "sample-weight-nan",
        lambda: _sce(sample_weight=[1, np.nan, 1]),
        SpecDomainError,
        "NaN or infinite",
    ),
    ("sample-weight-shape", lambda: _sce(sample_weight=[1, 1]), SpecShapeError, "broadcast"),
    ("sample-weight-complex", lambda: _sce(sample_weight=1j), SpecShapeError, "complex"),
    ("real-param-bigint", lambda: _huber(delta=10**400), SpecDomainError, "too large for a float"),
    ("real-param-str", lambda: _huber(delta="1.5"), SpecShapeError, "single real number, got str"),
    ("real-param-none", lambda: _huber(delta=None), SpecShapeError, "got NoneType None"),
    ("real-param-array", lambda: _huber(delta=np.ones(2)), SpecShapeError, "shape (2,)"),
    ("real-param-nan", lambda: _huber(delta=float("nan")), SpecDomainError, "is NaN"),
    ("real-param-inf", lambda: _huber(delta=-np.inf), SpecDomainError, "outside its domain"),
    ("real-param-complex", lambda: _huber(delta=1 + 2j), SpecShapeError, "must hold real"),
    (
        "real-param-overflow",
        lambda: _huber(P.astype(np.float32), T, delta=1e300),
        SpecDomainError,
        "overflows float32",
    ),
    (
        "multi-margin-p",
        lambda: lossdsl.get("multi_margin")(X, LABELS, p=3),
        SpecDomainError,
        "outside its domain in [1, 2]",
    ),
    (
        "multi-margin-p-fraction",
        lambda: lossdsl.get("multi_margin")(X, LABELS, p=1.5),
        SpecDomainError,
        "must be an integer",
    ),
    (
        "gaussian-nll-full",
        lambda: lossdsl.get("gaussian_nll")(P, T, np.ones(5), full=5),
        SpecDomainError,
        "outside its domain in [0, 1]",
    ),
    ("input-float16", lambda: _huber(P.astype(np.float16), T), SpecShapeError, "dtype float16"),
    ("input-complex", lambda: _huber(P + 0j, T), SpecShapeError, "complex128"),
    ("input-object", lambda: _huber(P.astype(object), T), SpecShapeError, "dtype object"),
    ("input-strings", lambda: _huber(P.astype(str), T), SpecShapeError, "must hold real"),
    ("input-bool", lambda: _huber(P > 0, T), SpecShapeError, "dtype bool"),
    ("input-ragged", lambda: _huber([[1.0, 2.0], [3.0]], T), SpecShapeError, "array of numbers"),
    ("target-str", lambda: _huber(P, "abc"), SpecShapeError, "'target' of loss 'huber' must"),
    ("target-none", lambda: _huber(P, None), SpecShapeError, "'target' of loss 'huber' must"),
    (
        "labels-fraction",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([0.5, 1, 2])),
        SpecShapeError,
        "integer labels",
    ),
    (
        "labels-nan",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([np.nan, 1, 2])),
        SpecShapeError,
        "integer labels",
    ),
    (
        "labels-huge",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([0, 1, 1e300])),
        SpecShapeError,
        "int64 range",
    ),
    (
        "labels-bool",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([True, False, True])),
        SpecShapeError,
        "integer labels, got dtype bool",
    ),
    (
        "labels-uint64",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([0, 2**64 - 1, 1], np.uint64)),
        SpecShapeError,
        "int64 range",
    ),
    (
        "labels-above",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([0, 4, 1])),
        SpecShapeError,
        "outside [0, 4)",
    ),
    (
        "labels-negative",
        lambda: lossdsl.get("sparse_cross_entropy")(X, np.array([0, -1, 1])),
        SpecShapeError,
        "outside [0, 4)",
    ),
    ("too-many-inputs", lambda: _huber(P, T, T), SpecShapeError, "takes 2 inputs"),
    ("missing-input", lambda: _huber(P), SpecShapeError, "missing input 'target'"),
    ("unknown-keyword", lambda: _huber(P, T, sigma=1), SpecShapeError, "no parameter or input"),
    ("input-twice", lambda: _huber(P, T, pred=P), SpecShapeError, "both by position"),
    (
        "axis-input-0d",
        lambda: lossdsl.get("sparse_cross_entropy")(1.0, 0),
        SpecShapeError,
        "needs a trailing axis",
    ),
    (
        "axis-empty",
        lambda: lossdsl.get("sparse_cross_entropy")(np.ones((3, 0)), LABELS),
        SpecShapeError,
        "is empty",
    ),
    ("out-shape", _grad("huber", P, T, out=np.empty(4)), SpecShapeError, "needs shape (5,)"),
    ("out-dtype", _grad("huber", P, T, out=np.empty(5, np.float32)), SpecShapeError, "float64"),
    ("out-big-endian", _grad("huber", P, T, out=np.empty(5, ">f8")), SpecShapeError, ">f8"),
    ("out-count", _grad("huber", P, T, out=[np.empty(5)] * 2), SpecShapeError, "needs 1 array"),
    ("out-readonly", _grad("huber", P, T, out=RO), SpecShapeError, "writeable C-contiguous"),
    ("out-strided", _grad("huber", P, T, out=np.empty(10)[::2]), SpecShapeError, "C-contiguous"),
    ("out-list", _grad("huber", P, T, out=[[0.0] * 5]), SpecShapeError, "must be a NumPy array"),
    (
        "out-overlap",
        _grad("triplet_margin", *TRIPLET, out=(SHARED, SHARED, np.empty((2, 3)))),
        SpecShapeError,
        "overlap each other",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_argument_is_a_clear_error(
    call: Callable[[], Any], error: type[LossDSLError], fragment: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


def _int_params() -> list[tuple[str, str]]:
    reg = Registry()
    return [
        (name, p.name)
        for name in reg.names()
        for p in reg.definition(name).params
        if p.kind == "int"
    ]


@pytest.mark.parametrize(("name", "param"), _int_params())
def test_every_builtin_int_parameter_is_an_integer_in_its_domain(name: str, param: str) -> None:
    # Issue 9, item 9: multi_margin(p=3) ran p=2, gaussian_nll(full=5) was accepted.
    loss = lossdsl.get(name)
    p = next(q for q in loss.definition.params if q.name == param)
    inputs = draw_inputs(loss.definition, np.random.default_rng(0))
    with pytest.raises(SpecDomainError, match="must be an integer"):
        loss(**inputs, **{param: p.default + 0.5})
    outside = []
    if p.domain is not None and p.domain.high is not None:
        outside.append(p.domain.high + 1)
    if p.domain is not None and p.domain.low is not None:
        outside.append(p.domain.low - 1)
    for value in outside:
        with pytest.raises(SpecDomainError, match="outside its domain"):
            loss(**inputs, **{param: int(value)})


def _mse_reference(p: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    r = np.asarray(p, np.float64) - np.asarray(t, np.float64)
    return float(np.mean(r * r)), 2 * r / max(r.size, 1)


def test_unusual_layouts_give_exact_results() -> None:
    mse = lossdsl.get("mse")
    base = np.linspace(-3.0, 3.0, 24)
    reversed_ = base[::-1]
    strided = base.reshape(4, 6)[:, ::2]
    readonly = base.copy()
    readonly.flags.writeable = False
    big = base.astype(">f8")
    target = np.cos(base)
    for pred, tgt in [
        (reversed_, target),
        (strided, target.reshape(4, 6)[:, 1::2]),
        (readonly, target),
        (big, target.astype(">f8")),
        (np.float64(0.5), np.float64(-1.0)),
        (list(base), list(target)),
    ]:
        value, grad = mse.value_and_grad(pred, tgt)
        ref_value, ref_grad = _mse_reference(pred, tgt)
        assert_close(value, ref_value)
        assert_close(grad, ref_grad)
    value, grad = mse.value_and_grad(np.empty(0), np.empty(0))
    assert np.isnan(value)
    assert grad.shape == (0,)
    # Every layout above reached the kernel as the same array type: compiled once.
    assert len(mse._kernels(mse._default_fixed()).grad_f64.signatures) == 1


def test_labels_given_as_integral_floats_or_small_ints() -> None:
    sce = lossdsl.get("sparse_cross_entropy")
    expected = sce(X, LABELS)
    for labels in (LABELS.astype(np.float32), LABELS.astype(np.int8), LABELS.astype(">i8")):
        assert_close(sce(X, labels), expected)
    logp = X - np.log(np.exp(X).sum(axis=1, keepdims=True))
    assert_close(expected, -logp[np.arange(3), LABELS].mean())


def test_validated_call_cache_tells_byte_order_apart() -> None:
    # A big-endian array after a native call of the same shape once reached Numba unconverted.
    mse = lossdsl.get("mse")
    native = np.linspace(0.0, 1.0, 7)
    target = np.zeros(7)
    first = mse.value_and_grad(native, target)
    second = mse.value_and_grad(native.astype(">f8"), target.astype(">f8"))
    assert_close(first[0], second[0])
    assert_close(first[1], second[1])


def test_validated_call_cache_tells_out_from_an_extra_input() -> None:
    # f(x, y, out=g) then f(x, y, g): the same arrays, once a zip() error instead of this one.
    huber = lossdsl.get("huber")
    g = np.empty(5)
    huber.grad(P, T, out=g)
    with pytest.raises(SpecShapeError, match="takes 2 inputs"):
        huber.grad(P, T, g)


def test_out_aliasing_the_differentiated_input_reads_a_copy() -> None:
    # Issue 9, item 7: out= over an input gave a gradient computed from half-written values.
    mse = lossdsl.get("mse")
    pred, target = np.linspace(-1.0, 1.0, 8), np.sin(np.arange(8.0))
    _, expected = _mse_reference(pred, target)
    for _ in range(2):  # the second call takes the validated-call fast path
        x = pred.copy()
        result = mse.grad(x, target, out=x)
        assert result is x
        assert_close(x, expected)


def test_out_aliasing_a_target_reads_a_copy() -> None:
    ce = lossdsl.get("cross_entropy")
    logits = np.linspace(-2.0, 2.0, 12).reshape(3, 4)
    probs = np.full((3, 4), 0.25)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for _ in range(2):
        target = probs.copy()
        grad = ce.grad(logits, target, out=target)
        assert grad is target
        assert_close(target, (softmax - probs) / 3)


def test_out_aliasing_part_of_an_input() -> None:
    mse = lossdsl.get("mse")
    buffer = np.linspace(-1.0, 1.0, 10)
    pred, target = buffer[:5].copy(), buffer[5:]
    _, expected = _mse_reference(pred, target)
    mse.grad(pred, target, out=buffer[3:8])
    assert_close(buffer[3:8], expected)


def test_repeated_weighted_calls_check_each_calls_weights() -> None:
    # Issue 12: calls with sample weights reuse their validation too (calls.plan_key); the
    # weights' values, the one check on data, are checked on every call (1e38 sums past the
    # float32 range: finite weights all the same). Closed form of the summed squared error:
    # gradient 2 w (x - t), Hessian 2 w.
    mse = lossdsl.Loss(lossdsl.get("mse").definition)
    x = np.linspace(-1.0, 1.0, 6, dtype=np.float32)
    t = np.linspace(0.5, -0.5, 6, dtype=np.float32)
    g, h = np.empty_like(x), np.empty_like(x)
    for w in (np.arange(6.0), np.arange(6.0)[::-1].copy(), np.full(6, 1e38), np.array(2.0)):
        for _ in range(2):  # the second call takes the validated-call path
            mse.grad_hess(x, t, sample_weight=w, out=(g, h))
            w32 = np.broadcast_to(w, 6).astype(np.float32)
            assert_close(g, 2 * w32 * (x - t))
            assert_close(h, 2 * w32)
    for bad in (np.nan, np.inf):
        w = np.arange(6.0)
        w[3] = bad
        with pytest.raises(SpecDomainError, match="NaN or infinite"):
            mse.grad_hess(x, t, sample_weight=w, out=(g, h))
    w = np.ones(6, np.float32)
    for _ in range(2):  # out= over the weights: the kernel reads a copy of them
        w[:] = 2.0
        mse.grad(x, t, sample_weight=w, reduction="sum", out=w)
        assert_close(w, 4 * (x - t))
