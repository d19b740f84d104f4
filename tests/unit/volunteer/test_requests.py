"""Help requests (services/volunteer/requests.py): who may ask, offers to the nearest eligible
volunteers, answers, expiry, completion, and what each caller may see."""

import datetime as dt

import pytest
from sqlalchemy import select

from services.volunteer import requests
from services.volunteer.models import CarePlan, HelpRequest, Offer
from shared.errors import Conflict, Forbidden, ValidationError
from tests.unit.local import caller, events, unit_of_work
from tests.unit.volunteer.conftest import (
    ADMIN,
    COMMUNITY_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    PATH_A,
    SMALL_A,
    SMALL_A2,
    SMALL_B,
    resident_caller,
    volunteer_caller,
)

EVENT_KEYS = {"request_id", "unit_id", "unit_path", "kind", "urgency", "status", "household_id", "volunteer_id"}


@pytest.fixture
def people(add_volunteer):
    """Volunteers around the requester (resident 1000, household 100, small grid A)."""
    return {
        "same_home": add_volunteer(1001),  # the requester's own household: never offered
        "quarantined": add_volunteer(1040),  # tagged quarantined in the grid: never offered
        "neighbour": add_volunteer(1010, max_active_tasks=1),
        "next_grid": add_volunteer(1020, unit=SMALL_A2),
        "far": add_volunteer(1030, unit=SMALL_B),
    }


def offers(db, request_id):
    """{volunteer id: offer status} of the request's offers."""
    with unit_of_work(db) as uow:
        rows = uow.session.execute(select(Offer.volunteer_id, Offer.status).where(Offer.request_id == request_id))
        return dict(rows.all())


def status(db, request_id):
    with unit_of_work(db) as uow:
        return uow.session.get(HelpRequest, request_id).status


def offer_of(db, request_id, volunteer_id):
    with unit_of_work(db) as uow:
        return uow.session.scalar(
            select(Offer.id).where(Offer.request_id == request_id, Offer.volunteer_id == volunteer_id)
        )


def answer(db, grid, notices, policy, who, offer_id, accept):
    with unit_of_work(db) as uow:
        offer, request = requests.respond_offer(uow, who, grid, notices, policy, offer_id, accept)
        uow.commit()
        return offer.status, request.status, request.volunteer_id


# ---- asking -------------------------------------------------------------------


def test_a_request_goes_to_the_nearest_eligible_volunteer_who_is_told_only_the_need(db, people, ask, notices):
    request = ask()
    assert (request.status, request.household_id, request.address["room"]) == ("offered", 100, "100")
    assert offers(db, request.id) == {people["neighbour"]: "pending"}
    offer_id = offer_of(db, request.id, people["neighbour"])
    assert notices.sent == {
        f"volunteer:offer/{offer_id}": {
            "origin": f"volunteer:offer/{offer_id}",
            "resident_ids": ["1010"],
            "template": "volunteer_offer",
            "params": {"kind": "groceries", "respond_by": "10:10"},  # local time; no details, no requester
            "channels": ["app_push", "sms"],
        }
    }
    [(_, subject, data)] = events(db, "request_created")
    assert subject == f"request/{request.id}" and set(data) == EVENT_KEYS
    assert data["unit_path"] == ["1", "2", "3", "4", "5", "6"] and data["status"] == "open"


def test_a_volunteer_whose_household_is_under_quarantine_care_is_not_sent_out(db, people, ask):
    with unit_of_work(db) as uow:  # the neighbour's household, isolated as the grid's events said
        uow.session.add(
            CarePlan(
                household_id=101,
                unit_id=SMALL_A,
                unit_path=PATH_A,
                address={},
                kinds=["groceries"],
                active=True,
                started_at=NOW,
            )
        )
        uow.commit()
    request = ask()
    assert offers(db, request.id) == {people["next_grid"]: "pending"}  # the next nearest instead


def test_with_nobody_eligible_the_request_is_unmatched(db, ask):
    request = ask()
    assert request.status == "unmatched"
    assert [event[0] for event in events(db)] == ["request_created", "request_unmatched"]


def test_a_resident_asks_for_themselves_and_their_own_household_only(db, people, ask):
    mine = ask(resident_caller(1000), resident_id=1000)
    assert (mine.household_id, mine.created_by) == (100, "1000")
    with pytest.raises(Forbidden):
        ask(resident_caller(1000), resident_id=1010)
    with pytest.raises(Forbidden):
        ask(resident_caller(1000), resident_id=1000, household_id=101)
    with pytest.raises(Forbidden):  # with no resident named, a resident is not asking for themselves
        ask(resident_caller(1000), resident_id=None, household_id=100)


def test_staff_ask_only_in_their_scope_and_for_people_living_there(db, ask):
    with pytest.raises(Forbidden):
        ask(OFFICER_B)
    with pytest.raises(Forbidden):  # the unit is theirs, the resident is not: refused before anything is said
        ask(OFFICER_A, unit_id=COMMUNITY_A, resident_id=1030)
    for overrides, field in (
        ({"unit_id": SMALL_A2}, "resident_id"),  # resident 1000 lives in small grid A
        ({"resident_id": None, "household_id": 999}, "household_id"),
        ({"household_id": 101}, "resident_id"),  # not this resident's household
        ({"unit_id": 999}, "unit_id"),
    ):
        with pytest.raises(ValidationError) as error:
            ask(ADMIN, **overrides)
        assert list(error.value.fields) == [field], overrides
    assert events(db) == []


def test_a_request_a_service_opens_itself_is_opened_once_per_origin(db, grid, notices, policy):
    fields = {
        "unit_id": SMALL_A,
        "unit_path": PATH_A,
        "kind": "check_in",
        "details": "Knock",
        "urgency": "high",
        "needed_by": NOW + dt.timedelta(hours=2),
        "household_id": 100,
        "resident_id": None,
        "address": {},
        "search_floor": None,
    }
    for expected in (True, False):
        with unit_of_work(db) as uow:
            request, created = requests.open_request(
                uow, grid, notices, policy, "unack:notice/1:household/100", created_by="system:volunteer", **fields
            )
            uow.commit()
            assert (created, request.origin) == (expected, "unack:notice/1:household/100")
    assert len(events(db, "request_created")) == 1


# ---- answering offers ------------------------------------------------------------


def test_accepting_matches_the_request_and_withdraws_the_other_offers(db, grid, notices, people, ask):
    two_at_a_time = requests.Policy({"OFFER_FANOUT": 2})
    request = ask(kind="other")
    with unit_of_work(db) as uow:  # offered again to two more at once
        requests.offer_next(uow, grid, notices, two_at_a_time, uow.session.get(HelpRequest, request.id))
        uow.commit()
    assert offers(db, request.id) == {v: "pending" for v in (people["neighbour"], people["next_grid"], people["far"])}
    offer_id = offer_of(db, request.id, people["next_grid"])
    accepted = answer(db, grid, notices, two_at_a_time, volunteer_caller(people["next_grid"]), offer_id, True)
    assert accepted == ("accepted", "matched", people["next_grid"])
    assert sorted(offers(db, request.id).values()) == ["accepted", "withdrawn", "withdrawn"]
    [(_, _, data)] = events(db, "request_matched")
    assert (data["status"], data["volunteer_id"]) == ("matched", str(people["next_grid"]))
    late = offer_of(db, request.id, people["far"])
    with pytest.raises(Conflict):
        answer(db, grid, notices, two_at_a_time, volunteer_caller(people["far"]), late, True)


def test_declining_moves_the_request_on_until_nobody_is_left(db, grid, notices, policy, people, ask):
    request = ask()
    for volunteer in ("neighbour", "next_grid", "far"):
        offer_id = offer_of(db, request.id, people[volunteer])
        assert offer_id is not None, volunteer
        answer(db, grid, notices, policy, volunteer_caller(people[volunteer]), offer_id, False)
    assert status(db, request.id) == "unmatched"
    assert set(offers(db, request.id).values()) == {"declined"}


def test_only_the_volunteer_offered_or_an_admin_in_scope_answers(db, grid, notices, policy, people, ask):
    request = ask()
    offer_id = offer_of(db, request.id, people["neighbour"])
    for outsider in (volunteer_caller(people["far"]), caller("admin", unit=8)):
        with pytest.raises(Forbidden):
            answer(db, grid, notices, policy, outsider, offer_id, True)
    assert answer(db, grid, notices, policy, caller("admin", unit=COMMUNITY_A), offer_id, True)[1] == "matched"


def test_an_offer_past_its_time_cannot_be_accepted_and_the_sweep_moves_it_on(
    db, grid, notices, policy, people, ask, clock
):
    request = ask()
    offer_id = offer_of(db, request.id, people["neighbour"])
    clock.advance(seconds=policy.offer_timeout.total_seconds())
    with pytest.raises(Conflict):
        answer(db, grid, notices, policy, volunteer_caller(people["neighbour"]), offer_id, True)
    with unit_of_work(db) as uow:
        assert requests.expire_offers(uow, grid, notices, policy, clock.now) == 1
        uow.commit()
    assert offers(db, request.id) == {people["neighbour"]: "expired", people["next_grid"]: "pending"}
    with unit_of_work(db) as uow:  # nothing more has expired
        assert requests.expire_offers(uow, grid, notices, policy, clock.now) == 0


# ---- completing, confirming, cancelling ----------------------------------------------


def matched(db, grid, notices, policy, people, ask):
    request = ask()
    offer_id = offer_of(db, request.id, people["neighbour"])
    answer(db, grid, notices, policy, volunteer_caller(people["neighbour"]), offer_id, True)
    return request.id


def test_the_assigned_volunteer_completes_and_the_requester_confirms(db, grid, notices, policy, people, ask):
    request_id = matched(db, grid, notices, policy, people, ask)
    with unit_of_work(db) as uow:
        with pytest.raises(Forbidden):  # offered once, but not the one assigned
            requests.complete_request(uow, volunteer_caller(people["far"]), request_id, "done")
        with pytest.raises(Conflict):
            requests.confirm_request(uow, resident_caller(1000), request_id, 5)  # not completed yet
        done = requests.complete_request(uow, volunteer_caller(people["neighbour"]), request_id, "Delivered")
        assert (done.status, done.note, done.completed_at) == ("completed", "Delivered", NOW)
        with pytest.raises(Forbidden):  # the volunteer does not rate their own work
            requests.confirm_request(uow, volunteer_caller(people["neighbour"]), request_id, 5)
        assert requests.confirm_request(uow, resident_caller(1000), request_id, 4).rating == 4
        uow.commit()
    assert [event[0] for event in events(db)][-2:] == ["request_matched", "request_completed"]


def test_cancelling_withdraws_pending_offers_and_says_why(db, people, ask):
    request = ask()
    done = ask(details="Medicine")
    with unit_of_work(db) as uow:
        uow.session.get(HelpRequest, done.id).status = "completed"
        cancelled = requests.cancel_requests(uow, select(HelpRequest), "no longer needed")
        assert [r.id for r in cancelled] == [request.id]  # a completed request stays completed
        uow.commit()
    assert set(offers(db, request.id).values()) == {"withdrawn"}
    [(_, _, data)] = events(db, "request_cancelled")
    assert (data["reason"], data["status"]) == ("no longer needed", "cancelled")


# ---- who sees what ----------------------------------------------------------------


def test_who_reaches_a_request_and_who_sees_all_of_it(db, people, ask):
    request = ask()
    with unit_of_work(db) as uow:
        session = uow.session
        for allowed in (volunteer_caller(people["neighbour"]), resident_caller(1000), OFFICER_A, ADMIN):
            assert requests.reachable_request(session, allowed, request.id).id == request.id
        for outsider in (volunteer_caller(people["far"]), resident_caller(1001), OFFICER_B):
            with pytest.raises(Forbidden):
                requests.reachable_request(session, outsider, request.id)
        row = session.get(HelpRequest, request.id)
        assert requests.staff_reaches(OFFICER_A, row)
        # a volunteer who is staff elsewhere gets no staff view here
        assert not requests.staff_reaches(caller("volunteer", "officer", sub=str(people["neighbour"]), unit=8), row)
        assert not requests.staff_reaches(resident_caller(1000), row)


def test_my_tasks_shows_staff_only_what_is_in_their_scope(db, grid, notices, policy, people, ask):
    far = people["far"]  # lives in community B, helps in community A
    task = matched(db, grid, notices, policy, people, ask)
    offered = ask(details="Medicine")
    with unit_of_work(db) as uow:
        uow.session.get(HelpRequest, task).volunteer_id = far
        uow.session.add(
            Offer(
                request_id=offered.id,
                volunteer_id=far,
                status="pending",
                offered_at=NOW,
                expires_at=NOW + dt.timedelta(minutes=10),
            )
        )
        uow.session.flush()
        mine = requests.my_tasks(uow.session, volunteer_caller(far), far)
        assert ([t.id for t in mine.tasks], [o.request_id for o in mine.offers]) == ([task], [offered.id])
        assert requests.my_tasks(uow.session, OFFICER_B, far) == requests.Tasks([], [])
        assert len(requests.my_tasks(uow.session, ADMIN, far).offers) == 1
        with pytest.raises(Forbidden):  # the volunteer is not officer A's
            requests.my_tasks(uow.session, OFFICER_A, far)


def test_list_requests_under_a_unit_by_status_in_pages(db, grid, people, ask):
    first, second = ask(), ask(details="Medicine")
    ask(ADMIN, unit_id=SMALL_B, resident_id=1030)
    with unit_of_work(db) as uow:
        page, more = requests.list_requests(uow.session, OFFICER_A, grid, COMMUNITY_A, None, 1, 1)
        assert ([r.id for r in page], more) == ([second.id], True)  # newest first
        rest, more = requests.list_requests(uow.session, OFFICER_A, grid, COMMUNITY_A, "offered", 2, 1)
        assert ([r.id for r in rest], more) == ([first.id], False)
        with pytest.raises(Forbidden):
            requests.list_requests(uow.session, OFFICER_B, grid, COMMUNITY_A, None, 1, 10)
