"""The fraud-detection pipelines: per-payment scoring, and per-holder window features scored
into alerts.

    payments ─┬─ Score(payment model) ─────────────────────────────► payment-scores (one per payment)
              └─ signals ─ key_by user ─┬─ 1-min tumbling ─ features ─ Score ─ score > t ─► fraud-alerts
                                        └─ 10-min hopping ─ features ─ Score ─ score > t ─► fraud-alerts

Train the models first (`python -m examples.fraud.train`), then run any of them:

    stream run examples.fraud.pipelines:payments --bootstrap 127.0.0.1:9092 --create-topics 4
    stream run examples.fraud.pipelines:windows_1m --bootstrap 127.0.0.1:9092 --app-id fraud-1m

To swap in your own model, save it (joblib or .onnx) to the path the pipeline reads, or
pass `model_dir=`: it must take the feature columns below, in order. Workers pick up a
replaced file between batches (replace it atomically: write elsewhere, then `mv`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from examples.fraud.generator import CATEGORIES
from operators import ApproxDistinct, Count, Max, OneHot, Ratio, Same, Score, Sum, col
from operators.features import Feature
from stream import Pipeline
from stream.pipeline import Hopping, Tumbling
from stream.windows.specs import seconds

INPUT, SCORES, ALERTS = "card-payments", "payment-scores", "fraud-alerts"
MODEL_DIR = Path(os.environ.get("FRAUD_MODEL_DIR", Path(__file__).parent / "models"))
THRESHOLD = 0.5  # alert when the model's fraud probability is above this

# What the per-payment model sees: the payment alone, with its profile enrichment.
PAYMENT_FEATURES: list[str | Feature] = ["amount", Ratio("amount", "avg_amount"), Same("country", "home_country"),
                    "device_seen", OneHot("category", CATEGORIES, other=False)]
# What the window models see: one holder's activity in the window.
WINDOW_FEATURES: list[str | Feature] = ["n", "total", "largest", "merchants", "foreign", "new_devices", "peak_ratio",
                   Ratio("largest", "total")]
WINDOW_AGGREGATIONS = {"n": Count(), "total": Sum("amount"), "largest": Max("amount"),
                       "merchants": ApproxDistinct("merchant_id"), "foreign": Sum("foreign"),
                       "new_devices": Sum("new_device"), "peak_ratio": Max("ratio")}
WINDOWS = {"1m": Tumbling(minutes=1), "10m": Hopping(minutes=10, slide=seconds(60))}


def signals(p: dict[str, Any]) -> dict[str, Any]:
    """Per-payment signals the window sums: abroad, new device, amount over the average."""
    return {**p, "foreign": float(p["country"] != p["home_country"]),
            "new_device": float(not p["device_seen"]),
            "ratio": p["amount"] / p["avg_amount"] if p["avg_amount"] > 0 else 0.0}


def model_path(name: str, model_dir: Path | str | None = None) -> Path:
    """Where model `name` (payment, window-1m, window-10m) lives; a clear error if it is not there."""
    path = Path(model_dir or MODEL_DIR) / f"{name}.joblib"
    onnx = path.with_suffix(".onnx")
    if not path.exists() and onnx.exists():
        return onnx
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}: train one first with "
                                "`python -m examples.fraud.train` (or copy yours there)")
    return path


def payment_scores(model_dir: Path | str | None = None, model: Path | str | None = None, *,
                   source: str = INPUT, sink: str = SCORES, check_every_s: float = 1.0) -> Pipeline:
    """Stateless, one output per input: every payment with its fraud score."""
    return (
        Pipeline("fraud-payments")
        .source(source, schema="schemas/card_payment.avsc", timestamp="ts")
        .apply(Score(model or model_path("payment", model_dir), PAYMENT_FEATURES,
                     check_every_s=check_every_s))
        .project(["payment_id", "user_id", "amount", "ts", "score", "model_version"])
        .sink(sink, schema="schemas/payment_score.avsc")
    )


def window_features(size: str, source: str = INPUT) -> Pipeline:
    """Per-holder window features (no model): what the window model is trained on."""
    return (
        Pipeline(f"fraud-{size}")
        .source(source, schema="schemas/card_payment.avsc", timestamp="ts", out_of_order=seconds(2),
                keyed_by="user_id")
        .map(signals)
        .key_by("user_id")
        .window(WINDOWS[size], grace=seconds(5), aggregate=WINDOW_AGGREGATIONS)
    )


def window_alerts(size: str, model_dir: Path | str | None = None, threshold: float = THRESHOLD, *,
                  source: str = INPUT, sink: str = ALERTS) -> Pipeline:
    """Window features → Score → alerts above `threshold` (run by the driver on window results)."""
    return (
        window_features(size, source)
        .apply(Score(model_path(f"window-{size}", model_dir), WINDOW_FEATURES))
        .filter(col("score") > threshold)
        .sink(sink, schema="schemas/fraud_alert.avsc")
    )


def __getattr__(name: str) -> Pipeline:
    """`stream run examples.fraud.pipelines:payments` (or windows_1m, windows_10m) builds the
    pipeline on first use, so importing this module needs no model files."""
    if name == "payments":
        return payment_scores()
    if name in ("windows_1m", "windows_10m"):
        return window_alerts(name.split("_")[1])
    raise AttributeError(name)
