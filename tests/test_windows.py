from datetime import timedelta

import pytest

from stream.errors import PipelineError
from stream.windows.specs import Hopping, Tumbling, to_ms
from stream.windows.watermark import NEVER, Watermarks


def test_tumbling_assigns_half_open_range():
    w = Tumbling(seconds=10)
    assert w.assign(0) == [(0, 10_000)]
    assert w.assign(9_999) == [(0, 10_000)]
    assert w.assign(10_000) == [(10_000, 20_000)]
    assert w.assign(-1) == [(-10_000, 0)]


def test_hopping_record_falls_in_size_over_slide_windows():
    w = Hopping(timedelta(seconds=10), slide=timedelta(seconds=2))
    got = w.assign(11_000)
    assert got == [(2_000, 12_000), (4_000, 14_000), (6_000, 16_000), (8_000, 18_000), (10_000, 20_000)]
    assert all(s <= 11_000 < e for s, e in got)
    assert list(w.panes_of_window(4_000)) == [4_000, 6_000, 8_000, 10_000, 12_000]


def test_units_and_timedelta_agree():
    assert Tumbling(minutes=1).size_ms == Tumbling(timedelta(minutes=1)).size_ms == 60_000 == to_ms(60_000)


@pytest.mark.parametrize("make", [lambda: Tumbling(0), lambda: Tumbling(seconds=-1),
                                  lambda: Hopping(10_000, slide=3_000),
                                  lambda: Tumbling(10, seconds=1), lambda: Tumbling(1.5)])
def test_bad_specs_fail_at_definition(make):
    with pytest.raises(PipelineError):
        make()


def test_watermark_is_min_over_active_partitions_and_never_goes_back():
    w = Watermarks(out_of_order_ms=100, idle_timeout_ms=1_000)
    w.add("a", 0)
    w.add("b", 0)
    assert w.current(0) == NEVER  # b has seen nothing yet and is not idle
    w.observe("a", 5_000, now_ms=0)
    w.observe("b", 3_000, now_ms=0)
    assert w.current(0) == 2_900
    w.observe("b", 1_000, now_ms=10)  # older data does not move it back
    assert w.current(10) == 2_900


def test_idle_partition_stops_holding_the_watermark_back():
    w = Watermarks(out_of_order_ms=0, idle_timeout_ms=1_000)
    w.observe("a", 10_000, now_ms=0, caught_up=False)
    w.observe("b", 1_000, now_ms=0, caught_up=True)
    assert w.current(500) == 1_000
    assert w.current(1_500) == 10_000  # b idle: a alone decides
    w.observe("b", 2_000, now_ms=1_600)  # b has data again: it rejoins, but no going back
    assert w.current(1_600) == 10_000
