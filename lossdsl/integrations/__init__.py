"""Adapters from lossdsl losses to other libraries (XGBoost, LightGBM, Dask); each imports its
library inside the functions that need it and uses only lossdsl's public API."""
