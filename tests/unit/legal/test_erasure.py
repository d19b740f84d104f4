"""Legal reacting to the grid's ``resident_erased`` (services/legal/erasure.py): consultations, cases and a
lawyer record anonymised, records under a legal hold kept and flagged until the hold is released; the
``sensitive_data_read`` events of summary reads and unmasked party phones (ids only)."""

import datetime as dt
import json

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services.legal import bookings, mediation
from services.legal.models import (
    FACTS,
    Consultation,
    DeferredErasure,
    Lawyer,
    LegalHoldLog,
    MediationCase,
    MediationSession,
)
from services.legal.service import LegalService
from services.notices.client import FakeNotices
from shared.errors import Conflict, Forbidden, ValidationError
from shared.outbox import envelope
from tests.unit.legal.conftest import ADMIN, CONFIG, GRID_A, NOW, OFFICER_A, OFFICER_B, TUESDAY, at, lawyer
from tests.unit.legal.test_service import StubAuth
from tests.unit.local import VAULT, caller, events, unit_of_work

SECRET = "CONFIDENTIAL"


@pytest.fixture
def call(db, grid):
    """``call(who, method, **kwargs)``: one worker of the service on its own unit of work."""

    def run(who, method, *args, **kwargs):
        with unit_of_work(db) as uow:
            service = worker_factory(
                LegalService,
                db=uow,
                grid=grid,
                grid_contacts=grid,
                notices=FakeNotices(),
                auth=StubAuth(who),
                vault=VAULT,
                config=CONFIG,
            )
            reply = getattr(service, method)(*args, **kwargs)
        assert json.loads(json.dumps(reply)) == reply
        return reply

    return run


def erased(resident_id, household_id=100, erasure_id=3):
    data = {
        "resident_id": str(resident_id),
        "household_id": str(household_id),
        "unit_id": str(GRID_A),
        "unit_path": ["1", "2", "3", str(GRID_A)],
        "household_emptied": False,
        "erasure_id": str(erasure_id),
        "erased_at": NOW.isoformat(),
    }
    return envelope("grid", "resident_erased", f"resident/{resident_id}", data)


def rows(db, model, *where):
    with unit_of_work(db) as uow:
        return [
            {c.key: getattr(r, c.key) for c in r.__table__.columns}
            for r in uow.session.scalars(select(model).where(*where))
        ]


@pytest.fixture
def records(committed, grid, practice, book):
    """Resident 1000: a completed consultation (summary), a booked one, and a closed case with 1010 with a
    session; resident 1010: a consultation of their own. {name: id}."""
    done, upcoming, theirs = (
        book(1000, "09:00", topic=f"{SECRET} topic"),
        book(1000, "10:00", topic=f"{SECRET} topic"),
        book(1010, "11:00", topic="Their own"),
    )
    with committed() as uow:
        bookings.complete(uow, lawyer(practice["lawyer"]), VAULT, done.id, f"{SECRET} summary", "advice_given")
        case = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "family", [1000, 1010], f"{SECRET} story", None)
        mediation.record_session(uow, OFFICER_A, case.id, NOW - dt.timedelta(hours=1), ["Zhang San", "Li Si"], SECRET)
    with committed() as uow:
        mediation.close_mediation(uow, OFFICER_A, case.id, "agreement", f"{SECRET} agreement")
    return {"done": done.id, "upcoming": upcoming.id, "theirs": theirs.id, "case": case.id}


def no_secret_left(db):
    found = []
    for model in (Consultation, MediationCase, MediationSession):
        found += [row for row in rows(db, model) if SECRET in str(row)]
    return found


def test_an_erasure_anonymises_consultations_cases_and_a_lawyer_record_once(db, call, records, practice):
    first = erased(1000)
    done = call(ADMIN, "on_resident_erased", first)
    assert done["consultations"] == 2 and done["cancelled"] == 1 and done["mediation_cases"] == 1
    assert done["mediation_sessions"] == 1 and done["deferred"] == 0
    assert no_secret_left(db) == []
    by_id = {r["id"]: r for r in rows(db, Consultation)}
    assert by_id[records["done"]]["summary_enc"] is None and by_id[records["done"]]["outcome"] == "advice_given"
    assert by_id[records["upcoming"]]["status"] == "cancelled"
    assert by_id[records["theirs"]]["topic"] == "Their own"  # another resident's: untouched
    (session,) = rows(db, MediationSession)
    assert session["attendees"] == ["[erased]", "[erased]"]
    (case,) = rows(db, MediationCase)
    assert case["party_resident_ids"] == [1000, 1010] and case["status"] == "closed"  # ids and statuses stay
    assert ("consultation_cancelled", f"consultation/{records['upcoming']}") in [e[:2] for e in events(db)]
    # the same envelope is a duplicate; the grid's event again changes nothing
    assert call(ADMIN, "on_resident_erased", first) == "duplicate"
    again = call(ADMIN, "on_resident_erased", erased(1000, erasure_id=4))
    assert set(again.values()) == {0}
    # the lawyer linked to resident 1030
    call(ADMIN, "on_resident_erased", erased(1030, household_id=103))
    (registered,) = rows(db, Lawyer)
    assert registered["name"] == "[erased]" and registered["license_no"] == "LIC-000001"


def test_an_erased_resident_cannot_be_booked_or_named_again(db, call, grid, records, practice, book):
    call(ADMIN, "on_resident_erased", erased(1000))
    assert [r["id"] for r in rows(db, FACTS.erased)] == [1000]
    args = {
        "lawyer_id": str(practice["lawyer"]),
        "station_id": str(practice["station"]),
        "starts_at": at(TUESDAY, "14:00").isoformat(),
        "topic": "Again",
    }
    with pytest.raises(ValidationError) as error:  # unknown here: the grid is not even asked
        call(ADMIN, "book", resident_id="1000", **args)
    assert "resident_id" in error.value.details
    assert call(ADMIN, "book", resident_id="1001", **args)["status"] == "booked"


def test_a_held_case_is_kept_and_flagged_until_its_hold_is_released(db, call, records):
    with pytest.raises(Forbidden):
        call(OFFICER_B, "set_legal_hold", record="case", record_id=str(records["case"]), reason="Appeal pending")
    held = call(OFFICER_A, "set_legal_hold", record="case", record_id=str(records["case"]), reason="Appeal pending")
    assert held["held"] is True and held["held_by"] == "officer-a" and held["erasure_deferred"] is False
    done = call(ADMIN, "on_resident_erased", erased(1000))
    assert done["deferred"] == 1 and done["mediation_cases"] == 0
    (case,) = rows(db, MediationCase)
    assert SECRET in case["description"] and case["erasure_deferred"] is True
    assert rows(db, DeferredErasure) == [
        {"record": f"case/{records['case']}", "resident_id": 1000, "erasure_id": 3, "deferred_at": NOW}
    ]
    assert {r.get("case_id", r["id"]) for r in no_secret_left(db) if "topic" not in r} == {records["case"]}
    assert [r for r in no_secret_left(db) if "topic" in r] == []  # only the held case keeps it
    assert set(call(ADMIN, "on_resident_erased", erased(1000, erasure_id=4)).values()) == {0}  # replayed

    released = call(
        OFFICER_A, "release_legal_hold", record="case", record_id=str(records["case"]), reason="Appeal decided"
    )
    assert released["held"] is False and released["erasure_deferred"] is False
    assert released["deferred_erasure_ids"] == []
    assert no_secret_left(db) == [] and rows(db, DeferredErasure) == []
    assert [(r["action"], r["actor"]) for r in rows(db, LegalHoldLog)] == [
        ("set", "officer-a"),
        ("release", "officer-a"),
    ]
    with pytest.raises(Conflict):
        call(OFFICER_A, "release_legal_hold", record="case", record_id=str(records["case"]), reason="Again")


def test_a_case_referred_to_court_is_held_automatically_once(db, call, committed, grid, records):
    with committed() as uow:
        case = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "family", [1001, 1010], f"{SECRET} b", None)
        mediation.close_mediation(uow, OFFICER_A, case.id, "referred_to_court", f"{SECRET} court")
    done = call(ADMIN, "on_resident_erased", erased(1001))
    assert done["deferred"] == 1
    held = rows(db, MediationCase, MediationCase.id == case.id)[0]
    assert held["legal_hold_by"] == "system:legal" and held["erasure_deferred"] is True
    call(ADMIN, "release_legal_hold", record="case", record_id=str(case.id), reason="Court archived it")
    assert SECRET not in rows(db, MediationCase, MediationCase.id == case.id)[0]["description"]
    # a later erasure of the other party: staff released it once, so no automatic hold again
    assert call(ADMIN, "on_resident_erased", erased(1010, household_id=101))["deferred"] == 0
    assert [r["action"] for r in rows(db, LegalHoldLog)] == ["auto", "release"]


def test_a_held_consultation_is_deferred_and_its_booking_still_given_back(db, call, records):
    call(ADMIN, "set_legal_hold", record="consultation", record_id=str(records["upcoming"]), reason="Evidence")
    done = call(ADMIN, "on_resident_erased", erased(1000))
    assert done["deferred"] == 1 and done["cancelled"] == 1
    upcoming = rows(db, Consultation, Consultation.id == records["upcoming"])[0]
    assert SECRET in upcoming["topic"] and upcoming["erasure_deferred"] is True
    assert upcoming["status"] == "cancelled"


def test_hold_input_is_checked_and_changes_nothing(db, call, records):
    for bad, field in (
        ({"record": "station", "record_id": "1", "reason": "xyz"}, "record"),
        ({"record": "case", "record_id": "0", "reason": "xyz"}, "record_id"),
        ({"record": "case", "record_id": "1", "reason": ""}, "reason"),
    ):
        with pytest.raises(ValidationError) as error:
            call(ADMIN, "set_legal_hold", **bad)
        assert field in error.value.details
    assert rows(db, LegalHoldLog) == []
    with pytest.raises(Forbidden):
        call(caller("grid_worker", unit=GRID_A), "set_legal_hold", record="case", record_id="1", reason="xyz")


def test_a_summary_read_and_unmasked_phones_are_told_to_the_access_log(db, call, records, practice):
    call(lawyer(practice["lawyer"]), "get_consultation", consultation_id=str(records["done"]))
    call(caller("officer", unit=3, pii=True, sub="officer-pii"), "get_case", case_id=str(records["case"]))
    call(OFFICER_A, "get_case", case_id=str(records["case"]))  # masked phones: nothing told
    told = events(db, "sensitive_data_read")
    assert [(subject, data["resident_id"], data["what"]) for _, subject, data in told] == [
        (f"consultation/{records['done']}", "1000", "consultation_summary"),
        (f"case/{records['case']}", "1000", "case_party_phone"),
        (f"case/{records['case']}", "1010", "case_party_phone"),
    ]
    assert told[0][2]["reader"] == str(practice["lawyer"]) and told[0][2]["reader_roles"] == ["lawyer"]
    assert all(SECRET not in str(data) and "138" not in str(data) for _, _, data in told)


def test_an_erased_party_is_shown_erased_and_not_told(db, call, records):
    call(ADMIN, "on_resident_erased", erased(1000))
    detail = call(caller("officer", unit=3, pii=True), "get_case", case_id=str(records["case"]))
    assert {p["resident_id"]: (p["name"], p["phone"]) for p in detail["parties"]}["1000"] == ("[erased]", "")
    assert [data["resident_id"] for _, _, data in events(db, "sensitive_data_read")] == ["1010"]


def test_an_erased_lawyers_name_leaves_free_text_of_records_not_held(db, call, committed, grid, practice, book):
    """Legal holds the name of a lawyer who was the erased resident (1030): it is scrubbed where it stands in
    other people's records; a record under a legal hold is kept as it is."""
    theirs = book(1010, "11:00", topic="Ask Lawyer One about the lease")
    with committed() as uow:
        case = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "family", [1000, 1010], "Lawyer One knows", None)
        mediation.assign_mediator(uow, ADMIN, grid, case.id, practice["lawyer"], "judicial")
        mediation.record_session(
            uow, OFFICER_A, case.id, NOW - dt.timedelta(hours=1), ["Lawyer One", "Li Si"], "Lawyer One proposed"
        )
        held = mediation.open_mediation(
            uow, OFFICER_A, grid, GRID_A, "family", [1000, 1010], "Lawyer One: appeal", None
        )
    call(OFFICER_A, "set_legal_hold", record="case", record_id=str(held.id), reason="Appeal pending")
    done = call(ADMIN, "on_resident_erased", erased(1030, household_id=103))
    assert done["lawyers"] == 1
    assert rows(db, Consultation, Consultation.id == theirs.id)[0]["topic"] == "Ask [erased] about the lease"
    assert rows(db, MediationCase, MediationCase.id == case.id)[0]["description"] == "[erased] knows"
    (session,) = rows(db, MediationSession, MediationSession.case_id == case.id)
    assert (session["attendees"], session["notes"]) == (["[erased]", "Li Si"], "[erased] proposed")
    assert rows(db, MediationCase, MediationCase.id == held.id)[0]["description"] == "Lawyer One: appeal"
    assert rows(db, Lawyer)[0]["name"] == "[erased]"
