"""The service class (services/grid/service.py) through nameko's worker_factory: its endpoints reply
with their declared schemas for the caller who asks and commit what they did; its event handlers take
each delivery once; its housekeeping timer commits what it changed."""

import datetime as dt
import json

import pytest

from services.grid import service
from services.grid.models import Unit
from shared.errors import Conflict, Forbidden, ValidationError
from shared.outbox import envelope
from tests.support import id_number
from tests.unit.grid.conftest import (
    ADDRESS,
    COMMUNITY_A,
    COMMUNITY_B,
    LARGE_A,
    NOW,
    OFFICER_A,
    SMALL_A,
    SMALL_B,
    STREET,
    WORKER_A,
    call,
    resident_args,
    worker,
)
from tests.unit.local import caller, events, unit_of_work


def test_a_write_replies_with_its_schema_and_commits(district):
    reply = call(district, "create_unit", who=OFFICER_A, parent_id=COMMUNITY_A, level="grid_large", name="L2")
    assert reply == {
        "id": "11",
        "parent_id": str(COMMUNITY_A),
        "level": "grid_large",
        "name": "L2",
        "code": None,
        "path": ["1", "2", "3", "11"],
        "closed": False,
        "party_org": None,
    }
    with unit_of_work(district) as uow:
        assert uow.session.get(Unit, 11).name == "L2"  # committed by the endpoint, not by the test
    named = call(district, "set_party_org", unit_id=11, name="Branch 2")
    assert named["party_org"] == {"name": "Branch 2", "type": "branch"}


def test_a_method_asks_for_its_roles(district):
    with pytest.raises(Forbidden):
        call(district, "create_unit", who=WORKER_A, parent_id=SMALL_A, level="grid_small", name="x")
    with pytest.raises(Forbidden):
        call(district, "find_residents", who=caller("volunteer", unit=COMMUNITY_A), under=COMMUNITY_A)
    with pytest.raises(Forbidden):  # a unit the caller's scope does not reach
        call(district, "get_unit", who=OFFICER_A, unit_id=STREET)


def test_a_residents_numbers_are_shown_only_to_callers_with_pii(district, add_household):
    household = add_household()
    created = call(district, "register_resident", who=WORKER_A, **json_args(resident_args(7, household)))
    assert created["phone"] == "138****0007" and created["id_number"].count("*") == 11
    revealed = call(district, "get_resident", who=caller("officer", unit=STREET, pii=True), resident_id=created["id"])
    assert (revealed["phone"], revealed["id_number"]) == ("13800000007", id_number(7))
    assert (
        set(created)
        == set(revealed)
        == {"id", "household_id", "unit_id", "name", "id_number", "phone", "birth_date", "tags"}
    )
    page = call(district, "find_residents", who=caller("service", pii=True), under=STREET)
    assert "id_number" not in page["items"][0] and page["items"][0]["phone"] == "13800000007"
    with pytest.raises(Conflict):  # the same person again: nothing is kept
        call(district, "register_resident", **json_args(resident_args(7, household, name="Twin")))
    assert call(district, "count_residents", under=STREET) == {"count": 1}


def json_args(args):
    return {**args, "birth_date": args["birth_date"].isoformat()}


def test_tag_replies_and_pages(district, add_household, add_resident):
    people = [add_resident(add_household(room=str(n)), 10 + n) for n in range(3)]
    until = (NOW + dt.timedelta(days=1)).isoformat()
    tagged = call(district, "tag_resident", resident_id=people[0], tag="quarantined", until=until)
    assert tagged == {
        "tag": "quarantined",
        "until": until,
        "note": None,
        "resident_id": str(people[0]),
        "created": True,
    }
    assert call(district, "tag_resident", resident_id=people[0], tag="quarantined")["created"] is False
    removed = call(district, "untag_resident", resident_id=people[0], tag="quarantined")
    assert removed == {"resident_id": str(people[0]), "tag": "quarantined", "removed": True}
    first = call(district, "find_residents", under=STREET, page_size=2)
    assert (first["has_more"], first["next_after"], first["page"]) == (True, str(people[1]), 1)
    rest = call(district, "find_residents", under=STREET, page_size=2, after=first["next_after"])
    assert ([r["id"] for r in rest["items"]], rest["next_after"]) == ([str(people[2])], None)
    found = call(district, "get_residents", resident_ids=[people[2], 404])
    assert ([r["id"] for r in found["items"]], found["missing"]) == ([str(people[2])], ["404"])
    json.dumps([tagged, removed, first, rest, found])  # every reply is JSON as it stands


def test_an_incident_reads_with_its_steps_and_progress_with_string_ids(district, add_household):
    add_household(SMALL_A)
    incident = call(district, "report_incident", unit_id=SMALL_A, category="other", description="Gate")
    call(district, "escalate_incident", incident_id=incident["id"], reason="up")
    read = call(district, "get_incident", who=OFFICER_A, incident_id=incident["id"])
    assert set(read) == set(incident) | {"steps"}
    assert [(s["action"], s["to_level"]) for s in read["steps"]] == [
        ("reported", "grid_small"),
        ("escalated", "grid_medium"),
    ]
    listed = call(district, "list_incidents", under=STREET)
    assert listed["items"] == [{k: v for k, v in read.items() if k != "steps"}]
    campaign = call(district, "start_screening", under=STREET, title="T", starts_on="2030-01-07", ends_on="2030-01-07")
    progress = call(district, "screening_progress", campaign_id=campaign["id"])
    assert (progress["campaign_id"], progress["units"][0]["unit_id"]) == (campaign["id"], str(COMMUNITY_A))
    assert progress["units"][0]["outcomes"] == {"seen_ok": 0, "seen_concern": 0, "absent": 0, "refused": 0}


def unmatched(request_id=12, unit_id=SMALL_B):
    data = {"request_id": str(request_id), "unit_id": str(unit_id), "kind": "medicine", "urgency": "critical"}
    return envelope("volunteer", "request_unmatched", f"request/{request_id}", data)


def handle(db, handler, body):
    with unit_of_work(db) as uow:
        return getattr(worker(uow), handler)(body)


def test_an_unmatched_request_raises_one_incident_however_often_it_comes(district):
    body = unmatched()
    incident_id = handle(district, "on_request_unmatched", body)
    assert handle(district, "on_request_unmatched", body) == "duplicate"  # the same delivery again
    assert handle(district, "on_request_unmatched", {**body, "id": "another-id"}) == incident_id  # same origin
    raised = events(district, "incident_reported")
    assert [(d["incident_id"], d["unit_id"], d["category"]) for _, _, d in raised] == [
        (incident_id, str(SMALL_B), "resident_need")
    ]


def test_a_closed_mediation_settles_its_incident_once(district):
    incident = call(district, "report_incident", unit_id=SMALL_A, category="dispute", description="Noise")["id"]
    closed = {"case_id": "3", "source_incident_id": incident, "outcome": "agreement"}
    assert handle(district, "on_mediation_closed", envelope("legal", "mediation_closed", "case/3", closed)) == "settled"
    again = envelope("legal", "mediation_closed", "case/3", closed)
    assert handle(district, "on_mediation_closed", again) == "already settled"
    unlinked = {**closed, "source_incident_id": None}
    assert handle(district, "on_mediation_closed", envelope("legal", "mediation_closed", "c", unlinked)) == (
        "not from an incident"
    )
    assert call(district, "get_incident", incident_id=incident)["status"] == "resolved"


def test_housekeeping_commits_its_escalations_and_expiries(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 5)
    call(
        district,
        "tag_resident",
        resident_id=resident,
        tag="quarantined",
        until=(NOW + dt.timedelta(hours=1)).isoformat(),
    )
    config = {"ESCALATION_DEADLINES": {"grid_small": 60}}
    with unit_of_work(district) as uow:
        incident = worker(uow, **config).report_incident(unit_id=SMALL_A, category="other", description="Gate")["id"]
    clock.advance(hours=1)
    with unit_of_work(district) as uow:
        worker(uow, **config).housekeeping()
    assert call(district, "get_incident", incident_id=incident)["handling_level"] == "grid_medium"
    assert call(district, "get_resident", resident_id=resident)["tags"] == []
    assert [d["reason"] for _, _, d in events(district, "resident_untagged")] == ["expired"]


def test_the_departments_and_deadlines_come_from_config_over_the_defaults():
    grid = service.GridService()
    grid.config = {"INCIDENT_DEPARTMENTS": {"other": "housing"}, "ESCALATION_DEADLINES": {"street": 5}}
    policy = grid.policy
    assert (policy.departments["other"], policy.departments["dispute"]) == ("housing", "political_legal")
    assert (policy.deadlines["street"], policy.deadlines["grid_small"]) == (5, 24 * 3600)


def test_the_tree_and_household_endpoints_reply_with_their_schemas(district):
    listed = call(district, "list_units", who=OFFICER_A, level="grid_small")
    assert (listed["page"], listed["page_size"], listed["has_more"]) == (1, 100, False)
    assert [u["id"] for u in listed["items"]] == [str(SMALL_A)]
    staff = call(district, "assign_staff", unit_id=SMALL_A, user_id="u-1", role="grid_worker", name="Li")
    assert set(staff) == {"id", "unit_id", "user_id", "role", "name", "assigned_at"}
    assert call(district, "list_staff", unit_id=SMALL_A) == [staff]
    household = call(district, "register_household", unit_id=SMALL_A, address={**ADDRESS, "room": "7"})
    assert household == {"id": "1", "unit_id": str(SMALL_A), "address": {**ADDRESS, "room": "7"}}
    assert call(district, "move_household", household_id=1, unit_id=SMALL_B) == {**household, "unit_id": str(SMALL_B)}
    assert call(district, "get_household", household_id=1)["unit_path"] == ["1", "2", "7", "8", "9", "10"]
    assert call(district, "move_unit", unit_id=LARGE_A, new_parent_id=COMMUNITY_B)["path"] == ["1", "2", "7", "4"]
    assert call(district, "close_unit", unit_id=SMALL_A)["closed"] is True


def test_visits_and_resolutions_reply_with_their_schemas(district, add_household):
    home = add_household(SMALL_A)
    campaign = call(district, "start_screening", under=STREET, title="T", starts_on="2030-01-07", ends_on="2030-01-07")
    visit = call(
        district, "record_visit", who=WORKER_A, campaign_id=campaign["id"], household_id=home, outcome="absent"
    )
    assert visit == {
        "id": "1",
        "campaign_id": campaign["id"],
        "household_id": str(home),
        "outcome": "absent",
        "visited_by": "worker-a",
        "visited_at": NOW.isoformat(),
    }
    incident = call(district, "report_incident", unit_id=SMALL_A, category="other", description="Gate")
    resolved = call(district, "resolve_incident", who=WORKER_A, incident_id=incident["id"], resolution="Fixed")
    assert {k for k in incident if incident[k] != resolved[k]} == {"status", "due_at", "resolution", "resolved_at"}
    with pytest.raises(ValidationError) as err:
        call(district, "start_screening", under=STREET, title="T", starts_on="2030-01-07", ends_on="2030-01-06")
    assert "ends_on" in err.value.fields


def test_an_understaffed_shift_raises_one_incident_at_its_post(district):
    data = {
        "shift_id": "5",
        "post_id": "9",
        "unit_id": str(SMALL_A),
        "starts_at": "2030-01-07T10:00:00+00:00",
        "needed": 2,
        "signed": 0,
    }
    first = handle(district, "on_shift_understaffed", envelope("volunteer", "shift_understaffed", "shift/5", data))
    again = handle(district, "on_shift_understaffed", envelope("volunteer", "shift_understaffed", "shift/5", data))
    assert first == again
    assert "0 of 2 volunteers" in call(district, "get_incident", incident_id=first)["description"]
