"""Train the fraud models on generated, labelled history and save them.

    python -m examples.fraud.train [--payments 150000] [--model-dir DIR] [--onnx]

Three models: `payment` scores single payments; `window-1m` and `window-10m` score a card
holder's 1-minute and 10-minute windows. Window features for training come from the same
window stage the stream runs (through the test driver), so training and serving agree. A
window's label is whether it holds a fraudulent payment. Prints ROC AUC, precision and
recall on a held-out quarter, and writes `DIR/<model>.joblib` (and `.onnx` with --onnx).
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from examples.fraud.generator import FraudGenerator
from examples.fraud.pipelines import MODEL_DIR, PAYMENT_FEATURES, THRESHOLD, WINDOW_FEATURES, window_features
from operators import Features

TRAINING_SEED = 3  # the demo streams seed 11: the models never saw its payments


@dataclass
class Report:
    name: str
    rows: int
    positives: int
    auc: float
    precision: float
    recall: float

    def line(self) -> str:
        return (f"{self.name:<11} {self.rows:>8,} rows {self.positives:>6,} fraud   ROC AUC {self.auc:.3f}   "
                f"precision {self.precision:.2f}   recall {self.recall:.2f}  (held out, score > {THRESHOLD})")


def window_rows(size: str, payments: list[dict[str, Any]], labels: list[bool]) -> tuple[list[dict], np.ndarray]:
    """Every window of the history, computed by the pipeline's own window stage, and its label."""
    from stream.testing import TestDriver

    td = TestDriver(window_features(size))
    for i in range(0, len(payments), 10_000):
        td.feed(payments[i:i + 10_000])
    td.advance_watermark(2**62)
    fraud_at: dict[str, list[int]] = defaultdict(list)
    for p, bad in zip(payments, labels):
        if bad:
            fraud_at[p["user_id"]].append(p["ts"])
    for stamps in fraud_at.values():
        stamps.sort()

    def has_fraud(w: dict) -> bool:
        stamps = fraud_at.get(w["user_id"], [])
        i = bisect.bisect_left(stamps, w["window_start"])
        return i < len(stamps) and stamps[i] < w["window_end"]
    return td.emitted, np.array([has_fraud(w) for w in td.emitted])


def fit_and_report(name: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[Any, Report]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    model = RandomForestClassifier(n_estimators=60, max_depth=12, min_samples_leaf=3, n_jobs=1,
                                   random_state=seed).fit(X_tr, y_tr)
    p = model.predict_proba(X_te)[:, 1]
    flagged = p > THRESHOLD
    report = Report(name, len(y), int(y.sum()), roc_auc_score(y_te, p),
                    precision_score(y_te, flagged, zero_division=0), recall_score(y_te, flagged))
    return model.fit(X, y), report  # the saved model learns from all of the history


def save(model: Any, path: Path, onnx: bool = False) -> None:
    """Write atomically (a running pipeline may be reading the old file)."""
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    joblib.dump(model, tmp)
    os.replace(tmp, path)
    if onnx:
        from skl2onnx import to_onnx
        onx = to_onnx(model, np.zeros((1, model.n_features_in_), dtype=np.float32),
                      options={id(model): {"zipmap": False}})
        tmp = path.with_name(f".{path.stem}.onnx.tmp")
        tmp.write_bytes(onx.SerializeToString())
        os.replace(tmp, path.with_suffix(".onnx"))


def train(payments: int = 150_000, model_dir: Path | str = MODEL_DIR, onnx: bool = False,
          seed: int = TRAINING_SEED, out: Any = sys.stdout) -> list[Report]:
    """Generate history, train and save the three models; returns their held-out reports."""
    t0 = time.monotonic()
    rows = list(FraudGenerator(seed=seed).payments(payments))
    history, labels = [p for p, _ in rows], [bad for _, bad in rows]
    print(f"generated {len(history):,} payments of history ({sum(labels):,} fraudulent)", file=out, flush=True)
    reports = []
    y = np.array(labels)
    model, report = fit_and_report("payment", Features(PAYMENT_FEATURES).matrix(history), y)
    save(model, Path(model_dir) / "payment.joblib", onnx)
    reports.append(report)
    print(report.line(), file=out, flush=True)
    for size in ("1m", "10m"):
        windows, wy = window_rows(size, history, labels)
        model, report = fit_and_report(f"window-{size}", Features(WINDOW_FEATURES).matrix(windows), wy)
        save(model, Path(model_dir) / f"window-{size}.joblib", onnx)
        reports.append(report)
        print(report.line(), file=out, flush=True)
    print(f"saved 3 models to {model_dir} in {time.monotonic() - t0:.0f} s", file=out, flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payments", type=int, default=150_000, help="payments of history to generate")
    ap.add_argument("--model-dir", default=str(MODEL_DIR), help=f"where to save (default {MODEL_DIR})")
    ap.add_argument("--onnx", action="store_true", help="also save each model as .onnx (skl2onnx)")
    args = ap.parse_args(argv)
    train(args.payments, args.model_dir, args.onnx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
