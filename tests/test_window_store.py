from operators import Count
from stream.windows.specs import Tumbling
from stream.windows.store import WindowStore


def test_revoked_partition_state_is_dropped_and_others_kept():
    s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0)
    s.merge("p0", {("a", 0): [2]}, {0: 5})
    s.merge("p1", {("b", 0): [3]}, {0: 9})
    s.drop_partition("p0")
    assert s.first_open_offset("p0") is None and s.first_open_offset("p1") == 9
    assert [(w.key, w.values) for w in s.advance(10_000)] == [("b", {"n": 3})]
    s.check_invariants()


def test_open_offset_is_the_first_record_an_open_window_needs():
    s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=1_000)
    s.merge("p", {("a", 0): [1], ("a", 10_000): [1]}, {0: 100, 10_000: 101})
    assert s.first_open_offset("p") == 100
    s.advance(11_000)
    assert s.first_open_offset("p") == 101
    s.advance(21_000)
    assert s.first_open_offset("p") is None and s.open_windows() == 0
