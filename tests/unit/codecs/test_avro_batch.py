"""The batch encoder writes the bytes fastavro writes, record by record, or declines."""

import io
import math

import fastavro
import pytest
from hypothesis import given, settings, strategies as st

from stream.codecs.avro_batch import BatchEncoder

KINDS = {
    "string": st.text(max_size=40),
    "bytes": st.binary(max_size=40),
    "long": st.integers(-(2**63), 2**63 - 1),
    "int": st.integers(-(2**31), 2**31 - 1),
    "double": st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
    "float": st.floats(width=32, allow_nan=False),
    "boolean": st.booleans(),
    "null": st.none(),
}


def fastavro_bytes(schema, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


@st.composite
def schemas_and_records(draw):
    fields = []
    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(sorted(KINDS)))
        nullable = kind != "null" and draw(st.booleans())
        order = draw(st.booleans())
        ftype = (["null", kind] if order else [kind, "null"]) if nullable else kind
        fields.append(({"name": f"f{i}", "type": ftype}, kind, nullable))
    schema = {"type": "record", "name": f"R{draw(st.integers(0, 10**9))}", "fields": [f for f, _, _ in fields]}
    row = st.fixed_dictionaries({f["name"]: (KINDS[k] | st.none()) if n else KINDS[k] for f, k, n in fields})
    return schema, draw(st.lists(row, min_size=1, max_size=30))


@settings(max_examples=300, deadline=None)
@given(schemas_and_records())
def test_the_batch_encoder_writes_what_fastavro_writes(case):
    schema, records = case
    got = BatchEncoder.for_schema(schema).encode(records)
    assert got == [fastavro_bytes(schema, r) for r in records]


SCHEMA = {"type": "record", "name": "Out", "fields": [
    {"name": "k", "type": "string"}, {"name": "n", "type": "long"},
    {"name": "x", "type": ["null", "double"]}, {"name": "c", "type": "string", "default": "EUR"}]}


@pytest.mark.parametrize("bad", [
    {"k": "a", "n": "1", "x": None, "c": "x"},         # a string for a long
    {"k": "a", "n": 2**63, "x": None, "c": "x"},       # out of range
    {"k": "a", "n": True, "x": None, "c": "x"},        # a bool is not a long in Avro
    {"k": None, "n": 1, "x": None, "c": "x"},          # null in a non-null field
    {"k": "a", "x": 1.0, "c": "x"},                    # a missing field without a default
    {"k": "a", "n": 1, "x": "1.5", "c": "x"},          # a string for a double
    "not a record",
])
def test_a_batch_it_cannot_encode_exactly_is_declined(bad):
    good = {"k": "a", "n": 1, "x": 0.5, "c": "x"}
    assert BatchEncoder.for_schema(SCHEMA).encode([good, bad]) is None


def test_a_missing_field_with_a_default_gets_it_as_fastavro_does():
    records = [{"k": "a", "n": 1, "x": None}, {"k": "b", "n": -1, "x": math.pi, "c": "USD"}]
    assert BatchEncoder.for_schema(SCHEMA).encode(records) == [fastavro_bytes(SCHEMA, r) for r in records]


def test_schemas_with_nested_or_logical_types_take_the_record_path():
    nested = {"type": "record", "name": "N", "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}]}
    logical = {"type": "record", "name": "L", "fields": [
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    assert BatchEncoder.for_schema(nested) is None and BatchEncoder.for_schema(logical) is None


def test_a_float_out_of_the_32_bit_range_is_declined():
    schema = {"type": "record", "name": "F", "fields": [{"name": "f", "type": "float"}]}
    assert BatchEncoder.for_schema(schema).encode([{"f": 1e300}]) is None


@settings(max_examples=200, deadline=None)
@given(schemas_and_records())
def test_columns_encode_as_the_records_they_hold(case):
    schema, records = case
    columns = {f["name"]: [r[f["name"]] for r in records] for f in schema["fields"]}
    got = BatchEncoder.for_schema(schema).encode_columns(columns, len(records))
    assert got == [fastavro_bytes(schema, r) for r in records]


def test_columns_it_cannot_encode_exactly_are_declined():
    enc = BatchEncoder.for_schema(SCHEMA)
    assert enc.encode_columns({"k": ["a"], "n": [1], "x": [None]}, 1) == [
        fastavro_bytes(SCHEMA, {"k": "a", "n": 1, "x": None})]          # "c" takes its default
    assert enc.encode_columns({"k": ["a"], "x": [None]}, 1) is None      # "n" has no default
    assert enc.encode_columns({"k": ["a"], "n": [1, 2], "x": [None]}, 1) is None  # ragged
    assert enc.encode_columns({"k": ["a"], "n": ["1"], "x": [None]}, 1) is None   # a string for a long
