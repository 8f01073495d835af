from operators import Count, Sum
from stream.windows.specs import Hopping, Tumbling
from stream.windows.store import WindowStore
from stream.state import Meta, encode_meta, entry, restore


def test_changes_name_every_changed_entry_once_and_every_dropped_pane():
    s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0)
    s.merge({("a", 0): [2], ("b", 10_000): [1]}, {0: 2, 10_000: 1})
    s.merge({("a", 0): [1]}, {0: 1})
    assert s.take_changes() == ({("a", 0): [3], ("b", 10_000): [1]}, [])
    assert s.take_changes() == ({}, [])
    s.advance(10_000)
    assert s.take_changes() == ({}, [("a", 0)])
    s.check_invariants()


def test_late_panes_name_the_closed_windows_they_belonged_to():
    s = WindowStore(Hopping(seconds=20, slide=10_000), {"n": Count()}, grace_ms=0)
    s.merge({("a", 10_000): [1]}, {10_000: 1})
    s.advance(20_000)  # closes [0, 20 s); [10 s, 30 s) is still open
    assert s.merge({("a", 10_000): [1]}, {10_000: 1}) == {10_000: 1}
    assert s.closed_windows(10_000) == [(0, 20_000)]
    assert [(w.start, w.values) for w in s.advance(30_000)] == [(10_000, {"n": 2})]


def test_restore_rebuilds_the_store_from_committed_epochs_only():
    s = WindowStore(Tumbling(seconds=10), {"n": Count(), "s": Sum("x")}, grace_ms=0)
    s.merge({("a", 0): [2, 5.0], ("a", 10_000): [1, 1.0]}, {0: 2, 10_000: 1})
    log = [entry(("in", k, p), accs, 1) for (k, p), accs in s.take_changes()[0].items()]
    log.append(encode_meta(Meta("in", 1, (), -1, 9_000)))
    s.advance(10_000)
    log.append(entry(("in", "a", 0), None, 2))          # epoch 2 aborted: its tombstone is ignored
    log.append(entry(("in", "a", 10_000), [7, 9.0], 2))
    r = restore(log, "in", last_committed=1)
    assert r.panes == {("a", 0): [2, 5.0], ("a", 10_000): [1, 1.0]} and r.max_epoch == 2
    fresh = WindowStore(Tumbling(seconds=10), {"n": Count(), "s": Sum("x")}, grace_ms=0)
    fresh.load(r.panes, r.emitted_through)
    assert [(w.start, w.values) for w in fresh.advance(10_000)] == [(0, {"n": 2, "s": 5.0})]
    # epoch 3 committed, and its meta entry names epoch 2 as committed: epoch 2 counts too
    log.append(encode_meta(Meta("in", 3, (2,), 10_000, 12_000)))
    r2 = restore(log, "in", last_committed=3)
    assert r2.panes == {("a", 10_000): [7, 9.0]} and r2.emitted_through == 10_000
