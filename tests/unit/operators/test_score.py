"""The Score operator and feature lists, without a broker: three model kinds, one model call per
batch, hot reload between batches, bad models failing at definition, and pipelines through the
test driver."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from scoring import FEATURES, fit, save_joblib, save_onnx

from operators import Count, Features, OneHot, OperatorUnavailable, Ratio, Score, Sum
from operators.models import ModelCache
from stream.errors import PipelineError
from stream.pipeline import Pipeline
from stream.testing import TestDriver
from stream.windows.specs import Tumbling

RECORDS = [{"id": i, "amount": float(a), "n": n} for i, (a, n) in
           enumerate([(5, 1), (95, 2), (40, 9), (70, 0), (10, 3), (61, 8)])]
X = np.array([[r["amount"], r["n"]] for r in RECORDS])


def test_features_build_one_hot_ratio_and_numeric_columns():
    f = Features(["n", OneHot("country", ["DE", "US"]), OneHot("device", ["ios"], other=False),
                  Ratio("amount", "avg", default=-1.0)])
    rows = [{"n": 1, "country": "US", "device": "ios", "amount": 4.0, "avg": 2.0},
            {"n": True, "country": "XX", "device": "web", "amount": 1.0, "avg": 0}]
    assert f.names == ["n", "country=DE", "country=US", "country=other", "device=ios", "amount/avg"]
    assert f.matrix(rows).tolist() == [[1, 0, 1, 0, 1, 2.0], [1, 0, 0, 1, 0, -1.0]]
    assert f.fields == ("n", "country", "device", "amount", "avg")
    assert f.matrix([]).shape == (0, 6)
    with pytest.raises(TypeError, match="'n' must be a number"):
        f.matrix([{**rows[0], "n": "many"}])
    with pytest.raises(KeyError):
        f.matrix([{"n": 1}])


def test_a_function_model_gets_one_array_per_batch():
    calls = []

    def model(X):
        calls.append(X.shape)
        return X[:, 0] * 2

    out = Score(model, FEATURES, version="v7").apply(RECORDS)
    assert calls[-1] == (6, 2)
    assert [r["score"] for r in out] == [r["amount"] * 2 for r in RECORDS]
    assert {r["model_version"] for r in out} == {"v7"}
    assert out[0]["id"] == 0 and "score" not in RECORDS[0]  # inputs are not changed


def test_a_scikit_learn_file_scores_with_predict_proba_of_the_positive_class(tmp_path):
    est = fit()
    s = Score(save_joblib(est, tmp_path / "m.joblib"), FEATURES)
    out = s.apply(RECORDS)
    assert np.allclose([r["score"] for r in out], est.predict_proba(X)[:, 1])
    assert len({r["model_version"] for r in out}) == 1
    plain = Score(tmp_path / "m.joblib", FEATURES, method="predict", output="label").apply(RECORDS)
    assert [r["label"] for r in plain] == est.predict(X).astype(float).tolist()


def test_an_onnx_file_scores_like_the_model_it_was_converted_from(tmp_path):
    est = fit()
    out = Score(save_onnx(est, tmp_path / "m.onnx"), FEATURES).apply(RECORDS)
    assert np.allclose([r["score"] for r in out], est.predict_proba(X)[:, 1], atol=1e-5)


def test_a_changed_file_is_used_from_the_next_batch_and_a_broken_one_is_ignored(tmp_path):
    path = tmp_path / "m.joblib"
    first, second = fit(0, C=1.0), fit(1, C=0.001)
    save_joblib(first, path)
    s = Score(path, FEATURES, check_every_s=0)
    v1 = s.apply(RECORDS[:2])[0]["model_version"]
    save_joblib(second, path)
    out = s.apply(RECORDS)
    assert {r["model_version"] for r in out} != {v1} and len({r["model_version"] for r in out}) == 1
    assert np.allclose([r["score"] for r in out], second.predict_proba(X)[:, 1])
    v2 = out[0]["model_version"]
    tmp = tmp_path / "broken.tmp"
    tmp.write_bytes(b"not a model")
    os.replace(tmp, path)
    assert {r["model_version"] for r in s.apply(RECORDS)} == {v2}  # the last good model goes on


def test_a_model_that_cannot_load_fails_at_definition_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        Score(tmp_path / "missing.joblib", FEATURES)
    (tmp_path / "junk.joblib").write_bytes(b"junk")
    with pytest.raises(OperatorUnavailable, match="junk.joblib does not load"):
        Score(tmp_path / "junk.joblib", FEATURES)
    path = save_joblib(fit(), tmp_path / "m.joblib")
    with pytest.raises(ValueError, match="expects 2 features, the feature list gives 3"):
        Score(path, ["amount", "n", "id"])


def test_a_model_file_gone_on_a_worker_fails_the_batch_not_the_records(tmp_path):
    path = save_joblib(fit(), tmp_path / "m.joblib")
    s = pickle.loads(pickle.dumps(Score(path, FEATURES)))
    os.remove(path)
    with pytest.raises(OperatorUnavailable, match="cannot be read"):
        ModelCache().get(s.model)  # a fresh worker process has no cached copy


def _pipeline(model_path, window=False):
    p = Pipeline("score").source("in", schema="schemas/payment.avsc", timestamp="ts")
    if not window:
        return (p.apply(Score(model_path, [Ratio("amount", "amount"), "amount"], output="risk"))
                .sink("out", schema={"type": "record", "name": "S", "fields": [
                    {"name": f, "type": t} for f, t in [
                        ("payment_id", "string"), ("user_id", "string"), ("merchant_id", "string"),
                        ("amount", "double"), ("currency", "string"), ("country", "string"),
                        ("ts", "long"), ("risk", "double"), ("model_version", "string")]]}))
    return (p.key_by("user_id").window(Tumbling(seconds=10), aggregate={"amount": Sum("amount"), "n": Count()})
            .apply(Score(model_path, FEATURES)).filter(lambda r: r["score"] > 0.5))


def pay(user, ts, amount):
    return {"payment_id": f"{user}-{ts}", "user_id": user, "merchant_id": "m", "amount": amount,
            "currency": "EUR", "country": "DE", "ts": ts}


def test_a_stateless_pipeline_scores_every_record_and_dead_letters_one_that_fails(tmp_path):
    seen = []

    def model(X):
        seen.append(len(X))
        return X[:, 1] / 100

    td = TestDriver(_pipeline(model))
    assert seen == [1]  # the definition-time check: one row of zeros
    seen.clear()
    td.feed([pay("a", 1, 10.0), pay("b", 2, 0.0), pay("c", 3, 50.0)])
    codec = td.pipeline.sink_spec.codec
    rows = [codec.decode(v) for _, v in td.outputs]
    assert [(r["user_id"], r["risk"]) for r in rows] == [("a", 0.1), ("b", 0.0), ("c", 0.5)]
    assert seen == [3] and td.scored == {("model", "model"): 3}
    td.feed([pay("d", 4, 1.0), {**pay("e", 5, 1.0), "amount": None}])
    assert [(f.offset, f.reason) for f in td.failures] == [(4, "operator_error")]
    assert len(td.outputs) == 4


def test_one_bad_record_in_a_batch_costs_a_few_model_calls_not_one_per_record():
    seen = []

    def model(X):
        seen.append(len(X))
        return X[:, 1] / 100

    td = TestDriver(_pipeline(model))
    seen.clear()
    batch = [pay(f"u{i}", i, float(i)) for i in range(64)]
    batch[37] = {**batch[37], "amount": None}  # its features cannot be built
    td.feed(batch)
    assert [(f.offset, f.reason) for f in td.failures] == [(37, "operator_error")]
    assert len(td.outputs) == 63 and td.scored == {("model", "model"): 63}
    assert len(seen) <= 12 and sum(seen) == 63  # halves down to the bad record: log-many calls


def test_window_results_are_scored_and_filtered_after_the_window(tmp_path):
    est = fit()
    td = TestDriver(_pipeline(save_joblib(est, tmp_path / "m.joblib"), window=True))
    td.feed([pay("a", 1_000, 30.0), pay("a", 2_000, 50.0), pay("b", 3_000, 5.0)])
    out = td.advance_watermark(10_000)
    want = est.predict_proba(np.array([[80.0, 2], [5.0, 1]]))[:, 1]
    assert want[0] > 0.5 > want[1]
    assert [(r["user_id"], round(r["score"], 9)) for r in out] == [("a", round(want[0], 9))]
    assert sum(td.scored.values()) == 2


def test_score_checks_its_feature_fields_when_the_pipeline_is_defined():
    p = Pipeline("s").source("in", schema="schemas/payment.avsc", timestamp="ts")
    with pytest.raises(PipelineError, match="unknown field.*'balance'"):
        p.apply(Score(lambda X: X[:, 0], ["amount", "balance"]))
    with pytest.raises(PipelineError, match="key_by\\(\\) after window"):
        (p.key_by("user_id").window(Tumbling(seconds=1), aggregate={"n": Count()}).key_by("n"))
