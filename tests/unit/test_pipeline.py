"""An invalid pipeline fails when it is defined, with a message naming the problem."""

import pickle
from dataclasses import replace

import cloudpickle
import pytest
from helpers import OUT_SCHEMA, PAYMENT, payment_pipeline

from operators import Count, Sum
from stream.errors import PipelineError
from stream.pipeline import Pipeline
from stream.windows.specs import Tumbling


def src():
    return Pipeline("p").source("payments", schema=PAYMENT, timestamp="ts")


def test_a_window_without_key_is_global_through_the_repartition_topic():
    p = src().window(Tumbling(seconds=10), aggregate={"n": Count()})
    assert p.is_global and p.rekey and p.output_fields() == ["window_start", "window_end", "n"]
    assert src().key_by(None).window(Tumbling(seconds=10), aggregate={"n": Count()}).is_global
    with pytest.raises(PipelineError, match="global window"):
        src().key_by(None, repartition=False).window(Tumbling(seconds=10), aggregate={"n": Count()})


def test_unknown_aggregation_field_is_rejected():
    with pytest.raises(PipelineError, match="'amout'.*records here have"):
        src().key_by("user_id").window(Tumbling(seconds=10), aggregate={"t": Sum("amout")})


def test_negative_grace_is_rejected():
    with pytest.raises(PipelineError, match="grace must be >= 0"):
        src().key_by("user_id").window(Tumbling(seconds=10), grace=-1, aggregate={"n": Count()})


def test_unknown_key_and_timestamp_fields_are_rejected():
    with pytest.raises(PipelineError, match="key_by"):
        src().key_by("nobody")
    with pytest.raises(PipelineError, match="timestamp field 'when'"):
        Pipeline("p").source("payments", schema=PAYMENT, timestamp="when")


def test_project_narrows_known_fields():
    with pytest.raises(PipelineError, match="records here have: user_id, ts"):
        src().project(["user_id", "ts"]).key_by("user_id").window(
            Tumbling(seconds=1), aggregate={"t": Sum("amount")})


def test_sink_schema_must_match_results():
    p = src().key_by("user_id").window(Tumbling(seconds=10), aggregate={"count": Count()})
    with pytest.raises(PipelineError, match="does not match"):
        p.sink("out", schema=OUT_SCHEMA)


def test_bad_name_and_missing_parts():
    with pytest.raises(PipelineError, match="name"):
        Pipeline("has space")
    with pytest.raises(PipelineError, match="no sink"):
        src().validate()


def test_pipeline_is_a_picklable_value():
    p = payment_pipeline("p", "in", "out")
    back = cloudpickle.loads(cloudpickle.dumps(p))
    assert back.window_stage.spec == p.window_stage.spec and back.name == "p"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(p)  # plain pickle cannot take the lambda; Dask ships with cloudpickle


def test_early_results_are_set_on_the_window_and_checked():
    from operators import Count
    from stream.pipeline import Pipeline
    from stream.windows.specs import Tumbling, seconds

    base = Pipeline("e").source("in", "schemas/payment.avsc", timestamp="ts").key_by("user_id")
    p = base.window(Tumbling(minutes=1), aggregate={"n": Count()}, early=seconds(5))
    assert p.window_stage.early_ms == 5_000
    assert base.window(Tumbling(minutes=1), aggregate={"n": Count()}).window_stage.early_ms is None
    with pytest.raises(PipelineError, match="early must be a positive duration"):
        base.window(Tumbling(minutes=1), aggregate={"n": Count()}, early=0)


def _with_type(schema, name, avro_type):
    return {**schema, "fields": [dict(f, type=avro_type) if f["name"] == name else f for f in schema["fields"]]}


def windowed_into(out_schema):
    """payment_pipeline's window, written with `out_schema`."""
    window = payment_pipeline("p", "in", "out")
    return replace(window, sink_spec=None).sink("out", schema=out_schema)


@pytest.mark.parametrize("name, avro_type", [("total", "string"), ("n", "boolean"), ("window_start", "string"),
                                             ("user_id", "long"), ("mean", ["null", "string"])])
def test_a_sink_field_of_the_wrong_type_fails_at_definition_naming_it(name, avro_type):
    with pytest.raises(PipelineError, match=f"does not fit the results' types: '{name}' is"):
        windowed_into(_with_type(OUT_SCHEMA, name, avro_type))


@pytest.mark.parametrize("name, avro_type", [("n", "double"), ("total", ["null", "double"]), ("n", "int")])
def test_a_sink_field_the_result_can_be_written_as_passes(name, avro_type):
    windowed_into(_with_type(OUT_SCHEMA, name, avro_type))


def test_a_record_passed_through_is_checked_against_the_sink_too():
    from stream.codecs.schemas import load_schema

    bad = _with_type(load_schema(PAYMENT), "amount", "string")
    with pytest.raises(PipelineError, match="'amount' is double"):
        Pipeline("p").source("in", schema=PAYMENT).filter(lambda r: True).sink("out", schema=bad)
    Pipeline("p").source("in", schema=PAYMENT).map(lambda r: r).sink("out", schema=bad)  # unknown after map


def test_a_window_over_another_key_than_the_source_is_keyed_by_with_repartitioning_off_fails_at_definition():
    keyed = Pipeline("p").source("payments", schema=PAYMENT, timestamp="ts", keyed_by="user_id")
    assert not keyed.key_by("user_id").window(Tumbling(seconds=10), aggregate={"n": Count()}).rekey
    assert keyed.key_by("merchant_id").window(Tumbling(seconds=10), aggregate={"n": Count()}).rekey
    with pytest.raises(PipelineError, match=r"key_by\('merchant_id'\) but the source is keyed_by 'user_id', and repartition=False"):
        keyed.key_by("merchant_id", repartition=False).window(Tumbling(seconds=10), aggregate={"n": Count()})

    def card(r):
        return r["user_id"]
    with pytest.raises(PipelineError, match=r"key_by\(card\) but the source is keyed_by 'user_id'"):
        keyed.key_by(card, repartition=False).window(Tumbling(seconds=10), aggregate={"n": Count()})
    with pytest.raises(PipelineError, match="keyed_by field 'card'"):
        Pipeline("p").source("payments", schema=PAYMENT, keyed_by="card")
