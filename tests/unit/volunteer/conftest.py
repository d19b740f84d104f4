"""Fixtures of the volunteer unit tests: the service's tables on a private in-memory SQLite
(tests/unit/local.py), a small district in the fake grid, fake notices, a clock the tests move, and
helpers that put volunteers, shifts and requests in through the domain itself.

The district (unit ids)::

    1 district ─ 2 street ┬ 3 community A ─ 4 large ─ 5 medium ┬ 6 small grid A    households 100, 101, 104
                          │                                     └ 7 small grid A2   household 102
                          └ 8 community B ─ 9 large ─ 10 medium ─ 11 small grid B  household 103

Residents: 1000 and 1001 live in household 100 (1000 asks for help), 1010 in 101, 1020 in 102,
1030 in 103, 1040 in 104 (tagged quarantined in the grid).
"""

import datetime as dt

import pytest

from services.grid.client import FakeGrid
from services.notices.client import FakeNotices
from services.volunteer import care, duty, people, requests, service
from tests.unit.local import VAULT, Clock, caller, local_database, unit_of_work

# A Monday, 10:00 in Shanghai (the service's default time zone).
NOW = dt.datetime(2030, 1, 7, 2, 0, tzinfo=dt.UTC)
ALWAYS = [{"weekday": day, "start": "00:00", "end": "23:59"} for day in range(7)]
SMALL_A, SMALL_A2, SMALL_B, COMMUNITY_A, COMMUNITY_B = 6, 7, 11, 3, 8
PATH_A = "/1/2/3/4/5/6/"
ADMIN = caller("admin")
OFFICER_A = caller("officer", unit=COMMUNITY_A)
OFFICER_B = caller("officer", unit=COMMUNITY_B)


def address(room):
    return {"compound": "Sunny Garden", "building": "3", "entrance": "2", "room": str(room)}


def build_grid():
    grid = FakeGrid()
    for unit, level, parent in (
        (1, "district", None),
        (2, "street", 1),
        (3, "community", 2),
        (4, "grid_large", 3),
        (5, "grid_medium", 4),
        (6, "grid_small", 5),
        (7, "grid_small", 5),
        (8, "community", 2),
        (9, "grid_large", 8),
        (10, "grid_medium", 9),
        (11, "grid_small", 10),
    ):
        grid.add_unit(unit, level, parent_id=parent)
    for household, unit in ((100, SMALL_A), (101, SMALL_A), (102, SMALL_A2), (103, SMALL_B), (104, SMALL_A)):
        grid.add_household(household, unit, address=address(household))
    for resident, household in ((1000, 100), (1001, 100), (1010, 101), (1020, 102), (1030, 103)):
        grid.add_resident(resident, household)
    grid.add_resident(1040, 104, tags=["quarantined"])
    return grid


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return Clock.install(monkeypatch, NOW, people, duty, requests, care, service)


@pytest.fixture
def db():
    return local_database("volunteer")


@pytest.fixture
def grid():
    return build_grid()


@pytest.fixture
def notices():
    return FakeNotices()


@pytest.fixture
def policy():
    return requests.Policy({})


@pytest.fixture
def add_volunteer(db, grid):
    """``add_volunteer(resident_id, unit, **fields)``: a volunteer registered (by an admin) and committed; its id."""

    def add(resident_id=None, unit=SMALL_A, **fields):
        args = {
            "name": f"volunteer {resident_id}",
            "phone": "13912345678",
            "home_unit_id": unit,
            "skills": ["delivery"],
            "availability": ALWAYS,
            "max_active_tasks": 3,
            "resident_id": resident_id,
            "party_member": False,
            **fields,
        }
        with unit_of_work(db) as uow:
            volunteer = people.register_volunteer(uow, ADMIN, grid, VAULT, **args)
            uow.commit()
            return volunteer.id

    return add


@pytest.fixture
def add_shift(db, grid):
    """``add_shift(starts_at, hours=2, needed=1, unit=COMMUNITY_A)``: a post with one shift, committed; the shift id."""

    def add(starts_at, hours=2, needed=1, unit=COMMUNITY_A):
        with unit_of_work(db) as uow:
            post = duty.create_post(uow, ADMIN, grid, unit, "Gate 3", "North gate")
            shift = duty.add_shift(uow, ADMIN, post.id, starts_at, starts_at + dt.timedelta(hours=hours), needed)
            uow.commit()
            return shift.id

    return add


@pytest.fixture
def ask(db, grid, notices, policy):
    """``ask(who=OFFICER_A, **overrides)``: a groceries request for resident 1000, committed; the request."""

    def create(who=OFFICER_A, **overrides):
        args = {
            "unit_id": SMALL_A,
            "kind": "groceries",
            "details": "Rice and vegetables",
            "urgency": "high",
            "needed_by": NOW + dt.timedelta(hours=3),
            "household_id": None,
            "resident_id": 1000,
            **overrides,
        }
        with unit_of_work(db) as uow:
            request = requests.create_request(uow, who, grid, notices, policy, **args)
            uow.commit()
            return request

    return create


def volunteer_caller(volunteer_id):
    return caller("volunteer", sub=str(volunteer_id))


def resident_caller(resident_id, unit=SMALL_A):
    return caller("resident", sub=str(resident_id), unit=unit)
