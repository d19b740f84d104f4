"""Legal's lookups on its read model of grid facts (shared.grid_facts, ``models.FACTS``): find_slots by
unit (the unit's ancestors), booking for a resident (their place), opening a case (unit and parties) read
the model; a miss asks the grid once; the grid's events keep the model true; no address, no tag is kept."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from services.legal import bookings, grid_changes, mediation
from services.legal.models import FACTS
from shared import grid_facts
from shared.errors import Forbidden
from tests.unit.legal.conftest import GRID_A, GRID_B, OFFICER_A, TUESDAY, at
from tests.unit.local import unit_of_work


@pytest.fixture
def local(db, grid):
    """``with local() as (uow, facts):`` a committed unit of work and the read model over the fake grid;
    ``grid.calls`` cleared first."""
    from contextlib import contextmanager

    @contextmanager
    def work():
        grid.calls.clear()
        with unit_of_work(db) as uow:
            yield uow, grid_facts.LocalGrid(uow.session, grid, FACTS)
            uow.commit()

    return work


def slots_by_unit(uow, facts, policy, unit_id):
    return bookings.find_slots(uow.session, facts, policy, "family", TUESDAY, TUESDAY, None, unit_id)


def test_find_slots_by_unit_reads_the_ancestors_from_the_model(local, grid, policy, practice):
    with local() as (uow, facts):
        first = slots_by_unit(uow, facts, policy, GRID_A)
    assert first and grid.calls == ["get_unit"] * 4  # grid A, then its three ancestors: each read once
    with local() as (uow, facts):
        assert slots_by_unit(uow, facts, policy, GRID_A) == first
    assert grid.calls == []


def test_booking_and_a_case_read_residents_from_the_model(local, grid, policy, practice):
    with local() as (uow, facts):
        mediation.open_mediation(uow, OFFICER_A, facts, GRID_A, "neighbour", [1000, 1010], "Noise", None)
    assert sorted(grid.calls) == ["get_residents", "get_unit"]
    with local() as (uow, facts):
        bookings.book(
            uow,
            OFFICER_A,
            facts,
            policy,
            practice["lawyer"],
            practice["station"],
            at(TUESDAY, "09:00"),
            1000,
            "Lease",
            "phone",
        )
        mediation.open_mediation(uow, OFFICER_A, facts, GRID_A, "neighbour", [1001, 1000], "Noise", None)
    assert grid.calls == ["get_residents"]  # 1001 only: 1000, 1010 and grid A were kept


def test_a_moved_household_moves_the_scope_checks_with_it(local, db, grid, policy, practice):
    with local() as (uow, facts):
        facts.resident(1010)
    grid.move_household(101, GRID_B)
    with unit_of_work(db) as uow:
        grid_changes.household_moved(uow.session, grid, 101)
        uow.commit()
    with local() as (uow, facts), pytest.raises(Forbidden):
        # officer A's community no longer holds resident 1010
        bookings.book(
            uow,
            OFFICER_A,
            facts,
            policy,
            practice["lawyer"],
            practice["station"],
            at(TUESDAY, "10:00"),
            1010,
            "x",
            "phone",
        )
    assert grid.calls == []


def test_legal_keeps_no_address_and_no_tag(local, db, grid):
    grid.set_tag(1000, "quarantined")
    with local() as (uow, facts):
        assert "address" not in facts.get_household(household_id=100)
        assert facts.resident(1000)["tags"] == []
    with unit_of_work(db) as uow:
        assert uow.session.scalar(select(func.count()).where(FACTS.household.address.is_not(None))) == 0
    with unit_of_work(db) as uow:  # the resync keeps none either
        while grid_facts.sync_step(uow.session, grid, FACTS, dt.datetime.now(dt.UTC), dt.timedelta(days=1)):
            uow.commit()
        assert uow.session.scalar(select(func.count()).where(FACTS.household.address.is_not(None))) == 0


def test_a_unit_created_then_closed_is_read_from_the_grid_each_time(db, grid):
    grid.add_unit(7, "grid_small", parent_id=5)
    for closed in (False, True):
        grid.units["7"]["closed"] = closed
        with unit_of_work(db) as uow:
            assert grid_changes.unit_changed(uow.session, grid, 7)
            uow.commit()
        with unit_of_work(db) as uow:
            assert uow.session.get(FACTS.unit, 7).closed is closed
