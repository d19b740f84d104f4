"""Screening campaigns and incident escalation, through real RPC."""

import datetime as dt

import pytest
from nameko.exceptions import RemoteError

from shared.errors import Conflict, Forbidden
from tests.support import add_household, add_resident, token, wait_until

TODAY = dt.date.today().isoformat()


def test_screening_progress_per_child_unit(admin, district, call_as):
    homes_a = [add_household(admin, district["small_a"], room=str(r)) for r in range(4)]
    homes_b = [add_household(admin, district["small_b"], room=str(r)) for r in range(2)]
    campaign = admin.start_screening(under=district["street"], title="Door to door", starts_on=TODAY, ends_on=TODAY)[
        "id"
    ]
    worker = call_as(token("grid_worker", sub="w1", unit=district["small_a"])).grid
    worker.record_visit(campaign_id=campaign, household_id=homes_a[0], outcome="absent")
    worker.record_visit(campaign_id=campaign, household_id=homes_a[0], outcome="seen_ok")  # latest counts
    worker.record_visit(campaign_id=campaign, household_id=homes_a[1], outcome="seen_concern", note="fever")
    admin.record_visit(campaign_id=campaign, household_id=homes_b[0], outcome="refused")
    with pytest.raises(Forbidden):
        worker.record_visit(campaign_id=campaign, household_id=homes_b[1], outcome="seen_ok")

    progress = admin.screening_progress(campaign_id=campaign)
    assert progress["level"] == "community"
    by_unit = {row["unit_id"]: row for row in progress["units"]}
    a, b = by_unit[district["community_a"]], by_unit[district["community_b"]]
    assert (a["households"], a["visited"], a["coverage_percent"]) == (4, 2, 50.0)
    assert a["outcomes"] == {"seen_ok": 1, "seen_concern": 1, "absent": 0, "refused": 0}
    assert (b["households"], b["visited"], b["outcomes"]["refused"]) == (2, 1, 1)
    assert (progress["households"], progress["visited"]) == (6, 3)
    small = admin.screening_progress(campaign_id=campaign, level="grid_small")
    assert [row["unit_id"] for row in small["units"]] == [district["small_a"], district["small_b"]]


def test_visit_outside_the_campaign_area_or_dates_is_refused(admin, district):
    home_b = add_household(admin, district["small_b"])
    campaign = admin.start_screening(under=district["community_a"], title="A only", starts_on=TODAY, ends_on=TODAY)[
        "id"
    ]
    with pytest.raises(RemoteError) as err:
        admin.record_visit(campaign_id=campaign, household_id=home_b, outcome="seen_ok")
    assert err.value.exc_type == "ValidationError"
    later = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    future = admin.start_screening(under=district["street"], title="Later", starts_on=later, ends_on=later)["id"]
    with pytest.raises(Conflict):
        admin.record_visit(campaign_id=future, household_id=home_b, outcome="seen_ok")


def test_incident_climbs_level_by_level_to_its_department(admin, district):
    incident = admin.report_incident(
        unit_id=district["small_a"], category="dispute", description="Noise between neighbours"
    )
    assert (incident["status"], incident["handling_level"], incident["department"]) == (
        "open",
        "grid_small",
        "political_legal",
    )
    levels = []
    for _ in range(5):
        levels.append(admin.escalate_incident(incident_id=incident["id"], reason="needs more help")["handling_level"])
    assert levels == ["grid_medium", "grid_large", "community", "street", "district"]
    last = admin.escalate_incident(incident_id=incident["id"], reason="beyond the district")
    assert (last["handling_level"], last["handling_unit_id"], last["status"]) == ("department", None, "escalated")
    with pytest.raises(Conflict):
        admin.escalate_incident(incident_id=incident["id"], reason="again")
    resolved = admin.resolve_incident(incident_id=incident["id"], resolution="Mediated")
    assert resolved["status"] == "resolved"
    full = admin.get_incident(incident_id=incident["id"])
    assert [s["action"] for s in full["steps"]] == ["reported"] + ["escalated"] * 6 + ["resolved"]
    with pytest.raises(Conflict):
        admin.resolve_incident(incident_id=incident["id"], resolution="twice")


def test_only_the_handling_level_or_above_resolves(admin, district, call_as):
    incident = admin.report_incident(unit_id=district["small_a"], category="infrastructure", description="Broken gate")[
        "id"
    ]
    worker = call_as(token("grid_worker", unit=district["small_a"])).grid
    worker.escalate_incident(incident_id=incident, reason="needs the community")
    worker.escalate_incident(incident_id=incident, reason="needs the community")
    worker.escalate_incident(incident_id=incident, reason="needs the community")
    with pytest.raises(Forbidden):
        worker.resolve_incident(incident_id=incident, resolution="fixed")
    community = call_as(token("officer", unit=district["community_a"])).grid
    assert community.resolve_incident(incident_id=incident, resolution="fixed")["status"] == "resolved"


def test_incident_parties_must_exist(admin, district):
    household = add_household(admin, district["small_a"])
    party = add_resident(admin, household, 61)["id"]
    incident = admin.report_incident(
        unit_id=district["small_a"], category="dispute", description="d", party_resident_ids=[party]
    )
    assert incident["party_resident_ids"] == [party]
    with pytest.raises(RemoteError) as err:
        admin.report_incident(
            unit_id=district["small_a"], category="dispute", description="d", party_resident_ids=[party, "99999999"]
        )
    assert err.value.exc_type == "ValidationError" and "party_resident_ids" in err.value.value


def test_list_incidents_by_subtree_and_status(admin, district):
    a = admin.report_incident(unit_id=district["small_a"], category="other", description="a")["id"]
    b = admin.report_incident(unit_id=district["small_b"], category="other", description="b")["id"]
    admin.resolve_incident(incident_id=b, resolution="done")
    assert [i["id"] for i in admin.list_incidents(under=district["community_a"])["items"]] == [a]
    assert [i["id"] for i in admin.list_incidents(under=district["street"], status="resolved")["items"]] == [b]
    assert {i["id"] for i in admin.list_incidents(under=district["street"])["items"]} == {a, b}


@pytest.fixture
def fast_deadlines(grid_config):
    grid_config["ESCALATION_DEADLINES"] = {"grid_small": 0.5, "grid_medium": 0.5, "grid_large": 3600}


def handled_at(admin, incident, level):
    return admin.get_incident(incident_id=incident)["handling_level"] == level


def test_overdue_incident_escalates_by_itself(fast_deadlines, admin, district):
    incident = admin.report_incident(
        unit_id=district["small_a"], category="public_health", description="Waste not collected"
    )["id"]
    wait_until(lambda: handled_at(admin, incident, "grid_large"), message="incident did not climb on its deadlines")
    steps = admin.get_incident(incident_id=incident)["steps"]
    assert [s["actor"] for s in steps[1:]] == ["system:deadline", "system:deadline"]
    # grid_large allows an hour: it stays. The barrier: an incident reported only now climbs to grid_large
    # on the same two 0.5 s deadlines, so housekeeping has run at least a second after the first reached
    # grid_large; each pass climbs every unresolved incident past its deadline, so were grid_large's hour
    # not kept (its deadline taken as a second or less), the first would have climbed in that pass too.
    barrier = admin.report_incident(unit_id=district["small_b"], category="other", description="Barrier")["id"]
    wait_until(lambda: handled_at(admin, barrier, "grid_large"), message="the barrier incident did not climb")
    assert admin.get_incident(incident_id=incident)["steps"] == steps


def test_progress_groups_by_level_when_levels_are_skipped(admin, district):
    # a community straight under the district, a small grid straight under it
    community = admin.create_unit(parent_id=district["district"], level="community", name="Direct")["id"]
    small = admin.create_unit(parent_id=community, level="grid_small", name="Direct small")["id"]
    add_household(admin, small)
    campaign = admin.start_screening(under=district["district"], title="All", starts_on=TODAY, ends_on=TODAY)["id"]
    progress = admin.screening_progress(campaign_id=campaign, level="community")
    by_unit = {row["unit_id"]: row["households"] for row in progress["units"]}
    assert by_unit[community] == 1 and by_unit[district["community_a"]] == 0
