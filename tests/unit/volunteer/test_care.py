"""Care the grid's events call for (services/volunteer/care.py): quarantine tags as last heard, the
daily groceries and check-in of a household under quarantine, and door-knocks after a notice."""

import datetime as dt
import logging

from hypothesis import given, strategies as st
from sqlalchemy import select

from services.volunteer import care, requests
from services.volunteer.models import CarePlan, HelpRequest
from tests.unit.local import events, unit_of_work
from tests.unit.volunteer.conftest import NOW, PATH_A, SMALL_A

QUARANTINED_HOME = 104  # resident 1040's household, in small grid A


def care_requests(db):
    """{origin: (kind, status, needed_by)} of every request a service opened."""
    with unit_of_work(db) as uow:
        rows = uow.session.execute(
            select(HelpRequest.origin, HelpRequest.kind, HelpRequest.status, HelpRequest.needed_by).where(
                HelpRequest.origin.is_not(None)
            )
        )
        return {origin: (kind, status, needed_by) for origin, kind, status, needed_by in rows}


def start(db, grid, notices, policy, now=NOW, household=QUARANTINED_HOME):
    with unit_of_work(db) as uow:
        _, opened = care.start(uow, grid, notices, policy, household, now)
        uow.commit()
        return [request.id for request in opened]


def stop(db, household=QUARANTINED_HOME):
    with unit_of_work(db) as uow:
        cancelled = care.stop(uow, household, NOW)
        uow.commit()
        return [request.id for request in cancelled]


# ---- quarantine tags as last heard ---------------------------------------------------


def test_a_tag_older_than_what_is_known_is_stale(db):
    with unit_of_work(db) as uow:
        session = uow.session
        assert care.record_tag(session, 1040, QUARANTINED_HOME, True, NOW)
        assert not care.record_tag(session, 1040, QUARANTINED_HOME, False, NOW - dt.timedelta(minutes=1))
        assert care.household_quarantined(session, QUARANTINED_HOME)
        assert care.record_tag(session, 1040, QUARANTINED_HOME, False, NOW + dt.timedelta(minutes=1))
        assert not care.household_quarantined(session, QUARANTINED_HOME)


def test_a_household_stays_quarantined_while_any_member_is(db):
    with unit_of_work(db) as uow:
        session = uow.session
        care.record_tag(session, 1000, 100, True, NOW)
        care.record_tag(session, 1001, 100, True, NOW)
        care.record_tag(session, 1000, 100, False, NOW + dt.timedelta(hours=1))
        assert care.household_quarantined(session, 100)
        care.record_tag(session, 1001, 100, False, NOW + dt.timedelta(hours=1))
        assert not care.household_quarantined(session, 100)


# ---- daily care -----------------------------------------------------------------------


def test_starting_care_opens_the_days_groceries_and_check_in_once(db, grid, notices, policy):
    opened = start(db, grid, notices, policy)
    assert len(opened) == 2
    assert care_requests(db) == {
        # groceries by 17:00 local; the check-in is due at 10:00, which is now: two hours' lead instead
        "care:104:groceries:2030-01-07": ("groceries", "unmatched", dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)),
        "care:104:check_in:2030-01-07": ("check_in", "unmatched", NOW + care.MIN_LEAD),
    }
    assert start(db, grid, notices, policy) == []  # a second member tagged, or the event again
    with unit_of_work(db) as uow:
        plan = uow.session.get(CarePlan, QUARANTINED_HOME)
        assert (plan.unit_id, plan.unit_path, plan.active, plan.address["room"]) == (SMALL_A, PATH_A, True, "104")
        request = uow.session.get(HelpRequest, opened[0])
        assert (request.search_floor, request.resident_id, request.created_by) == (4, None, care.SYSTEM)


def test_care_requests_never_tell_the_household_is_under_quarantine(db, grid, notices, policy):
    start(db, grid, notices, policy)
    stop(db)
    with unit_of_work(db) as uow:
        said = [(r.details, r.note) for r in uow.session.scalars(select(HelpRequest))]
    published = [str(data) for _, _, data in events(db)]
    assert said and published
    assert not any("quarantin" in str(text).lower() for text in said + published)


def test_stopping_care_cancels_its_open_requests_and_nothing_else(db, grid, notices, policy, ask):
    start(db, grid, notices, policy)
    other = ask(resident_id=None, household_id=QUARANTINED_HOME)  # asked for by staff, not by the plan
    assert len(stop(db)) == 2
    assert {status for _, status, _ in care_requests(db).values()} == {"cancelled"}
    with unit_of_work(db) as uow:
        assert uow.session.get(HelpRequest, other.id).status == "unmatched"
        assert uow.session.get(CarePlan, QUARANTINED_HOME).active is False
    assert {data["reason"] for _, _, data in events(db, "request_cancelled")} == {care.STOP_REASON}
    assert stop(db) == []  # stopped already


def test_each_day_the_households_still_under_care_get_that_days_requests(db, grid, notices, policy):
    start(db, grid, notices, policy)
    start(db, grid, notices, policy, household=100)
    stop(db, household=100)
    tomorrow = NOW + dt.timedelta(days=1)
    with unit_of_work(db) as uow:
        assert care.due_households(uow.session, policy, NOW) == []  # today's are open
        assert care.due_households(uow.session, policy, tomorrow) == [QUARANTINED_HOME]
        assert len(care.open_due(uow, grid, notices, policy, QUARANTINED_HOME, tomorrow)) == 2
        assert care.open_due(uow, grid, notices, policy, 100, tomorrow) == []  # its plan stopped
        uow.commit()
    with unit_of_work(db) as uow:
        assert care.due_households(uow.session, policy, tomorrow) == []
    assert "care:104:groceries:2030-01-08" in care_requests(db)


def test_the_daily_step_takes_at_most_its_limit_of_households(db, grid, notices, policy):
    for household in (100, 101, QUARANTINED_HOME):
        start(db, grid, notices, policy, household=household)
    with unit_of_work(db) as uow:
        assert care.due_households(uow.session, policy, NOW + dt.timedelta(days=1), limit=2) == [100, 101]


# ---- door-knocks ------------------------------------------------------------------


def unacknowledged(*members):
    return [{"resident_id": r, "household_id": h, "unit_id": SMALL_A} for r, h in members]


def test_one_door_knock_per_household_that_missed_a_notice_once(db, grid, notices, policy, caplog):
    residents = unacknowledged((1000, 100), (1001, 100), (1010, 101), (9999, 999))
    for expected in (2, 0):  # the event again opens nothing
        with unit_of_work(db) as uow, caplog.at_level(logging.WARNING, logger=care.log.name):
            opened = care.door_knocks(uow, grid, notices, policy, 7, residents, NOW)
            assert len(opened) == expected
            assert {(r.kind, r.resident_id, r.details) for r in opened} <= {("check_in", None, care.DOOR_KNOCK_DETAILS)}
            uow.commit()
    assert sorted(care_requests(db)) == ["unack:notice/7:household/100", "unack:notice/7:household/101"]
    assert "household 999 from notice 7 is gone" in caplog.text


@given(
    st.sampled_from(care.CARE_KINDS),
    st.datetimes(min_value=dt.datetime(2030, 1, 1), max_value=dt.datetime(2031, 1, 1), timezones=st.just(dt.UTC)),
)
def test_care_is_wanted_by_its_local_hour_or_never_sooner_than_the_minimum_lead(kind, now):
    policy = requests.Policy({})
    day = now.astimezone(policy.zone).date()
    needed_by = care._needed_by(kind, day, policy, now)
    local = needed_by.astimezone(policy.zone)
    assert needed_by >= now + care.MIN_LEAD
    assert needed_by == now + care.MIN_LEAD or (local.date(), local.hour, local.minute) == (
        day,
        care.CARE_DUE_HOUR[kind],
        0,
    )
