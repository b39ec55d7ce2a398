"""L1 / L2 penalties on a parameter vector, to add to any loss (regularised objectives).

`Penalized` wraps a `Loss`: its value is the loss plus `l1 * sum|theta| + l2 * sum theta^2`
(the convention of keras.regularizers.L1L2; torch's weight_decay=wd is l2 = wd / 2), and it
returns the gradient with respect to the loss inputs and, separately, with respect to theta.
The penalty is itself a spec compiled by lossdsl, so it gets the same kernels and the same
derivative rules (|theta| has gradient sign(theta), 0 at 0). No model or optimiser here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossdsl import api

_PENALTY_SPEC = """\
# Elastic-net penalty on a parameter vector, summed: l1 * |theta| + l2 * theta^2 per entry.
loss elastic_net(theta; l1: real = 0.0 >= 0, l2: real = 0.0 >= 0):
    \"\"\"L1 + L2 penalty (keras.regularizers.L1L2).\"\"\"
    task any
    return l1 * abs(theta) + l2 * theta^2
    reduce sum
"""

_PENALTY: api.Loss | None = None


def elastic_net() -> api.Loss:
    """The compiled penalty loss `elastic_net(theta; l1, l2)` (reduce sum), built once."""
    global _PENALTY
    if _PENALTY is None:
        _PENALTY = api.compile(_PENALTY_SPEC)
    return _PENALTY


class Penalized:
    """`loss(inputs) + l1 * ||theta||_1 + l2 * ||theta||_2^2` for a parameter vector theta.

    Args:
        loss: any compiled loss.
        l1: weight of the L1 penalty, >= 0.
        l2: weight of the squared L2 penalty, >= 0.
    """

    def __init__(self, loss: api.Loss, l1: float = 0.0, l2: float = 0.0) -> None:
        self.loss = loss
        self.l1 = l1
        self.l2 = l2
        self._penalty = elastic_net()
        # Checks the domains now, so a bad weight fails at construction, not at the first step.
        self._penalty(np.zeros(1), l1=l1, l2=l2)

    def __call__(self, *inputs: Any, theta: Any, **kw: Any) -> Any:
        """The penalised objective (the loss reduced as `kw` says, plus the penalty)."""
        return self.loss(*inputs, **kw) + self.penalty(theta)

    def penalty(self, theta: Any) -> Any:
        return self._penalty(_vector(theta), l1=self.l1, l2=self.l2)

    def value_and_grad(self, *inputs: Any, theta: Any, **kw: Any) -> tuple[Any, Any, Any]:
        """(objective, gradient of the loss w.r.t. its inputs, gradient w.r.t. theta).

        The loss does not depend on theta here; a caller that computed the inputs from theta
        (a model) chains the input gradient through its own Jacobian and adds the third value.
        """
        value, grads = self.loss.value_and_grad(*inputs, **kw)
        theta = _vector(theta)
        pv, pg = self._penalty.value_and_grad(theta, l1=self.l1, l2=self.l2)
        return value + pv, grads, pg


def _vector(theta: Any) -> np.ndarray:
    a = np.asarray(theta)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
