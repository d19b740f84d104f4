"""What the grid publishes matches what services/grid/events.py documents (docs/asyncapi.yaml is
generated from those schemas): every event type, exactly the documented fields, valid values."""

import datetime as dt

from hypothesis import given, strategies as st

from services.grid import erasure, events as grid_events, incidents, reports, residents, retention, screening, units
from shared.paths import as_path
from tests.unit.grid.conftest import ADMIN, COMMUNITY_B, LARGE_A, NOW, POLICY, SMALL_A, SMALL_B, STREET
from tests.unit.local import VAULT, caller, events, unit_of_work


def every_kind_of_change(db, add_household, add_resident):
    household = add_household(SMALL_A)
    resident = add_resident(household, 1)
    with unit_of_work(db) as uow:
        residents.tag_resident(uow, ADMIN, resident, "quarantined", NOW + dt.timedelta(days=1), None)
        residents.untag_resident(uow, ADMIN, resident, "quarantined")
        residents.move_household(uow, ADMIN, household, SMALL_B)
        campaign = screening.start_screening(uow, ADMIN, STREET, "Visits", NOW.date(), NOW.date())
        screening.record_visit(uow, ADMIN, POLICY, campaign.id, household, "seen_concern", None)
        incident = incidents.report_incident(uow, ADMIN, POLICY, SMALL_A, "dispute", "d", [])
        incidents.escalate_incident(uow, ADMIN, POLICY, incident.id, "up")
        incidents.resolve_incident(uow, ADMIN, incident.id, "done")
        units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
        units.close_unit(uow, ADMIN, SMALL_A)
        units.set_party_org(uow, ADMIN, SMALL_A, "Branch A")
        uow.commit()
    with unit_of_work(db) as uow:  # residents' reports: reported, merged as a duplicate, resolved, reopened
        me, rules = caller("resident", sub=str(resident)), reports.ReportRules()
        first = reports.report_problem(uow, me, POLICY, rules, "other", "a").service_request_id
        second = reports.report_problem(uow, me, POLICY, rules, "other", "b").service_request_id
        reports.merge_reports(uow, ADMIN, first, second)
        incidents.resolve_incident(uow, ADMIN, first, "done", public_note="Done")
        reports.reopen_report(uow, me, POLICY, rules, first, None)
        uow.commit()
    with unit_of_work(db) as uow:  # the data lifecycle: a released tag's retention ends; an erasure
        retention.purge_released(uow, NOW + dt.timedelta(days=400))
        erasure.erase_resident(uow, ADMIN, VAULT, resident, "asked to")
        erasure.erase_resident(uow, caller("admin", sub="second"), VAULT, resident, "approved")
        uow.commit()


def test_every_event_carries_exactly_its_documented_fields(district, add_household, add_resident):
    every_kind_of_change(district, add_household, add_resident)
    recorded = events(district)
    assert {event_type for event_type, _, _ in recorded} == set(grid_events.EVENTS)
    for event_type, _, data in recorded:
        schema = grid_events.EVENTS[event_type]
        assert set(data) == set(schema.fields), event_type
        assert schema.validate(data) == {}, event_type


def test_an_event_that_strays_from_its_schema_is_seen():
    schema = grid_events.EVENTS["unit_closed"]
    assert schema.validate({"unit_id": "1", "level": "castle", "unit_path": ["1"]}) != {}
    assert schema.validate({"unit_id": "1", "level": "district"}) != {}  # unit_path missing


@given(st.lists(st.integers(min_value=1, max_value=2**63 - 1), min_size=1, max_size=8))
def test_a_path_goes_out_as_its_ids_in_order(ids):
    assert grid_events.path_out(as_path(ids)) == [str(i) for i in ids]
