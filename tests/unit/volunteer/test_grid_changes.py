"""The volunteer service's copies of grid facts after the grid's tree changes
(services/volunteer/grid_changes.py), with the copies made by the domain itself. The path
rewriting in general is shared.grid_copies' (tests/unit/test_grid_copies.py)."""

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from services.volunteer import care, grid_changes, requests
from services.volunteer.models import CarePlan, HelpRequest, Volunteer
from shared.errors import Forbidden
from tests.unit.local import unit_of_work
from tests.unit.volunteer.conftest import COMMUNITY_A, COMMUNITY_B, NOW, OFFICER_A, OFFICER_B, SMALL_A, SMALL_A2

NEW_PATH_A = "/1/2/8/9/12/6/"  # small grid A under a new medium grid 12 of community B


def move_household(grid, household_id, unit_id):
    unit = grid.units[str(unit_id)]
    grid.households[str(household_id)].update(unit_id=unit["id"], unit_path=list(unit["path"]))


def test_a_household_under_care_takes_its_pending_help_along(db, grid, notices, policy, add_volunteer):
    lives_there = add_volunteer(1040)
    with unit_of_work(db) as uow:
        care.start(uow, grid, notices, policy, 104, NOW)
        uow.commit()
    with unit_of_work(db) as uow:  # one of the day's requests was done before the move
        done = uow.session.scalars(select(HelpRequest).where(HelpRequest.kind == "check_in")).one()
        done.status = "completed"
        uow.commit()
    move_household(grid, 104, SMALL_A2)
    with unit_of_work(db) as uow:
        changed = grid_changes.household_moved(uow.session, grid, 104)
        uow.commit()
    assert changed == {"care_plans": 1, "help_requests": 1, "volunteers": 1}
    with unit_of_work(db) as uow:
        session = uow.session
        assert session.get(CarePlan, 104).unit_id == SMALL_A2
        assert dict(session.execute(select(HelpRequest.kind, HelpRequest.unit_id)).all()) == {
            "groceries": SMALL_A2,  # still to come: follows
            "check_in": SMALL_A,  # done where the help was given
        }
        assert session.get(Volunteer, lives_there).home_unit_id == SMALL_A2
        # the next day's care opens at the new place
        tomorrow = NOW + dt.timedelta(days=1)
        opened = care.open_due(uow, grid, notices, policy, 104, tomorrow)
        assert {r.unit_path for r in opened} == {"/1/2/3/4/5/7/"}


def test_a_moved_unit_takes_its_people_and_requests_into_the_new_scope(db, grid, ask, add_volunteer):
    add_volunteer(1010)
    request = ask()
    grid.add_unit(12, "grid_medium", parent_id=9)
    grid.add_unit(SMALL_A, "grid_small", parent_id=12)  # small grid A moves to community B
    with unit_of_work(db) as uow:
        changed = grid_changes.unit_moved(uow.session, grid, SMALL_A)
        uow.commit()
    assert changed["volunteers.home_path"] == 1 and changed["help_requests.unit_path"] == 1
    with unit_of_work(db) as uow:
        assert requests.reachable_request(uow.session, OFFICER_B, request.id).unit_path == NEW_PATH_A
        with pytest.raises(Forbidden):
            requests.reachable_request(uow.session, OFFICER_A, request.id)
        listed, _ = requests.list_requests(uow.session, OFFICER_B, grid, COMMUNITY_B, None, 1, 10)
        assert [r.id for r in listed] == [request.id]
        assert requests.list_requests(uow.session, OFFICER_A, grid, COMMUNITY_A, None, 1, 10)[0] == []


def test_a_closed_unit_changes_nothing_and_logs_counts_only(db, grid, ask, add_volunteer, caplog):
    add_volunteer(1010)
    ask()
    with unit_of_work(db) as uow, caplog.at_level(logging.WARNING, logger=grid_changes.log.name):
        inside = grid_changes.unit_closed(uow.session, SMALL_A)
        assert not uow.session.dirty and not uow.session.new
    assert inside == {"open_requests": 1, "active_care_plans": 0, "active_volunteers": 1, "upcoming_shifts": 0}
    [record] = caplog.records
    assert (record.unit_id, record.open_requests, record.active_volunteers) == (str(SMALL_A), 1, 1)
    said = caplog.text + str(vars(record))
    assert "Rice" not in said and "volunteer 1010" not in said  # no request details, no names
