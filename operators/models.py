"""Models for `Score`: load a model file once per process, and reload it when it changes.

A model is a function from a 2-D float array (one row per record) to one score per row.
Files ending in `.onnx` run on ONNX Runtime; any other file is a scikit-learn estimator saved
with joblib. The version of a file model is the start of its content's SHA-256, so every
process that loads the same bytes reports the same version.

The cache checks the file's size, modification time and inode at most every
`check_every_s`; when they change it reads the file, and if the content changed, loads the
new model. A new file that fails to load leaves the old model in use (and is tried again on
the next change). Replace model files atomically (write elsewhere, then `mv`/`os.replace`).

>>> import numpy as np
>>> wrap_callable(lambda X: X.sum(axis=1), "sum").predict(np.array([[1.0, 2.0]])).tolist()
[3.0]
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from operators.base import OperatorUnavailable

log = logging.getLogger(__name__)

METHODS = ("auto", "predict_proba", "predict", "decision_function")


@dataclass(frozen=True)
class LoadedModel:
    """A ready model: `predict(X) -> scores` (1-D float array) and its version."""

    version: str
    kind: str  # "sklearn", "onnx" or "callable"
    predict: Callable[[np.ndarray], np.ndarray]


def _scores(y: Any, n: int, where: str) -> np.ndarray:
    """One float per row: a 1-D result as is; a 2-D one's last column (the positive class)."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, -1]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{where} returned shape {np.shape(y)} for {n} rows; expected one score per row")
    return arr


def wrap_callable(fn: Callable[[np.ndarray], Any], version: str) -> LoadedModel:
    """A plain function over the feature array (1-D scores, or 2-D: last column)."""
    return LoadedModel(version, "callable", lambda X: _scores(fn(X), len(X), f"model {version!r}"))


def _sklearn(data: bytes, method: str, version: str) -> LoadedModel:
    import joblib  # scikit-learn's own persistence; loaded only where a joblib model is used

    est = joblib.load(io.BytesIO(data))
    if method == "auto":
        method = next((m for m in ("predict_proba", "decision_function", "predict") if hasattr(est, m)), "")
    fn = getattr(est, method, None)
    if fn is None:
        raise ValueError(f"the model ({type(est).__name__}) has no {method}()")
    column = -1
    if method == "predict_proba":  # the positive class: 1 or True where the classes say so
        classes = list(getattr(est, "classes_", []))
        column = next((i for i, c in enumerate(classes) if c is True or c == 1), len(classes) - 1)
    n_in = getattr(est, "n_features_in_", None)

    def predict(X: np.ndarray) -> np.ndarray:
        if n_in is not None and X.shape[1] != n_in:
            raise ValueError(f"model {version} expects {n_in} features, the feature list gives {X.shape[1]}")
        y = fn(X)
        return _scores(y[:, column] if np.ndim(y) == 2 else y, len(X), f"{type(est).__name__}.{method}")
    return LoadedModel(version, "sklearn", predict)


def _onnx(data: bytes, version: str) -> LoadedModel:
    import onnxruntime as ort  # loaded only where an ONNX model is used

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one worker process per core already
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    prob = next((i for i, name in enumerate(outputs) if "prob" in name.lower()), 0)

    def predict(X: np.ndarray) -> np.ndarray:
        y = session.run(None, {feed: X.astype(np.float32)})[prob]
        if isinstance(y, list) and y and isinstance(y[0], dict):  # a ZipMap output: {class: p}
            y = [d.get(1, d[max(d)]) for d in y]
        return _scores(y, len(X), f"ONNX model {version}")
    return LoadedModel(version, "onnx", predict)


def load_bytes(path: str, data: bytes, method: str = "auto") -> LoadedModel:
    """Load a model from a file's bytes; its version is the content's hash."""
    version = hashlib.sha256(data).hexdigest()[:12]
    if path.endswith(".onnx"):
        return _onnx(data, version)
    return _sklearn(data, method, version)


@dataclass
class _Entry:
    model: LoadedModel
    signature: tuple[int, int, int]
    checked: float = field(default_factory=time.monotonic)


def _signature(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ModelCache:
    """Per-process models by (path, method), reloaded when the file changes."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def get(self, path: str, method: str = "auto", check_every_s: float = 1.0) -> LoadedModel:
        """The model to use for the next batch (loads it on first use; reloads if changed)."""
        key = (path, method)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and now - entry.checked < check_every_s:
            return entry.model
        with self._lock:
            entry = self._entries.get(key)
            try:
                signature = _signature(path)
            except OSError as exc:
                if entry is not None:  # the file is being replaced: keep scoring with what we have
                    entry.checked = now
                    return entry.model
                raise OperatorUnavailable(f"model file {path} cannot be read on this worker: {exc}") from exc
            if entry is not None and signature == entry.signature:
                entry.checked = now
                return entry.model
            try:
                data = Path(path).read_bytes()
                version = hashlib.sha256(data).hexdigest()[:12]
                if entry is not None and version == entry.model.version:
                    model = entry.model
                else:
                    model = load_bytes(path, data, method)
            except OperatorUnavailable:
                raise
            except Exception as exc:
                if entry is None:
                    raise OperatorUnavailable(f"model file {path} does not load: {type(exc).__name__}: {exc}") from exc
                log.warning("model file %s changed but does not load (%s: %s); still using version %s",
                            path, type(exc).__name__, exc, entry.model.version)
                entry.checked = now
                return entry.model
            if entry is not None and model is not entry.model:
                log.info("model %s: version %s replaces %s", path, model.version, entry.model.version)
            self._entries[key] = _Entry(model, signature, now)
            return model


MODELS = ModelCache()  # one per process: Dask worker processes each load a model once
