from datetime import timedelta

import pytest

from stream.errors import PipelineError
from stream.windows.eventtime import NEVER, PartitionClock
from stream.windows.specs import Hopping, Tumbling, to_ms


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


def test_partition_clock_follows_the_highest_event_time_and_never_goes_back():
    c = PartitionClock()
    assert c.now == NEVER
    c.observe(5_000)
    c.observe(3_000)  # older data does not move it back
    assert c.now == 5_000
    c.advance_to(4_000)
    assert c.now == 5_000 and c.event_time == 5_000
    c.advance_to(9_000)  # the wall-clock advance moves it on, never the record maximum
    assert (c.now, c.event_time) == (9_000, 5_000)


def test_hopping_placement_names_closed_windows_oldest_first_and_when_it_would_change():
    j = Hopping(30_000, slide=10_000).judge(grace_ms=1_000, out_of_order_ms=500)
    p = j.place(before=10_000, ts=25_000)        # pane 20 s: windows from 0, 10 s, 20 s
    assert (p.pane, p.stage, p.closed, p.valid_below) == (20_000, NEVER, (), 31_500)
    p = j.place(before=41_500, ts=25_000)        # [0, 30 s) and [10 s, 40 s) closed
    assert (p.pane, p.stage, p.closed) == (20_000, 10_000, ((0, 30_000), (10_000, 40_000)))
    assert p.valid_below == 51_500
    assert j.place(before=51_500, ts=25_000).pane is None
