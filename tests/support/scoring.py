"""Small real models for the Score tests: a scikit-learn classifier saved with joblib, and the
same classifier converted to ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FEATURES = ["amount", "n"]


def training_data(seed: int = 0, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(0, 100, rows), rng.integers(0, 10, rows)]).astype(np.float64)
    y = ((X[:, 0] > 60) | (X[:, 1] > 7)).astype(int)
    return X, y


def fit(seed: int = 0, C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    X, y = training_data(seed)
    return LogisticRegression(C=C, max_iter=500).fit(X, y)


def save_joblib(model, path: Path) -> Path:
    """Write atomically, as a user replacing a model file should."""
    import joblib
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump(model, tmp)
    os.replace(tmp, path)
    return path


def save_onnx(model, path: Path) -> Path:
    from skl2onnx import to_onnx
    onx = to_onnx(model, np.zeros((1, len(FEATURES)), dtype=np.float32),
                  options={id(model): {"zipmap": False}})
    path.write_bytes(onx.SerializeToString())
    return path
