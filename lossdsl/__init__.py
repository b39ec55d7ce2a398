"""lossdsl: write a loss once, get fused value, gradient and Hessian kernels.

Only re-exports from `api`; see README.md for the language and the API.
"""

__version__ = "0.1.0"

from lossdsl.api import (
    InputInfo,
    Loss,
    ParamInfo,
    available,
    check_source,
    compile,
    get,
    is_builtin,
    load,
    register,
)
from lossdsl.errors import (
    DerivationError,
    KernelCompileError,
    LossDSLError,
    SpecDomainError,
    SpecNameError,
    SpecShapeError,
    SpecSyntaxError,
    UnknownLossError,
    UnsupportedError,
)
from lossdsl.penalty import Penalized
from lossdsl.phases import Partials
from lossdsl.precompile import precompile
from lossdsl.space import Dimension, LossSpace, search_space

__all__ = [
    "DerivationError",
    "Dimension",
    "InputInfo",
    "KernelCompileError",
    "Loss",
    "LossDSLError",
    "LossSpace",
    "ParamInfo",
    "Partials",
    "Penalized",
    "SpecDomainError",
    "SpecNameError",
    "SpecShapeError",
    "SpecSyntaxError",
    "UnknownLossError",
    "UnsupportedError",
    "available",
    "check_source",
    "compile",
    "get",
    "is_builtin",
    "load",
    "precompile",
    "register",
    "search_space",
]
