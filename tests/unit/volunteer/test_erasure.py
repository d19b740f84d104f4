"""Volunteer reacting to the grid's ``resident_erased`` and ``tag_purged`` (services/volunteer/erasure.py,
shared.grid_facts): what it holds about the resident is anonymised (ids and statuses kept), a tombstone
keeps them out of every later event and read-through, and a replay changes nothing more."""

import datetime as dt
from contextlib import contextmanager

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services.volunteer import erasure
from services.volunteer.models import FACTS, CarePlan, CareSubject, HelpRequest, Pledge, Volunteer
from services.volunteer.service import VolunteerService
from shared import grid_facts
from shared.errors import ValidationError
from tests.unit.local import VAULT, unit_of_work
from tests.unit.volunteer.conftest import ADMIN, NOW, OFFICER_A, SMALL_A
from tests.unit.volunteer.test_service import StubAuth, envelope

PATH_A = ["1", "2", "3", "4", "5", str(SMALL_A)]


@pytest.fixture
def worker(db, grid, notices):
    @contextmanager
    def make(who=ADMIN):
        with unit_of_work(db) as uow:
            yield worker_factory(
                VolunteerService, db=uow, grid=grid, notices=notices, auth=StubAuth(who), vault=VAULT, config={}
            )

    return make


def erased(resident_id, household_id, emptied=False, erasure_id=3):
    return {
        "resident_id": str(resident_id),
        "household_id": str(household_id),
        "unit_id": str(SMALL_A),
        "unit_path": PATH_A,
        "household_emptied": emptied,
        "erasure_id": str(erasure_id),
        "erased_at": NOW.isoformat(),
    }


def purged(resident_id, household_id, reason="retention", released_at=NOW - dt.timedelta(days=30)):
    return {
        "resident_id": str(resident_id),
        "household_id": str(household_id),
        "unit_id": str(SMALL_A),
        "unit_path": PATH_A,
        "tag": "quarantined",
        "released_at": released_at.isoformat(),
        "reason": reason,
    }


def tagged(resident_id, household_id):
    return {"resident_id": str(resident_id), "household_id": str(household_id), "tag": "quarantined"}


def rows(db, model, *where):
    with unit_of_work(db) as uow:
        return [
            {c.key: getattr(r, c.key) for c in r.__table__.columns}
            for r in uow.session.scalars(select(model).where(*where))
        ]


def ask(worker, resident_id=None, household_id=None, details="Rice, call 13912345678"):
    with worker(OFFICER_A) as service:
        reply = service.create_request(
            unit_id=str(SMALL_A),
            kind="groceries",
            details=details,
            urgency="high",
            needed_by=(NOW + dt.timedelta(hours=3)).isoformat(),
            household_id=str(household_id) if household_id else None,
            resident_id=str(resident_id) if resident_id else None,
        )
    return int(reply["id"])


def test_an_erased_residents_requests_care_and_read_model_row_are_anonymised_once(db, worker, grid, add_volunteer):
    request_id = ask(worker, resident_id=1040)  # 1040 lives alone in household 104, quarantined
    other = ask(worker, resident_id=1000)
    with worker() as service:
        service.on_resident_tagged(envelope("t1", "resident_tagged", tagged(1040, 104)))
    assert rows(db, CarePlan, CarePlan.household_id == 104)[0]["address"] is not None
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040)

    with worker() as service:
        done = service.on_resident_erased(envelope("x1", "resident_erased", erased(1040, 104)))
    assert done["help_requests"] >= 1 and done["care_subjects"] == 1 and done["care_plans"] == 1
    assert done["grid_residents"] == 1
    (request,) = rows(db, HelpRequest, HelpRequest.id == request_id)
    assert (request["details"], request["address"], request["resident_id"]) == ("[erased]", None, 1040)
    assert request["status"] in ("open", "offered", "unmatched", "cancelled")  # the status is kept or cancelled
    # care for a household with nobody left under it stops, and its plan keeps no address
    (plan,) = rows(db, CarePlan, CarePlan.household_id == 104)
    assert plan["address"] is None and plan["active"] is False
    assert rows(db, CareSubject, CareSubject.resident_id == 1040) == []
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040) == []
    assert [r["id"] for r in rows(db, FACTS.erased)] == [1040]
    # another resident's request is untouched
    (kept,) = rows(db, HelpRequest, HelpRequest.id == other)
    assert kept["details"].startswith("Rice") and kept["address"] is not None

    with worker() as service:  # the same envelope: a duplicate; the grid's event again: nothing more to do
        assert service.on_resident_erased(envelope("x1", "resident_erased", erased(1040, 104))) == "duplicate"
        again = service.on_resident_erased(envelope("x2", "resident_erased", erased(1040, 104)))
    assert set(again.values()) == {0}


def test_events_and_read_throughs_after_the_erasure_store_nothing_about_the_resident(db, worker, grid):
    with worker() as service:
        service.on_resident_erased(envelope("x1", "resident_erased", erased(1040, 104, emptied=True)))
    with worker() as service:  # a tag event delivered late: no care subject, no plan
        assert service.on_resident_tagged(envelope("t1", "resident_tagged", tagged(1040, 104))) == "erased"
        assert service.on_resident_untagged(envelope("t2", "resident_untagged", tagged(1040, 104))) == "erased"
        assert service.keep_resident_tagged(envelope("t3", "resident_tagged", tagged(1040, 104))) is False
    assert rows(db, CareSubject) == [] and rows(db, CarePlan) == []
    grid.calls.clear()
    with unit_of_work(db) as uow:  # a read-through: unknown here, and the grid is not asked
        local = grid_facts.LocalGrid(uow.session, grid, FACTS)
        assert local.get_residents(resident_ids=["1040"]) == {"items": [], "missing": ["1040"]}
        with pytest.raises(ValidationError):
            local.resident(1040)
        # the emptied household: its address is answered from the grid, never kept
        assert local.get_household(household_id="104")["address"] is not None
        uow.commit()
    assert "get_residents" not in grid.calls
    assert all(h["address"] is None for h in rows(db, FACTS.household, FACTS.household.id == 104))
    with unit_of_work(db) as uow:  # nor by the resync
        grid_facts.store_resident(uow.session, FACTS, grid.residents_by_id["1040"])
        uow.commit()
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040) == []


def test_an_emptied_household_loses_its_addresses_and_a_volunteer_who_was_the_resident_is_anonymised(
    db, worker, grid, add_volunteer
):
    volunteer_id = add_volunteer(resident_id=1010)
    with worker() as service:
        service.make_pledge(volunteer_id=str(volunteer_id), text="Zhao Liu walks dogs", due_on="2030-02-01")
    request_id = ask(worker, household_id=101, details="Medicine for flat 101")
    with worker() as service:
        done = service.on_resident_erased(envelope("x1", "resident_erased", erased(1010, 101, emptied=True)))
    assert done["volunteers"] == 1 and done["pledges"] == 1
    assert [p["text"] for p in rows(db, Pledge)] == ["[erased]"]
    (volunteer,) = rows(db, Volunteer, Volunteer.id == volunteer_id)
    assert (volunteer["name"], volunteer["phone_enc"], volunteer["active"]) == ("[erased]", b"", False)
    assert volunteer["resident_id"] == 1010  # ids stay
    (request,) = rows(db, HelpRequest, HelpRequest.id == request_id)
    assert (request["details"], request["address"]) == ("[erased]", None)
    assert all(h["address"] is None for h in rows(db, FACTS.household, FACTS.household.id == 101))


def test_a_purged_quarantine_tag_removes_the_care_subject_and_a_stopped_plans_address(db, worker, grid):
    with worker() as service:
        service.on_resident_tagged(envelope("t1", "resident_tagged", tagged(1040, 104)))
        service.on_resident_untagged(envelope("t2", "resident_untagged", tagged(1040, 104)))
    (plan,) = rows(db, CarePlan)
    assert plan["active"] is False and plan["address"] is not None
    with worker() as service:
        done = service.on_tag_purged(envelope("p1", "tag_purged", purged(1040, 104)))
    assert done["care_subjects"] == 1 and done["care_plans"] == 1
    assert rows(db, CareSubject) == [] and rows(db, CarePlan)[0]["address"] is None
    with worker() as service:  # replayed: nothing more
        assert set(service.on_tag_purged(envelope("p2", "tag_purged", purged(1040, 104))).values()) == {0}
    # quarantined again later: care resumes, and the plan reads the address again
    with worker() as service:
        service.on_resident_tagged(envelope("t3", "resident_tagged", tagged(1040, 104), at=NOW + dt.timedelta(days=1)))
    (plan,) = rows(db, CarePlan)
    assert plan["active"] is True and plan["address"] is not None


def test_a_purge_of_an_old_quarantine_keeps_a_newer_one(db, worker):
    with worker() as service:
        service.on_resident_tagged(envelope("t1", "resident_tagged", tagged(1040, 104)))
        done = service.on_tag_purged(
            envelope("p1", "tag_purged", purged(1040, 104, released_at=NOW - dt.timedelta(days=20)))
        )
    assert done["care_subjects"] == 0
    assert rows(db, CareSubject)[0]["quarantined"] is True
    assert rows(db, CarePlan)[0]["active"] is True


def test_the_read_model_drops_a_purged_tag_without_asking_the_grid(db, grid):
    with unit_of_work(db) as uow:
        grid_facts.store_resident(uow.session, FACTS, {**grid.residents_by_id["1040"]})
        uow.commit()
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040)[0]["tags"] == ["quarantined"]
    grid.calls.clear()
    grid.unavailable = True  # the event alone says the tag is no longer held
    with unit_of_work(db) as uow:
        assert grid_facts.tag_purged(uow.session, FACTS, 1040, "quarantined") is True
        assert grid_facts.tag_purged(uow.session, FACTS, 1040, "quarantined") is False  # a replay: nothing more
        assert grid_facts.tag_purged(uow.session, FACTS, 1040, "disabled") is False  # not a kept tag
        uow.commit()
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040)[0]["tags"] == []
    assert grid.calls == []


def test_a_purged_tag_is_purged_here_with_the_grid_down(db, worker, grid):
    with worker() as service:
        service.on_resident_tagged(envelope("t1", "resident_tagged", tagged(1040, 104)))
        service.on_resident_untagged(envelope("t2", "resident_untagged", tagged(1040, 104)))
    with unit_of_work(db) as uow:  # the model read them while quarantined; the untag event missed
        grid_facts.store_resident(uow.session, FACTS, {**grid.residents_by_id["1040"]})
        uow.commit()
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040)[0]["tags"] == ["quarantined"]  # event missed
    assert len(rows(db, CareSubject)) == 1
    grid.unavailable = True
    grid.calls.clear()
    with worker() as service:
        done = service.on_tag_purged(envelope("p1", "tag_purged", purged(1040, 104)))
    assert (done["care_subjects"], done["care_plans"], done["grid_residents"]) == (1, 1, 1)
    assert rows(db, CareSubject) == [] and rows(db, CarePlan)[0]["address"] is None
    assert rows(db, FACTS.resident, FACTS.resident.id == 1040)[0]["tags"] == []
    assert grid.calls == []


def test_the_anonymisation_is_a_function_of_what_is_left(db, worker):
    """erasure.resident_erased on its own (no tombstone involved): a second run finds nothing to change."""
    request_id = ask(worker, resident_id=1000)
    with unit_of_work(db) as uow:
        first = erasure.resident_erased(uow, 1000, 100, False, NOW)
        second = erasure.resident_erased(uow, 1000, 100, False, NOW)
        uow.commit()
    assert first["help_requests"] == 1 and set(second.values()) == {0}
    (request,) = rows(db, HelpRequest, HelpRequest.id == request_id)
    assert (request["details"], request["address"]) == ("[erased]", None)


def test_an_erased_volunteers_name_leaves_other_peoples_free_text(db, worker, grid, add_volunteer):
    """Volunteer holds the name of a resident who volunteered: it is scrubbed where staff typed it in other
    residents' requests and other volunteers' pledges (a name it does not hold it cannot know)."""
    erased_volunteer = add_volunteer(resident_id=1010, name="Zhao Liu")
    other_volunteer = add_volunteer(resident_id=1000, name="Qian Wu")
    with worker() as service:
        service.make_pledge(volunteer_id=str(other_volunteer), text="With Zhao Liu: dog walks", due_on="2030-02-01")
    request_id = ask(worker, resident_id=1000, details="Rice; Zhao Liu has the key (Zhao Liu's flat)")
    with worker() as service:
        done = service.on_resident_erased(envelope("x1", "resident_erased", erased(1010, 101)))
    assert done["volunteers"] == 1
    (request,) = rows(db, HelpRequest, HelpRequest.id == request_id)
    assert request["details"] == "Rice; [erased] has the key ([erased]'s flat)"
    (pledge,) = rows(db, Pledge, Pledge.volunteer_id == other_volunteer)
    assert pledge["text"] == "With [erased]: dog walks"
    assert rows(db, Volunteer, Volunteer.id == erased_volunteer)[0]["name"] == "[erased]"
    assert rows(db, Volunteer, Volunteer.id == other_volunteer)[0]["name"] == "Qian Wu"
