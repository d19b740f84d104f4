"""The service class itself (services/legal/service.py) through nameko's worker_factory: endpoints answer
the contract's JSON for each caller and own the transaction, the event handler acts once per envelope,
and the reminder timer commits one reminder at a time."""

import json

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services.legal.models import Consultation, MediationCase
from services.legal.service import LegalService
from services.notices.client import FakeNotices, Notices
from shared.errors import Forbidden
from shared.outbox import envelope
from tests.unit.legal.conftest import ADMIN, CONFIG, GRID_A, OFFICER_A, TUESDAY, at, lawyer, resident
from tests.unit.local import VAULT, caller, events, unit_of_work


class StubAuth:
    """Stands in for shared.auth: the token's caller, acting in the roles the method allows."""

    def __init__(self, who):
        self.who = who

    def authorize(self, roles):
        if not self.who.has_role(*roles):
            raise Forbidden("role may not call this method")
        return self.who.acting_as(roles)


@pytest.fixture
def notices():
    return FakeNotices()


@pytest.fixture
def call(db, grid, notices):
    """``call(who, method, **kwargs)``: one worker of the service on its own unit of work, as nameko runs it."""

    def run(who, method, **kwargs):
        with unit_of_work(db) as uow:
            service = worker_factory(
                LegalService,
                db=uow,
                grid=grid,
                grid_contacts=grid,
                notices=notices,
                auth=StubAuth(who),
                vault=VAULT,
                config=CONFIG,
            )
            reply = getattr(service, method)(**kwargs)
        assert json.loads(json.dumps(reply)) == reply  # what goes back over AMQP
        return reply

    return run


def test_a_booking_answers_the_consultation_and_is_committed_by_the_endpoint(db, call, practice):
    reply = call(
        resident(1000),
        "book",
        lawyer_id=str(practice["lawyer"]),
        station_id=str(practice["station"]),
        starts_at=at(TUESDAY, "09:00").isoformat(),
        resident_id="1000",
        topic="Lease",
    )
    assert reply == {
        "id": "1",
        "lawyer_id": str(practice["lawyer"]),
        "station_id": str(practice["station"]),
        "resident_id": "1000",
        "starts_at": "2030-01-08T01:00:00+00:00",
        "ends_at": "2030-01-08T01:30:00+00:00",
        "topic": "Lease",
        "mode": "in_person",
        "status": "booked",
        "outcome": None,
        "cancel_reason": None,
    }
    with unit_of_work(db) as uow:  # the worker's unit of work is gone: only a commit kept the row
        assert uow.session.scalars(select(Consultation.id)).all() == [1]
    assert [event for event, _, _ in events(db)] == ["consultation_booked"]


def test_a_retry_with_the_same_key_gets_the_first_reply_and_changes_nothing(db, call, practice):
    args = {
        "lawyer_id": str(practice["lawyer"]),
        "station_id": str(practice["station"]),
        "starts_at": at(TUESDAY, "09:00").isoformat(),
        "resident_id": "1000",
        "topic": "Lease",
        "idempotency_key": "req-1",
    }
    first = call(resident(1000), "book", **args)
    assert call(resident(1000), "book", **args) == first
    assert len(events(db, "consultation_booked")) == 1


def test_only_those_who_may_read_it_get_the_summary_key(call, book, practice):
    booked = book(1000, "09:00")
    call(lawyer(practice["lawyer"]), "complete", consultation_id=str(booked.id), summary="Advised.", outcome="referred")
    for reader in (lawyer(practice["lawyer"]), resident(1000), ADMIN):
        assert call(reader, "get_consultation", consultation_id=str(booked.id))["summary"] == "Advised."
    officer_view = call(OFFICER_A, "get_consultation", consultation_id=str(booked.id))
    assert "summary" not in officer_view and officer_view["status"] == "completed"


def test_lists_answer_pages_of_the_same_shape(call, book):
    booked = [book(1000, clock).id for clock in ("09:00", "09:30")]
    reply = call(ADMIN, "list_consultations", page_size=1)
    assert (reply["page"], reply["page_size"], reply["has_more"]) == (1, 1, True)
    assert [item["id"] for item in reply["items"]] == [str(booked[0])]
    assert set(reply["items"][0]) == set(call(ADMIN, "get_consultation", consultation_id=str(booked[0])))


def test_a_registered_lawyer_and_a_plan_answer_what_was_stored(call, practice):
    registered = call(
        ADMIN,
        "register_lawyer",
        name="L2",
        firm="F",
        license_no="LIC-000002",
        specialties=["family"],
        station_ids=[str(practice["station"])],
    )
    assert registered == {
        "id": registered["id"],
        "name": "L2",
        "firm": "F",
        "license_no": "LIC-000002",
        "specialties": ["family"],
        "station_ids": [str(practice["station"])],
    }
    weekly = [{"weekday": 3, "start": "09:00", "end": "10:00"}]
    plan = call(
        lawyer(registered["id"]),
        "set_schedule",
        lawyer_id=registered["id"],
        station_id=str(practice["station"]),
        weekly=weekly,
    )
    assert plan == {
        "lawyer_id": registered["id"],
        "station_id": str(practice["station"]),
        "weekly": weekly,
        "slot_minutes": 30,
        "buffer_minutes": 0,
    }


def test_a_case_reads_with_masked_parties_its_mediators_and_sessions(call):
    case = call(
        OFFICER_A,
        "open_mediation",
        unit_id=str(GRID_A),
        category="neighbour",
        party_resident_ids=["1010", "1000"],
        description="Noise",
    )
    assert case["party_resident_ids"] == ["1000", "1010"] and case["closed_at"] is None
    call(ADMIN, "assign_mediator", case_id=case["id"], mediator_id="1020", kind="social")
    session = call(
        caller("mediator", sub="1020"),
        "record_session",
        case_id=case["id"],
        held_at="2030-01-07T09:00:00+08:00",
        attendees=["both parties"],
        notes="Quiet hours agreed.",
    )
    assert session == {
        "id": "1",
        "case_id": case["id"],
        "held_at": "2030-01-07T09:00:00+08:00",
        "attendees": ["both parties"],
    }
    read = call(OFFICER_A, "get_case", case_id=case["id"])
    assert read["parties"][0] == {
        "resident_id": "1000",
        "household_id": "100",
        "name": "Resident 1000",
        "phone": "138****1000",
    }
    assert read["mediators"] == [{"mediator_id": "1020", "kind": "social"}]
    assert read["sessions"] == [
        {"held_at": "2030-01-07T01:00:00+00:00", "attendees": ["both parties"], "notes": "Quiet hours agreed."}
    ]
    assert {key: read[key] for key in case} == {**case, "status": "in_progress"}


def test_a_role_the_method_does_not_allow_is_refused(call):
    with pytest.raises(Forbidden):
        call(resident(1000), "create_station", unit_id="3", name="S", address="A")


class TestDisputesFromTheGrid:
    @pytest.fixture
    def handle(self, db, grid, notices):
        grid.incidents["70"] = {"id": "70", "unit_id": str(GRID_A), "description": "Dog barks all night"}

        def run(body):
            with unit_of_work(db) as uow:
                service = worker_factory(LegalService, db=uow, grid=grid, notices=notices, config=CONFIG)
                return service.on_incident_reported(body)

        return run

    def reported(self, category="dispute", parties=("1000", "1010")):
        data = {"incident_id": "70", "unit_id": str(GRID_A), "category": category, "party_resident_ids": list(parties)}
        return envelope("grid", "incident_reported", "incident/70", data)

    def test_a_dispute_opens_one_case_however_often_it_is_delivered(self, db, handle):
        body = self.reported()
        assert handle(body) == "1"
        assert handle(body) == "duplicate"  # the same envelope redelivered
        assert handle(self.reported()) == "1"  # a replay under a new envelope id: the case per incident
        with unit_of_work(db) as uow:
            [case] = uow.session.scalars(select(MediationCase)).all()
            assert (case.source_incident_id, case.opened_by) == (70, "system:legal")
        assert len(events(db, "mediation_opened")) == 1

    def test_other_incidents_and_lone_parties_open_nothing(self, db, handle):
        assert handle(self.reported(category="fire")) == "not a dispute"
        assert handle(self.reported(parties=("1000",))) == "too few parties"
        assert events(db) == []


def test_the_reminder_timer_commits_each_reminder_and_sends_each_once(db, book):
    booked = [book(1000, "09:00").id, book(1010, "09:30").id]
    for _ in range(2):  # two ticks: the second finds nothing due
        with unit_of_work(db) as uow:
            # the real client: it records its command in the worker's unit of work, kept only if committed
            worker_factory(LegalService, db=uow, notices=Notices(), config=CONFIG).send_reminders()
    with unit_of_work(db) as uow:
        assert all(uow.session.get(Consultation, c).reminded_at is not None for c in booked)
    assert [subject for _, subject, _ in events(db, "send_direct")] == [
        f"legal:consultation/{c}/reminder/{starts}"
        for c, starts in zip(booked, ("20300108T0100Z", "20300108T0130Z"), strict=True)
    ]


def test_a_failed_reminder_keeps_the_ones_before_it_and_is_retried_on_the_next_tick(db, book):
    first, second = book(1000, "09:00").id, book(1010, "09:30").id

    class FailingOnce(Notices):
        failed = False

        def send_direct(self, uow, **command):
            if command["resident_ids"][0] == "1010" and not FailingOnce.failed:
                FailingOnce.failed = True
                raise RuntimeError("the database went away")
            return super().send_direct(uow, **command)

    def reminded():
        with unit_of_work(db) as uow:
            return [c for c in (first, second) if uow.session.get(Consultation, c).reminded_at is not None]

    with unit_of_work(db) as uow:
        worker_factory(LegalService, db=uow, notices=FailingOnce(), config=CONFIG).send_reminders()
    assert reminded() == [first]  # committed before the second failed
    with unit_of_work(db) as uow:
        worker_factory(LegalService, db=uow, notices=FailingOnce(), config=CONFIG).send_reminders()
    assert reminded() == [first, second]
    assert len(events(db, "send_direct")) == 2
