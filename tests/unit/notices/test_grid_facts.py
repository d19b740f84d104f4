"""Notices' audience and scope checks on its read model of grid facts (shared.grid_facts, ``models.FACTS``):
a notice's audience units, a resident's place for preferences and acknowledgements are read locally once
known; a miss asks the grid once; the grid's events keep the model true; no address, no tag is kept."""

from contextlib import contextmanager

import pytest

from services.notices import acks, grid_changes, notices, preferences
from services.notices.models import FACTS
from shared import grid_facts
from shared.errors import Forbidden, NotFound
from tests.unit.local import caller, unit_of_work
from tests.unit.notices.conftest import SMALL_A, SMALL_B, add_notice

STREET = caller("officer", unit=2, sub="officer-1")
COMMUNITY_A = caller("officer", unit=3, sub="officer-a")
DRAFT = {
    "title": "Water cut",
    "body": "No water on Friday 9-12.",
    "category": "community_activity",
    "severity": "moderate",
    "urgency": "expected",
    "channels": ["sms"],
    "requires_ack": False,
    "ack_deadline": None,
    "publish_at": None,
    "expires_at": None,
    "msg_type": "alert",
    "references": None,
}


@pytest.fixture
def local(db, grid):
    """``with local() as (uow, facts):`` a committed unit of work and the read model over the fake grid;
    ``grid.calls`` cleared first."""

    @contextmanager
    def work():
        grid.calls.clear()
        with unit_of_work(db) as uow:
            yield uow, grid_facts.LocalGrid(uow.session, grid, FACTS)
            uow.commit()

    return work


def test_a_notices_audience_units_are_read_from_the_model_once_known(local, grid):
    with local() as (uow, facts):
        notices.create_notice(uow, STREET, facts, {"under": [SMALL_A, SMALL_B]}, **DRAFT)
    assert grid.calls == ["get_unit", "get_unit"]
    with local() as (uow, facts):
        notices.create_notice(uow, STREET, facts, {"under": [SMALL_B, SMALL_A]}, **DRAFT)
    assert grid.calls == []


def test_preferences_read_the_residents_place_from_the_model(local, grid):
    with local() as (uow, facts):
        preferences.set_preferences(uow, COMMUNITY_A, facts, 100, ["sms"], None)
    assert grid.calls == ["get_residents"]
    with local() as (uow, facts):
        preferences.set_preferences(uow, COMMUNITY_A, facts, 101, ["sms"], None)  # same household: its place known
    assert grid.calls == ["get_residents"]  # 101 itself
    with local() as (uow, facts), pytest.raises(Forbidden):
        preferences.set_preferences(uow, COMMUNITY_A, facts, 102, ["sms"], None)  # community B


def test_a_moved_household_moves_the_scope_checks_with_it(local, db, grid):
    with local() as (uow, facts):
        facts.resident(102)
    grid.move_household(11, SMALL_A)
    with unit_of_work(db) as uow:
        grid_changes.household_moved(uow.session, grid, 11, SMALL_B)
        uow.commit()
    with local() as (uow, facts):
        preferences.set_preferences(uow, COMMUNITY_A, facts, 102, ["sms"], None)  # now in community A
    assert grid.calls == []


def test_an_acknowledgement_by_staff_for_no_recipient_reads_the_model(local, db, grid):
    notice_id = add_notice(db, audience={"under": [SMALL_A]}, requires_ack=True)
    with local() as (uow, facts):
        facts.resident(101)
    with local() as (uow, facts), pytest.raises(NotFound) as refused:
        acks.acknowledge(uow, COMMUNITY_A, facts, notice_id, 101)
    assert "not a recipient" in str(refused.value)
    assert grid.calls == []


def test_notices_keeps_no_address_and_no_tag(local, grid):
    with local() as (_uow, facts):
        assert facts.resident(102)["tags"] == []  # quarantined in the grid: notices asks the grid for tags
        assert "address" not in facts.get_household(household_id=11)


def test_a_created_then_closed_unit_is_read_from_the_grid(db, grid):
    grid.add_unit(7, "grid_small", parent_id=5)
    with unit_of_work(db) as uow:
        assert grid_changes.unit_created(uow.session, grid, 7)
        uow.commit()
    grid.units["7"]["closed"] = True
    with unit_of_work(db) as uow:
        grid_changes.unit_closed(uow.session, grid, 7)
        uow.commit()
    with unit_of_work(db) as uow:
        assert uow.session.get(FACTS.unit, 7).closed is True
