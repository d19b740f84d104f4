"""The service class itself (services/volunteer/service.py) through nameko's worker_factory, with a
real unit of work on SQLite: replies dumped per caller, the endpoint's commit, the event handlers'
deduplication and the timers' transaction boundaries."""

import datetime as dt
from contextlib import contextmanager

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import func, select

from services.volunteer import care, schemas
from services.volunteer.models import HelpRequest, Offer
from services.volunteer.service import VolunteerService
from shared.auth import CallerAccess
from shared.errors import Forbidden
from tests.unit.local import VAULT, caller, events, unit_of_work
from tests.unit.volunteer.conftest import (
    ADMIN,
    ALWAYS,
    COMMUNITY_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    SMALL_A,
    resident_caller,
    volunteer_caller,
)

STAFF_VIEW = set(schemas.StaffRequestOut().fields)
NEED_ONLY = set(schemas.RequestOut().fields)


class StubAuth(CallerAccess):
    """The caller a verified token would give, with the real role and scope rules of ``authorize``."""

    def __init__(self, who):
        super().__init__(tokens=None, token=None)
        self._caller = who


@pytest.fixture
def worker(db, grid, notices):
    """``with worker(who) as service:`` a service instance for one worker, on its own unit of work."""

    @contextmanager
    def make(who=ADMIN):
        with unit_of_work(db) as uow:
            yield worker_factory(
                VolunteerService, db=uow, grid=grid, notices=notices, auth=StubAuth(who), vault=VAULT, config={}
            )

    return make


def count(db, model):
    with unit_of_work(db) as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def ask(worker, who):
    with worker(who) as service:
        return service.create_request(
            unit_id=str(SMALL_A),
            kind="groceries",
            details="Rice",
            urgency="high",
            needed_by=(NOW + dt.timedelta(hours=3)).isoformat(),
            resident_id="1000",
        )


def envelope(event_id, event_type, data, at=NOW):
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "grid",
        "type": event_type,
        "time": at.isoformat(),
        "subject": None,
        "data": data,
    }


# ---- RPC endpoints -------------------------------------------------------------------


def test_a_request_reply_is_the_whole_record_for_staff_and_the_need_for_the_requester(db, worker):
    for_staff = ask(worker, OFFICER_A)
    assert set(for_staff) == STAFF_VIEW
    assert (for_staff["resident_id"], for_staff["household_id"], for_staff["unit_id"]) == ("1000", "100", "6")
    for_resident = ask(worker, resident_caller(1000))
    assert set(for_resident) == NEED_ONLY and "resident_id" not in for_resident
    assert count(db, HelpRequest) == 2  # each endpoint committed its own work
    with worker(volunteer_caller(1)) as service, pytest.raises(Forbidden):  # offered nothing: reaches nothing
        service.get_request(request_id=for_staff["id"])


def test_a_refused_call_leaves_nothing_behind(db, worker):
    with pytest.raises(Forbidden):
        ask(worker, OFFICER_B)
    assert count(db, HelpRequest) == 0 and events(db) == []


def test_replies_of_lists_offers_and_tasks_keep_their_shapes(db, worker, add_volunteer):
    volunteer = add_volunteer(1010)
    request = ask(worker, OFFICER_A)
    with worker(OFFICER_A) as service:
        page = service.list_requests(under=str(COMMUNITY_A), page_size=1)
        volunteers = service.list_volunteers(under=str(COMMUNITY_A))
    assert (page["page"], page["page_size"], page["has_more"]) == (1, 1, False)
    assert [set(item) for item in page["items"]] == [STAFF_VIEW]
    assert [v["id"] for v in volunteers["items"]] == [str(volunteer)] and "phone" not in volunteers["items"][0]
    with worker(volunteer_caller(volunteer)) as service:
        tasks = service.my_tasks(volunteer_id=str(volunteer))
        answer = service.respond_offer(offer_id=tasks["offers"][0]["id"], accept=True)
        tasks = service.my_tasks(volunteer_id=str(volunteer))
    assert answer["offer"]["status"] == "accepted" and answer["offer"]["request_id"] == request["id"]
    assert set(answer["request"]) == NEED_ONLY and answer["request"]["status"] == "matched"
    assert [set(task) for task in tasks["tasks"]] == [NEED_ONLY] and tasks["offers"] == []


def test_duty_and_pledge_replies_carry_plain_values(db, worker, add_volunteer):
    volunteer = add_volunteer(1010)
    starts = NOW + dt.timedelta(minutes=10)
    with worker(OFFICER_A) as service:
        post = service.create_post(unit_id=str(COMMUNITY_A), name="Gate 3", location="North gate")
        shift = service.add_shift(
            post_id=post["id"],
            starts_at=starts.isoformat(),
            ends_at=(starts + dt.timedelta(hours=2)).isoformat(),
            needed=2,
        )
        signup = service.sign_up(shift_id=shift["id"], volunteer_id=str(volunteer))
        gaps = service.coverage(under=str(COMMUNITY_A), date=NOW.date().isoformat())
    assert post == {"id": post["id"], "unit_id": str(COMMUNITY_A), "name": "Gate 3", "location": "North gate"}
    assert signup == {
        "shift_id": shift["id"],
        "volunteer_id": str(volunteer),
        "status": "signed",
        "checked_in_at": None,
        "checked_out_at": None,
        "hours": None,
    }
    assert gaps == [
        {
            "shift_id": shift["id"],
            "post_id": post["id"],
            "post": "Gate 3",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + dt.timedelta(hours=2)).isoformat(),
            "needed": 2,
            "signed": 1,
            "missing": 1,
        }
    ]
    with worker(volunteer_caller(volunteer)) as service:
        pledge = service.make_pledge(volunteer_id=str(volunteer), text="Gate twice", due_on=NOW.date().isoformat())
        hours = service.hours(volunteer_id=str(volunteer), since="2030-01-01T00:00:00+08:00")
    with worker(resident_caller(1000)) as service:  # pledges are public
        board = service.list_pledges(under="2")
    assert hours == {"volunteer_id": str(volunteer), "hours": 0.0, "shifts": 0, "since": "2030-01-01T00:00:00+08:00"}
    assert board == {
        "items": [pledge],
        "units": [{"unit_id": str(COMMUNITY_A), "pledges": 1, "fulfilled": 0, "fulfilment_rate": 0.0}],
    }


def test_register_volunteer_never_answers_with_the_phone(db, worker):
    with worker(OFFICER_A) as service:
        reply = service.register_volunteer(
            name="Li Wei",
            phone="13912345678",
            home_unit_id=str(SMALL_A),
            skills=["delivery"],
            availability=ALWAYS,
        )
    assert set(reply) == set(schemas.VolunteerOut().fields) and "13912345678" not in str(reply)


# ---- event handlers ----------------------------------------------------------------


def test_a_quarantine_tag_opens_care_once_per_event_and_a_release_stops_it(db, worker):
    tagged = {"resident_id": "1040", "household_id": "104", "tag": "quarantined"}
    with worker() as service:
        opened = service.on_resident_tagged(envelope("e1", "resident_tagged", tagged))
    assert len(opened) == 2
    with worker() as service:
        assert service.on_resident_tagged(envelope("e1", "resident_tagged", tagged)) == "duplicate"
        assert service.on_resident_tagged(envelope("e2", "resident_tagged", {**tagged, "tag": "elderly"})) == (
            "not quarantine"
        )
        earlier = NOW - dt.timedelta(minutes=5)
        assert service.on_resident_untagged(envelope("e3", "resident_untagged", tagged, at=earlier)) == "stale"
    with worker() as service:
        later = NOW + dt.timedelta(minutes=5)
        cancelled = service.on_resident_untagged(envelope("e4", "resident_untagged", tagged, at=later))
    assert sorted(cancelled) == sorted(opened)
    assert [event[0] for event in events(db, "request_cancelled")] == ["request_cancelled"] * 2


# ---- timers ------------------------------------------------------------------------


def test_the_daily_care_timer_commits_each_household_on_its_own(db, worker, grid, notices, policy, clock, monkeypatch):
    for household in (100, 104):
        with unit_of_work(db) as uow:
            care.start(uow, grid, notices, policy, household, NOW)
            uow.commit()
    clock.advance(days=1)
    opened = care.open_due

    def second_household_fails(uow, grid, notices, policy, household_id, now):
        if household_id == 104:
            raise RuntimeError("the grid went away")
        return opened(uow, grid, notices, policy, household_id, now)

    monkeypatch.setattr(care, "open_due", second_household_fails)
    with worker() as service, pytest.raises(RuntimeError):
        service.open_daily_care()
    with unit_of_work(db) as uow:
        origins = set(uow.session.scalars(select(HelpRequest.origin).where(HelpRequest.origin.like("%2030-01-08"))))
    assert origins == {"care:100:groceries:2030-01-08", "care:100:check_in:2030-01-08"}
    monkeypatch.setattr(care, "open_due", opened)
    with worker() as service:  # the next run opens what is left
        service.open_daily_care()
    with unit_of_work(db) as uow:
        assert len(uow.session.scalars(select(HelpRequest.id).where(HelpRequest.origin.like("%2030-01-08"))).all()) == 4


def test_the_offer_sweep_commits_what_it_moved(db, worker, add_volunteer, policy, clock):
    add_volunteer(1010)
    ask(worker, OFFICER_A)
    clock.advance(seconds=policy.offer_timeout.total_seconds())
    with worker() as service:
        service.sweep_offers()
    with unit_of_work(db) as uow:
        assert uow.session.scalars(select(Offer.status)).all() == ["expired"]
        assert uow.session.scalar(select(HelpRequest.status)) == "unmatched"


def test_caller_roles_outside_the_method_lend_nothing(db, worker):
    with worker(caller("lawyer", unit=COMMUNITY_A)) as service, pytest.raises(Forbidden):
        service.list_requests(under=str(COMMUNITY_A))
