"""Slot generation: weekly plans in local time, cut into slots of ``slot_minutes`` with
``buffer_minutes`` between them, minus time off and existing bookings, inside the window
between minimum notice and the booking horizon. Pure functions: no database here."""

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    lawyer_id: int
    station_id: int
    weekly: tuple  # ({"weekday": 0-6, "start": "HH:MM", "end": "HH:MM"}, ...)
    slot_minutes: int
    buffer_minutes: int


class Busy:
    """A lawyer's busy intervals (time off, bookings), for O(log n) overlap checks."""

    def __init__(self, intervals):
        self.intervals = sorted(intervals)
        self.starts = [start for start, _ in self.intervals]
        # max_end[i]: the latest end among the first i+1 intervals (by start)
        self.max_end = list(itertools.accumulate((end for _, end in self.intervals), max))

    def overlaps(self, start, end):
        before_end = bisect.bisect_left(self.starts, end)  # intervals starting before `end`
        return before_end > 0 and self.max_end[before_end - 1] > start


def _clock(value):
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


def day_slots(plan, day, zone):
    """Every slot of the plan on ``day`` (a local date), as aware UTC datetimes."""
    length = dt.timedelta(minutes=plan.slot_minutes)
    step = length + dt.timedelta(minutes=plan.buffer_minutes)
    for window in plan.weekly:
        if window["weekday"] != day.weekday():
            continue
        start = dt.datetime.combine(day, _clock(window["start"]), tzinfo=zone)
        end = dt.datetime.combine(day, _clock(window["end"]), tzinfo=zone)
        moment = start
        while moment + length <= end:
            yield moment.astimezone(dt.UTC), (moment + length).astimezone(dt.UTC)
            moment += step


def open_slots(plan, busy, date_from, date_to, zone, earliest, latest):
    """Free slots from ``date_from`` to ``date_to`` (local dates, inclusive) starting within [earliest, latest]."""
    day = date_from
    while day <= date_to:
        for start, end in day_slots(plan, day, zone):
            if earliest <= start <= latest and not busy.overlaps(start, end):
                yield start, end
        day += dt.timedelta(days=1)


def slot_at(plan, starts_at, zone):
    """The plan's slot starting exactly at ``starts_at``, or None."""
    local_day = starts_at.astimezone(zone).date()
    for start, end in day_slots(plan, local_day, zone):
        if start == starts_at:
            return start, end
    return None
