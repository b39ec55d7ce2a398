"""The research bench: search helpers, analysis, plots and comparisons of losses.

Built on the public API only (`lossdsl.get`, `lossdsl.compile`, `Loss`, `search_space`);
matplotlib, scikit-learn and optuna are optional and imported inside the functions that use
them (`pip install lossdsl[research]`). Nothing in the core imports this package.
"""
