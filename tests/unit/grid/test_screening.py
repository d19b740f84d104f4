"""Door-to-door screening campaigns and their progress (services/grid/screening.py)."""

import datetime as dt

import pytest

from services.grid import incidents, screening, units
from shared.errors import Conflict, Forbidden, ValidationError
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    DISTRICT,
    NOW,
    OFFICER_A,
    POLICY,
    SMALL_A,
    SMALL_B,
    STREET,
    WORKER_A,
)
from tests.unit.local import caller, events, unit_of_work

TODAY = NOW.date()


def start(db, under=STREET, starts_on=TODAY, ends_on=TODAY, who=ADMIN):
    with unit_of_work(db) as uow:
        campaign = screening.start_screening(uow, who, under, "Door to door", starts_on, ends_on)
        uow.commit()
        return campaign.id


def visit(db, campaign, household, outcome, who=ADMIN, note=None):
    with unit_of_work(db) as uow:
        recorded = screening.record_visit(uow, who, POLICY, campaign, household, outcome, note)
        uow.commit()
        return recorded


def test_a_campaign_is_started_in_reach(district):
    with unit_of_work(district) as uow:
        campaign = screening.start_screening(uow, OFFICER_A, COMMUNITY_A, "Fever check", TODAY, TODAY)
        assert (campaign.unit_path, campaign.created_by) == ("/1/2/3/", "officer-a")
        with pytest.raises(Forbidden):
            screening.start_screening(uow, OFFICER_A, STREET, "Too wide", TODAY, TODAY)


def test_a_worker_records_visits_in_a_wider_campaign_for_households_in_reach(district, add_household):
    home_a, home_b = add_household(SMALL_A), add_household(SMALL_B)
    campaign = start(district)
    recorded = visit(district, campaign, home_a, "seen_ok", who=WORKER_A)
    assert (recorded.visited_by, recorded.visited_at, recorded.outcome) == ("worker-a", NOW, "seen_ok")
    with pytest.raises(Forbidden):
        visit(district, campaign, home_b, "seen_ok", who=WORKER_A)
    (_, subject, data) = events(district, "screening_visit_recorded")[0]
    assert subject == f"household/{home_a}"
    assert data == {
        "campaign_id": str(campaign),
        "visit_id": str(recorded.id),
        "household_id": str(home_a),
        "unit_id": str(SMALL_A),
        "unit_path": ["1", "2", "3", "4", "5", "6"],
        "outcome": "seen_ok",
    }


def test_a_visit_outside_the_campaigns_area_or_days_is_refused(district, add_household, clock):
    home_b = add_household(SMALL_B)
    only_a = start(district, under=COMMUNITY_A)
    with pytest.raises(ValidationError) as err:
        visit(district, only_a, home_b, "seen_ok")
    assert "household_id" in err.value.fields
    # A caller who cannot see the campaign learns nothing about it, not even that it is elsewhere.
    with pytest.raises(Forbidden):
        visit(district, only_a, home_b, "seen_ok", who=caller("grid_worker", unit=SMALL_B))
    later = start(district, starts_on=TODAY + dt.timedelta(days=3), ends_on=TODAY + dt.timedelta(days=4))
    with pytest.raises(Conflict, match="campaign runs"):
        visit(district, later, home_b, "seen_ok")
    clock.advance(days=3)
    assert visit(district, later, home_b, "seen_ok").outcome == "seen_ok"
    clock.advance(days=2)
    with pytest.raises(Conflict, match="campaign runs"):
        visit(district, later, home_b, "seen_ok")


def test_a_concern_raises_one_incident_per_visit_without_the_note(district, add_household):
    home = add_household(SMALL_A)
    campaign = start(district)
    visit(district, campaign, home, "seen_ok")
    concern = visit(district, campaign, home, "seen_concern", note="Cough and fever")
    with unit_of_work(district) as uow:
        rows, _ = incidents.list_incidents(uow.session, ADMIN, STREET, None, 1, 10)
        raised = [(i.id, i.origin, i.unit_id, i.category, i.department, i.description) for i in rows]
    assert [found[1:5] for found in raised] == [(f"grid:visit/{concern.id}", SMALL_A, "public_health", "health")]
    assert "fever" not in raised[0][5].lower()
    assert [d["incident_id"] for _, _, d in events(district, "incident_reported")] == [str(raised[0][0])]


def test_progress_counts_latest_outcomes_per_child_unit(district, add_household):
    homes_a = [add_household(SMALL_A, room=str(r)) for r in range(4)]
    homes_b = [add_household(SMALL_B, room=str(r)) for r in range(2)]
    campaign = start(district)
    visit(district, campaign, homes_a[0], "absent")
    visit(district, campaign, homes_a[0], "seen_ok")  # the latest visit counts
    visit(district, campaign, homes_a[1], "seen_concern")
    visit(district, campaign, homes_b[0], "refused")
    with unit_of_work(district) as uow:
        progress = screening.screening_progress(uow.session, ADMIN, campaign, None)
        smalls = screening.screening_progress(uow.session, ADMIN, campaign, "grid_small")
        with pytest.raises(ValidationError) as err:
            screening.screening_progress(uow.session, ADMIN, campaign, "district")
        assert "level" in err.value.fields
        with pytest.raises(Forbidden):
            screening.screening_progress(uow.session, OFFICER_A, campaign, None)
    assert progress == {
        "campaign_id": campaign,
        "title": "Door to door",
        "level": "community",
        "households": 6,
        "visited": 3,
        "outcomes": {"seen_ok": 1, "seen_concern": 1, "absent": 0, "refused": 1},
        "coverage_percent": 50.0,
        "units": [
            {
                "unit_id": COMMUNITY_A,
                "name": "community A",
                "level": "community",
                "households": 4,
                "visited": 2,
                "outcomes": {"seen_ok": 1, "seen_concern": 1, "absent": 0, "refused": 0},
                "coverage_percent": 50.0,
            },
            {
                "unit_id": COMMUNITY_B,
                "name": "community B",
                "level": "community",
                "households": 2,
                "visited": 1,
                "outcomes": {"seen_ok": 0, "seen_concern": 0, "absent": 0, "refused": 1},
                "coverage_percent": 50.0,
            },
        ],
    }
    assert [(row["unit_id"], row["households"]) for row in smalls["units"]] == [(SMALL_A, 4), (SMALL_B, 2)]


def test_progress_groups_by_level_when_levels_are_skipped(district, add_household):
    with unit_of_work(district) as uow:
        direct = units.create_unit(uow, ADMIN, DISTRICT, "community", "Direct", None).id
        small = units.create_unit(uow, ADMIN, direct, "grid_small", "Direct small", None).id
        uow.commit()
    add_household(small)
    campaign = start(district, under=DISTRICT)
    with unit_of_work(district) as uow:
        progress = screening.screening_progress(uow.session, ADMIN, campaign, "community")
    assert {row["unit_id"]: row["households"] for row in progress["units"]} == {
        COMMUNITY_A: 0,
        COMMUNITY_B: 0,
        direct: 1,
    }
    assert progress["coverage_percent"] == 0.0  # nothing visited, and no division by zero anywhere
