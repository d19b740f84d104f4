"""Slot generation, as pure functions."""

import datetime as dt
from zoneinfo import ZoneInfo

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
