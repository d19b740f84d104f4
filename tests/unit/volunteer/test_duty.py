"""Duty posts and shifts (services/volunteer/duty.py): sign-ups, check-in and out, coverage, warnings."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.volunteer import duty
from shared.errors import Conflict, Forbidden, ValidationError
from tests.unit.local import events, unit_of_work
from tests.unit.volunteer.conftest import (
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    NOW,
    OFFICER_A,
    OFFICER_B,
    SMALL_B,
    volunteer_caller,
)

ZONE = ZoneInfo("Asia/Shanghai")
SOON = NOW + dt.timedelta(minutes=20)  # check-in is open 30 minutes before


def act(db, action, who, shift_id, volunteer_id):
    """Run one sign-up action and commit it; the sign-up's (status, checked in, checked out, hours)."""
    with unit_of_work(db) as uow:
        signup = action(uow, who, shift_id, volunteer_id)
        uow.commit()
        return signup.status, signup.checked_in_at, signup.checked_out_at, signup.hours


def test_a_post_is_made_in_the_callers_scope_only(db, grid):
    with unit_of_work(db) as uow:
        post = duty.create_post(uow, OFFICER_A, grid, COMMUNITY_A, "Gate 3", "North gate")
        assert (post.unit_id, post.unit_path) == (COMMUNITY_A, "/1/2/3/")
        with pytest.raises(Forbidden):
            duty.create_post(uow, OFFICER_B, grid, COMMUNITY_A, "Gate 3", "North gate")
        with pytest.raises(ValidationError) as error:
            duty.create_post(uow, ADMIN, grid, 999, "Gate", "x")
        assert list(error.value.fields) == ["unit_id"]


def test_a_shift_ends_after_it_starts_at_a_post_in_scope(db, grid):
    with unit_of_work(db) as uow:
        post = duty.create_post(uow, OFFICER_A, grid, COMMUNITY_A, "Gate 3", "North gate")
        with pytest.raises(ValidationError) as error:
            duty.add_shift(uow, OFFICER_A, post.id, SOON, SOON, 2)
        assert list(error.value.fields) == ["ends_at"]
        with pytest.raises(Forbidden):
            duty.add_shift(uow, OFFICER_B, post.id, SOON, SOON + dt.timedelta(hours=1), 2)
        shift = duty.add_shift(uow, OFFICER_A, post.id, SOON, SOON + dt.timedelta(hours=1), 2)
        assert shift.unit_path == post.unit_path and shift.understaffed_reported is False


def test_a_shift_never_takes_more_volunteers_than_it_needs(db, add_volunteer, add_shift):
    first, second = add_volunteer(), add_volunteer()
    shift = add_shift(SOON, needed=1)
    assert act(db, duty.sign_up, volunteer_caller(first), shift, first)[0] == "signed"
    with pytest.raises(Conflict, match="full"):
        act(db, duty.sign_up, OFFICER_A, shift, second)
    with pytest.raises(Conflict, match="already signed up"):
        act(db, duty.sign_up, volunteer_caller(first), shift, first)


def test_a_volunteer_holds_no_two_overlapping_shifts(db, add_volunteer, add_shift):
    volunteer = add_volunteer()
    morning = add_shift(SOON, hours=2)
    overlapping = add_shift(SOON + dt.timedelta(hours=1), hours=2)
    afterwards = add_shift(SOON + dt.timedelta(hours=2), hours=2)  # starts as the first ends
    act(db, duty.sign_up, volunteer_caller(volunteer), morning, volunteer)
    with pytest.raises(Conflict, match="overlaps"):
        act(db, duty.sign_up, volunteer_caller(volunteer), overlapping, volunteer)
    assert act(db, duty.sign_up, volunteer_caller(volunteer), afterwards, volunteer)[0] == "signed"


def test_a_volunteer_signs_up_anywhere_but_staff_only_for_shifts_in_their_scope(db, add_volunteer, add_shift):
    volunteer = add_volunteer()  # lives in community A
    shift_b = add_shift(SOON, unit=COMMUNITY_B)
    with pytest.raises(Forbidden):  # officer A reaches the volunteer but not the shift
        act(db, duty.sign_up, OFFICER_A, shift_b, volunteer)
    with pytest.raises(Forbidden):  # another volunteer does not act for this one
        act(db, duty.sign_up, volunteer_caller(volunteer + 1), shift_b, volunteer)
    assert act(db, duty.sign_up, volunteer_caller(volunteer), shift_b, volunteer)[0] == "signed"


def test_a_shift_that_is_over_takes_no_sign_ups(db, add_volunteer, add_shift, clock):
    volunteer = add_volunteer()
    shift = add_shift(SOON, hours=1)
    clock.advance(hours=2)
    with pytest.raises(Conflict, match="over"):
        act(db, duty.sign_up, volunteer_caller(volunteer), shift, volunteer)


def test_withdrawing_frees_the_place_until_checked_in(db, add_volunteer, add_shift):
    first, second = add_volunteer(), add_volunteer()
    shift = add_shift(SOON, needed=1)
    act(db, duty.sign_up, volunteer_caller(first), shift, first)
    assert act(db, duty.withdraw, volunteer_caller(first), shift, first)[0] == "withdrawn"
    with pytest.raises(Conflict, match="not signed up"):
        act(db, duty.withdraw, volunteer_caller(first), shift, first)
    act(db, duty.sign_up, volunteer_caller(second), shift, second)
    act(db, duty.check_in, volunteer_caller(second), shift, second)
    with pytest.raises(Conflict, match="already checked in"):
        act(db, duty.withdraw, volunteer_caller(second), shift, second)


def test_hours_come_from_the_actual_check_in_and_out(db, add_volunteer, add_shift, clock):
    volunteer = add_volunteer()
    me = volunteer_caller(volunteer)
    shift = add_shift(SOON, hours=3)
    act(db, duty.sign_up, me, shift, volunteer)
    with pytest.raises(Conflict, match="not checked in"):
        act(db, duty.check_out, me, shift, volunteer)
    status, checked_in, _, _ = act(db, duty.check_in, me, shift, volunteer)
    assert (status, checked_in) == ("signed", NOW)
    with pytest.raises(Conflict, match="already checked in"):
        act(db, duty.check_in, me, shift, volunteer)
    clock.advance(minutes=90)
    _, _, checked_out, hours = act(db, duty.check_out, me, shift, volunteer)
    assert (checked_out, hours) == (NOW + dt.timedelta(minutes=90), 1.5)
    with pytest.raises(Conflict, match="already checked out"):
        act(db, duty.check_out, me, shift, volunteer)


def test_check_in_opens_30_minutes_before_the_shift_and_closes_at_its_end(db, add_volunteer, add_shift, clock):
    volunteer = add_volunteer()
    me = volunteer_caller(volunteer)
    shift = add_shift(NOW + dt.timedelta(minutes=31), hours=1)
    act(db, duty.sign_up, me, shift, volunteer)
    with pytest.raises(Conflict, match="30 minutes"):
        act(db, duty.check_in, me, shift, volunteer)
    clock.advance(minutes=92)  # past the end
    with pytest.raises(Conflict, match="30 minutes"):
        act(db, duty.check_in, me, shift, volunteer)


def test_coverage_lists_the_short_shifts_of_a_local_day(db, grid, add_volunteer, add_shift):
    volunteer = add_volunteer()
    short = add_shift(SOON, needed=2)
    full = add_shift(SOON + dt.timedelta(hours=3), needed=1)
    add_shift(NOW + dt.timedelta(hours=15), needed=1)  # 01:00 the next day in Shanghai
    add_shift(SOON, needed=1, unit=COMMUNITY_B)
    act(db, duty.sign_up, volunteer_caller(volunteer), short, volunteer)
    act(db, duty.sign_up, volunteer_caller(volunteer), full, volunteer)
    with unit_of_work(db) as uow:
        gaps = duty.coverage(uow.session, OFFICER_A, grid, ZONE, COMMUNITY_A, NOW.date())
        assert [(g.shift_id, g.post, g.needed, g.signed, g.missing) for g in gaps] == [(short, "Gate 3", 2, 1, 1)]
        with pytest.raises(Forbidden):
            duty.coverage(uow.session, OFFICER_B, grid, ZONE, COMMUNITY_A, NOW.date())


def test_a_short_shift_starting_soon_is_reported_once_with_its_numbers(db, add_volunteer, add_shift):
    volunteer = add_volunteer()
    short = add_shift(NOW + dt.timedelta(minutes=90), needed=2)
    staffed = add_shift(NOW + dt.timedelta(minutes=100), needed=1)
    later = add_shift(NOW + dt.timedelta(hours=5), needed=1, unit=SMALL_B)
    act(db, duty.sign_up, volunteer_caller(volunteer), staffed, volunteer)
    for _ in range(2):  # a second run reports nothing again
        with unit_of_work(db) as uow:
            duty.report_understaffed(uow, dt.timedelta(hours=2), NOW)
            uow.commit()
    assert events(db, "shift_understaffed") == [
        (
            "shift_understaffed",
            f"shift/{short}",
            {
                "shift_id": str(short),
                "post_id": str(short),  # one post per shift in these tests, made in the same order
                "unit_id": str(COMMUNITY_A),
                "unit_path": ["1", "2", "3"],
                "starts_at": (NOW + dt.timedelta(minutes=90)).isoformat(),
                "needed": 2,
                "signed": 0,
            },
        )
    ]
    with unit_of_work(db) as uow:  # the later one, once within the lead
        assert duty.report_understaffed(uow, dt.timedelta(hours=6), NOW) == 1
        uow.commit()
    assert [subject for _, subject, _ in events(db, "shift_understaffed")] == [f"shift/{short}", f"shift/{later}"]
