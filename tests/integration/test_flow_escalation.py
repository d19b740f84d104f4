"""Bottom-up escalation across services: an unmatched help request, an understaffed shift and a
screening visit that found a concern each raise an incident at the grid they came from, which
then climbs level by level on its deadlines."""

import datetime as dt
import uuid

import pytest
from nameko.testing.services import entrypoint_waiter

from tests.support import add_household, add_resident, token, wait_until

SMALL_GRID_DEADLINE = 1.5  # seconds: an incident waits this long at its small grid, then climbs


@pytest.fixture
def grid_config(grid_config):
    return {**grid_config, "ESCALATION_DEADLINES": {"grid_small": SMALL_GRID_DEADLINE}}


@pytest.fixture
def running(grid, notices, legal, volunteer):
    return {"grid": grid, "volunteer": volunteer}


@pytest.fixture
def officer(running, district, call_as):
    return call_as(token("officer", sub="officer", unit=district["street"]))


def later(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def incident_from(officer, unit, origin):
    found = [i for i in officer.grid.list_incidents(under=unit, page_size=100)["items"] if i["origin"] == origin]
    return found[0] if found else None


def climbs_to_medium(officer, incident, district, small, medium):
    # Raised at its small grid (it may already have climbed by the time it is read).
    first = officer.grid.get_incident(incident_id=incident["id"])["steps"][0]
    assert (incident["unit_id"], first["action"], first["to_level"]) == (small, "reported", "grid_small")
    climbed = wait_until(
        lambda: (lambda i: i if i["handling_level"] == "grid_medium" else None)(
            officer.grid.get_incident(incident_id=incident["id"])
        ),
        timeout=15,
        message="incident did not climb",
    )
    assert climbed["status"] == "escalated" and climbed["handling_unit_id"] == medium
    assert climbed["steps"][-1]["actor"] == "system:deadline"


def test_an_unmatched_request_becomes_an_incident_at_its_grid_once(officer, district, running, volunteer_events):
    request = officer.volunteer.create_request(
        unit_id=district["small_b"], kind="medicine", details="Insulin", urgency="critical", needed_by=later(hours=2)
    )
    assert request["status"] == "unmatched"  # nobody volunteers anywhere in this district
    incident = wait_until(
        lambda: incident_from(officer, district["small_b"], f"volunteer:request/{request['id']}"),
        message="no incident for the unmatched request",
    )
    assert incident["category"] == "resident_need" and incident["department"] == "civil_affairs"
    assert incident["reported_by"] == "system:volunteer"
    unmatched = volunteer_events.next("request_unmatched", where=lambda e: e["data"]["request_id"] == request["id"])
    with entrypoint_waiter(running["grid"], "on_request_unmatched") as duplicate:
        volunteer_events.republish(unmatched)
    assert duplicate.get() == "duplicate"
    with entrypoint_waiter(running["grid"], "on_request_unmatched") as copy:
        volunteer_events.republish(unmatched, id=str(uuid.uuid4()))
    assert copy.get() == incident["id"]
    climbs_to_medium(officer, incident, district, district["small_b"], district["medium_b"])
    assert len(officer.grid.list_incidents(under=district["small_b"])["items"]) == 1


def test_an_understaffed_shift_becomes_an_incident_at_its_post(officer, district, running):
    post = officer.volunteer.create_post(unit_id=district["small_a"], name="Gate 3", location="North gate")
    shift = officer.volunteer.add_shift(
        post_id=post["id"], starts_at=later(minutes=30), ends_at=later(minutes=150), needed=2
    )
    incident = wait_until(
        lambda: incident_from(officer, district["small_a"], f"volunteer:shift/{shift['id']}"),
        message="no incident for the understaffed shift",
    )
    assert "0 of 2 volunteers" in incident["description"]
    climbs_to_medium(officer, incident, district, district["small_a"], district["medium_a"])


def test_a_screening_visit_with_a_concern_raises_an_incident_at_the_household_grid(officer, admin, district, call_as):
    home = add_household(admin, district["small_a"])
    add_resident(admin, home, 1)
    campaign = officer.grid.start_screening(
        under=district["street"],
        title="Fever check",
        starts_on=dt.date.today().isoformat(),
        ends_on=(dt.date.today() + dt.timedelta(days=3)).isoformat(),
    )
    worker = call_as(token("grid_worker", sub="worker", unit=district["small_a"])).grid
    fine = worker.record_visit(campaign_id=campaign["id"], household_id=home, outcome="seen_ok")
    concern = worker.record_visit(
        campaign_id=campaign["id"], household_id=home, outcome="seen_concern", note="Cough and fever for two days"
    )
    assert incident_from(officer, district["small_a"], f"grid:visit/{fine['id']}") is None
    incident = incident_from(officer, district["small_a"], f"grid:visit/{concern['id']}")
    assert incident["category"] == "public_health" and incident["department"] == "health"
    assert "fever" not in incident["description"].lower()  # the note stays with the visit
    climbs_to_medium(officer, incident, district, district["small_a"], district["medium_a"])
