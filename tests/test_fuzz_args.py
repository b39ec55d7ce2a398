"""A fixed-seed slice of the argument fuzzer (tests/fuzz/args.py): no call may crash, hang or
change its result under a layout-only mutation. The long campaign is documented there."""

from __future__ import annotations

from collections import Counter

from tests.fuzz import args as fuzz

# Two losses (a scalar regression loss with a parameter; class logits, integer labels, an int
# parameter and a per-class one) keep the kernels compiled for the slice few.
LOSSES = ("huber", "sparse_cross_entropy")


def test_argument_fuzzer_slice() -> None:
    results = fuzz.campaign(120, seed=0, workers=2, timeout=120.0, losses=LOSSES)
    bad = {i: r for i, r in results.items() if r["outcome"] not in ("ok", "error")}
    assert not bad, "\n".join(f"case 0/{i}: {r}" for i, r in sorted(bad.items()))
    counts = Counter(r["outcome"] for r in results.values())
    # The slice must exercise both sides: calls that run and calls that are refused.
    assert counts["ok"] >= 15
    assert counts["error"] >= 15


def test_cases_are_reproducible() -> None:
    first, again = fuzz.make_case(3, 17, LOSSES), fuzz.make_case(3, 17, LOSSES)
    assert (first.loss, first.method, first.mutations) == (
        again.loss,
        again.method,
        again.mutations,
    )
