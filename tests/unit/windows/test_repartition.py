"""Re-keyed windows: every window is a function of the input partitions, however stage 1
interleaves them into the repartition topic (TestDriver runs both stages, as the driver does)."""

import pytest
from hypothesis import given, settings, strategies as st

from operators import Count, Last, Max, Sum
from stream.errors import PipelineError
from stream.pipeline import Hopping, Pipeline, Tumbling
from stream.testing import TestDriver
from stream.windows.eventtime import FOREVER
from stream.windows.repartition import OriginClocks, decode, encode_record, heartbeat, stamp

SCHEMA = {"type": "record", "name": "Pay", "fields": [
    {"name": "user", "type": "string"}, {"name": "card", "type": "string"},
    {"name": "cents", "type": "long"}, {"name": "ts", "type": "long"}]}
OUT = {"type": "record", "name": "O", "fields": [
    {"name": "card", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"},
    {"name": "total", "type": "long"}, {"name": "top", "type": ["null", "long"]}]}
SIZE = 10_000


def rekeyed(grace_ms=0, out_of_order_ms=0, key="card"):
    """Per card (re-keyed), or with `key=None` a global window: one result per window."""
    out = OUT if key else {**OUT, "fields": OUT["fields"][1:]}
    return (Pipeline("rk").source("pay", SCHEMA, timestamp="ts", keyed_by="user", out_of_order=out_of_order_ms)
            .key_by(key).window(Tumbling(milliseconds=SIZE), grace=grace_ms,
                                aggregate={"n": Count(), "total": Sum("cents"), "top": Max("cents")})
            .sink("out", out))


def recompute(partitions, grace_ms, ooo_ms, key="card"):
    """Windows from the rule alone: a record counts unless, at its place in its own input
    partition, the event time before it minus the out-of-orderness reached end + grace."""
    out, late = {}, 0
    for records in partitions:
        before = -(2**62)
        for r in records:
            start = r["ts"] - r["ts"] % SIZE
            if start + SIZE + grace_ms <= before - ooo_ms:
                late += 1
            else:
                w = out.setdefault((r[key] if key else "*", start), {"n": 0, "total": 0, "top": None})
                w["n"] += 1
                w["total"] += r["cents"]
                w["top"] = r["cents"] if w["top"] is None else max(w["top"], r["cents"])
            before = max(before, r["ts"])
    return out, late


payments = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 60_000), st.integers(1, 99)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(payments, min_size=1, max_size=4), grace=st.sampled_from([0, 3_000]),
       ooo=st.sampled_from([0, 2_000]), n=st.integers(1, 5), key=st.sampled_from(["card", None]), data=st.data())
def test_every_window_is_the_recomputation_whatever_the_interleaving(parts, grace, ooo, n, key, data):
    """Per card, and global (`key_by(None)`: one result per window, never one per partition)."""
    partitions = [[{"user": f"u{p}", "card": f"c{c}", "cents": cents, "ts": ts} for c, ts, cents in recs]
                  for p, recs in enumerate(parts)]
    td = TestDriver(rekeyed(grace, ooo, key), input_partitions=len(partitions), repartition_partitions=n)
    ranges = []  # each partition cut into ranges, then the ranges interleaved at random
    for recs in partitions:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(recs))), max_size=4)) | {0, len(recs)})
        ranges.append([recs[a:b] for a, b in zip(cuts, cuts[1:])])
    emitted = []
    while any(ranges):
        p = data.draw(st.sampled_from([i for i, r in enumerate(ranges) if r]))
        emitted += td.feed(ranges[p].pop(0), partition=p)
    emitted += td.advance_watermark(FOREVER // 2)
    expected, late = recompute(partitions, grace, ooo, key)
    got = {(w["card"] if key else "*", w["window_start"]): {k: w[k] for k in ("n", "total", "top")} for w in emitted}
    assert len(got) == len(emitted), "a window was emitted twice"
    assert got == expected
    assert len(td.late) == late


def test_a_window_closes_only_once_every_input_partition_passed_it():
    td = TestDriver(rekeyed(), input_partitions=2, repartition_partitions=3)
    assert td.feed([{"user": "a", "card": "c1", "cents": 5, "ts": 1_000},
                    {"user": "a", "card": "c1", "cents": 5, "ts": 25_000}], partition=0) == []
    closed = td.feed([{"user": "b", "card": "c1", "cents": 7, "ts": 12_000}], partition=1)
    assert [(w["window_start"], w["n"]) for w in closed] == [(0, 1)]  # partition 1 reached 12 s
    closed = td.feed([{"user": "b", "card": "c1", "cents": 1, "ts": 30_000}], partition=1)
    assert [(w["window_start"], w["n"], w["total"]) for w in closed] == [(10_000, 1, 7)]


def test_a_record_late_on_its_own_partition_is_late_whatever_the_others_did():
    td = TestDriver(rekeyed(), input_partitions=2)
    td.feed([{"user": "a", "card": "c1", "cents": 5, "ts": 25_000},
             {"user": "a", "card": "c1", "cents": 5, "ts": 2_000}], partition=0)  # late on partition 0
    td.feed([{"user": "b", "card": "c1", "cents": 7, "ts": 3_000}], partition=1)   # on time on 1
    assert [r["ts"] for r, _ in td.late] == [2_000]
    closed = td.feed([{"user": "b", "card": "c1", "cents": 1, "ts": 40_000}], partition=1)
    assert [(w["window_start"], w["n"], w["total"]) for w in closed][:1] == [(0, 1, 7)]


def test_which_windows_can_be_rekeyed_is_decided_when_the_pipeline_is_defined():
    keyed = Pipeline("p").source("pay", SCHEMA, timestamp="ts", keyed_by="user")
    assert keyed.key_by("card").window(Tumbling(seconds=1), aggregate={"n": Count()}).rekey
    assert not keyed.key_by("user").window(Tumbling(seconds=1), aggregate={"n": Count()}).rekey
    with pytest.raises(PipelineError, match="repartition=False"):
        keyed.key_by("card", repartition=False).window(Tumbling(seconds=1), aggregate={"n": Count()})
    with pytest.raises(PipelineError, match="must be Tumbling"):
        keyed.key_by("card").window(Hopping(seconds=10, slide=5_000), aggregate={"n": Count()})
    with pytest.raises(PipelineError, match="depends on the order of records"):
        keyed.key_by("card").window(Tumbling(seconds=1), aggregate={"last": Last("cents")})
    plain = Pipeline("p").source("pay", SCHEMA, timestamp="ts")
    assert plain.key_by("card", repartition=True).window(Tumbling(seconds=1), aggregate={"n": Count()}).rekey
    assert not plain.key_by("card").window(Tumbling(seconds=1), aggregate={"n": Count()}).rekey


def test_envelopes_and_clocks():
    env = decode(stamp(encode_record(5, 7, (9, 1), {"a": 1}), origin=2, carry=3))
    assert (env.origin, env.before, env.ts, env.position, env.record) == (2, 5, 7, (9, 1), {"a": 1})
    assert decode(heartbeat(1, 99)).before == 99
    odd = {"big": 2**70, "pair": (1, "a"), "when": 5}  # not plain MessagePack: the typed state format
    assert decode(encode_record(0, 0, (0, 0), odd)).record == odd
    assert decode(encode_record(0, 0, (0, 0), odd, fields=("when", "gone"))).record == {"when": 5}


def test_stage_one_carries_only_the_fields_stage_two_reads():
    def carried(p):
        return p.stages("t")[0].sink_spec.codec.carried
    assert carried(rekeyed()) == ("card", "cents")
    keyed = Pipeline("p").source("pay", SCHEMA, timestamp="ts", keyed_by="user")
    by_fn = keyed.key_by(lambda r: r["card"]).window(Tumbling(seconds=1), aggregate={"n": Count()})
    assert carried(by_fn) is None  # a key function may read any field
    clocks = OriginClocks((0, 1))
    clocks.update({0: 10, 1: 4})
    clocks.update({1: 3})  # never backwards
    assert clocks.now() == 4


def test_the_run_and_the_driver_agree_on_the_repartition_topic():
    from stream.config import KafkaConfig, RunConfig
    from stream.windows.repartition import repartition_topic
    assert RunConfig("fraud", KafkaConfig("x:1")).repartition_topic == repartition_topic("fraud")


def test_copies_of_aborted_writes_are_counted_once():
    """On the embedded broker, stage 2 sees an aborted epoch's records and then the same
    records again from the epoch that redid it: each position of an origin counts once."""
    from stream.records import Partial, RawMessage
    from stream.worker.rows import decode_envelopes

    def env(origin, offset):
        return stamp(encode_record(-1, offset, (offset, 0), {"k": offset}), origin, 0)
    values = [env(0, 100), env(0, 101), env(1, 7), env(0, 100), env(0, 101), env(0, 102), heartbeat(0, 50)]
    msgs = [RawMessage(i, None, v, 0) for i, v in enumerate(values)]
    out = Partial()
    rows, _ = decode_envelopes(msgs, out)
    assert [r[1]["k"] for r in rows] == [100, 101, 7, 102]
    assert (out.repeated, out.records_in, out.clocks) == (2, 6, {0: 50})
    assert out.firsts == {0: (100, 0), 1: (7, 0)} and out.marks == {0: (102, 0), 1: (7, 0)}
    out = Partial()
    rows, _ = decode_envelopes(msgs, out, marks={0: (101, 0)})  # read with what was counted before it
    assert [r[1]["k"] for r in rows] == [7, 102] and out.repeated == 4
    clocks = OriginClocks((0, 1), marks={0: (101, 0)})
    assert clocks.repeats({0: (100, 0)}) and not clocks.repeats({0: (102, 0), 1: (0, 0)})


def test_the_driver_is_caught_up_only_once_stage_two_read_what_stage_one_committed():
    """A drained run (the demo, the benchmark) must not close re-keyed windows before stage 2
    has read every record stage 1 wrote: those become readable only at the commit."""
    from stream.driver.core import Assigned, Commit, DriverCore, RangeDone, Submit, Tick, Topics
    from stream.records import Partial
    from stream.worker.task import RangeResult

    core = DriverCore(rekeyed(), Topics("rk.changelog"), input_partitions={"pay": 1}, repartition_partitions=2,
                      commit_interval_s=0.5)
    rp = core.repartition

    pending = {}

    def handle(event, now):
        out = core.handle(event, now)
        pending.update({i.tp: i for i in out if isinstance(i, Submit)})
        return out

    def done(tp, start, end, partial, now):
        result = RangeResult(tp[0], tp[1], start, end, end, True, partial, 0.0)
        return handle(RangeDone(pending.pop(tp).task_id, result), now)
    handle(Assigned([("pay", 0), (rp, 0), (rp, 1)], committed={}, logs={0: [], 1: []}), 1_000)
    value = encode_record(-1, 5_000, (0, 0), {"user": "u", "card": "c", "cents": 1, "ts": 5_000})
    done(("pay", 0), 0, 1, Partial(outputs=[(b"c", value)], max_ts=5_000, records_in=1), 1_010)
    for r in (0, 1):
        done((rp, r), 0, 0, Partial(), 1_020)
    assert not core.caught_up()  # stage 1's records are not committed yet
    assert any(isinstance(i, Commit) for i in handle(Tick(), 2_000)) and not core.caught_up()
    for r in (0, 1):  # reads of the repartition topic that started after the commit, to its end
        if (rp, r) not in pending:
            handle(Tick(), 2_050)
        done((rp, r), 0, 0, Partial(), 2_100)
    assert core.caught_up()
