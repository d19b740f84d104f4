"""Fixtures of the legal unit tests: the service's tables on a private in-memory SQLite
(tests/unit/local.py), a small district in the fake grid, fake notices, a clock the tests move, and a
practice (a station, a lawyer and their plan) put in through the domain itself.

The district (unit ids)::

    1 district ─ 2 street ┬ 3 community A ─ 4 grid A   households 100 (residents 1000, 1001), 101 (1010)
                          └ 5 community B ─ 6 grid B   households 102 (1020), 103 (1030)

Resident 1030 is also lawyer 1's resident record once the practice links it (reminders, conflicts).
"""

import datetime as dt
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import pytest

from services.grid.client import FakeGrid
from services.legal import bookings, directory, grid_changes, mediation, service
from tests.unit.local import Clock, caller, local_database, unit_of_work

ZONE = ZoneInfo("Asia/Shanghai")
# A Monday, 10:00 in Shanghai.
NOW = dt.datetime(2030, 1, 7, 2, 0, tzinfo=dt.UTC)
TUESDAY = dt.date(2030, 1, 8)
COMMUNITY_A, GRID_A, COMMUNITY_B, GRID_B, STREET = 3, 4, 5, 6, 2
CONFIG = {
    "MIN_NOTICE_MINUTES": 60,
    "BOOKING_HORIZON_DAYS": 14,
    "MAX_UPCOMING_BOOKINGS": 3,
    "REMINDER_LEAD_MINUTES": 24 * 60,
    "TIMEZONE": "Asia/Shanghai",
}
EVERY_DAY = [{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(7)] + [
    {"weekday": d, "start": "14:00", "end": "17:00"} for d in range(7)
]
ADMIN = caller("admin", sub="root")
OFFICER_A = caller("officer", unit=COMMUNITY_A, sub="officer-a")
OFFICER_B = caller("officer", unit=COMMUNITY_B, sub="officer-b")
DESK = caller("service", sub="service:desk")


def at(day, clock):
    """A local (Shanghai) wall-clock time on ``day`` as an aware UTC datetime."""
    hours, minutes = map(int, clock.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=ZONE).astimezone(dt.UTC)


def resident(resident_id, unit=GRID_A):
    return caller("resident", unit=unit, sub=str(resident_id))


def lawyer(lawyer_id):
    return caller("lawyer", sub=str(lawyer_id))


def field_of(error):
    """The fields a ValidationError (caught by ``pytest.raises``) names."""
    return set(error.value.details)


def phone_of(resident_id):
    return f"138{resident_id:08d}"


def build_grid():
    grid = FakeGrid()
    for unit, level, parent in (
        (1, "district", None),
        (STREET, "street", 1),
        (COMMUNITY_A, "community", STREET),
        (GRID_A, "grid_small", COMMUNITY_A),
        (COMMUNITY_B, "community", STREET),
        (GRID_B, "grid_small", COMMUNITY_B),
    ):
        grid.add_unit(unit, level, parent_id=parent)
    for household, unit in ((100, GRID_A), (101, GRID_A), (102, GRID_B), (103, GRID_B)):
        grid.add_household(household, unit)
    for resident_id, household in ((1000, 100), (1001, 100), (1010, 101), (1020, 102), (1030, 103)):
        # what the grid's find rows carry for a pii reader (legal's contacts client), ID number included
        grid.add_resident(resident_id, household).update(
            name=f"Resident {resident_id}", phone=phone_of(resident_id), id_number=f"11010119800101{resident_id}"
        )
    return grid


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return Clock.install(monkeypatch, NOW, bookings, directory, mediation, grid_changes, service)


@pytest.fixture
def db():
    return local_database("legal")


@pytest.fixture
def grid():
    return build_grid()


@pytest.fixture
def policy():
    return bookings.Policy(CONFIG)


@pytest.fixture
def committed(db):
    """``with committed() as uow:`` a unit of work committed at the end, as an entrypoint would."""

    @contextmanager
    def work():
        with unit_of_work(db) as uow:
            yield uow
            uow.commit()

    return work


@pytest.fixture
def practice(committed, grid):
    """A station in community A; lawyer 1 (linked to resident 1030) serving it every day 09-12 and 14-17
    in 30-minute slots. {"station": id, "lawyer": id}."""
    with committed() as uow:
        station = directory.create_station(uow, OFFICER_A, grid, COMMUNITY_A, "Sunny Station", "1 Sunny Road")
        registered = directory.register_lawyer(
            uow, ADMIN, grid, "Lawyer One", "Firm A", "LIC-000001", ["family", "labour"], [station.id], 1030
        )
        directory.set_schedule(uow, OFFICER_A, registered.id, station.id, EVERY_DAY, 30, 0)
    return {"station": station.id, "lawyer": registered.id}


@pytest.fixture
def book(committed, grid, policy, practice):
    """``book(resident_id, clock, day=TUESDAY, who=DESK)``: a committed booking with the practice's lawyer."""

    def make(resident_id, clock, day=TUESDAY, who=DESK, topic="Lease dispute"):
        with committed() as uow:
            return bookings.book(
                uow,
                who,
                grid,
                policy,
                practice["lawyer"],
                practice["station"],
                at(day, clock),
                resident_id,
                topic,
                "phone",
            )

    return make
