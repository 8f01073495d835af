"""Window results reach the sink with the same bytes whether encoded by column or by record."""

from hypothesis import given, settings, strategies as st

from operators import Count, Max, Sum
from stream.codecs.avro import AvroCodec
from stream.pipeline import Pipeline, Tumbling
from stream.windows.store import WindowResult, WindowResults
from stream.worker.rows import encode_results

IN = {"type": "record", "name": "Tx", "fields": [
    {"name": "user", "type": "string"}, {"name": "amount", "type": "long"}, {"name": "ts", "type": "long"}]}
OUT = {"type": "record", "name": "Totals", "fields": [
    {"name": "user", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"}, {"name": "total", "type": "long"},
    {"name": "top", "type": "long"}]}


def pipeline(codec=None) -> Pipeline:
    return (Pipeline("enc").source("tx", IN, timestamp="ts").key_by("user")
            .window(Tumbling(seconds=10), aggregate={"n": Count(), "total": Sum("amount"), "top": Max("amount")})
            .sink("out", schema=None if codec else OUT, codec=codec))


class RecordsOnly:
    """The sink codec without `encode_columns`: every result takes the record path."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec

    def encode(self, record):
        return self.codec.encode(record)


def by_records(results: WindowResults):
    failed = []
    got = encode_results(pipeline(RecordsOnly(AvroCodec(OUT))), results, lambda *a: failed.append(a))
    return got, failed


rows = st.lists(st.tuples(st.text(max_size=8), st.integers(0, 5) .map(lambda w: w * 10_000),
                          st.integers(1, 10**6), st.integers(-(2**40), 2**40), st.integers(-100, 100)),
                max_size=40)


@settings(max_examples=100, deadline=None)
@given(rows)
def test_column_and_record_encoding_give_the_same_keys_and_values(drawn):
    p = pipeline()
    results = WindowResults.of(WindowResult(k, s, s + 10_000, {"n": n, "total": t, "top": m})
                               for k, s, n, t, m in drawn)
    failed = []
    got = encode_results(p, results, lambda *a: failed.append(a))
    assert (got, failed) == by_records(results)
    assert [k for k, _ in got] == [f"{k}@{s}".encode() for k, s, *_ in drawn]


def test_a_result_that_does_not_fit_the_sink_schema_is_dead_lettered_alone():
    p = pipeline()
    results = WindowResults(["a", "b"], [0, 0], [10_000, 10_000],
                            {"n": [1, 2], "total": [5, None], "top": [5, 7]})  # a null total
    failed = []
    got = encode_results(p, results, lambda *a: failed.append(a))
    assert [k for k, _ in got] == [b"a@0"]
    assert [(w.key, reason) for w, _, reason, _ in failed] == [("b", "encode_failed")]
