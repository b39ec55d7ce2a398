"""PyTorch adapter: a lossdsl loss as a torch custom operator (eager, autograd, torch.compile).

`loss_fn(loss)` gives a function of tensors and `LossModule(loss, reduction=..., **params)` an
`nn.Module`; both call one `torch.library.custom_op` per loss definition (named after a digest
of its canonical IR), with a fake kernel for tracing and an autograd formula, so the loss runs
inside `torch.compile(fullgraph=True)` without a graph break and passes `torch.library.opcheck`.

Data paths. CPU tensors reach the Numba kernels as NumPy views (no copy; a non-contiguous input
is made contiguous once by the kernel call's reshape), and results come back with
`torch.from_numpy`. CUDA tensors go to the CUDA target through `__cuda_array_interface__`; the
kernels launch on the legacy default stream, so on another current stream the adapter
synchronises that stream first and the device after. float16/bfloat16 inputs are computed in
float32 and the value and gradients returned in the input dtype.

Gradients. When an input needs a gradient the forward computes value and gradient in one fused
call; backward scales the saved gradient by the incoming cotangent. `reduction="none"` of a loss
with batch totals has a non-diagonal Jacobian: its backward is an exact vector-Jacobian product
(`cotangent=`). Double backward is exact where the Hessian diagonal is the whole Hessian (one
differentiated input, no class axis, no batch total); elsewhere it raises `UnsupportedError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import lossdsl
from lossdsl import ir
from lossdsl.errors import SpecShapeError, UnsupportedError

_SIGNATURE = (
    "Tensor[] inputs, Tensor[] arrays, float[] scalars, Tensor? sample_weight, str reduction"
)
_HALF = (torch.float16, torch.bfloat16)
# Registered operators by op name: torch refuses a second registration of a name.
_OPS: dict[str, _Ops] = {}


def loss_fn(loss: lossdsl.Loss | str, wrt: str | Sequence[str] | None = None) -> TorchLoss:
    """A function of torch tensors computing `loss` (a `Loss` or a registered name).

    Call it as `f(*inputs, reduction=None, sample_weight=None, **params)`: inputs in the spec's
    order (or by name), the reduction from the spec unless given, parameters as numbers (axis
    parameters as tensors or numbers). Differentiable in every `wrt` input: the spec's, or the
    inputs `wrt` names (`Loss.with_wrt`), such as both outputs of a distillation loss.
    """
    resolved = lossdsl.get(loss) if isinstance(loss, str) else loss
    return TorchLoss(resolved if wrt is None else resolved.with_wrt(wrt))


class TorchLoss:
    """A loss callable on torch tensors; see `loss_fn`."""

    def __init__(self, loss: lossdsl.Loss) -> None:
        self.loss = loss
        self.ops = _ops(loss)

    def __repr__(self) -> str:
        return f"<lossdsl torch loss {self.loss.name} ({', '.join(self.loss.inputs)})>"

    def __call__(
        self,
        *inputs: Tensor,
        reduction: str | None = None,
        sample_weight: Tensor | None = None,
        **kw: Any,
    ) -> Tensor:
        ops = self.ops
        tensors = _assign(self.loss, inputs, kw)
        scalars, arrays = ops.parameters(kw, tensors)
        chosen = reduction if reduction is not None else self.loss.reduction
        if chosen not in ("mean", "sum", "none"):
            raise SpecShapeError(
                f"unknown reduction {chosen!r}", hint="reduction is 'mean', 'sum' or 'none'"
            )
        with_grad = torch.is_grad_enabled() and any(tensors[k].requires_grad for k in ops.wrt)
        op = ops.forward_grad if with_grad else ops.forward
        out: list[Tensor] = op(tensors, arrays, scalars, sample_weight, chosen)
        return out[0]


class LossModule(nn.Module):
    """`nn.Module` form: `LossModule("huber", delta=0.5, reduction="sum")(pred, target)`.

    Parameters given here are fixed for the module; `forward` takes the inputs and an optional
    `sample_weight`. `wrt` as for `loss_fn`.
    """

    def __init__(
        self,
        loss: lossdsl.Loss | str,
        reduction: str | None = None,
        wrt: str | Sequence[str] | None = None,
        **params: Any,
    ) -> None:
        super().__init__()
        self.fn = loss_fn(loss, wrt)
        self.reduction = reduction
        self.params = params

    def forward(self, *inputs: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return self.fn(
            *inputs, reduction=self.reduction, sample_weight=sample_weight, **self.params
        )

    def extra_repr(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.fn.loss.name}, reduction={self.reduction!r}" + (
            f", {shown}" if shown else ""
        )


def _assign(loss: lossdsl.Loss, inputs: Sequence[Tensor], kw: dict[str, Any]) -> list[Tensor]:
    out = loss.split_inputs(tuple(inputs), kw)
    for name, t in zip(loss.inputs, out, strict=True):
        if not isinstance(t, Tensor):
            raise SpecShapeError(
                f"input '{name}' of loss '{loss.name}' must be a torch tensor, "
                f"got {type(t).__name__}"
            )
    return out


def op_name(loss: lossdsl.Loss) -> str:
    """The torch operator name of a loss: its name and a digest of its canonical definition."""
    digest = hashlib.sha256(ir.fingerprint(loss.definition).encode()).hexdigest()[:16]
    return f"lossdsl::{loss.name}_{digest}"


def _ops(loss: lossdsl.Loss) -> _Ops:
    name = op_name(loss)
    if name not in _OPS:
        _OPS[name] = _Ops(loss, name)
    return _OPS[name]


class _Ops:
    """The custom operators of one loss definition and their fake and autograd rules.

    `forward` returns [value]; `forward_grad` returns [value, *gradients]; `vjp` takes a
    cotangent and returns the gradients; `hess` returns Hessian diagonals.
    """

    def __init__(self, loss: lossdsl.Loss, name: str) -> None:
        d = loss.definition
        self.loss = loss
        self.names = loss.inputs
        self.wrt = [self.names.index(w) for w in d.wrt]
        self.along = [i.axis is not None for i in d.inputs]
        self.ints = [i.kind == "int" for i in d.inputs]
        self.totals = loss.has_totals
        self.diagonal = len(d.wrt) == 1 and not any(self.along) and not self.totals
        self.scalar_params = [p for p in d.params if p.axis is None]
        self.array_params = [p for p in d.params if p.axis is not None]
        self._cuda: lossdsl.Loss | None = None
        lib = torch.library
        self.forward = lib.custom_op(
            name, self._forward, mutates_args=(), schema=f"({_SIGNATURE}) -> Tensor[]"
        )
        self.forward_grad = lib.custom_op(
            name + "_grad",
            self._forward_grad,
            mutates_args=(),
            schema=f"({_SIGNATURE}) -> Tensor[]",
        )
        self.vjp = lib.custom_op(
            name + "_vjp",
            self._vjp,
            mutates_args=(),
            schema=f"({_SIGNATURE}, Tensor cotangent) -> Tensor[]",
        )
        self.hess = lib.custom_op(
            name + "_hess", self._hess, mutates_args=(), schema=f"({_SIGNATURE}) -> Tensor[]"
        )
        self.forward.register_fake(lambda *a: self._fake(*a, grads=False))
        self.forward_grad.register_fake(lambda *a: self._fake(*a, grads=True))
        self.vjp.register_fake(lambda *a: self._fake_grads(a[0]))
        self.hess.register_fake(lambda *a: self._fake_grads(a[0]))
        self.forward.register_autograd(self._backward, setup_context=self._setup)
        self.forward_grad.register_autograd(self._backward, setup_context=self._setup)
        self.vjp.register_autograd(self._vjp_backward, setup_context=self._vjp_setup)
        self.hess.register_autograd(self._no_double, setup_context=None)

    # -- parameters ---------------------------------------------------------------------------

    def parameters(
        self, kw: dict[str, Any], tensors: list[Tensor]
    ) -> tuple[list[float], list[Tensor]]:
        """Scalar parameters as floats and axis parameters as tensors, in definition order."""
        scalars = [float(kw.pop(p.name, p.default)) for p in self.scalar_params]
        arrays = []
        if self.array_params:
            like = tensors[self.along.index(True)]
            for p in self.array_params:
                value = kw.pop(p.name, p.default)
                if not isinstance(value, Tensor):
                    value = torch.as_tensor(np.asarray(value, dtype=np.float64), device=like.device)
                if value.dim() == 0:
                    value = value.expand(like.shape[-1])
                arrays.append(value)
        if kw:
            bad = next(iter(kw))
            raise SpecShapeError(f"loss '{self.loss.name}' has no parameter or input '{bad}'")
        return scalars, arrays

    # -- implementations ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        inputs: list[Tensor],
        arrays: list[Tensor],
        scalars: list[float],
        sample_weight: Tensor | None,
        reduction: str,
        **extra: Any,
    ) -> Any:
        """Run a `Loss` method on the inputs' device (NumPy views of CPU tensors, CUDA tensors
        as they are)."""
        cuda = inputs[0].device.type == "cuda"
        convert = _cuda_array if cuda else _host_array
        args = [convert(t, integer) for t, integer in zip(inputs, self.ints, strict=True)]
        kw: dict[str, Any] = {p.name: v for p, v in zip(self.scalar_params, scalars, strict=True)}
        kw.update(
            {p.name: _host_array(a, False) for p, a in zip(self.array_params, arrays, strict=True)}
        )
        weight = None if sample_weight is None else convert(sample_weight, False)
        extra = {k: convert(v, False) if isinstance(v, Tensor) else v for k, v in extra.items()}
        if not cuda:
            fn = getattr(self.loss, method)
            return fn(*args, reduction=reduction, sample_weight=weight, **kw, **extra)
        if self._cuda is None:
            self._cuda = self.loss.to("cuda")
        fn = getattr(self._cuda, method)
        return _on_current_stream(
            lambda: fn(*args, reduction=reduction, sample_weight=weight, **kw, **extra)
        )

    def _result_dtype(self, inputs: list[Tensor]) -> torch.dtype:
        return inputs[self.wrt[0]].dtype

    def _forward(self, *a: Any) -> list[Tensor]:
        inputs = a[0]
        value = self._call("__call__", *a)
        return [_to_torch(value, self._result_dtype(inputs), inputs[0].device)]

    def _forward_grad(self, *a: Any) -> list[Tensor]:
        inputs = a[0]
        value, grads = self._call("value_and_grad", *a)
        return self._tensors(inputs, [value, *_as_list(grads)])

    def _vjp(self, *a: Any) -> list[Tensor]:
        inputs, cotangent = a[0], a[-1]
        reduction = a[4]
        if reduction != "none":
            grads = _as_list(self._call("grad", *a[:-1]))
            return [g * cotangent for g in self._tensors(inputs, grads)]
        return self._tensors(inputs, _as_list(self._per_sample_vjp(a[:-1], cotangent)))

    def _per_sample_vjp(self, a: tuple[Any, ...], cotangent: Tensor) -> Any:
        """Gradients of sum_i cotangent_i * out_i for reduction='none' (exact with totals)."""
        return self._call("grad", *a, cotangent=cotangent)

    def _hess(self, *a: Any) -> list[Tensor]:
        inputs, reduction = a[0], a[4]
        # Without totals the Hessian of the per-sample outputs is that of their sum.
        args = (*a[:4], "sum" if reduction == "none" else reduction)
        return self._tensors(inputs, _as_list(self._call("hessian_diag", *args)))

    def _tensors(self, inputs: list[Tensor], arrays: list[Any]) -> list[Tensor]:
        dtype = self._result_dtype(inputs)
        return [_to_torch(x, dtype, inputs[0].device) for x in arrays]

    # -- fake (meta) kernels ------------------------------------------------------------------

    def _fake(self, inputs: list[Tensor], *rest: Any, grads: bool) -> list[Tensor]:
        reduction = rest[3]
        first = inputs[self.wrt[0]]
        batch = first.shape[:-1] if self.along[self.wrt[0]] else first.shape
        value = first.new_empty(batch if reduction == "none" else ())
        return [value, *self._fake_grads(inputs)] if grads else [value]

    def _fake_grads(self, inputs: list[Tensor]) -> list[Tensor]:
        dtype = inputs[self.wrt[0]].dtype
        return [inputs[k].new_empty(inputs[k].shape, dtype=dtype) for k in self.wrt]

    # -- autograd -----------------------------------------------------------------------------

    def _setup(self, ctx: Any, inputs: tuple[Any, ...], output: list[Tensor]) -> None:
        tensors, arrays, scalars, weight, reduction = inputs
        saved = [*tensors, *arrays, *output[1:]]
        if weight is not None:
            saved.append(weight)
        ctx.save_for_backward(*saved)
        ctx.layout = (len(tensors), len(arrays), len(output) - 1, weight is not None)
        ctx.scalars, ctx.reduction = scalars, reduction
        # The fused gradients are a cache for backward, not outputs anyone differentiates (and
        # no batch of zeros is made as their incoming gradient).
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)

    def _backward(self, ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
        n_in, n_arr, n_grad, weighted = ctx.layout
        saved = ctx.saved_tensors
        tensors, arrays = list(saved[:n_in]), list(saved[n_in : n_in + n_arr])
        kept = list(saved[n_in + n_arr : n_in + n_arr + n_grad])
        weight = saved[-1] if weighted else None
        out: list[Tensor | None] = [None] * n_in
        cot = grads[0]
        if cot is not None:
            fast = kept and (ctx.reduction != "none" or not self.totals)
            # Under create_graph the gradient must itself be differentiable: the vjp operator
            # is (see _vjp_backward); the saved fused gradient is a constant.
            if fast and not torch.is_grad_enabled():
                first = [self._scale(cot, g, k) for g, k in zip(kept, self.wrt, strict=True)]
            else:
                first = self.vjp(tensors, arrays, ctx.scalars, weight, ctx.reduction, cot)
            for k, g in zip(self.wrt, first, strict=True):
                out[k] = g
        return out, [None] * n_arr, _no_grad(ctx.scalars), None, None

    def _scale(self, cot: Tensor, grad: Tensor, k: int) -> Tensor:
        """cotangent x saved gradient: a scalar for mean/sum, per sample for 'none'."""
        if _unit(cot):
            # `loss.backward()`: the saved gradient is the answer; scaling it by 1 would write
            # a fresh copy of every gradient (autograd copies it itself if it is still shared).
            return grad
        if cot.dim() and self.along[k]:
            return cot.unsqueeze(-1) * grad
        return cot * grad

    def _vjp_setup(self, ctx: Any, inputs: tuple[Any, ...], output: list[Tensor]) -> None:
        tensors, arrays, scalars, weight, reduction, cot = inputs
        ctx.save_for_backward(*tensors, cot, *([] if weight is None else [weight]))
        ctx.n_arrays, ctx.arrays, ctx.scalars, ctx.reduction = (
            len(arrays),
            arrays,
            scalars,
            reduction,
        )
        ctx.weighted = weight is not None

    def _vjp_backward(self, ctx: Any, grads: list[Tensor | None]) -> tuple[Any, ...]:
        """Double backward: exact when the Hessian is its diagonal (see `diagonal`)."""
        if not self.diagonal:
            self._no_double(ctx)
        saved = ctx.saved_tensors
        n_in = len(self.names)
        tensors, cot = list(saved[:n_in]), saved[n_in]
        weight = saved[n_in + 1] if ctx.weighted else None
        call = (tensors, ctx.arrays, ctx.scalars, weight, ctx.reduction)
        out: list[Tensor | None] = [None] * n_in
        v = grads[0]
        d_cot = None
        if v is not None:
            k = self.wrt[0]
            out[k] = v * cot * self.hess(*call)[0]
            unit = self.vjp(*call, torch.ones_like(cot))[0]
            d_cot = v * unit if cot.dim() else (v * unit).sum()
        return out, [None] * ctx.n_arrays, _no_grad(ctx.scalars), None, None, d_cot

    def _no_double(self, ctx: Any, *grads: Any) -> Any:
        raise UnsupportedError(
            f"double backward of loss '{self.loss.name}' is not available: its Hessian is not "
            "diagonal (several differentiated inputs, a class axis or a batch total)",
            hint="double backward is exact for one-input elementwise losses (mse, huber, ...)",
        )


def _host_array(t: Tensor, integer: bool) -> np.ndarray:
    """A NumPy view of a CPU tensor (half precision widened to float32)."""
    t = t.detach()
    if t.dtype in _HALF:
        t = t.float()
    if t.device.type != "cpu":
        t = t.cpu()  # an axis parameter given on the GPU: small, validated on the host
    return t.numpy()


def _cuda_array(t: Tensor, integer: bool) -> Tensor:
    t = t.detach()
    if t.dtype in _HALF:
        t = t.float()
    return t if t.is_contiguous() else t.contiguous()


def _to_torch(x: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype)


def _unit(cot: Tensor) -> bool:
    """Whether `cot` is the scalar 1, read only where that costs no sync or graph break: a
    plain CPU tensor (not a fake or functional one of a trace) outside torch.compile."""
    if type(cot) is not Tensor or cot.dim() or cot.device.type != "cpu":
        return False
    if torch.compiler.is_compiling():
        return False
    return bool(cot.item() == 1.0)


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, tuple) else [x]


def _on_current_stream(run: Callable[[], Any]) -> Any:
    """Order a kernel launch (on the legacy default stream) after torch's current stream."""
    stream = torch.cuda.current_stream()
    if stream.cuda_stream == 0:
        return run()
    stream.synchronize()
    result = run()
    torch.cuda.synchronize()
    return result


def _no_grad(scalars: list[float]) -> list[None] | None:
    """The gradient of a float[] argument as torch's structure check wants it: an empty list
    stays a list, a non-empty one is a single leaf."""
    return None if scalars else []
