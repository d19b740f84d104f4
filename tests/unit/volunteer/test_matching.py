"""Ranking volunteers, as pure functions."""

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, strategies as st

from services.volunteer.matching import Candidate, eligible, rank, search_scopes, shared_depth
from shared.paths import as_path, path_ids

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


# ---- properties ------------------------------------------------------------------------

unit_ids = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=7)


@given(unit_ids, st.one_of(st.none(), st.integers(min_value=1, max_value=8)))
def test_search_scopes_widen_one_level_at_a_time_from_the_unit_itself(ids, floor):
    scopes = search_scopes(as_path(ids), floor)
    assert scopes[0] == as_path(ids)
    assert all(as_path(ids).startswith(scope) for scope in scopes)
    assert [len(path_ids(s)) for s in scopes] == list(range(len(ids), len(path_ids(scopes[-1])) - 1, -1))
    assert len(path_ids(scopes[-1])) == max(1, min(floor or 1, len(ids)))


candidates = st.lists(
    st.builds(
        volunteer,
        vid=st.integers(min_value=1, max_value=10_000),
        path=unit_ids.map(as_path),
        active=st.integers(min_value=0, max_value=4),
        cap=st.integers(min_value=1, max_value=3),
        household=st.one_of(st.none(), st.integers(min_value=70, max_value=80)),
        quarantined=st.booleans(),
    ),
    max_size=25,
    unique_by=lambda c: c.volunteer_id,
)


@given(candidates, unit_ids, st.frozensets(st.integers(min_value=1, max_value=10_000), max_size=5))
def test_rank_keeps_only_the_eligible_nearest_first(people, request_ids, offered):
    request_path = as_path(request_ids)
    ranked = rank(people, request_path, "groceries", NEEDED, ZONE, request_household_id=77, already_offered=offered)
    assert {c.volunteer_id for c in ranked} == {c.volunteer_id for c in people if eligible(c, 77, offered)}
    assert not any(c.quarantined or c.household_id == 77 or c.active_tasks >= c.max_active_tasks for c in ranked)
    depths = [shared_depth(c.home_path, request_path) for c in ranked]
    assert depths == sorted(depths, reverse=True)
