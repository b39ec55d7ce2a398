"""Code generation targets, by name. Each target turns a `Derived` bundle into module text."""

from __future__ import annotations

from lossdsl.codegen import cpu, cuda
from lossdsl.codegen.base import GenerateFn

TARGETS: dict[str, GenerateFn] = {
    cpu.NAME: cpu.generate,
    cuda.NAME: cuda.generate,
}
