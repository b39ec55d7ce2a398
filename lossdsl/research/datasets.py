"""Small data sets for `compare`: scikit-learn's bundled ones and seeded synthetic ones.

Nothing is downloaded: diabetes, breast cancer, digits, iris and wine ship inside scikit-learn;
the synthetic sets (regression with outliers, imbalanced classification, anomaly detection)
are drawn from a seed. Each split standardises the features on the training part only.
scikit-learn is imported inside `load`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import lossdsl

# name -> (task, description)
DATASETS = {
    "outliers": ("regression", "linear regression, 10% gross outliers that tilt the slope"),
    "diabetes": ("regression", "scikit-learn diabetes (442 x 10)"),
    "breast_cancer": ("binary", "scikit-learn breast cancer (569 x 30)"),
    "imbalanced": ("binary", "synthetic, 10% positives"),
    "anomaly": ("binary", "synthetic anomaly detection, 5% anomalies (label 1)"),
    "iris": ("multiclass", "scikit-learn iris (150 x 4, 3 classes)"),
    "wine": ("multiclass", "scikit-learn wine (178 x 13, 3 classes)"),
    "digits": ("multiclass", "scikit-learn digits (1797 x 64, 10 classes)"),
}
DEFAULT_FOR_TASK = {"regression": "outliers", "binary": "breast_cancer", "multiclass": "iris"}


@dataclass(frozen=True)
class Split:
    """A train/test split; `coef` holds the true slopes of a synthetic linear model."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    coef: np.ndarray | None = None


def load(name: str, seed: int, outlier_fraction: float = 0.1) -> Split:
    """The data set `name`, split 70/30 with `seed`.

    Raises:
        LossDSLError: an unknown name (with close matches).
    """
    if name not in DATASETS:
        raise lossdsl.LossDSLError(
            f"unknown data set '{name}'", hint="data sets: " + ", ".join(DATASETS)
        )
    rng = np.random.default_rng(seed)
    coef = None
    if name == "outliers":
        x, y, coef = _outliers(rng, outlier_fraction)
    elif name in ("imbalanced", "anomaly"):
        x, y = _imbalanced(rng) if name == "imbalanced" else _anomaly(rng)
    else:
        x, y = _sklearn(name)
    task = DATASETS[name][0]
    order = rng.permutation(len(y))
    cut = int(0.7 * len(y))
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-12
    if coef is not None:  # keep the synthetic features' scale so slopes stay comparable
        mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    classes = int(y.max()) + 1 if task != "regression" else 1
    return Split(
        name, task, (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test], classes,
        coef,
    )  # fmt: skip


def _outliers(rng: np.random.Generator, fraction: float) -> tuple[np.ndarray, ...]:
    n, d = 600, 5
    x = rng.normal(size=(n, d))
    coef = rng.normal(scale=2.0, size=d)
    y = x @ coef + 1.0 + rng.normal(scale=0.5, size=n)
    bad = rng.random(n) < fraction
    # Gross errors that grow with the first feature: they tilt a least-squares slope.
    y[bad] += 15.0 + 10.0 * x[bad, 0]
    return x, y, coef


def _imbalanced(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, d = 1500, 8
    y = (rng.random(n) < 0.1).astype(np.int64)
    shift = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + 0.8 * y[:, None] * shift
    return x, y


def _anomaly(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, d = 1500, 8
    y = (rng.random(n) < 0.05).astype(np.int64)
    x = rng.normal(size=(n, d)) * np.where(y[:, None] == 1, 3.0, 1.0)
    # Magnitudes make anomalies linearly separable from the normal cloud.
    return np.hstack([x, x**2]), y


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {
        "diabetes": datasets.load_diabetes,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
    }[name]
    bunch = loader()
    x, y = np.asarray(bunch.data, float), np.asarray(bunch.target)
    if name == "diabetes":
        return x, (y - y.mean()) / y.std()  # standardised target: one learning rate fits all
    return x, y.astype(np.int64)
