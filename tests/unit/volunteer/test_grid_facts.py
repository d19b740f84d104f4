"""The volunteer service's read model of grid facts (shared.grid_facts, ``models.FACTS``): create_request
reads the unit, the resident, the household and the candidates' quarantine tag from it; a miss asks the
grid once and keeps the answer; the grid's events (through grid_changes) and the resync keep it true."""

import datetime as dt

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services.volunteer import grid_changes, requests
from services.volunteer.models import FACTS, Offer
from services.volunteer.service import VolunteerService
from shared import grid_facts
from shared.errors import ValidationError
from tests.unit.local import VAULT, unit_of_work
from tests.unit.volunteer.conftest import ADMIN, NOW, OFFICER_A, SMALL_A, SMALL_A2
from tests.unit.volunteer.test_service import StubAuth, envelope

EVERY = dt.timedelta(hours=24)


@pytest.fixture
def local_ask(db, grid, notices, policy):
    """``local_ask(**overrides)``: ``ask`` through the read model; (request, grid calls it made)."""

    def create(**overrides):
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
        grid.calls.clear()
        with unit_of_work(db) as uow:
            facts = grid_facts.LocalGrid(uow.session, grid, FACTS)
            request = requests.create_request(uow, OFFICER_A, facts, notices, policy, **args)
            offered = uow.session.scalars(select(Offer.volunteer_id).where(Offer.request_id == request.id)).all()
            uow.commit()
            return request, offered, list(grid.calls)

    return create


def model(db, kind, key):
    with unit_of_work(db) as uow:
        row = uow.session.get(getattr(FACTS, kind), key)
        return None if row is None else {c.key: getattr(row, c.key) for c in row.__table__.columns}


def handle(db, grid, change, *args):
    """A grid_changes handler in its own committed unit of work (as the event entrypoint runs it)."""
    with unit_of_work(db) as uow:
        found = change(uow.session, grid, *args)
        uow.commit()
        return found


def test_a_miss_reads_through_once_and_the_next_request_asks_the_grid_nothing(db, local_ask, add_volunteer):
    volunteer = add_volunteer(1010)
    request, offered, calls = local_ask()
    assert offered == [volunteer]
    assert sorted(set(calls)) == ["get_household", "get_residents", "get_unit"]  # the unit, requester, candidate
    assert model(db, "household", 100)["address"]["room"] == "100"
    assert model(db, "resident", 1010) == {"id": 1010, "household_id": 101, "tags": []}
    assert request.address["room"] == "100"

    _, _, calls = local_ask(resident_id=1001)  # the same household, unit and candidates: all local now
    assert calls == ["get_residents"]  # only 1001 itself was new
    _, _, calls = local_ask(resident_id=1001)
    assert calls == []


def test_the_model_keeps_only_the_tags_the_service_acts_on(db, grid, local_ask):
    grid.set_tag(1000, "elderly_alone")
    grid.set_tag(1000, "quarantined")
    local_ask()
    assert model(db, "resident", 1000)["tags"] == ["quarantined"]


def test_a_quarantine_tag_event_keeps_the_volunteer_home_with_no_grid_call(db, grid, local_ask, add_volunteer):
    volunteer = add_volunteer(1010)
    assert local_ask()[1] == [volunteer]  # the model now knows resident 1010, untagged
    grid.set_tag(1010, "quarantined")
    assert handle(db, grid, grid_changes.resident_changed, 1010)
    request, offered, calls = local_ask(resident_id=1001)
    assert (offered, request.status) == ([], "unmatched")
    assert calls == ["get_residents"]  # 1001, new to the model; not the candidate's tag
    grid.set_tag(1010, "quarantined", present=False)
    handle(db, grid, grid_changes.resident_changed, 1010)
    assert local_ask(resident_id=1001)[1:] == ([volunteer], [])


def test_a_tag_event_for_a_resident_the_model_does_not_hold_asks_the_grid_nothing(db, grid, local_ask):
    grid.set_tag(1030, "quarantined")
    grid.calls.clear()
    assert handle(db, grid, grid_changes.resident_changed, 1030) is False
    assert model(db, "resident", 1030) is None and grid.calls == []
    local_ask(resident_id=1000)  # resident 1000 now in the model: its tag event refreshes it from the grid
    grid.set_tag(1000, "quarantined")
    assert handle(db, grid, grid_changes.resident_changed, 1000)
    assert model(db, "resident", 1000)["tags"] == ["quarantined"]


def test_events_keep_no_address_of_a_household_the_service_never_served(db, grid, local_ask):
    grid.move_household(102, SMALL_A2)  # never asked about: its move keeps its place, not its address
    handle(db, grid, grid_changes.household_moved, 102)
    assert model(db, "household", 102)["unit_path"] == "/1/2/3/4/5/7/"
    assert model(db, "household", 102)["address"] is None
    local_ask()  # household 100 served: its address is kept, and its move keeps it
    grid.move_household(100, SMALL_A2)
    handle(db, grid, grid_changes.household_moved, 100)
    assert model(db, "household", 100)["address"]["room"] == "100"


def test_a_household_move_event_moves_the_model_and_the_next_request_sees_it(db, grid, local_ask):
    local_ask()
    grid.move_household(100, SMALL_A2)
    handle(db, grid, grid_changes.household_moved, 100)
    assert model(db, "household", 100)["unit_path"] == "/1/2/3/4/5/7/"
    with pytest.raises(ValidationError) as refused:
        local_ask()  # resident 1000 no longer lives in small grid A
    assert "resident_id" in refused.value.fields
    request, _, calls = local_ask(unit_id=SMALL_A2)
    assert (request.unit_path, calls) == ("/1/2/3/4/5/7/", ["get_unit"])  # small grid A2 is new to the model


def test_unit_events_create_close_and_move_the_model_units(db, grid, local_ask):
    local_ask()
    grid.add_unit(12, "grid_small", parent_id=5)
    handle(db, grid, grid_changes.unit_changed, 12)
    assert model(db, "unit", 12) == {"id": 12, "path": "/1/2/3/4/5/12/", "level": "grid_small", "closed": False}
    grid.units["12"]["closed"] = True
    handle(db, grid, grid_changes.unit_changed, 12)
    assert model(db, "unit", 12)["closed"] is True
    # Medium grid 5 moves under large grid 9 (community B): every model path through it follows.
    for unit in grid.units.values():
        if "5" in unit["path"]:
            unit["path"] = ["1", "2", "8", "9"] + unit["path"][unit["path"].index("5") :]
    for household in grid.households.values():
        household["unit_path"] = list(grid.units[household["unit_id"]]["path"])
    handle(db, grid, grid_changes.unit_moved, 5)
    assert model(db, "unit", SMALL_A)["path"] == "/1/2/8/9/5/6/"
    assert model(db, "household", 100)["unit_path"] == "/1/2/8/9/5/6/"


def test_an_unknown_unit_is_the_callers_mistake_and_nothing_is_kept(db, local_ask):
    with pytest.raises(ValidationError) as refused:
        local_ask(unit_id=99)
    assert refused.value.fields == {"unit_id": ["Unknown unit 99."]}
    assert model(db, "unit", 99) is None


def sync(db, grid, now):
    """Resync steps as the timer runs them, each committed; how many pages."""
    pages = 0
    while True:
        with unit_of_work(db) as uow:
            if not grid_facts.sync_step(uow.session, grid, FACTS, now, EVERY, batch=2):
                return pages
            uow.commit()
            pages += 1


def status(db):
    with unit_of_work(db) as uow:
        return {
            row.kind: (row.refreshed, row.changed, row.next_id) for row in grid_facts.sync_status(uow.session, FACTS)
        }


def test_the_resync_repairs_what_missed_events_left_stale(db, grid, local_ask, add_volunteer):
    add_volunteer(1010)
    add_volunteer(1020, unit=SMALL_A2)
    local_ask()
    assert sync(db, grid, NOW) > 0  # a fresh database: a first pass at once
    # Nothing was stale; household 101 is known by its place only (from resident 1010, a candidate): the
    # resync adds no address the service never needed.
    assert {kind: changed for kind, (_, changed, _) in status(db).items()} == {
        "households": 0,
        "residents": 0,
        "units": 0,
    }
    assert model(db, "household", 101)["address"] is None
    assert sync(db, grid, NOW + dt.timedelta(hours=1)) == 0  # passed an hour ago: nothing to do
    # The grid changes and its events are lost.
    grid.set_tag(1010, "quarantined")
    grid.move_household(100, SMALL_A2)
    grid.units["6"]["closed"] = True
    assert sync(db, grid, NOW + dt.timedelta(hours=25)) > 0  # the daily pass
    assert {kind: changed for kind, (_, changed, _) in status(db).items()} == {
        "households": 1,  # 100 moved
        "residents": 1,  # 1010's tag
        "units": 1,  # 6 closed
    }
    assert model(db, "resident", 1010)["tags"] == ["quarantined"]
    assert model(db, "household", 100)["unit_path"] == "/1/2/3/4/5/7/"
    assert model(db, "unit", SMALL_A)["closed"] is True
    assert all(next_id is None for _, _, next_id in status(db).values())


def test_an_operator_starts_a_resync_at_once(db, grid, local_ask):
    local_ask()
    sync(db, grid, NOW)
    grid.set_tag(1000, "quarantined")
    with unit_of_work(db) as uow:
        rows = grid_facts.request_resync(uow.session, FACTS, NOW + dt.timedelta(minutes=1))
        uow.commit()
        assert [row.kind for row in rows] == list(grid_facts.KINDS)
    assert sync(db, grid, NOW + dt.timedelta(minutes=1)) > 0
    assert model(db, "resident", 1000)["tags"] == ["quarantined"]


def test_the_service_resyncs_when_an_operator_asks_page_by_page_on_its_timer(db, grid, notices, local_ask):
    local_ask()  # the model holds unit 6, households 100 (and its place), residents 1000
    grid.set_tag(1000, "quarantined")  # an event lost
    with unit_of_work(db) as uow:
        service = worker_factory(
            VolunteerService, db=uow, grid=grid, notices=notices, auth=StubAuth(ADMIN), vault=VAULT, config={}
        )
        assert {row["kind"]: row["running"] for row in service.resync_grid_facts()} == {
            "units": True,
            "households": True,
            "residents": True,
        }
    with unit_of_work(db) as uow:
        worker_factory(
            VolunteerService, db=uow, grid=grid, notices=notices, vault=VAULT, config={"GRID_FACTS_SYNC_PAGES": 10}
        ).sync_grid_facts()
    assert model(db, "resident", 1000)["tags"] == ["quarantined"]
    assert all(next_id is None for _, _, next_id in status(db).values())


def test_the_models_tag_handler_commits_apart_from_the_households_care(db, grid, notices, local_ask):
    local_ask()  # resident 1000 in the model, untagged
    grid.set_tag(1000, "quarantined")
    tagged = {"resident_id": "1000", "household_id": "100", "unit_id": str(SMALL_A), "tag": "quarantined"}
    with unit_of_work(db) as uow:  # the model's own handler, in its own unit of work
        service = worker_factory(VolunteerService, db=uow, grid=grid, notices=notices, vault=VAULT, config={})
        service.keep_resident_tagged(envelope("e1", "resident_tagged", tagged))
        uow.commit()
    assert model(db, "resident", 1000)["tags"] == ["quarantined"]
    with unit_of_work(db) as uow:
        service = worker_factory(VolunteerService, db=uow, grid=grid, notices=notices, vault=VAULT, config={})
        assert service.keep_resident_tagged(envelope("e2", "resident_tagged", {**tagged, "tag": "elderly_alone"})) == (
            "tag not kept"
        )
