"""Fixtures of the grid unit tests: the service's tables on a private in-memory SQLite
(tests/unit/local.py), a district put in through the domain itself, a clock the tests move, and
helpers that register households and residents.

The district (unit ids)::

    1 district ─ 2 street ┬ 3 community A ─ 4 large A ─ 5 medium A ─ 6 small A
                          └ 7 community B ─ 8 large B ─ 9 medium B ─ 10 small B
"""

import datetime as dt

import pytest
from nameko.testing.services import worker_factory

from services.grid import access_log, erasure, incidents, residents, retention, screening, service, units
from services.grid.idnumbers import birth_date_of
from services.grid.retention import LifecycleProvider
from services.grid.service import GridService
from services.grid.unit_cache import UnitCache
from services.grid.vocabulary import DEFAULT_DEADLINES, DEFAULT_DEPARTMENTS
from shared.errors import Forbidden
from tests.support import id_number
from tests.unit.local import VAULT, Clock, caller, local_database, unit_of_work

NOW = dt.datetime(2030, 1, 7, 2, 0, tzinfo=dt.UTC)
DISTRICT, STREET, COMMUNITY_A, LARGE_A, MEDIUM_A, SMALL_A = 1, 2, 3, 4, 5, 6
COMMUNITY_B, LARGE_B, MEDIUM_B, SMALL_B = 7, 8, 9, 10
PATH_A = "/1/2/3/4/5/6/"
PATH_B = "/1/2/7/8/9/10/"
ADMIN = caller("admin", sub="root")
OFFICER_A = caller("officer", unit=COMMUNITY_A, sub="officer-a")
OFFICER_B = caller("officer", unit=COMMUNITY_B, sub="officer-b")
WORKER_A = caller("grid_worker", unit=SMALL_A, sub="worker-a")
POLICY = incidents.Policy(DEFAULT_DEPARTMENTS, DEFAULT_DEADLINES)
ADDRESS = {"compound": "Sunny Garden", "building": "3", "entrance": "2", "room": "501"}
LIFECYCLE_MODULES = (retention, erasure, access_log)  # the data lifecycle's modules read the clock too


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    return Clock.install(monkeypatch, NOW, units, residents, screening, incidents, service, *LIFECYCLE_MODULES)


@pytest.fixture
def db():
    return local_database("grid")


def build_district(db):
    with unit_of_work(db) as uow:
        made = [units.create_unit(uow, ADMIN, None, "district", "Test District", "D-1").id]
        made.append(units.create_unit(uow, ADMIN, made[0], "street", "East Street", None).id)
        for tag in ("A", "B"):
            parent = STREET
            for level in ("community", "grid_large", "grid_medium", "grid_small"):
                parent = units.create_unit(uow, ADMIN, parent, level, f"{level} {tag}", None).id
                made.append(parent)
        uow.commit()
    assert made == list(range(1, 11))  # the ids the module constants name


@pytest.fixture
def district(db):
    build_district(db)
    return db


@pytest.fixture
def add_household(district):
    """``add_household(unit=SMALL_A, room="501")``: a household registered and committed; its id."""

    def add(unit=SMALL_A, room="501"):
        with unit_of_work(district) as uow:
            household = residents.register_household(uow, ADMIN, unit, {**ADDRESS, "room": room})
            uow.commit()
            return household.id

    return add


def resident_args(seq, household_id, name=None):
    number = id_number(seq)
    return {
        "household_id": household_id,
        "name": name or f"Resident {seq}",
        "id_number": number,
        "phone": f"138{seq:08d}",
        "birth_date": birth_date_of(number),
    }


@pytest.fixture
def add_resident(district):
    """``add_resident(household_id, seq, *tags)``: a resident (ID number and phone made from ``seq``)
    registered, tagged and committed; its id."""

    def add(household_id, seq, *tags):
        with unit_of_work(district) as uow:
            resident = residents.register_resident(uow, ADMIN, VAULT, **resident_args(seq, household_id))
            for tag in tags:
                residents.tag_resident(uow, ADMIN, resident.id, tag, None, None)
            uow.commit()
            return resident.id

    return add


class StubAuth:
    """Stands in for shared.auth's token check: the caller is given, and the roles a method allows
    still apply (as ``CallerAccess.authorize`` applies them)."""

    def __init__(self, who):
        self.who = who
        self.asked = []

    def authorize(self, roles):
        self.asked.append(tuple(roles))
        if not self.who.has_role(*roles):
            raise Forbidden(f"none of {sorted(self.who.roles)} may call this")
        return self.who.acting_as(roles)


def worker(uow, who=ADMIN, unit_cache=None, **config):
    """A GridService worker on ``uow`` for ``who`` (nameko's worker_factory; other dependencies mocked);
    a unit cache of its own unless given one."""
    cache = UnitCache(serving=True) if unit_cache is None else unit_cache
    lifecycle = LifecycleProvider.local(config).access()  # lifecycle settings from ``config``
    return worker_factory(
        GridService, db=uow, auth=StubAuth(who), vault=VAULT, unit_cache=cache, lifecycle=lifecycle, config=config
    )


def call(db, method, who=ADMIN, unit_cache=None, **kwargs):
    """``method`` as one RPC runs it: a worker with its own unit of work, which the endpoint commits."""
    with unit_of_work(db) as uow:
        return getattr(worker(uow, who, unit_cache=unit_cache), method)(**kwargs)
