import pytest

from stream.codecs.avro import AvroCodec
from stream.codecs.schemas import load_schema
from stream.errors import DecodeError, EncodeError, PipelineError

PAYMENT = {"payment_id": "p1", "user_id": "u1", "merchant_id": "m1", "amount": 12.5,
           "currency": "EUR", "country": "DE", "ts": 1_767_225_600_000}


def test_round_trip_with_shipped_schema():
    c = AvroCodec(load_schema("schemas/payment.avsc"))
    assert c.decode(c.encode(PAYMENT)) == PAYMENT


def test_codec_pickles_without_parsed_state():
    import pickle

    c = AvroCodec(load_schema("schemas/payment.avsc"))
    c.encode(PAYMENT)
    assert pickle.loads(pickle.dumps(c)).decode(c.encode(PAYMENT)) == PAYMENT


@pytest.mark.parametrize("mangle,reason", [
    (lambda b: b[:-3], "decode_failed"),
    (lambda b: b + b"\x00\x01", "trailing_bytes"),
    (lambda b: b"", "decode_failed"),
])
def test_bad_bytes_raise_decode_error_with_reason(mangle, reason):
    c = AvroCodec(load_schema("schemas/payment.avsc"))
    with pytest.raises(DecodeError) as exc:
        c.decode(mangle(c.encode(PAYMENT)))
    assert exc.value.reason == reason


def test_tombstone_is_its_own_reason():
    with pytest.raises(DecodeError) as exc:
        AvroCodec(load_schema("schemas/payment.avsc")).decode(None)
    assert exc.value.reason == "tombstone"


def test_reader_schema_resolution_fills_added_field_default():
    old = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"}]}
    new = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"},
                                                     {"name": "b", "type": "string", "default": "x"}]}
    assert AvroCodec(old, reader_schema=new).decode(AvroCodec(old).encode({"a": 1})) == {"a": 1, "b": "x"}


def test_encode_error_names_the_problem():
    with pytest.raises(EncodeError, match="cannot encode"):
        AvroCodec(load_schema("schemas/payment.avsc")).encode({"user_id": 5})


def test_missing_schema_file_says_where_it_looked():
    with pytest.raises(PipelineError, match="not found"):
        load_schema("schemas/nope.avsc")


@pytest.mark.parametrize("cut", [1, 3, 7, 20])
def test_a_truncated_value_is_described_without_object_addresses(cut):
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    data = codec.encode(PAYMENT)
    with pytest.raises(DecodeError) as info:
        codec.decode(data[:cut])
    message = str(info.value)
    assert " at 0x" not in message and not message.endswith(": ") and f"of {cut})" in message
