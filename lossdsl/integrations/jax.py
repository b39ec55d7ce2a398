"""JAX adapter: a lossdsl loss as a JAX function that every transform accepts.

`loss_fn(loss)` returns `f(*inputs, reduction=None, sample_weight=None, **params)` built from
the loss's array-target module (printed `jax.numpy` code, see `lossdsl/codegen/array.py`): it
runs under `jit`, `grad`, `vmap`, `jacfwd`, `jacrev` and `hessian`, on whatever device the
arrays live on (no callback, no host round trip). The per-sample loss is a `jax.custom_jvp`
whose rule uses lossdsl's derived gradient (stable forms, safe selects) for the `wrt` inputs;
higher orders differentiate that printed gradient code. Derivatives through batch totals, the
weights, parameters and the other inputs come from differentiating the printed code itself.

Semantics match the NumPy API: frequency weights (spec weight x `sample_weight`; a zero weight
drops the sample, NaN included), mean = sum(w l) / sum(w). Differences: nothing can raise inside
a trace, so a label outside the class axis gives NaN (not an error), and domains of parameters
are not checked. float16/bfloat16 inputs are computed in float32 and returned in their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

import lossdsl
from lossdsl.errors import SpecShapeError

_HALF = (jnp.float16, jnp.bfloat16)


def loss_fn(loss: lossdsl.Loss | str) -> JaxLoss:
    """A JAX function computing `loss` (a `Loss` or a registered name).

    Call it as `f(*inputs, reduction=None, sample_weight=None, **params)`: inputs in the spec's
    order (or by name), the spec's reduction unless given, parameters as numbers or arrays.
    """
    return JaxLoss(lossdsl.get(loss) if isinstance(loss, str) else loss)


class JaxLoss:
    """A loss on JAX arrays; see `loss_fn`."""

    def __init__(self, loss: lossdsl.Loss) -> None:
        self.loss = loss
        self.module: ModuleType = loss.to("array").module()
        d = loss.definition
        self.along = [i.axis is not None for i in d.inputs]
        self.ints = [i.kind == "int" for i in d.inputs]
        self.wrt = [loss.inputs.index(w) for w in d.wrt]
        # Gradients that vanish at fixed totals (Dice, Tversky) need no term in the rule.
        zero = set(self.module.ZERO_GRADS)
        live = [(j, k) for j, k in enumerate(self.wrt) if j not in zero]
        self.per_sample = _per_sample(self.module, live, self.wrt)

    def __repr__(self) -> str:
        return f"<lossdsl jax loss {self.loss.name} ({', '.join(self.loss.inputs)})>"

    def __call__(
        self, *inputs: Any, reduction: str | None = None, sample_weight: Any = None, **kw: Any
    ) -> jax.Array:
        chosen = reduction if reduction is not None else self.loss.reduction
        if chosen not in ("mean", "sum", "none"):
            raise SpecShapeError(
                f"unknown reduction {chosen!r}", hint="reduction is 'mean', 'sum' or 'none'"
            )
        given = self.loss.split_inputs(tuple(inputs), kw)
        dtype, result = self._dtypes(given)
        batch = self._batch(given)
        n = math.prod(batch)
        arrays = [self._flat(a, k, batch, n, dtype) for k, a in enumerate(given)]
        axis_len = next((a.shape[1] for a, on in zip(arrays, self.along, strict=True) if on), 1)
        params = self._params(kw, dtype, axis_len)
        args = (*arrays, *params)
        w = self.module.weight(jnp, *args).astype(dtype)
        if sample_weight is not None:
            sw = jnp.broadcast_to(jnp.asarray(sample_weight, dtype), batch).reshape(n, 1)
            w = w * sw
        totals = tuple(self.module.totals(jnp, *args, w))
        out = self.per_sample(args, totals, w)
        if chosen == "none":
            value = out.reshape(batch)
        elif chosen == "sum":
            value = _sum(out)
        else:
            value = _sum(out) / _sum(w)
        return value.astype(result)

    # -- argument handling --------------------------------------------------------------------

    def _dtypes(self, given: Sequence[Any]) -> tuple[Any, Any]:
        """(compute dtype, result dtype) from the differentiated inputs."""
        kinds = {jnp.result_type(given[k]) for k in self.wrt}
        if len(kinds) > 1:
            raise SpecShapeError(
                f"differentiated inputs of loss '{self.loss.name}' mix dtypes "
                f"({', '.join(sorted(map(str, kinds)))})"
            )
        result = next(iter(kinds))
        if not jnp.issubdtype(result, jnp.floating):
            result = jnp.result_type(float)
        return (jnp.float32 if result in _HALF else result), result

    def _batch(self, given: Sequence[Any]) -> tuple[int, ...]:
        shapes = [
            tuple(jnp.shape(a))[:-1] if on else tuple(jnp.shape(a))
            for a, on in zip(given, self.along, strict=True)
        ]
        try:
            batch = tuple(jnp.broadcast_shapes(*shapes))
        except ValueError:
            raise SpecShapeError(
                f"batch shapes of the inputs of loss '{self.loss.name}' do not broadcast "
                f"({', '.join(map(str, shapes))})"
            ) from None
        for k in self.wrt:
            if shapes[k] != batch:
                raise SpecShapeError(
                    f"input '{self.loss.inputs[k]}' has batch shape {shapes[k]} but the batch "
                    f"is {batch}",
                    hint="a differentiated input must not be broadcast",
                )
        return batch

    def _flat(self, a: Any, k: int, batch: tuple[int, ...], n: int, dtype: Any) -> jax.Array:
        x = jnp.asarray(a)
        if self.ints[k]:
            x = x.astype(jnp.int32) if not jnp.issubdtype(x.dtype, jnp.integer) else x
        else:
            x = x.astype(dtype)
        if self.along[k]:
            return jnp.broadcast_to(x, (*batch, x.shape[-1])).reshape(n, x.shape[-1])
        return jnp.broadcast_to(x, batch).reshape(n, 1)

    def _params(self, kw: dict[str, Any], dtype: Any, axis_len: int) -> list[jax.Array]:
        out = []
        for p in self.loss.definition.params:
            value = jnp.asarray(kw.pop(p.name, p.default))
            value = value.astype(jnp.int32 if p.kind == "int" else dtype)
            out.append(jnp.broadcast_to(value, (1, axis_len)) if p.axis else value)
        if kw:
            bad = next(iter(kw))
            raise SpecShapeError(f"loss '{self.loss.name}' has no parameter or input '{bad}'")
        return out


def _per_sample(
    module: ModuleType, live: Sequence[tuple[int, int]], wrt: Sequence[int]
) -> Callable[..., jax.Array]:
    """w_i * l_i (0 where w_i = 0) with lossdsl's gradient as the derivative in `wrt` inputs.

    `live` pairs (gradient number, input position) of the gradients that are not zero.
    """
    grads = {k: getattr(module, f"grad_{j}") for j, k in live}

    @jax.custom_jvp
    def per_sample(args: tuple[Any, ...], totals: tuple[Any, ...], w: jax.Array) -> jax.Array:
        return _weighted(w, module.value(jnp, *args, *totals))

    def rule(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        args, totals, w = primals
        d_args, d_totals, d_w = tangents
        keep = w != 0
        out = per_sample(args, totals, w)
        tangent = jnp.zeros_like(out)
        for k in grads:
            if not _zero(d_args[k]):
                # Masked before multiplying: a dropped sample's NaN gradient must not reach the
                # transpose (0 * NaN).
                coef = jnp.where(keep, w * grads[k](jnp, *args, *totals), 0.0)
                tangent += jnp.sum(coef * d_args[k], axis=-1, keepdims=True)
        others = [j for j, t in enumerate(d_args) if j not in wrt and not _zero(t)]
        moved = [j for j, t in enumerate(d_totals) if not _zero(t)]
        if others or moved:
            # Targets, parameters and totals: differentiate the printed value code itself.
            def value_of(xs: tuple[Any, ...], ts: tuple[Any, ...]) -> jax.Array:
                full = list(args)
                for j, x in zip(others, xs, strict=True):
                    full[j] = x
                tt = list(totals)
                for j, t in zip(moved, ts, strict=True):
                    tt[j] = t
                value: jax.Array = module.value(jnp, *full, *tt)
                return value

            _, dl = jax.jvp(
                value_of,
                (tuple(args[j] for j in others), tuple(totals[j] for j in moved)),
                (tuple(d_args[j] for j in others), tuple(d_totals[j] for j in moved)),
            )
            tangent += jnp.where(keep, w * dl, 0.0)
        if not _zero(d_w):
            value = module.value(jnp, *args, *totals)
            tangent += jnp.where(keep, value, 0.0) * d_w
        return out, tangent

    per_sample.defjvp(rule, symbolic_zeros=True)
    return per_sample


def _weighted(w: jax.Array, value: Any) -> jax.Array:
    return jnp.where(w != 0, w * value, 0.0)


def _sum(x: jax.Array) -> jax.Array:
    # As a vector: XLA's CPU backend reduces (n, 1) columns far slower (see `_batch_sum`).
    return jnp.sum(x.reshape(-1))


def _zero(t: Any) -> bool:
    return isinstance(t, SymbolicZero) or getattr(t, "dtype", None) == jax.dtypes.float0
