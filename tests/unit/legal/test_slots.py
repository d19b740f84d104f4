"""Slot generation, as pure functions (services/legal/slots.py)."""

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, strategies as st

from services.legal.slots import Busy, Plan, open_slots, slot_at

ZONE = ZoneInfo("Asia/Shanghai")
MONDAY = dt.date(2030, 1, 7)


def at(day, hour, minute=0):
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZONE).astimezone(dt.UTC)


PLAN = Plan(
    1,
    1,
    (
        {"weekday": 0, "start": "09:00", "end": "12:00"},
        {"weekday": 0, "start": "14:00", "end": "15:00"},
        {"weekday": 2, "start": "09:00", "end": "10:00"},
    ),
    40,
    10,
)
FAR_PAST, FAR_FUTURE = at(MONDAY, 0) - dt.timedelta(days=365), at(MONDAY, 0) + dt.timedelta(days=365)


def starts(slots):
    return [start for start, _ in slots]


def test_weekly_windows_slots_and_buffers():
    found = list(open_slots(PLAN, Busy([]), MONDAY, MONDAY + dt.timedelta(days=6), ZONE, FAR_PAST, FAR_FUTURE))
    # 40-minute slots every 50 minutes; the lunch gap is a break; Wednesday has one window
    assert starts(found) == [
        at(MONDAY, 9),
        at(MONDAY, 9, 50),
        at(MONDAY, 10, 40),
        at(MONDAY, 14),
        at(MONDAY + dt.timedelta(days=2), 9),
    ]
    assert found[0][1] - found[0][0] == dt.timedelta(minutes=40)


def test_time_off_and_bookings_remove_overlapping_slots():
    busy = Busy(
        [
            (at(MONDAY, 9, 30), at(MONDAY, 9, 55)),  # clips two slots
            (at(MONDAY, 13), at(MONDAY, 18)),
        ]
    )  # the whole afternoon
    found = list(open_slots(PLAN, busy, MONDAY, MONDAY, ZONE, FAR_PAST, FAR_FUTURE))
    assert starts(found) == [at(MONDAY, 10, 40)]


def test_long_time_off_hides_every_slot_it_covers():
    busy = Busy(
        [
            (at(MONDAY, 0) - dt.timedelta(days=3), at(MONDAY, 0) + dt.timedelta(days=5)),
            (at(MONDAY, 9), at(MONDAY, 9, 10)),
        ]
    )
    assert list(open_slots(PLAN, busy, MONDAY, MONDAY + dt.timedelta(days=3), ZONE, FAR_PAST, FAR_FUTURE)) == []


def test_minimum_notice_and_horizon_bound_the_starts():
    found = list(open_slots(PLAN, Busy([]), MONDAY, MONDAY, ZONE, at(MONDAY, 9, 30), at(MONDAY, 11)))
    assert starts(found) == [at(MONDAY, 9, 50), at(MONDAY, 10, 40)]


def test_slot_at_accepts_only_plan_slots():
    assert slot_at(PLAN, at(MONDAY, 9, 50), ZONE) == (at(MONDAY, 9, 50), at(MONDAY, 10, 30))
    assert slot_at(PLAN, at(MONDAY, 9, 45), ZONE) is None
    assert slot_at(PLAN, at(MONDAY + dt.timedelta(days=1), 9), ZONE) is None


# ---- properties -------------------------------------------------------------------------------

BASE = at(MONDAY, 0)
minutes = st.integers(min_value=0, max_value=7 * 24 * 60)
intervals = st.lists(
    st.tuples(minutes, st.integers(min_value=1, max_value=3 * 24 * 60)).map(
        lambda pair: (BASE + dt.timedelta(minutes=pair[0]), BASE + dt.timedelta(minutes=pair[0] + pair[1]))
    ),
    max_size=12,
)


@given(busy=intervals, start=minutes, length=st.integers(min_value=1, max_value=600))
def test_busy_overlaps_exactly_when_some_interval_does(busy, start, length):
    begin = BASE + dt.timedelta(minutes=start)
    end = begin + dt.timedelta(minutes=length)
    assert Busy(busy).overlaps(begin, end) == any(s < end and begin < e for s, e in busy)


def clock_of(minute):
    return f"{minute // 60:02d}:{minute % 60:02d}"


windows = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 23 * 60), st.integers(10, 8 * 60)).map(
        lambda w: {"weekday": w[0], "start": clock_of(w[1]), "end": clock_of(min(w[1] + w[2], 23 * 60 + 59))}
    ),
    max_size=4,
)


@given(
    weekly=windows,
    slot_minutes=st.integers(10, 240),
    buffer_minutes=st.integers(0, 120),
    busy=intervals,
    earliest=minutes,
)
def test_every_open_slot_is_a_free_plan_slot_inside_the_window(weekly, slot_minutes, buffer_minutes, busy, earliest):
    plan = Plan(1, 1, tuple(weekly), slot_minutes, buffer_minutes)
    earliest_at = BASE + dt.timedelta(minutes=earliest)
    latest_at = earliest_at + dt.timedelta(days=3)
    found = list(open_slots(plan, Busy(busy), MONDAY, MONDAY + dt.timedelta(days=6), ZONE, earliest_at, latest_at))
    for start, end in found:
        local_start, local_end = start.astimezone(ZONE), end.astimezone(ZONE)
        assert end - start == dt.timedelta(minutes=slot_minutes)
        assert earliest_at <= start <= latest_at
        assert not any(s < end and start < e for s, e in busy)
        assert any(
            w["weekday"] == local_start.weekday()
            and w["start"] <= local_start.strftime("%H:%M")
            and local_end.strftime("%H:%M") <= w["end"]
            for w in weekly
        )
        assert slot_at(plan, start, ZONE) == (start, end)
