"""The suite working as one: event-driven flows across grid, notices, legal and volunteer, each on
a real broker and PostgreSQL with all four services running; each survives redelivery and a
consumer restarted in the middle."""

import datetime as dt
import uuid

import pytest
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from services.volunteer import service as volunteer_service
from shared.errors import Forbidden
from tests.support import add_household, add_resident, token, wait_until

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]


def later(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


@pytest.fixture
def suite(grid, notices, legal, volunteer):
    """All four services running on this test's vhost and databases."""
    return {"grid": grid, "notices": notices, "legal": legal, "volunteer": volunteer}


@pytest.fixture
def people(suite, admin, district, call_as):
    """Households in small grid a (one to be quarantined, a neighbour volunteer, a volunteer whose
    household is already quarantined), a volunteer in community b, officers and a worker."""
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    ids = {"officer": officer}
    ids["home"] = add_household(admin, district["small_a"], room="101")
    ids["r1"] = add_resident(admin, ids["home"], 1)["id"]
    ids["r2"] = add_resident(admin, ids["home"], 2)["id"]
    ids["home_n"] = add_household(admin, district["small_a"], room="102")
    ids["neighbour"] = add_resident(admin, ids["home_n"], 3)["id"]
    ids["home_q"] = add_household(admin, district["small_a"], room="103")
    ids["q_member"] = add_resident(admin, ids["home_q"], 4)["id"]
    ids["q_volunteer"] = add_resident(admin, ids["home_q"], 5)["id"]
    ids["home_b"] = add_household(admin, district["small_b"], room="201")
    ids["far"] = add_resident(admin, ids["home_b"], 6)["id"]

    def register(resident, unit, name):
        return officer.volunteer.register_volunteer(
            name=name,
            phone="13912345678",
            home_unit_id=unit,
            skills=["delivery", "elderly_care"],
            availability=ALWAYS,
            max_active_tasks=5,
            resident_id=resident,
        )["id"]

    ids["v_neighbour"] = register(ids["neighbour"], district["small_a"], "neighbour")
    ids["v_q"] = register(ids["q_volunteer"], district["small_a"], "lives with a quarantined resident")
    ids["v_far"] = register(ids["far"], district["small_b"], "community b")
    return {**district, **ids}


def household_requests(officer, unit, household):
    return [
        r for r in officer.volunteer.list_requests(under=unit, page_size=100)["items"] if r["household_id"] == household
    ]


def offered_to(call_as, volunteer_id):
    me = call_as(token("volunteer", sub=volunteer_id)).volunteer
    return {o["request_id"] for o in me.my_tasks(volunteer_id=volunteer_id)["offers"]}


def direct_messages(officer, unit):
    return officer.notices.list_notices(under=unit, kind="direct", page_size=100)["items"]


# ---- 1. quarantine ----------------------------------------------------------


def test_quarantine_notifies_the_household_and_opens_daily_care_matched_in_its_grid(
    people, admin, call_as, receiver, grid_events, suite, monkeypatch
):
    officer, small_a = people["officer"], people["small_a"]
    # A volunteer's own household under quarantine: that volunteer is never sent out.
    with entrypoint_waiter(suite["volunteer"], "on_resident_tagged"):
        admin.tag_resident(resident_id=people["q_member"], tag="quarantined")

    admin.tag_resident(resident_id=people["r1"], tag="quarantined", until=later(days=14))
    tagged = grid_events.next("resident_tagged", where=lambda e: e["data"]["resident_id"] == people["r1"])

    messages = wait_until(
        lambda: (
            [m for m in direct_messages(officer, small_a) if m["audience"].get("household_id") == people["home"]]
            or None
        ),
        message="no quarantine instructions for the household",
    )
    assert len(messages) == 1
    assert messages[0]["template"] == "quarantine_instructions" and messages[0]["recipient_count"] == 2
    wait_until(
        lambda: len(receiver.accepted("/push")) + len(receiver.accepted("/sms")) >= 2,
        message="instructions were not delivered",
    )

    care = wait_until(
        lambda: (lambda rs: rs if len(rs) == 2 else None)(household_requests(officer, small_a, people["home"])),
        message="daily care requests were not opened",
    )
    assert {r["kind"] for r in care} == {"groceries", "check_in"}
    assert all(r["origin"].startswith(f"care:{people['home']}:") and r["status"] == "offered" for r in care)
    assert all(r["address"]["room"] == "101" for r in care)
    ids = {r["id"] for r in care}
    # Matched in the same grid, never from a quarantined household, never from community b.
    assert ids <= offered_to(call_as, people["v_neighbour"])
    assert not offered_to(call_as, people["v_q"]) & ids
    assert not offered_to(call_as, people["v_far"]) & ids

    # The same event again (a redelivery) and a copy under a new id (a producer retry): nothing new.
    with entrypoint_waiter(suite["volunteer"], "on_resident_tagged") as duplicate:
        grid_events.republish(tagged)
    assert duplicate.get() == "duplicate"
    with entrypoint_waiter(suite["volunteer"], "on_resident_tagged") as copy:
        grid_events.republish(tagged, id=str(uuid.uuid4()))
    assert copy.get() == []
    with entrypoint_waiter(suite["notices"], "on_resident_tagged") as again:
        grid_events.republish(tagged, id=str(uuid.uuid4()))
    assert again.get() == "already sent today"
    # A second member quarantined the same day: still one message and one request of each kind.
    with (
        entrypoint_waiter(suite["volunteer"], "on_resident_tagged"),
        entrypoint_waiter(suite["notices"], "on_resident_tagged") as second,
    ):
        admin.tag_resident(resident_id=people["r2"], tag="quarantined")
    assert second.get() == "already sent today"
    assert len(household_requests(officer, small_a, people["home"])) == 2
    assert (
        len([m for m in direct_messages(officer, small_a) if m["audience"].get("household_id") == people["home"]]) == 1
    )

    # Tomorrow the timer opens the next day's pair, once.
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    monkeypatch.setattr(volunteer_service, "utcnow", lambda: tomorrow)
    with entrypoint_hook(suite["volunteer"], "open_daily_care") as open_daily_care:
        open_daily_care()
        open_daily_care()
    monkeypatch.undo()
    both_days = household_requests(officer, small_a, people["home"])
    assert len(both_days) == 4 and len({r["origin"] for r in both_days}) == 4

    # One member released: care goes on. The last one released: open requests close, offers withdrawn.
    with entrypoint_waiter(suite["volunteer"], "on_resident_untagged") as first:
        admin.untag_resident(resident_id=people["r1"], tag="quarantined")
    assert first.get() == "household still quarantined"
    with entrypoint_waiter(suite["volunteer"], "on_resident_untagged") as last:
        admin.untag_resident(resident_id=people["r2"], tag="quarantined")
    assert len(last.get()) == 4
    # The reason is neutral: it reaches volunteers and the event stream.
    assert {r["note"] for r in household_requests(officer, small_a, people["home"])} == {"no longer needed"}
    assert {r["status"] for r in household_requests(officer, small_a, people["home"])} == {"cancelled"}
    assert not offered_to(call_as, people["v_neighbour"]) & ids
    # ... and the recurrence has stopped.
    monkeypatch.setattr(volunteer_service, "utcnow", lambda: tomorrow + dt.timedelta(days=1))
    with entrypoint_hook(suite["volunteer"], "open_daily_care") as open_daily_care:
        open_daily_care()
    monkeypatch.undo()
    assert len(household_requests(officer, small_a, people["home"])) == 4


def test_quarantine_events_wait_for_a_volunteer_service_that_was_down(
    people, admin, call_as, container_factory, volunteer_config, suite
):
    officer = people["officer"]
    suite["volunteer"].stop()  # its queues stay: the grid's events wait in them
    admin.tag_resident(resident_id=people["r1"], tag="quarantined")
    wait_until(
        lambda: direct_messages(officer, people["small_a"]) or None,
        message="notices did not react while volunteer was down",
    )
    restarted = container_factory(volunteer_service.VolunteerService, volunteer_config)
    restarted.start()
    care = wait_until(
        lambda: (lambda rs: rs if len(rs) == 2 else None)(
            household_requests(officer, people["small_a"], people["home"])
        ),
        message="the restarted service did not catch up",
    )
    assert {r["kind"] for r in care} == {"groceries", "check_in"}


def test_members_released_at_the_same_moment_stop_the_care(people, admin, suite):
    """Both untag events handled at once must see each other: the household's care stops."""
    for resident in (people["r1"], people["r2"]):
        with entrypoint_waiter(suite["volunteer"], "on_resident_tagged"):
            admin.tag_resident(resident_id=resident, tag="quarantined")
    assert len(household_requests(people["officer"], people["small_a"], people["home"])) == 2
    releases = [admin.untag_resident.call_async(resident_id=r, tag="quarantined") for r in (people["r1"], people["r2"])]
    for release in releases:
        release.result()
    wait_until(
        lambda: (
            {r["status"] for r in household_requests(people["officer"], people["small_a"], people["home"])}
            == {"cancelled"}
        ),
        message="care went on after the last member was released",
    )


def test_an_untag_arriving_before_its_tag_leaves_no_care_behind(people, admin, grid_events, suite):
    """Retries can reorder events: the later state wins, whatever order they are handled in."""
    admin.tag_resident(resident_id=people["r1"], tag="quarantined")
    tagged = grid_events.next("resident_tagged", where=lambda e: e["data"]["resident_id"] == people["r1"])
    admin.untag_resident(resident_id=people["r1"], tag="quarantined")
    untagged = grid_events.next("resident_untagged", where=lambda e: e["data"]["resident_id"] == people["r1"])
    wait_until(
        lambda: (
            {r["status"] for r in household_requests(people["officer"], people["small_a"], people["home"])}
            == {"cancelled"}
        ),
        message="care was not stopped",
    )
    # Replay them in the wrong order under new ids: the stale tag must not reopen anything.
    with entrypoint_waiter(suite["volunteer"], "on_resident_untagged"):
        grid_events.republish(untagged, id=str(uuid.uuid4()))
    with entrypoint_waiter(suite["volunteer"], "on_resident_tagged") as stale:
        grid_events.republish(tagged, id=str(uuid.uuid4()))
    assert stale.get() == "stale"
    # A late tag event for a household nobody in which is quarantined any more sends no instructions.
    late = {**tagged, "id": str(uuid.uuid4()), "data": {**tagged["data"], "household_id": people["home_n"]}}
    with entrypoint_waiter(suite["notices"], "on_resident_tagged") as notices_late:
        grid_events.republish(late)
    assert notices_late.get() == "no longer quarantined"
    assert {r["status"] for r in household_requests(people["officer"], people["small_a"], people["home"])} == {
        "cancelled"
    }


# ---- 2. unacknowledged vulnerable residents -----------------------------------


def test_unacknowledged_vulnerable_residents_get_a_door_knock_per_household(
    people, admin, call_as, suite, notices_events
):
    officer, small_a = people["officer"], people["small_a"]
    for resident in (people["r1"], people["r2"], people["neighbour"]):
        admin.tag_resident(resident_id=resident, tag="elderly_alone")
    notice = officer.notices.create_notice(
        title="Water cut",
        body="No water on Friday 9-12.",
        category="community_activity",
        severity="moderate",
        urgency="expected",
        audience={"under": [small_a], "tags_any": ["elderly_alone"]},
        channels=["sms"],
        requires_ack=True,
        ack_deadline=later(seconds=10),
    )
    officer.notices.approve_notice(notice_id=notice["id"])
    resident = call_as(token("resident", sub=people["neighbour"])).notices
    wait_until(
        lambda: officer.notices.get_notice(notice_id=notice["id"])["status"] == "published",
        message="notice not published",
    )
    resident.acknowledge(notice_id=notice["id"], resident_id=people["neighbour"])

    knocks = wait_until(
        lambda: (
            [
                r
                for r in officer.volunteer.list_requests(under=small_a)["items"]
                if (r["origin"] or "").startswith(f"unack:notice/{notice['id']}:")
            ]
            or None
        ),
        timeout=30,
        message="no door-knock requests",
    )
    # r1 and r2 share a household: one knock; the neighbour acknowledged: none.
    assert [(r["kind"], r["household_id"], r["unit_id"]) for r in knocks] == [("check_in", people["home"], small_a)]
    assert knocks[0]["urgency"] == "high" and knocks[0]["address"]["room"] == "101"
    silent = notices_events.next("notice_unacknowledged")
    with entrypoint_waiter(suite["volunteer"], "on_notice_unacknowledged") as duplicate:
        notices_events.republish(silent)
    assert duplicate.get() == "duplicate"
    with entrypoint_waiter(suite["volunteer"], "on_notice_unacknowledged") as copy:
        notices_events.republish(silent, id=str(uuid.uuid4()))
    assert copy.get() == []
    assert (
        len(
            [
                r
                for r in officer.volunteer.list_requests(under=small_a)["items"]
                if (r["origin"] or "").startswith(f"unack:notice/{notice['id']}:")
            ]
        )
        == 1
    )


# ---- 3. disputes ----------------------------------------------------------------


@pytest.fixture
def dispute_parties(people, admin):
    return people["r1"], people["neighbour"]


@pytest.fixture
def lawyer(people, call_as):
    officer = call_as(token("officer", sub="legal-officer", unit=people["street"])).legal
    station = officer.create_station(unit_id=people["community_a"], name="Legal station", address="1 Main Rd")
    return officer.register_lawyer(
        name="Lawyer Zhang",
        firm="Binzhou Law Firm",
        license_no="LAW-000123",
        specialties=["neighbour_dispute"],
        station_ids=[station["id"]],
    )["id"]


def case_for(officer, unit, incident_id):
    cases = [c for c in officer.legal.list_cases(under=unit)["items"] if c["source_incident_id"] == incident_id]
    return cases[0] if cases else None


def test_a_dispute_becomes_a_mediation_case_whose_closing_resolves_the_incident(
    people, dispute_parties, lawyer, call_as, suite, grid_events
):
    officer, small_a = people["officer"], people["small_a"]
    worker = call_as(token("grid_worker", sub="worker", unit=small_a))
    incident = worker.grid.report_incident(
        unit_id=small_a,
        category="dispute",
        description="Water leaking from the flat above",
        party_resident_ids=list(dispute_parties),
    )
    reported = grid_events.next("incident_reported", where=lambda e: e["data"]["incident_id"] == incident["id"])
    case = wait_until(lambda: case_for(officer, small_a, incident["id"]), message="no mediation case")
    assert sorted(case["party_resident_ids"]) == sorted(dispute_parties)
    assert case["description"] == "Water leaking from the flat above" and case["status"] == "open"

    with entrypoint_waiter(suite["legal"], "on_incident_reported") as duplicate:
        grid_events.republish(reported)
    assert duplicate.get() == "duplicate"
    with entrypoint_waiter(suite["legal"], "on_incident_reported") as copy:
        grid_events.republish(reported, id=str(uuid.uuid4()))
    assert copy.get() == case["id"]
    assert (
        len([c for c in officer.legal.list_cases(under=small_a)["items"] if c["source_incident_id"] == incident["id"]])
        == 1
    )

    officer.legal.assign_mediator(case_id=case["id"], mediator_id=lawyer, kind="judicial")
    as_lawyer = call_as(token("lawyer", sub=lawyer)).legal
    with entrypoint_waiter(suite["grid"], "on_mediation_closed"):
        as_lawyer.close_mediation(case_id=case["id"], outcome="agreement", agreement="Repair by the 10th.")
    settled = officer.grid.get_incident(incident_id=incident["id"])
    assert settled["status"] == "resolved"
    assert settled["resolution"] == f"mediation case {case['id']} closed: agreement"
    assert settled["steps"][-1]["actor"] == "system:legal"


def test_a_dispute_reported_while_legal_is_down_is_mediated_once_it_is_back(
    people, dispute_parties, container_factory, legal_config, suite
):
    officer, small_a = people["officer"], people["small_a"]
    suite["legal"].stop()
    incident = officer.grid.report_incident(
        unit_id=small_a, category="dispute", description="Noise at night", party_resident_ids=list(dispute_parties)
    )
    from services.legal.service import LegalService

    container_factory(LegalService, legal_config).start()
    case = wait_until(lambda: case_for(officer, small_a, incident["id"]), message="no case after the restart")
    assert sorted(case["party_resident_ids"]) == sorted(dispute_parties)


def test_a_dispute_referred_to_court_goes_to_political_legal(people, dispute_parties, call_as, suite):
    officer, small_a = people["officer"], people["small_a"]
    incident = officer.grid.report_incident(
        unit_id=small_a, category="dispute", description="Boundary wall", party_resident_ids=list(dispute_parties)
    )
    case = wait_until(lambda: case_for(officer, small_a, incident["id"]), message="no mediation case")
    with entrypoint_waiter(suite["grid"], "on_mediation_closed"):
        officer.legal.close_mediation(case_id=case["id"], outcome="referred_to_court")
    referred = officer.grid.get_incident(incident_id=incident["id"])
    assert (referred["status"], referred["department"], referred["handling_level"]) == (
        "escalated",
        "political_legal",
        "department",
    )
    assert referred["handling_unit_id"] is None


def test_a_dispute_with_one_party_opens_no_case_and_other_incidents_are_ignored(people, call_as, suite):
    officer, small_a = people["officer"], people["small_a"]
    with entrypoint_waiter(suite["legal"], "on_incident_reported") as lone:
        officer.grid.report_incident(
            unit_id=small_a, category="dispute", description="Noise", party_resident_ids=[people["r1"]]
        )
    assert lone.get() == "too few parties"
    with entrypoint_waiter(suite["legal"], "on_incident_reported") as other:
        officer.grid.report_incident(unit_id=small_a, category="infrastructure", description="Broken lamp")
    assert other.get() == "not a dispute"
    assert officer.legal.list_cases(under=small_a)["items"] == []


# ---- 5. purpose-limited views ---------------------------------------------------------

VOLUNTEER_REQUEST_FIELDS = {
    "id",
    "unit_id",
    "kind",
    "details",
    "urgency",
    "needed_by",
    "address",
    "status",
    "volunteer_id",
    "note",
    "rating",
}
STAFF_REQUEST_FIELDS = VOLUNTEER_REQUEST_FIELDS | {"household_id", "resident_id", "origin", "created_by", "created_at"}
RESIDENT_FIELDS = {"id", "household_id", "unit_id", "name", "id_number", "phone", "birth_date", "tags"}
CASE_FIELDS = {
    "id",
    "unit_id",
    "category",
    "description",
    "party_resident_ids",
    "source_incident_id",
    "status",
    "outcome",
    "agreement",
    "opened_by",
    "opened_at",
    "closed_at",
    "parties",
    "mediators",
    "sessions",
}
PARTY_FIELDS = {"resident_id", "household_id", "name", "phone"}


def test_purpose_limited_views_role_by_method(people, admin, dispute_parties, lawyer, call_as, suite):
    small_a, street = people["small_a"], people["street"]
    admin.tag_resident(resident_id=people["r1"], tag="quarantined")
    care = wait_until(
        lambda: (lambda rs: rs if len(rs) == 2 else None)(
            household_requests(people["officer"], small_a, people["home"])
        ),
        message="no care requests",
    )
    incident = admin.report_incident(
        unit_id=small_a, category="dispute", description="Parking", party_resident_ids=list(dispute_parties)
    )
    case = wait_until(lambda: case_for(people["officer"], small_a, incident["id"]), message="no case")
    people["officer"].legal.assign_mediator(case_id=case["id"], mediator_id=lawyer, kind="judicial")

    volunteer = call_as(token("volunteer", sub=people["v_neighbour"])).volunteer
    other_volunteer = call_as(token("volunteer", sub=people["v_far"])).volunteer
    as_lawyer = call_as(token("lawyer", sub=lawyer)).legal
    officer = call_as(token("officer", sub="plain-officer", unit=street))
    pii_officer = call_as(token("officer", sub="pii-officer", unit=street, pii=True))
    request_id = care[0]["id"]
    r1 = people["r1"]
    phone_r1 = "13800000001"

    # role × method → the fields returned (and, where personal data may appear, how it appears)
    matrix = {
        ("volunteer offered", "volunteer.get_request"): (
            volunteer.get_request(request_id=request_id),
            VOLUNTEER_REQUEST_FIELDS,
        ),
        ("volunteer offered", "volunteer.my_tasks.offers"): (
            volunteer.my_tasks(volunteer_id=people["v_neighbour"])["offers"][0],
            {"id", "request_id", "volunteer_id", "status", "expires_at"},
        ),
        ("officer", "volunteer.get_request"): (
            officer.volunteer.get_request(request_id=request_id),
            STAFF_REQUEST_FIELDS,
        ),
        ("lawyer assigned", "legal.get_case"): (as_lawyer.get_case(case_id=case["id"]), CASE_FIELDS),
        ("officer", "legal.get_case"): (officer.legal.get_case(case_id=case["id"]), CASE_FIELDS),
        ("officer", "grid.count_residents"): (
            officer.grid.count_residents(under=small_a, tags_any=["quarantined"]),
            {"count"},
        ),
        ("officer", "grid.get_resident"): (officer.grid.get_resident(resident_id=r1), RESIDENT_FIELDS),
        ("officer pii", "grid.get_resident"): (pii_officer.grid.get_resident(resident_id=r1), RESIDENT_FIELDS),
    }
    for (role, method), (answer, fields) in matrix.items():
        assert set(answer) == fields, f"{role} × {method}: {sorted(set(answer) ^ fields)}"

    seen_by_volunteer = matrix[("volunteer offered", "volunteer.get_request")][0]
    assert seen_by_volunteer["address"]["room"] == "101" and seen_by_volunteer["details"]
    flat = repr(seen_by_volunteer).lower()
    assert "quarantin" not in flat and "care:" not in flat and phone_r1 not in flat
    with pytest.raises(Forbidden):
        other_volunteer.get_request(request_id=request_id)  # not offered to them

    lawyer_parties = matrix[("lawyer assigned", "legal.get_case")][0]["parties"]
    assert {p["resident_id"] for p in lawyer_parties} == set(dispute_parties)
    assert all(set(p) == PARTY_FIELDS for p in lawyer_parties)
    assert phone_r1 in {p["phone"] for p in lawyer_parties}  # the assigned lawyer can call the parties
    officer_parties = matrix[("officer", "legal.get_case")][0]["parties"]
    assert phone_r1 not in {p["phone"] for p in officer_parties}
    assert all("*" in p["phone"] for p in officer_parties)
    with pytest.raises(Forbidden):
        call_as(token("lawyer", sub="99999")).legal.get_case(case_id=case["id"])  # not their case

    assert matrix[("officer", "grid.count_residents")][0] == {"count": 1}
    plain = matrix[("officer", "grid.get_resident")][0]
    revealed = matrix[("officer pii", "grid.get_resident")][0]
    assert revealed["phone"] == phone_r1 and plain["phone"] != phone_r1 and "*" in plain["phone"]
    assert "*" in plain["id_number"] and "*" not in revealed["id_number"]
