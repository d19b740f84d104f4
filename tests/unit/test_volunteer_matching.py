"""Ranking volunteers, as pure functions."""

import datetime as dt
from zoneinfo import ZoneInfo

from services.volunteer.matching import Candidate, rank, search_scopes, shared_depth

ZONE = ZoneInfo("Asia/Shanghai")
ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
REQUEST_PATH = "/1/2/3/4/5/6/"
NEEDED = dt.datetime(2030, 1, 7, 2, 0, tzinfo=dt.UTC)  # Monday 10:00 in Shanghai


def volunteer(
    vid, path, skills=("delivery",), availability=ALWAYS, active=0, recent=0, cap=3, household=None, quarantined=False
):
    return Candidate(vid, path, list(skills), availability, cap, household, active, recent, quarantined)


def ids(ranked):
    return [c.volunteer_id for c in ranked]


def test_nearer_grids_come_first():
    people = [
        volunteer(1, "/1/2/9/"),
        volunteer(2, "/1/2/3/4/5/7/"),
        volunteer(3, "/1/2/3/4/5/6/"),
        volunteer(4, "/1/2/3/8/"),
    ]
    assert ids(rank(people, REQUEST_PATH, "groceries", NEEDED, ZONE)) == [3, 2, 4, 1]
    assert shared_depth("/1/2/3/4/5/6/", "/1/2/3/4/5/6/") == 6


def test_then_skill_availability_load_and_fairness():
    morning_only = [{"weekday": 0, "start": "06:00", "end": "09:00"}]
    people = [
        volunteer(1, REQUEST_PATH, skills=("translation",)),
        volunteer(2, REQUEST_PATH, availability=morning_only),
        volunteer(3, REQUEST_PATH, active=1),
        volunteer(4, REQUEST_PATH, recent=5),
        volunteer(5, REQUEST_PATH),
    ]
    assert ids(rank(people, REQUEST_PATH, "groceries", NEEDED, ZONE)) == [5, 4, 3, 2, 1]


def test_exclusions():
    people = [
        volunteer(1, REQUEST_PATH, household=77),
        volunteer(2, REQUEST_PATH, quarantined=True),
        volunteer(3, REQUEST_PATH, active=2, cap=2),
        volunteer(4, REQUEST_PATH),
        volunteer(5, REQUEST_PATH),
    ]
    ranked = rank(people, REQUEST_PATH, "groceries", NEEDED, ZONE, request_household_id=77, already_offered={5})
    assert ids(ranked) == [4]


def test_search_widens_from_the_small_grid_to_the_district():
    assert search_scopes(REQUEST_PATH) == ["/1/2/3/4/5/6/", "/1/2/3/4/5/", "/1/2/3/4/", "/1/2/3/", "/1/2/", "/1/"]
