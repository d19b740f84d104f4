"""Stations, lawyers, their plans and time off (services/legal/directory.py)."""

import datetime as dt

import pytest
from hypothesis import given, strategies as st
from sqlalchemy import select

from services.legal import directory
from services.legal.models import LawyerStation, Schedule
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.unit.legal.conftest import (
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    GRID_A,
    OFFICER_A,
    OFFICER_B,
    STREET,
    at,
    field_of,
    lawyer,
    resident,
)
from tests.unit.local import caller, unit_of_work

MONDAY_MORNING = [{"weekday": 0, "start": "09:00", "end": "12:00"}]


class TestStations:
    def test_a_station_keeps_its_units_path(self, committed, grid):
        with committed() as uow:
            station = directory.create_station(uow, OFFICER_A, grid, COMMUNITY_A, "S", "1 Road")
        assert (station.unit_id, station.unit_path) == (COMMUNITY_A, "/1/2/3/")

    def test_scope_is_checked_before_the_level_says_anything_about_the_unit(self, db, grid):
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            directory.create_station(uow, OFFICER_B, grid, GRID_A, "S", "1 Road")  # a grid, and not B's

    def test_only_streets_and_communities_host_stations(self, db, grid):
        with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
            directory.create_station(uow, OFFICER_A, grid, GRID_A, "S", "1 Road")
        assert field_of(error) == {"unit_id"}

    def test_an_unknown_unit_is_the_callers_mistake(self, db, grid):
        with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
            directory.create_station(uow, ADMIN, grid, 999, "S", "1 Road")
        assert field_of(error) == {"unit_id"}

    def test_lists_follow_the_subtree_and_are_public(self, committed, db, grid):
        with committed() as uow:
            a = directory.create_station(uow, OFFICER_A, grid, COMMUNITY_A, "A", "1 Road").id
            b = directory.create_station(uow, OFFICER_B, grid, COMMUNITY_B, "B", "2 Road").id
            street = directory.create_station(uow, ADMIN, grid, STREET, "Street", "3 Road").id
        with unit_of_work(db) as uow:
            listed = {
                under: [s.id for s in directory.list_stations(uow.session, grid, under)]
                for under in (None, STREET, COMMUNITY_B, GRID_A)
            }
        assert listed == {None: [a, b, street], STREET: [a, b, street], COMMUNITY_B: [b], GRID_A: []}


class TestLawyers:
    def test_registration_answers_the_stations_in_the_order_named(self, committed, grid):
        with committed() as uow:
            a = directory.create_station(uow, ADMIN, grid, COMMUNITY_A, "A", "1 Road").id
            street = directory.create_station(uow, ADMIN, grid, STREET, "Street", "3 Road").id
            registered = directory.register_lawyer(uow, ADMIN, grid, "L", "F", "LIC-1", ["family"], [street, a], None)
            served = uow.session.scalars(
                select(LawyerStation.station_id).where(LawyerStation.lawyer_id == registered.id)
            ).all()
        assert registered.station_ids == [street, a] and sorted(served) == sorted([a, street])
        assert (registered.name, registered.license_no) == ("L", "LIC-1")  # the row's columns, through the view

    def test_every_station_must_be_in_scope_before_a_licence_clash_is_told(self, committed, db, grid, practice):
        with committed() as uow:
            b = directory.create_station(uow, OFFICER_B, grid, COMMUNITY_B, "B", "2 Road").id
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            # LIC-000001 is taken, but officer B does not reach the practice's station
            directory.register_lawyer(
                uow, OFFICER_B, grid, "L", "F", "LIC-000001", ["family"], [b, practice["station"]], None
            )
        with unit_of_work(db) as uow, pytest.raises(Conflict, match="LIC-000001"):
            directory.register_lawyer(
                uow, OFFICER_A, grid, "L", "F", "LIC-000001", ["family"], [practice["station"]], None
            )

    def test_a_linked_resident_must_be_in_the_registrars_scope(self, db, grid, practice):
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            # resident 1020 lives in community B
            directory.register_lawyer(uow, OFFICER_A, grid, "L", "F", "LIC-2", ["family"], [practice["station"]], 1020)

    def test_an_unknown_station_is_not_found(self, db, grid):
        with unit_of_work(db) as uow, pytest.raises(NotFound):
            directory.register_lawyer(uow, ADMIN, grid, "L", "F", "LIC-2", ["family"], [404], None)


class TestPlans:
    def test_the_lawyer_plans_their_own_week_and_a_second_call_replaces_it(self, committed, db, practice):
        me = lawyer(practice["lawyer"])
        with committed() as uow:
            directory.set_schedule(uow, me, practice["lawyer"], practice["station"], MONDAY_MORNING, 45, 15)
        with unit_of_work(db) as uow:
            plan = uow.session.get(Schedule, (practice["lawyer"], practice["station"]))
            assert (plan.weekly, plan.slot_minutes, plan.buffer_minutes) == (MONDAY_MORNING, 45, 15)

    @pytest.mark.parametrize(
        "who",
        [OFFICER_B, lawyer(999), resident(1000), caller("grid_worker", unit=COMMUNITY_A)],
        ids=["officer elsewhere", "another lawyer", "resident", "grid worker"],
    )
    def test_others_may_not_plan_for_the_lawyer(self, db, practice, who):
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            directory.set_schedule(uow, who, practice["lawyer"], practice["station"], MONDAY_MORNING, 30, 0)

    def test_only_a_station_the_lawyer_serves(self, committed, db, grid, practice):
        with committed() as uow:
            other = directory.create_station(uow, OFFICER_A, grid, COMMUNITY_A, "Other", "9 Road").id
        with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
            directory.set_schedule(uow, OFFICER_A, practice["lawyer"], other, MONDAY_MORNING, 30, 0)
        assert field_of(error) == {"station_id"}

    def test_an_officer_plans_only_at_stations_in_their_scope(self, committed, db, grid, practice):
        with committed() as uow:
            b = directory.create_station(uow, ADMIN, grid, COMMUNITY_B, "B", "2 Road").id
            uow.session.add(LawyerStation(lawyer_id=practice["lawyer"], station_id=b))
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            # the lawyer serves a station in A, so officer A manages them, but not at B's station
            directory.set_schedule(uow, OFFICER_A, practice["lawyer"], b, MONDAY_MORNING, 30, 0)

    def test_plans_at_two_stations_may_not_overlap(self, committed, db, grid, practice):
        with committed() as uow:
            street = directory.create_station(uow, ADMIN, grid, STREET, "Street", "3 Road").id
            uow.session.add(LawyerStation(lawyer_id=practice["lawyer"], station_id=street))
        lunch = [{"weekday": 2, "start": "11:30", "end": "13:00"}]
        with unit_of_work(db) as uow, pytest.raises(Conflict, match="weekday 2"):
            directory.set_schedule(uow, ADMIN, practice["lawyer"], street, lunch, 30, 0)
        with committed() as uow:  # 12:00-14:00 is the practice's break
            directory.set_schedule(uow, ADMIN, practice["lawyer"], street, [{**lunch[0], "start": "12:00"}], 30, 0)

    def test_time_off_by_the_lawyer_or_an_officer_in_scope(self, committed, db, practice):
        with committed() as uow:
            leave = directory.add_time_off(
                uow, OFFICER_A, practice["lawyer"], at_monday("09:00"), at_monday("10:00"), "court"
            )
        assert (leave.lawyer_id, leave.reason) == (practice["lawyer"], "court")
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            directory.add_time_off(uow, OFFICER_B, practice["lawyer"], at_monday("09:00"), at_monday("10:00"), None)
        with unit_of_work(db) as uow, pytest.raises(NotFound):
            directory.add_time_off(uow, ADMIN, 404, at_monday("09:00"), at_monday("10:00"), None)


def at_monday(clock):
    return at(dt.date(2030, 1, 7), clock)


@given(
    roles=st.sets(st.sampled_from(["admin", "service", "officer", "grid_worker", "lawyer", "resident", "mediator"])),
    unit=st.sampled_from([None, "1", "3", "5", "4"]),
)
def test_staff_reach_needs_a_staff_role_and_the_unit_on_the_path(roles, unit):
    """A station at community 3 (/1/2/3/): staff whose unit is on its path, or admin and service naming
    no unit; a self role (lawyer, resident, mediator) never reaches by unit, whatever its token names."""
    staff = roles & {"admin", "service", "officer", "grid_worker"}
    expected = bool(staff) and (unit in ("1", "3") or (unit is None and bool(staff & {"admin", "service"})))
    assert directory.staff_reaches(caller(*roles, unit=unit), "/1/2/3/") == expected
