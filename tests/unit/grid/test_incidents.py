"""Incidents (services/grid/incidents.py): reported or raised at a unit, climbing level by level to a
department, by hand or on their deadlines, resolved by whoever handles them, settled by mediation."""

import datetime as dt

import pytest

from services.grid import incidents
from services.grid.vocabulary import DEFAULT_DEPARTMENTS
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_A,
    DISTRICT,
    NOW,
    OFFICER_A,
    OFFICER_B,
    POLICY,
    SMALL_A,
    SMALL_B,
    STREET,
    WORKER_A,
)
from tests.unit.local import caller, events, unit_of_work

FAST = incidents.Policy(DEFAULT_DEPARTMENTS, {"grid_small": 60, "grid_medium": 60, "grid_large": 3600})


def report(db, unit=SMALL_A, category="dispute", parties=None, who=ADMIN, policy=POLICY):
    with unit_of_work(db) as uow:
        incident = incidents.report_incident(uow, who, policy, unit, category, "Noise between neighbours", parties)
        uow.commit()
        return incident.id


def state(db, incident_id):
    with unit_of_work(db) as uow:
        trail = incidents.incident_trail(uow.session, ADMIN, incident_id)
        return {
            "status": trail.status,
            "level": trail.handling_level,
            "unit": trail.handling_unit_id,
            "department": trail.department,
            "escalations": trail.escalations,
            "due_at": trail.due_at,
            "steps": [(s.action, s.from_level, s.to_level, s.actor) for s in trail.steps],
        }


def test_a_report_opens_at_its_unit_with_its_departments_deadline(district):
    incident = report(district, who=WORKER_A)
    assert state(district, incident) == {
        "status": "open",
        "level": "grid_small",
        "unit": SMALL_A,
        "department": "political_legal",
        "escalations": 0,
        "due_at": NOW + dt.timedelta(hours=24),
        "steps": [("reported", None, "grid_small", "worker-a")],
    }
    (_, subject, data) = events(district, "incident_reported")[0]
    assert subject == f"incident/{incident}"
    assert data == {
        "incident_id": str(incident),
        "unit_id": str(SMALL_A),
        "unit_path": ["1", "2", "3", "4", "5", "6"],
        "category": "dispute",
        "department": "political_legal",
        "status": "open",
        "handling_level": "grid_small",
        "handling_unit_id": str(SMALL_A),
        "party_resident_ids": [],
        "source": "staff",
    }


def test_parties_must_exist_be_in_reach_and_live_inside_the_unit(district, add_household, add_resident):
    inside = add_resident(add_household(SMALL_A), 1)
    outside = add_resident(add_household(SMALL_B), 2)
    incident = report(district, parties=[inside, inside])
    with unit_of_work(district) as uow:
        assert incidents.load_incident(uow.session, ADMIN, incident).party_resident_ids == [inside]
    for parties, who, error, detail in (
        ([inside, 99999], ADMIN, ValidationError, "Unknown residents: 99999"),
        ([inside, outside], ADMIN, ValidationError, f"Not living inside unit {SMALL_A}: {outside}"),
        ([outside], OFFICER_A, Forbidden, "party resident"),
    ):
        with pytest.raises(error) as err:
            report(district, parties=parties, who=who)
        if error is ValidationError:
            assert detail in err.value.fields["party_resident_ids"][0]
        else:
            assert detail in str(err.value)


def test_an_incident_climbs_level_by_level_then_to_its_department(district):
    incident = report(district)
    with unit_of_work(district) as uow:
        levels = [
            incidents.escalate_incident(uow, ADMIN, POLICY, incident, "more help").handling_level for _ in range(6)
        ]
        uow.commit()
    assert levels == ["grid_medium", "grid_large", "community", "street", "district", "department"]
    now = state(district, incident)
    assert (now["status"], now["unit"], now["escalations"], now["due_at"]) == ("escalated", None, 6, None)
    with unit_of_work(district) as uow, pytest.raises(Conflict, match="already with the political_legal"):
        incidents.escalate_incident(uow, ADMIN, POLICY, incident, "again")
    climbs = [
        (d["from_level"], d["handling_level"], d["automatic"]) for _, _, d in events(district, "incident_escalated")
    ]
    assert climbs[0] == ("grid_small", "grid_medium", False) and climbs[-1] == ("district", "department", False)


def test_only_the_handling_level_or_above_resolves_and_only_once(district):
    incident = report(district, category="infrastructure")
    with unit_of_work(district) as uow:
        for _ in range(3):
            incidents.escalate_incident(uow, WORKER_A, POLICY, incident, "needs the community")
        uow.commit()
    with unit_of_work(district) as uow, pytest.raises(Forbidden, match="handled at community"):
        incidents.resolve_incident(uow, WORKER_A, incident, "fixed")
    with unit_of_work(district) as uow:
        resolved = incidents.resolve_incident(uow, OFFICER_A, incident, "fixed")
        assert (resolved.status, resolved.resolution, resolved.resolved_at, resolved.due_at) == (
            "resolved",
            "fixed",
            NOW,
            None,
        )
        with pytest.raises(Conflict, match="already resolved"):
            incidents.resolve_incident(uow, OFFICER_A, incident, "twice")
        with pytest.raises(Conflict, match="is resolved"):
            incidents.escalate_incident(uow, OFFICER_A, POLICY, incident, "after all")
        uow.commit()
    assert [d["status"] for _, _, d in events(district, "incident_resolved")] == ["resolved"]


def test_an_incident_with_the_department_is_resolved_from_the_district(district):
    incident = report(district)
    with unit_of_work(district) as uow:
        for _ in range(6):
            incidents.escalate_incident(uow, ADMIN, POLICY, incident, "up")
        with pytest.raises(Forbidden):
            incidents.resolve_incident(uow, caller("officer", unit=STREET), incident, "done")
        assert incidents.resolve_incident(uow, caller("officer", unit=DISTRICT), incident, "done").status == "resolved"


def test_scope_of_reading_and_listing(district):
    a, b = report(district, unit=SMALL_A), report(district, unit=SMALL_B)
    with unit_of_work(district) as uow:
        session = uow.session
        with pytest.raises(Forbidden):
            incidents.load_incident(session, OFFICER_A, b)
        with pytest.raises(NotFound):
            incidents.load_incident(session, ADMIN, 404)
        incidents.resolve_incident(uow, ADMIN, b, "done")
        assert [i.id for i in incidents.list_incidents(session, OFFICER_A, COMMUNITY_A, None, 1, 10)[0]] == [a]
        assert [i.id for i in incidents.list_incidents(session, ADMIN, STREET, "resolved", 1, 10)[0]] == [b]
        assert [i.id for i in incidents.list_incidents(session, ADMIN, STREET, None, 1, 10)[0]] == [
            b,
            a,
        ]  # newest first
        with pytest.raises(Forbidden):
            incidents.list_incidents(session, OFFICER_B, COMMUNITY_A, None, 1, 10)


def test_overdue_incidents_climb_on_their_deadlines_and_stop_where_a_level_allows_more(district):
    incident = report(district, category="public_health", policy=FAST)
    with unit_of_work(district) as uow:
        assert incidents.escalate_overdue(uow, FAST, NOW + dt.timedelta(seconds=59)) == 0
        assert incidents.escalate_overdue(uow, FAST, NOW + dt.timedelta(seconds=60)) == 1
        assert incidents.escalate_overdue(uow, FAST, NOW + dt.timedelta(seconds=120)) == 1
        # grid_large allows an hour from when it got there
        assert incidents.escalate_overdue(uow, FAST, NOW + dt.timedelta(seconds=120 + 3599)) == 0
        uow.commit()
    now = state(district, incident)
    assert now["level"] == "grid_large" and now["due_at"] == NOW + dt.timedelta(seconds=120 + 3600)
    assert [s[3] for s in now["steps"][1:]] == ["system:deadline", "system:deadline"]
    assert {d["automatic"] for _, _, d in events(district, "incident_escalated")} == {True}


def test_a_level_without_a_deadline_waits_for_people_and_resolved_incidents_never_climb(district):
    patient = incidents.Policy(DEFAULT_DEPARTMENTS, {})
    waiting, resolved = report(district, policy=patient), report(district, policy=FAST)
    with unit_of_work(district) as uow:
        incidents.resolve_incident(uow, ADMIN, resolved, "done")
        assert incidents.escalate_overdue(uow, FAST, NOW + dt.timedelta(days=365)) == 0
    assert state(district, waiting)["due_at"] is None


def test_a_service_raises_one_incident_per_origin(district):
    with unit_of_work(district) as uow:
        first, created = incidents.raise_for_unmatched_request(uow, POLICY, 12, SMALL_B, "medicine", "critical")
        again, created_again = incidents.raise_for_unmatched_request(uow, POLICY, 12, SMALL_B, "medicine", "critical")
        shift, _ = incidents.raise_for_understaffed_shift(uow, POLICY, 5, 9, SMALL_A, "2030-01-07T10:00:00Z", 2, 0)
        with pytest.raises(ValidationError) as err:
            incidents.raise_incident(uow, POLICY, "volunteer:request/13", 404, "other", "d", "system:volunteer")
        assert "unit_id" in err.value.fields
        uow.commit()
    assert (created, created_again, again.id) == (True, False, first.id)
    assert (first.origin, first.category, first.department, first.reported_by) == (
        "volunteer:request/12",
        "resident_need",
        "civil_affairs",
        "system:volunteer",
    )
    assert "0 of 2 volunteers" in shift.description and shift.origin == "volunteer:shift/5"
    assert len(events(district, "incident_reported")) == 2


def test_mediation_settles_its_incident_once(district):
    settled, court = report(district), report(district)
    with unit_of_work(district) as uow:
        done = incidents.settle_from_mediation(uow, POLICY, settled, 7, "agreement", "system:legal")
        assert (done.status, done.resolution) == ("resolved", "mediation case 7 closed: agreement")
        assert incidents.settle_from_mediation(uow, POLICY, settled, 7, "agreement", "system:legal") is None
        assert incidents.settle_from_mediation(uow, POLICY, 404, 7, "agreement", "system:legal") is None
        uow.commit()
    with unit_of_work(district) as uow:
        referred = incidents.settle_from_mediation(uow, POLICY, court, 8, "referred_to_court", "system:legal")
        assert (referred.department, referred.handling_level, referred.handling_unit_id) == (
            "political_legal",
            "department",
            None,
        )
        assert incidents.settle_from_mediation(uow, POLICY, court, 8, "referred_to_court", "system:legal") is None
        uow.commit()
    assert state(district, court)["steps"][-1] == ("escalated", "grid_small", "department", "system:legal")
    assert [d["incident_id"] for _, _, d in events(district, "incident_resolved")] == [str(settled)]
    assert [(d["incident_id"], d["automatic"]) for _, _, d in events(district, "incident_escalated")] == [
        (str(court), True)
    ]


def test_a_court_referral_skips_the_levels_between_and_a_resolved_incident_stays_resolved(district):
    incident = report(district, category="infrastructure")  # housing's, until the court takes it
    with unit_of_work(district) as uow:
        incidents.escalate_incident(uow, ADMIN, POLICY, incident, "up")
        referred = incidents.settle_from_mediation(uow, POLICY, incident, 9, "referred_to_court", "system:legal")
        assert (referred.department, referred.escalations, referred.due_at) == ("political_legal", 2, None)
        resolved = incidents.resolve_incident(uow, ADMIN, incident, "judged")
        with pytest.raises(Conflict, match="is resolved"):
            incidents.refer_to_department(uow, POLICY, resolved, "health", "system:legal", "late")
        uow.commit()
    assert [step[:3] for step in state(district, incident)["steps"]] == [
        ("reported", None, "grid_small"),
        ("escalated", "grid_small", "grid_medium"),
        ("escalated", "grid_medium", "department"),
        ("resolved", "department", None),
    ]
