"""Volunteers, pledges and hours (services/volunteer/people.py) on SQLite with the fake grid."""

import datetime as dt

import pytest
from sqlalchemy import select

from services.volunteer import people
from services.volunteer.models import Signup, Volunteer
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.unit.local import VAULT, caller, unit_of_work
from tests.unit.volunteer.conftest import (
    ADMIN,
    ALWAYS,
    COMMUNITY_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    PATH_A,
    SMALL_A,
    SMALL_B,
    volunteer_caller,
)

PHONE = "13912345678"


def register(db, grid, who=OFFICER_A, **overrides):
    args = {
        "name": "Li Wei",
        "phone": PHONE,
        "home_unit_id": SMALL_A,
        "skills": ["delivery"],
        "availability": ALWAYS,
        "max_active_tasks": 3,
        "resident_id": None,
        "party_member": True,
        **overrides,
    }
    with unit_of_work(db) as uow:
        volunteer = people.register_volunteer(uow, who, grid, VAULT, **args)
        uow.commit()
        return volunteer.id


def stored(db, volunteer_id, *columns):
    """The volunteer's row, as those columns' values (read before the unit of work closes)."""
    with unit_of_work(db) as uow:
        row = uow.session.get(Volunteer, volunteer_id)
        return tuple(getattr(row, column) for column in columns)


def volunteer_count(db):
    with unit_of_work(db) as uow:
        return len(uow.session.scalars(select(Volunteer.id)).all())


# ---- registering and changing volunteers ---------------------------------------


def test_a_volunteer_is_registered_at_their_home_with_the_phone_encrypted(db, grid):
    volunteer = register(db, grid, resident_id=1010)
    home, path, household, sealed, flags = stored(
        db, volunteer, "home_unit_id", "home_path", "household_id", "phone_enc", "active"
    )
    assert (home, path, household, flags) == (SMALL_A, PATH_A, 101, True)
    assert PHONE.encode() not in sealed  # only the sealed form is kept
    assert VAULT.decrypt(sealed, people.PHONE_CONTEXT) == PHONE


def test_registering_outside_the_callers_unit_is_forbidden_and_writes_nothing(db, grid):
    with pytest.raises(Forbidden):
        register(db, grid, who=OFFICER_B)
    assert volunteer_count(db) == 0


def test_an_unknown_home_unit_is_a_field_error(db, grid):
    with pytest.raises(ValidationError) as error:
        register(db, grid, home_unit_id=999)
    assert error.value.fields == {"home_unit_id": ["Unknown unit 999."]}


def test_the_linked_resident_must_be_in_scope_and_live_inside_the_home_unit(db, grid):
    with pytest.raises(Forbidden):  # resident 1030 lives in community B: not said to officer A
        register(db, grid, home_unit_id=COMMUNITY_A, resident_id=1030)
    with pytest.raises(ValidationError) as error:
        register(db, grid, who=ADMIN, home_unit_id=SMALL_A, resident_id=1030)
    assert list(error.value.fields) == ["home_unit_id"]


def test_a_resident_volunteers_once(db, grid):
    register(db, grid, resident_id=1010)
    with pytest.raises(Conflict):
        register(db, grid, resident_id=1010)


def test_a_volunteer_moves_their_own_home_anywhere_but_staff_only_within_scope(db, grid):
    volunteer = register(db, grid)
    with unit_of_work(db) as uow:
        moved = people.update_volunteer(
            uow, volunteer_caller(volunteer), grid, VAULT, volunteer, home_unit_id=SMALL_B, phone="13800000000"
        )
        assert moved.home_path == "/1/2/8/9/10/11/"
        uow.commit()
    assert VAULT.decrypt(stored(db, volunteer, "phone_enc")[0], people.PHONE_CONTEXT) == "13800000000"
    with unit_of_work(db) as uow, pytest.raises(Forbidden):  # now outside officer A's community
        people.update_volunteer(uow, OFFICER_A, grid, VAULT, volunteer, name="x")


def test_a_linked_volunteer_cannot_move_away_from_their_resident_record(db, grid):
    volunteer = register(db, grid, resident_id=1010)
    with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
        people.update_volunteer(uow, volunteer_caller(volunteer), grid, VAULT, volunteer, home_unit_id=SMALL_B)
    assert list(error.value.fields) == ["home_unit_id"]


def test_who_reaches_a_volunteer(db, grid):
    volunteer = register(db, grid)
    with unit_of_work(db) as uow:
        session = uow.session
        assert people.reachable_volunteer(session, volunteer_caller(volunteer), volunteer).id == volunteer
        assert people.reachable_volunteer(session, OFFICER_A, volunteer).id == volunteer
        for outsider in (OFFICER_B, volunteer_caller(volunteer + 1), caller("resident", sub=str(volunteer))):
            with pytest.raises(Forbidden):
                people.reachable_volunteer(session, outsider, volunteer)
        with pytest.raises(NotFound):
            people.reachable_volunteer(session, ADMIN, 999)


def test_set_active(db, grid):
    volunteer = register(db, grid)
    with unit_of_work(db) as uow:
        people.set_active(uow, volunteer_caller(volunteer), volunteer, False)
        uow.commit()
    assert stored(db, volunteer, "active") == (False,)


def test_list_volunteers_by_skill_in_pages_within_scope(db, grid):
    for n, skills in enumerate((["delivery"], ["medical"], ["delivery", "medical"], ["medical"])):
        register(db, grid, name=f"v{n}", skills=skills)
    register(db, grid, who=ADMIN, home_unit_id=SMALL_B, skills=["medical"])
    with unit_of_work(db) as uow:
        first, more = people.list_volunteers(uow.session, OFFICER_A, grid, COMMUNITY_A, "medical", 1, 2)
        second, last = people.list_volunteers(uow.session, OFFICER_A, grid, COMMUNITY_A, "medical", 2, 2)
        everyone, _ = people.list_volunteers(uow.session, ADMIN, grid, 1, None, 1, 100)
        assert ([v.name for v in first], more) == (["v1", "v2"], True)
        assert ([v.name for v in second], last) == (["v3"], False)
        assert len(everyone) == 5
        with pytest.raises(Forbidden):
            people.list_volunteers(uow.session, OFFICER_B, grid, COMMUNITY_A, None, 1, 100)


# ---- pledges ------------------------------------------------------------------


def test_a_pledge_is_made_for_a_date_not_past_and_fulfilled_once(db, grid):
    volunteer = register(db, grid)
    me = volunteer_caller(volunteer)
    with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
        people.make_pledge(uow, me, volunteer, "Deliver groceries", NOW.date() - dt.timedelta(days=1))
    assert list(error.value.fields) == ["due_on"]
    with unit_of_work(db) as uow:
        pledge = people.make_pledge(uow, me, volunteer, "Deliver groceries", NOW.date())
        assert pledge.unit_path == PATH_A and pledge.status == "open"
        people.fulfil_pledge(uow, me, pledge.id, "Done on Monday")
        uow.commit()
        pledge_id = pledge.id
    with unit_of_work(db) as uow:
        with pytest.raises(Conflict):
            people.fulfil_pledge(uow, me, pledge_id, "again")
        with pytest.raises(Forbidden):  # another volunteer's pledge
            people.fulfil_pledge(uow, volunteer_caller(volunteer + 1), pledge_id, "mine")


def test_pledges_are_listed_with_the_fulfilment_rate_per_child_unit(db, grid):
    a = register(db, grid)
    b = register(db, grid, who=ADMIN, home_unit_id=SMALL_B)
    with unit_of_work(db) as uow:
        done = people.make_pledge(uow, ADMIN, a, "one", NOW.date())
        people.make_pledge(uow, ADMIN, a, "two", NOW.date())
        people.make_pledge(uow, ADMIN, a, "three", NOW.date())
        people.make_pledge(uow, ADMIN, b, "four", NOW.date())
        people.fulfil_pledge(uow, ADMIN, done.id, "ok")
        uow.commit()
    with unit_of_work(db) as uow:
        board = people.list_pledges(uow.session, grid, 2, None)
        open_only = people.list_pledges(uow.session, grid, 2, "open")
        at_the_grid = people.list_pledges(uow.session, grid, SMALL_A, None)
        assert len(board.items) == 4
        assert [p.text for p in open_only.items] == ["two", "three", "four"] and open_only.units == board.units
    rates = [(u.unit_id, u.pledges, u.fulfilled, u.fulfilment_rate) for u in board.units]
    assert rates == [(COMMUNITY_A, 3, 1, 0.333), (8, 1, 0, 0.0)]
    # pledges made at the unit asked about count for that unit itself
    assert [(u.unit_id, u.pledges) for u in at_the_grid.units] == [(SMALL_A, 3)]


# ---- hours --------------------------------------------------------------------


def test_hours_count_checked_out_shifts_since_a_time(db, grid, add_shift):
    volunteer = register(db, grid)
    shifts = [add_shift(NOW + dt.timedelta(days=day)) for day in (-3, -2, -1)]
    ends = ((NOW - dt.timedelta(days=3), 1.5), (NOW, 2.25), (None, None))  # the last is not checked out yet
    with unit_of_work(db) as uow:
        for shift_id, (ended, hours) in zip(shifts, ends, strict=True):
            uow.session.add(
                Signup(
                    shift_id=shift_id,
                    volunteer_id=volunteer,
                    status="signed",
                    signed_at=NOW - dt.timedelta(days=4),
                    checked_in_at=NOW - dt.timedelta(days=4),
                    checked_out_at=ended,
                    hours=hours,
                )
            )
        uow.commit()
    with unit_of_work(db) as uow:
        total = people.hours(uow.session, volunteer_caller(volunteer), volunteer, None)
        recent = people.hours(uow.session, OFFICER_A, volunteer, NOW - dt.timedelta(days=1))
        with pytest.raises(Forbidden):
            people.hours(uow.session, OFFICER_B, volunteer, None)
    assert (total.hours, total.shifts, total.since) == (3.75, 2, None)
    assert (recent.hours, recent.shifts, recent.since) == (2.25, 1, NOW - dt.timedelta(days=1))
