"""Legal's copies of grid paths when the grid's tree changes (services/legal/grid_changes.py)."""

import logging

import pytest
from sqlalchemy import select

from services.legal import bookings, grid_changes, mediation
from services.legal.models import Consultation, MediationCase, Station
from tests.unit.legal.conftest import COMMUNITY_A, DESK, GRID_A, OFFICER_A
from tests.unit.local import unit_of_work

NEW_STREET = 7


def move(grid, unit_id, new_parent):
    """The grid's side of a move: the unit and everything under it now hang below ``new_parent``."""
    old = list(grid.units[str(unit_id)]["path"])
    new = [*grid.units[str(new_parent)]["path"], str(unit_id)]
    grid.units[str(unit_id)]["parent_id"] = str(new_parent)
    for unit in grid.units.values():
        if unit["path"][: len(old)] == old:
            unit["path"] = new + unit["path"][len(old) :]


@pytest.fixture
def held(committed, grid, book):
    """A booking at the practice's station (community A) and a case at grid A."""
    booked = book(1000, "09:00")
    with committed() as uow:
        case = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "neighbour", [1000, 1010], "Noise", None)
    return {"consultation": booked.id, "case": case.id}


def paths(db):
    with unit_of_work(db) as uow:
        return {
            "station": uow.session.scalars(select(Station.unit_path)).all(),
            "consultation": uow.session.scalars(select(Consultation.station_path)).all(),
            "case": uow.session.scalars(select(MediationCase.unit_path)).all(),
        }


def test_copies_follow_a_moved_community_and_a_replay_changes_nothing(committed, db, grid, held):
    grid.add_unit(NEW_STREET, "street", parent_id=1)
    move(grid, COMMUNITY_A, NEW_STREET)
    with committed() as uow:
        changed = grid_changes.unit_moved(uow.session, grid, COMMUNITY_A)
    # The read model of grid facts follows too (empty here: the domain ran on the fake grid directly).
    assert changed == {
        "stations.unit_path": 1,
        "consultations.station_path": 1,
        "mediation_cases.unit_path": 1,
        "grid_units.path": 0,
        "grid_households.unit_path": 0,
    }
    assert paths(db) == {"station": ["/1/7/3/"], "consultation": ["/1/7/3/"], "case": ["/1/7/3/4/"]}
    with committed() as uow:
        assert set(grid_changes.unit_moved(uow.session, grid, COMMUNITY_A).values()) == {0}


def test_a_unit_the_grid_does_not_know_changes_nothing(committed, db, grid, held):
    before = paths(db)
    with committed() as uow:
        assert grid_changes.unit_moved(uow.session, grid, 404) == {}
    assert paths(db) == before


def test_a_closed_unit_counts_what_is_still_open_inside_and_changes_nothing(committed, db, grid, held, book, caplog):
    caplog.set_level(logging.WARNING, logger=grid_changes.log.name)
    dropped = book(1010, "10:00")
    with committed() as uow:
        bookings.cancel(uow, DESK, dropped.id, "no")  # a cancelled booking no longer counts
        closed = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "family", [1000, 1001], "x", None)
        mediation.close_mediation(uow, OFFICER_A, closed.id, "withdrawn", None)  # nor does a closed case
    with committed() as uow:
        assert grid_changes.unit_closed(uow.session, COMMUNITY_A) == {"upcoming_consultations": 1, "open_cases": 1}
        assert grid_changes.unit_closed(uow.session, GRID_A) == {"upcoming_consultations": 0, "open_cases": 1}
    with unit_of_work(db) as uow:
        assert uow.session.get(Consultation, held["consultation"]).status == "booked"
    first = next(r for r in caplog.records if "unit closed" in r.getMessage())
    assert (first.upcoming_consultations, first.open_cases) == (1, 1)
    assert "1000" not in caplog.text  # counts only: no resident named


def test_a_closed_unit_with_nothing_open_logs_nothing(committed, grid, caplog):
    with committed() as uow:
        assert grid_changes.unit_closed(uow.session, COMMUNITY_A) == {"upcoming_consultations": 0, "open_cases": 0}
    assert caplog.records == []
