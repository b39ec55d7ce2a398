"""Fuzzers and differential testers, runnable as long campaigns outside CI.

Each module is a campaign with its own entry point, run from the repository root:
`python -m tests.fuzz.<module> --help`. The default test run uses fixed-seed slices of them
(tests/test_fuzz_*.py). Failures found are minimised and saved under tests/regressions/.
"""
