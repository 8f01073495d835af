from operators import Count, Sum
from stream.driver.checkpoint import Meta, delta_tombstones, deltas, encode_meta, restore
from stream.windows.specs import Hopping, Tumbling
from stream.windows.store import WindowStore


def test_changes_name_every_changed_entry_once_and_every_dropped_pane():
    s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0)
    s.merge({("a", 0): [2], ("b", 10_000): [1]})
    s.merge({("a", 0): [1]})
    assert s.take_changes() == ({0: {"a": (3,)}, 10_000: {"b": (1,)}}, [])
    assert s.take_changes() == ({}, [])
    s.advance(10_000)
    assert s.take_changes() == ({}, [0])
    s.check_invariants()


def test_a_hopping_pane_merged_after_its_oldest_window_closed_counts_in_the_younger_only():
    s = WindowStore(Hopping(seconds=20, slide=10_000), {"n": Count()}, grace_ms=0)
    s.merge({("a", 10_000): [1]})
    assert [(w.start, w.values) for w in s.advance(20_000)] == [(0, {"n": 1})]  # [10 s, 30 s) open
    s.merge({("a", 10_000): [1]})
    assert [(w.start, w.values) for w in s.advance(30_000)] == [(10_000, {"n": 2})]


def test_restore_rebuilds_the_store_from_committed_epochs_only():
    s = WindowStore(Tumbling(seconds=10), {"n": Count(), "s": Sum("x")}, grace_ms=0)
    s.merge({("a", 0): [2, 5.0], ("a", 10_000): [1, 1.0]})
    log = [m for p, keys in s.take_changes()[0].items() for m in deltas("in", p, 1, keys)]
    log.append(encode_meta(Meta("in", 1, (), -1, 9_000)))
    s.advance(10_000)
    log += delta_tombstones("in", 0, [(1, 1)], 2)        # epoch 2 aborted: its tombstone is ignored
    log += deltas("in", 10_000, 2, {"a": [7, 9.0]})
    r = restore(log, "in", last_committed=1)
    assert r.panes == {("a", 0): (2, 5.0), ("a", 10_000): (1, 1.0)} and r.max_epoch == 2
    # pane 0's tombstone is in an aborted epoch: its delta is still to be tombstoned
    assert r.written == {0: [(1, 1)], 10_000: [(1, 1), (2, 1)]}
    fresh = WindowStore(Tumbling(seconds=10), {"n": Count(), "s": Sum("x")}, grace_ms=0)
    fresh.load(r.panes, r.emitted_through)
    assert [(w.start, w.values) for w in fresh.advance(10_000)] == [(0, {"n": 2, "s": 5.0})]
    # epoch 3 committed, and its meta entry names epoch 2 as committed: epoch 2 counts too
    log.append(encode_meta(Meta("in", 3, (2,), 10_000, 12_000)))
    r2 = restore(log, "in", last_committed=3)
    assert r2.panes == {("a", 10_000): [7, 9.0]} and r2.emitted_through == 10_000


def test_deltas_replay_in_epoch_order_and_split_into_chunks():
    log = deltas("in", 0, 5, {"a": [1], "b": [1], "c": [1]}, chunk_keys=2)
    assert len(log) == 2
    log += deltas("in", 0, 7, {"b": [4]}) + deltas("in", 10_000, 7, {"a": [2]})
    log.append(encode_meta(Meta("in", 7, (5,))))  # epoch 7's writer knew epoch 5 committed
    log = log[::-1]  # the order of messages does not matter, only their epochs
    r = restore(log, "in", last_committed=7)
    assert r.panes == {("a", 0): [1], ("b", 0): [4], ("c", 0): [1], ("a", 10_000): [2]}
    assert r.written == {0: [(5, 2), (7, 1)], 10_000: [(7, 1)]}
    log += delta_tombstones("in", 0, r.written[0], 9) + [encode_meta(Meta("in", 9, (7,)))]
    r = restore(log, "in", last_committed=9)
    assert r.panes == {("a", 10_000): [2]} and r.written == {10_000: [(7, 1)]}


def test_restore_takes_state_and_offset_from_one_committed_epoch_even_when_the_groups_offsets_read_stale():
    """The group's offsets may read stale (the embedded broker hides a committed transaction
    while another is open on a shared partition), while the log already holds a later epoch
    that a meta entry names committed. State and offset must come from one epoch: the state of
    one epoch restored with the offset of an older one counts the records between twice."""
    log = deltas("in", 0, 10, {"u1": [1]}) + [encode_meta(Meta("in", 10, (), offset=100))]
    log += deltas("in", 0, 20, {"u1": [2]}) + [encode_meta(Meta("in", 20, (10,), offset=200))]
    log += deltas("in", 0, 30, {"u1": [3]}) + [encode_meta(Meta("in", 30, (20,), offset=300))]
    for last in (10, 20, -2):  # stale, current, none: epoch 20 is the newest known committed
        r = restore(log, "in", last_committed=last)
        assert (r.panes, r.offset, r.epoch) == ({("u1", 0): [2]}, 200, 20), last
    r = restore(log, "in", last_committed=30)  # epoch 30 committed too: its own offset
    assert (r.panes, r.offset, r.epoch) == ({("u1", 0): [3]}, 300, 30)
    assert restore(log[:1], "in", last_committed=-2).panes == {}  # nothing known committed


def test_an_epoch_restored_before_its_partition_merged_anything_resumes_at_the_beginning():
    """Found by the core's property test: the stale group offsets named an epoch whose meta
    entry says nothing was merged yet (offset BEGINNING), while the group's input offset came
    from an even older epoch. Resuming there with that epoch's (empty) state lost a record."""
    log = [encode_meta(Meta("in", 10, (), offset=-2))]
    log += deltas("in", 0, 20, {"u1": [1]}) + [encode_meta(Meta("in", 20, (10,), offset=1))]
    r = restore(log, "in", last_committed=10)  # stale: epoch 20 is named by no meta entry
    assert (r.panes, r.offset, r.epoch) == ({}, -2, 10)
