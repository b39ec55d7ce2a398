"""The random-spec differential tester, fixed-seed slice: generated specs against PyTorch.

Each seed draws a well-typed spec (tests/fuzz/gen.py) and compares lossdsl's value, gradient
and Hessian diagonal with PyTorch autograd on the same tree in float64 (tests/fuzz/compare.py
gives the classes and tolerances). Every spec runs the generic kernel with its parameters
overridden: every FULL_EVERY-th spec runs every check (value/gradient/Hessian, the value-only
entry, the defaults-specialised kernel, float32), every HESS_EVERY-th the Hessian too, the others
value and gradient (each compiled entry point costs about a second of Numba time). A few
specs run the CUDA kernels in a simulator worker process. Saved
regression cases (tests/regressions/miscompile-*.json) are replayed with every check.
The long campaign is `python -m tests.fuzz.specs --n 5000` (see the README's testing part).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")  # the reference; skipped only where torch is not installed
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.compare import CHECKS, run_case  # noqa: E402
from tests.fuzz.gen import DEFAULT_FEATURES, generate  # noqa: E402
from tests.fuzz.render import render_case  # noqa: E402
from tests.fuzz.specs import save_case  # noqa: E402
from tests.fuzz.worker import Worker  # noqa: E402

# Every construct the generator knows but nested totals (the campaign's default): lossdsl
# rejects total(total(...)) at check time with a place, which the tester then requires.
FEATURES: frozenset[str] = frozenset(DEFAULT_FEATURES)
SEED = 20_261_130
N_SPECS = 100
FULL_EVERY = 10
HESS_EVERY = 3
CUDA_SEEDS = range(SEED, SEED + 60, 10)
CUDA_LIMIT_S = 300.0
REGRESSIONS = ROOT / "tests" / "regressions"


def _explain(case: dict[str, Any], outcome: tuple[str, str]) -> str:
    return f"{outcome[0]}: {outcome[1]}\n{render_case(case)}\ncall: {json.dumps(case['call'])}"


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(SEED, SEED + N_SPECS))
def test_random_spec_matches_torch(seed: int) -> None:
    case = generate(seed, FEATURES)
    # The NumPy path compiles nothing: every spec checks it.
    checks: tuple[str, ...] = ("grad64", "eager")
    if seed % FULL_EVERY == 0:
        checks = CHECKS
    elif seed % HESS_EVERY == 0:
        checks = ("f64", "eager")
    outcome = run_case(case, checks)
    assert outcome == ("ok", ""), _explain(case, outcome)


@pytest.mark.torch
def test_random_specs_on_cuda_simulator() -> None:
    worker = Worker("cudasim", recycle=len(CUDA_SEEDS))
    try:
        bad = []
        for seed in CUDA_SEEDS:
            case = generate(seed, FEATURES)
            outcome = worker.run(case, ("cuda",), CUDA_LIMIT_S)
            if outcome[0] != "ok":
                bad.append(f"seed {seed}: " + _explain(case, outcome))
    finally:
        worker.close()
    assert not bad, "\n\n".join(bad)


def _replay(record: dict[str, Any]) -> tuple[str, str]:
    if record["mode"] == "cudasim":
        worker = Worker("cudasim")
        try:
            return worker.run(record["case"], ("cuda",), CUDA_LIMIT_S)
        finally:
            worker.close()
    return run_case(record["case"], CHECKS)


@pytest.mark.torch
def test_saved_regressions_replay(tmp_path: Path) -> None:
    """Every saved miscompile case now passes every check; so does a freshly saved case (the
    save/load/replay path itself)."""
    fresh = save_case(generate(SEED, FEATURES), ("ok", ""), "jit", tmp_path)
    paths = [fresh, *sorted(REGRESSIONS.glob("miscompile-*.json"))]
    bad = []
    for path in paths:
        record = json.loads(path.read_text(encoding="utf-8"))
        spec = path.with_suffix(".loss").read_text(encoding="utf-8")
        assert render_case(record["case"]) in spec, f"{path.name}: .loss and .json disagree"
        outcome = _replay(record)
        if outcome != ("ok", ""):
            bad.append(f"{path.name} (was {record['class']}): " + _explain(record["case"], outcome))
    assert not bad, "\n\n".join(bad)
