"""The read model of grid facts (shared.grid_facts) reads the grid without the ``pii`` claim, even through a
grid client that holds it (notices'): a read-through, an event's re-read or a daily resync needs ids, paths
and tags, no phone, and must not be recorded as a read of residents' personal data in their access logs.
The client's ``without_pii()`` (services/grid/client.py, shared/clients.py) carries a token without it."""

import datetime as dt
from unittest.mock import Mock

import pytest

from services.grid.client import FakeGrid, GridClient
from services.notices.models import FACTS
from shared import grid_facts
from shared.auth import SECRET_ENV, TOKEN_CONTEXT_KEY, decode_token
from tests.unit.local import local_database, unit_of_work

SECRET = "unit-test-jwt-secret-0123456789abcdef"


@pytest.fixture
def db():
    database = local_database("notices")
    yield database
    database.stop()


@pytest.fixture
def grid():
    """A fake grid as a client holding the ``pii`` claim sees it."""
    fake = FakeGrid()
    fake.add_unit(1, "district")
    fake.add_unit(2, "street", parent_id=1)
    fake.add_unit(3, "grid_small", parent_id=2)
    fake.add_household(10, 3)
    fake.add_resident(100, 10, tags=["quarantined"])
    fake.add_resident(101, 10)
    fake.pii = True
    return fake


def test_read_throughs_events_and_the_resync_are_not_pii_reads(db, grid):
    with unit_of_work(db) as uow:
        local = grid_facts.LocalGrid(uow.session, grid, FACTS)
        assert [r["id"] for r in local.residents([100, 101], "resident_ids")] == ["100", "101"]
        assert local.get_unit(unit_id=3)["path"] == ["1", "2", "3"]
        assert local.get_household(household_id=10)["unit_path"] == ["1", "2", "3"]
        uow.commit()
    with unit_of_work(db) as uow:
        grid_facts.resident_changed(uow.session, grid, FACTS, 100)
        grid_facts.unit_changed(uow.session, grid, FACTS, 2)
        grid_facts.household_changed(uow.session, grid, FACTS, 10)
        uow.commit()
    with unit_of_work(db) as uow:
        now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        while grid_facts.sync_step(uow.session, grid, FACTS, now, dt.timedelta(hours=24)):
            uow.commit()
        uow.commit()
    assert {"get_residents", "get_unit", "get_household"} <= set(grid.calls)
    assert grid.pii_calls == []
    grid.get_residents(resident_ids=["100"])  # the same client's own reads still carry the claim
    assert grid.pii_calls == ["get_residents"]


def test_a_pii_grid_client_also_calls_without_the_claim():
    container = Mock(config={SECRET_ENV: SECRET}, service_name="notices")
    worker_ctx = Mock(container=container, context_data={})

    def claims(grid):
        return decode_token(SECRET, grid._service._ctx.context_data[TOKEN_CONTEXT_KEY])

    contacts = GridClient(pii=True)
    contacts.container = container
    contacts.setup()
    grid = contacts.get_dependency(worker_ctx)
    assert claims(grid).pii is True
    assert claims(grid.without_pii()).pii is False
    assert claims(grid.without_pii()).sub == "service:notices"
    plain = GridClient()
    plain.container = container
    plain.setup()
    grid = plain.get_dependency(worker_ctx)
    assert grid.without_pii() is grid and claims(grid).pii is False
