"""What the XGBoost and LightGBM adapters share: a spec bound to labels, Hessian policies, start.

`Booster` binds a `Loss` with one differentiated input (the raw score) and one label input to a
boosting library's view of the data: scores of shape (n,) or (n, K), float labels cast as the
spec needs (integer labels; one-hot rows for a target with the class axis), optional sample
weights. It returns per-sample gradients and Hessian diagonals of the weighted sum (never
divided by N) after a Hessian policy, and the loss's optimal constant score. The libraries'
calling conventions live in `xgboost.py` and `lightgbm.py`; neither library is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossdsl import Loss, LossDSLError, SpecShapeError, get
from lossdsl.integrations import start
from lossdsl.integrations.start import Totals

POLICIES = ("exact", "clip", "fisher", "xgboost", "lightgbm")


@dataclass(frozen=True)
class _Rule:
    """A library's convention for one built-in: how its gradient and Hessian differ from exact."""

    scale: float = 1.0  # gradient and Hessian (the loss is scale * spec)
    hess: float = 1.0  # the Hessian only
    floor: float = 0.0  # per-sample Hessian floor (before weighting)
    classes: bool = False  # Hessian times K / (K - 1) (LightGBM multiclass)
    poisson: bool = False  # Hessian times exp(max_delta_step) (count:poisson, poisson)


# The built-in objectives of each library, as rules on the matching lossdsl built-in.
_LIBRARY: dict[str, dict[str, _Rule]] = {
    "xgboost": {
        "mse": _Rule(scale=0.5),  # reg:squarederror is r^2 / 2
        "bce_with_logits": _Rule(floor=1e-16),  # binary:logistic
        "sparse_cross_entropy": _Rule(hess=2.0, floor=1e-16),  # multi:softprob: 2 p (1 - p)
        "cross_entropy": _Rule(hess=2.0, floor=1e-16),
        "poisson_nll": _Rule(poisson=True),  # count:poisson
        "squared_log_error": _Rule(floor=1e-6),  # reg:squaredlogerror
        "quantile": _Rule(floor=1.0),  # reg:quantileerror (before its leaf refresh)
        "mae": _Rule(floor=1.0),  # reg:absoluteerror (before its leaf refresh)
    },
    "lightgbm": {
        "mse": _Rule(scale=0.5),  # regression (l2) is r^2 / 2
        "huber": _Rule(floor=1.0),  # huber: Hessian 1 everywhere
        "sparse_cross_entropy": _Rule(classes=True),  # multiclass: K / (K - 1) p (1 - p)
        "cross_entropy": _Rule(classes=True),
        "poisson_nll": _Rule(poisson=True),  # poisson
        "quantile": _Rule(floor=1.0),  # quantile (before its leaf renewal)
        "mae": _Rule(floor=1.0),  # l1 (before its leaf renewal)
    },
}

# The spec's `activation` as the mean of the label given the raw score (for `fisher`).
_MEANS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda s: s,
    "exp": np.exp,
    "sigmoid": lambda s: 0.5 * (1.0 + np.tanh(0.5 * s)),
    "softmax": lambda s: np.exp(s - np.logaddexp.reduce(s, axis=-1, keepdims=True)),
}


class Booster:
    """A loss bound to a boosting library's scores, labels and weights.

    Args:
        loss: a `Loss` or a registered loss name. It needs one differentiated input (the raw
            score) and one other input (the label).
        hessian: the Hessian policy, one of `POLICIES` (see the README's table).
        hess_floor: the floor of the `clip` policy, in Hessian units per unit weight.
        max_delta_step: the Poisson Hessian convention of the `xgboost` and `lightgbm`
            policies (their Hessian is exp(score + max_delta_step)).
        params: the loss's parameters (kernel arguments: changing them compiles nothing).

    Raises:
        LossDSLError: an unknown policy, or a loss that does not fit the (score, label) form.
    """

    def __init__(
        self,
        loss: Loss | str,
        *,
        hessian: str = "exact",
        hess_floor: float = 1.0,
        max_delta_step: float = 0.7,
        **params: Any,
    ) -> None:
        self.loss = get(loss) if isinstance(loss, str) else loss
        if hessian not in POLICIES:
            raise LossDSLError(
                f"unknown Hessian policy {hessian!r}", hint=f"policies: {', '.join(POLICIES)}"
            )
        if not hess_floor > 0:
            raise LossDSLError(f"hess_floor must be > 0, got {hess_floor!r}")
        self.hessian = hessian
        self.hess_floor = float(hess_floor)
        self.max_delta_step = float(max_delta_step)
        self.loss_params = params
        self._score, self._label = _score_and_label(self.loss)
        # Whether the raw score has the spec's class axis (one score per class).
        self.multiclass: bool = self._score.axis is not None
        # Arrays reused from round to round, by role, shape and dtype.
        self._buffers: dict[Any, Any] = {}
        self._cuda: Loss | None = None
        if hessian == "fisher":
            _check_fisher(self.loss, self._label)
        self._fixed_rule = _rule(hessian, self.name, self.hess_floor)

    @property
    def name(self) -> str:
        return self.loss.name

    def __getstate__(self) -> dict[str, Any]:
        # Scratch buffers stay behind; the Loss pickles by definition (kernels from the cache).
        return {**self.__dict__, "_buffers": {}, "_cuda": None}

    # -- per round ------------------------------------------------------------------------------

    def gradients(self, score: Any, label: Any, weight: Any = None) -> tuple[Any, Any]:
        """Per-sample gradient and Hessian diagonal, after the policy, shaped like `score`.

        The arrays returned are reused by the next call with the same shape and dtype (the
        libraries copy them at once).
        """
        label = _cast_labels(label, score, self._label, self.multiclass)
        if weight is not None:
            weight = _weights(weight, score, self.multiclass)
        if _on_device(score):
            # Labels and weights come from the library on the host: moved once per call.
            if weight is not None:
                weight = _to_device(weight)
            label = _to_device(label)
            grad, hess = self._on_cuda().grad_hess(
                score, label, sample_weight=weight, **self.loss_params
            )
        else:
            score = np.ascontiguousarray(score)
            key = (score.shape, score.dtype)
            out = self._buffers.get(key)
            if out is None:
                out = self._buffers[key] = (np.empty_like(score), np.empty_like(score))
            grad, hess = self.loss.grad_hess(
                score, label, sample_weight=weight, out=out, **self.loss_params
            )
        rule = self._fixed_rule
        if rule is None:  # the spec's own derivatives (every `exact` objective)
            return grad, hess
        return self._policy(rule, grad, hess, score, weight)

    def scratch(self, role: str, like: np.ndarray) -> np.ndarray:
        """An array shaped and typed like `like`, kept for `role` and reused every round."""
        key = (role, like.shape, like.dtype)
        a = self._buffers.get(key)
        if a is None:
            a = self._buffers[key] = np.empty_like(like)
        return a

    def _on_cuda(self) -> Loss:
        """The same loss on the CUDA target (CuPy / Numba device scores), made once."""
        if self._cuda is None:
            self._cuda = self.loss.to("cuda")
        return self._cuda

    def labels(self, label: Any, score: Any) -> Any:
        """The library's float labels as the spec's label input needs them."""
        return _cast_labels(label, score, self._label, self.multiclass)

    def _policy(
        self, rule: _Rule, grad: Any, hess: Any, score: Any, weight: Any
    ) -> tuple[Any, Any]:
        if rule.scale != 1.0:
            grad *= rule.scale
        factor = rule.scale * rule.hess
        if rule.classes:
            k = score.shape[-1]
            factor *= k / (k - 1)
        if rule.poisson:
            factor *= math.exp(self.max_delta_step)
        if factor != 1.0:
            hess *= factor
        if self.hessian == "fisher":
            hess[...] = self._fisher(score, weight)
        if rule.floor > 0:
            if weight is not None and np.ndim(weight) < np.ndim(hess):
                weight = np.reshape(weight, (-1, 1))
            floor = rule.floor if weight is None else rule.floor * weight
            np.maximum(hess, floor, out=hess)
        return grad, hess

    def _fisher(self, score: np.ndarray, weight: Any) -> np.ndarray:
        # The Hessian at label = E[label | score]: the expected Hessian of a loss linear in
        # the label (a GLM likelihood: Poisson, Gamma, Tweedie, logistic, Gaussian).
        mean = _MEANS[self.loss.activation](score.astype(np.float64)).astype(score.dtype)
        _, hess = self.loss.grad_hess(score, mean, sample_weight=weight, **self.loss_params)
        return hess  # type: ignore[no-any-return]

    # -- start score ---------------------------------------------------------------------------

    def start_score(
        self, label: Any, weight: Any = None, classes: int | None = None, steps: int | None = None
    ) -> Any:
        """The constant raw score minimising the weighted loss: a float, or one per class.

        Found by safeguarded Newton steps on the spec itself (exact derivatives, bisection
        where the Hessian vanishes, as for quantiles). Dask arrays are reduced chunk by chunk
        on the cluster. For a shift-invariant loss (softmax) the minimiser of least norm.
        `steps=1` is instead one Newton step from 0: XGBoost's intercept for objectives without
        a closed form (reg:pseudohubererror).
        """
        k = classes if self.multiclass else None
        if self.multiclass and not k:
            raise SpecShapeError(
                f"loss '{self.name}' scores K classes: pass classes=K to start_score"
            )
        totals = _totals(self, label, weight, k)
        if steps is not None:
            c = start.newton_steps(totals, np.zeros(k or 1), steps)
            return c if k else float(c[0])
        if k is None:
            return start.solve_scalar(totals, self._first_guess(label, weight))
        return start.least_norm(totals, start.solve_vector(totals, np.zeros(k)))

    def _first_guess(self, label: Any, weight: Any) -> float:
        if self._label.kind == "int":
            return 0.0
        m = float(_weighted_mean(label, weight))
        act = self.loss.activation
        if act == "exp":
            return math.log(m) if m > 0 else 0.0
        if act == "sigmoid":
            m = min(max(m, 1e-12), 1 - 1e-12)
            return math.log(m / (1 - m))
        return m if act == "identity" and math.isfinite(m) else 0.0


# -- binding ---------------------------------------------------------------------------------


def _rule(hessian: str, name: str, hess_floor: float) -> _Rule | None:
    """The policy's rule for this loss; None where it keeps the exact derivatives."""
    if hessian == "clip":
        return _Rule(floor=hess_floor)
    if hessian == "fisher":
        return _Rule()
    rule = _LIBRARY.get(hessian, {}).get(name)
    return None if rule is None or rule == _Rule() else rule


def _score_and_label(loss: Loss) -> tuple[Any, Any]:
    inputs = loss.definition.inputs
    if len(loss.wrt) != 1 or len(inputs) != 2:
        raise LossDSLError(
            f"loss '{loss.name}' has inputs ({', '.join(loss.inputs)}) differentiated in "
            f"({', '.join(loss.wrt)}); a boosting objective needs (score, label), score "
            "differentiated",
            hint="wrap it: loss obj(score, label): return my_loss(score, label; ...)",
        )
    if loss.has_totals:
        # A booster fits each tree to per-sample (g, h) as if the loss were a sum of
        # per-sample terms. Through total(...) every sample's loss depends on the whole
        # batch: the Hessian is dense, its diagonal alone is no Newton step (it may vanish or
        # change sign), and distributed training would take the totals per worker.
        raise LossDSLError(
            f"loss '{loss.name}' uses batch totals (total(...)): each sample's gradient "
            "depends on the whole batch and its Hessian is not diagonal, so it is no "
            "per-sample boosting objective",
            hint="boost a per-sample loss (bce_with_logits, sigmoid_focal for masks) and "
            "report this one as a metric (lossdsl.get(name)(scores, labels))",
        )
    score = loss.definition.input(loss.wrt[0])
    label = next(i for i in inputs if i.name != score.name)
    return score, label


def _check_fisher(loss: Loss, label: Any) -> None:
    if loss.activation not in _MEANS or label.kind == "int":
        raise LossDSLError(
            f"the fisher policy needs a real label and an activation of "
            f"{', '.join(_MEANS)}; loss '{loss.name}' has {label.kind} label "
            f"'{label.name}' and activation {loss.activation}",
            hint="softmax cross-entropy with integer labels: its exact Hessian is already "
            "the expected one (use 'exact')",
        )


def _cast_labels(label: Any, score: Any, spec: Any, multiclass: bool) -> Any:
    if type(label) is np.ndarray and spec.kind != "int" and label.shape == score.shape:
        return label  # real labels shaped as the scores: nothing to cast
    if _on_device(label):
        if spec.kind == "int" and np.dtype(label.dtype).kind == "f":
            host = label.copy_to_host() if hasattr(label, "copy_to_host") else label.get()
            return _to_device(_integer_labels(host))
        return label
    y = np.asarray(label)
    if spec.kind == "int":
        return _integer_labels(y)
    if multiclass and spec.axis is not None and y.ndim == 1:
        k = score.shape[-1]
        onehot = np.zeros((y.shape[0], k), score.dtype)
        onehot[np.arange(y.shape[0]), _integer_labels(y)] = 1
        return onehot
    if y.size == math.prod(score.shape) and y.shape != score.shape:
        return y.reshape(score.shape)
    return y


def _integer_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "iu":
        return y
    ints = y.astype(np.int64)
    if not np.array_equal(ints, y):
        raise SpecShapeError(
            "labels must be whole numbers (class indices) for this loss",
            hint="encode classes as 0 .. K-1",
        )
    return ints


def _weights(weight: Any, score: Any, multiclass: bool) -> Any:
    if weight is None or (hasattr(weight, "size") and weight.size == 0):
        return None
    if _on_device(weight):
        return weight
    w = np.asarray(weight)
    if len(score.shape) == 2 and not multiclass and w.ndim == 1:
        return w.reshape(-1, 1)  # one weight per row of a multi-output score
    return w


def _on_device(a: Any) -> bool:
    """CuPy, PyTorch CUDA and Numba device arrays (and the simulator's stand-ins)."""
    if type(a) is np.ndarray:
        return False
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def _to_device(a: Any) -> Any:
    if _on_device(a):
        return a
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def _weighted_mean(label: Any, weight: Any) -> Any:
    if weight is None:
        return label.mean()
    return (label * weight).sum() / weight.sum()


# -- start score: totals ---------------------------------------------------------------------


def _totals(b: Booster, label: Any, weight: Any, k: int | None) -> Totals:
    """c -> (value, summed gradient, summed Hessian) at the constant score c."""
    if type(label).__module__.startswith("dask"):
        from lossdsl.integrations.dask import dask_totals

        return dask_totals(b, label, weight, k)
    y = np.asarray(label, dtype=np.float64)
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    return lambda c: block_totals(b, y, w, c, k)


def block_totals(
    b: Booster, label: np.ndarray, weight: np.ndarray | None, c: np.ndarray, k: int | None
) -> tuple[float, np.ndarray, np.ndarray]:
    """The totals of one block of labels (and weights) at the constant score c."""
    n = label.shape[0]
    shape = (n,) if k is None else (n, k)
    score = np.empty(shape)
    score[...] = c
    y = b.labels(label, score)
    v, g, h = b.loss.value_grad_hess(
        score, y, reduction="sum", sample_weight=weight, **b.loss_params
    )
    return float(v), np.atleast_1d(g.sum(axis=0)), np.atleast_1d(h.sum(axis=0))
