"""The unit tree (services/grid/units.py): creating, listing, moving and closing units, staff."""

import pytest
from sqlalchemy import select

from services.grid import incidents, screening, units
from services.grid.models import Household, Incident, Resident, ResidentTag, ScreeningCampaign, Unit
from shared.errors import Conflict, Forbidden, ValidationError
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    DISTRICT,
    LARGE_A,
    MEDIUM_A,
    NOW,
    OFFICER_A,
    PATH_A,
    POLICY,
    SMALL_A,
    SMALL_B,
    STREET,
)
from tests.unit.local import caller, events, unit_of_work


def test_a_unit_gets_its_path_below_its_parent_and_is_announced(district):
    with unit_of_work(district) as uow:
        unit = units.create_unit(uow, OFFICER_A, COMMUNITY_A, "grid_large", "Large A2", "L-A2")
        uow.commit()
    assert unit.path == f"/1/2/3/{unit.id}/" and unit.parent_id == COMMUNITY_A and not unit.closed
    created = events(district, "unit_created")
    assert len(created) == 11  # the district's ten, then this one
    assert created[-1] == (
        "unit_created",
        f"unit/{unit.id}",
        {"unit_id": str(unit.id), "level": "grid_large", "unit_path": ["1", "2", "3", str(unit.id)]},
    )


def test_what_a_new_unit_must_be(district):
    with unit_of_work(district) as uow:
        with pytest.raises(ValidationError) as err:
            units.create_unit(uow, ADMIN, None, "street", "Orphan", None)
        assert "parent_id" in err.value.fields
        with pytest.raises(ValidationError) as err:
            units.create_unit(uow, ADMIN, COMMUNITY_A, "street", "Upside down", None)
        assert "level" in err.value.fields
        with pytest.raises(ValidationError) as err:
            units.create_unit(uow, ADMIN, COMMUNITY_A, "community", "Sibling level", None)
        assert "level" in err.value.fields
        with pytest.raises(Conflict, match="taken"):
            units.create_unit(uow, ADMIN, STREET, "community", "Same code", "D-1")


def test_only_an_admin_creates_a_district_and_nobody_adds_under_what_they_cannot_reach(district):
    with unit_of_work(district) as uow:
        with pytest.raises(Forbidden):
            units.create_unit(uow, caller("officer", unit=DISTRICT), None, "district", "Another", None)
        with pytest.raises(Forbidden):
            units.create_unit(uow, OFFICER_A, COMMUNITY_B, "grid_large", "Not mine", None)
        assert units.create_unit(uow, ADMIN, None, "district", "Second district", None).path.count("/") == 2


def test_a_closed_unit_takes_no_children_and_is_announced_once(district):
    with unit_of_work(district) as uow:
        assert units.close_unit(uow, ADMIN, MEDIUM_A).closed
        units.close_unit(uow, ADMIN, MEDIUM_A)  # again: nothing new to announce
        with pytest.raises(Conflict, match="closed"):
            units.create_unit(uow, ADMIN, MEDIUM_A, "grid_small", "Under a closed unit", None)
        uow.commit()
    assert [data["unit_id"] for _, _, data in events(district, "unit_closed")] == [str(MEDIUM_A)]


def test_listing_defaults_to_the_callers_subtree_and_filters(district):
    with unit_of_work(district) as uow:
        session = uow.session
        rows, more = units.list_units(session, OFFICER_A, None, None, False, 1, 100)
        assert [u.id for u in rows] == [LARGE_A, MEDIUM_A, SMALL_A] and not more
        rows, more = units.list_units(session, ADMIN, STREET, "grid_small", False, 1, 100)
        assert [u.id for u in rows] == [SMALL_A, SMALL_B]
        rows, more = units.list_units(session, ADMIN, None, None, False, 2, 3)
        assert [u.id for u in rows] == [4, 5, 6] and more
        with pytest.raises(Forbidden, match="no unit scope"):
            units.list_units(session, caller("officer"), None, None, False, 1, 100)
        with pytest.raises(Forbidden):
            units.list_units(session, OFFICER_A, STREET, None, False, 1, 100)
        units.close_unit(uow, ADMIN, SMALL_A)
        assert SMALL_A not in [u.id for u in units.list_units(session, ADMIN, COMMUNITY_A, None, False, 1, 100)[0]]
        assert SMALL_A in [u.id for u in units.list_units(session, ADMIN, COMMUNITY_A, None, True, 1, 100)[0]]


def test_ancestors_run_from_the_district_down(district):
    with unit_of_work(district) as uow:
        assert [u.id for u in units.ancestors(uow.session, OFFICER_A, SMALL_A)] == [1, 2, 3, 4, 5]
        assert units.ancestors(uow.session, ADMIN, DISTRICT) == []
        with pytest.raises(Forbidden):
            units.ancestors(uow.session, OFFICER_A, SMALL_B)


def test_a_move_rewrites_every_copy_of_the_paths_below(district, add_household, add_resident):
    household = add_household(SMALL_A)
    add_resident(household, 1, "elderly_alone")
    with unit_of_work(district) as uow:
        screening.start_screening(uow, ADMIN, MEDIUM_A, "Visits", NOW.date(), NOW.date())
        incidents.report_incident(uow, ADMIN, POLICY, SMALL_A, "other", "Broken gate", None)
        moved = units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
        uow.commit()
    assert (moved.parent_id, moved.path) == (COMMUNITY_B, "/1/2/7/4/")
    new_small = "/1/2/7/4/5/6/"
    with unit_of_work(district) as uow:
        session = uow.session
        assert session.get(Unit, SMALL_A).path == new_small
        for column in (
            Household.unit_path,
            Resident.unit_path,
            ResidentTag.unit_path,
            Incident.unit_path,
        ):
            assert session.scalars(select(column)).all() == [new_small]
        assert session.scalars(select(ScreeningCampaign.unit_path)).all() == ["/1/2/7/4/5/"]
        assert session.get(Unit, COMMUNITY_B).path == "/1/2/7/"  # outside the subtree: untouched
    (_, subject, data) = events(district, "unit_moved")[0]
    assert subject == f"unit/{LARGE_A}"
    assert data == {
        "unit_id": "4",
        "level": "grid_large",
        "unit_path": ["1", "2", "7", "4"],
        "old_path": ["1", "2", "3", "4"],
    }


def test_what_a_move_refuses(district):
    with unit_of_work(district) as uow:
        for unit_id, new_parent, field in (
            (DISTRICT, STREET, "unit_id"),  # a district has no parent to leave
            (COMMUNITY_A, SMALL_A, "new_parent_id"),  # under its own descendant
            (COMMUNITY_A, COMMUNITY_A, "new_parent_id"),  # under itself
            (LARGE_A, SMALL_B, "new_parent_id"),  # under a deeper level
        ):
            with pytest.raises(ValidationError) as err:
                units.move_unit(uow, ADMIN, unit_id, new_parent)
            assert field in err.value.fields
        with pytest.raises(Forbidden):
            units.move_unit(uow, OFFICER_A, LARGE_A, COMMUNITY_B)  # the new parent is out of reach
        units.close_unit(uow, ADMIN, COMMUNITY_B)
        with pytest.raises(Conflict, match="closed"):
            units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
    assert events(district, "unit_moved") == []


def test_staff_and_party_organisation(district):
    with unit_of_work(district) as uow:
        staff = units.assign_staff(uow, OFFICER_A, COMMUNITY_A, "u-17", "party_secretary", "Wang Li")
        units.assign_staff(uow, OFFICER_A, COMMUNITY_A, "u-17", "grid_leader", "Wang Li")  # another role: fine
        with pytest.raises(Conflict, match="already holds"):
            units.assign_staff(uow, OFFICER_A, COMMUNITY_A, "u-17", "party_secretary", "Wang Li")
        with pytest.raises(Forbidden):
            units.assign_staff(uow, OFFICER_A, COMMUNITY_B, "u-18", "officer", "Zhao")
        assert (staff.unit_id, staff.assigned_at) == (COMMUNITY_A, NOW)
        assert [s.role for s in units.list_staff(uow.session, OFFICER_A, COMMUNITY_A)] == [
            "party_secretary",
            "grid_leader",
        ]
        with pytest.raises(Forbidden):
            units.list_staff(uow.session, OFFICER_A, COMMUNITY_B)
        assert units.set_party_org(uow, OFFICER_A, COMMUNITY_A, "General Branch").party_org_name == "General Branch"


def test_reachable_unit_is_the_scope_check(district):
    with unit_of_work(district) as uow:
        assert units.reachable_unit(uow.session, OFFICER_A, SMALL_A).path == PATH_A
        with pytest.raises(Forbidden):
            units.reachable_unit(uow.session, OFFICER_A, STREET)  # above the caller's unit
        with pytest.raises(Forbidden):
            units.reachable_unit(uow.session, caller("volunteer", unit=COMMUNITY_A), SMALL_A)  # not a staff role
