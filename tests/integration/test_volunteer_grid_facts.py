"""The volunteer service's read model of grid facts (shared.grid_facts) with the real grid over RabbitMQ and
PostgreSQL: a miss fills it, the grid's tag and move events update it, and the next create_request acts on
what it now says; an operator's resync re-reads it from the grid."""

import datetime as dt
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from services.grid.client import FakeGrid
from services.volunteer.models import FACTS
from shared import grid_copies, grid_facts
from shared.db import make_engine
from shared.errors import ServiceUnavailable, ValidationError
from tests.support import add_household, add_resident, token, wait_until

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]


def soon(minutes):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat()


def query(url, sql, **params):
    """Run ``sql`` in its own committed transaction; its rows."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.fixture
def volunteer_config(volunteer_config):
    """The resync timer ticking fast enough for a test to see it work."""
    return {**volunteer_config, "GRID_FACTS_SYNC_INTERVAL": 0.2}


@pytest.fixture
def place(volunteer, volunteer_db, admin, district, call_as):
    """A requester's household and a volunteer's (a resident) in small grid a."""
    officer = call_as(token("officer", sub="officer", unit=district["street"])).volunteer
    home = add_household(admin, district["small_a"], room="1")
    requester = add_resident(admin, home, 1)["id"]
    home_v = add_household(admin, district["small_a"], room="2")
    helper = add_resident(admin, home_v, 2)["id"]
    volunteer_id = officer.register_volunteer(
        name="V",
        phone="13912345678",
        home_unit_id=district["small_a"],
        skills=["delivery"],
        availability=ALWAYS,
        max_active_tasks=20,
        resident_id=helper,
    )["id"]
    return {
        **district,
        "db": volunteer_db,
        "officer": officer,
        "home": home,
        "requester": requester,
        "helper": helper,
        "volunteer_id": volunteer_id,
    }


def ask(place, **overrides):
    args = {
        "unit_id": place["small_a"],
        "kind": "groceries",
        "details": "Rice",
        "urgency": "high",
        "needed_by": soon(120),
        "resident_id": place["requester"],
        **overrides,
    }
    return place["officer"].create_request(**args)


def offered(call_as, place, request):
    me = call_as(token("volunteer", sub=place["volunteer_id"])).volunteer
    return request["id"] in {o["request_id"] for o in me.my_tasks(volunteer_id=place["volunteer_id"])["offers"]}


def resident_row(place, resident_id):
    rows = query(place["db"], "SELECT household_id, tags FROM grid_residents WHERE id = :id", id=int(resident_id))
    return rows[0] if rows else None


def household_path(place, household_id):
    rows = query(place["db"], "SELECT unit_path FROM grid_households WHERE id = :id", id=int(household_id))
    return rows[0][0] if rows else None


def test_a_miss_fills_the_model(place):
    assert resident_row(place, place["requester"]) is None  # registered in the grid: nobody was told
    request = ask(place)
    assert request["address"]["room"] == "1"
    assert resident_row(place, place["requester"]) == (int(place["home"]), [])
    expected = f"/{place['district']}/{place['street']}/{place['community_a']}/{place['large_a']}/"
    assert household_path(place, place["home"]) == expected + f"{place['medium_a']}/{place['small_a']}/"
    # The volunteer's own resident was kept when they registered.
    assert resident_row(place, place["helper"])[1] == []


def test_tag_events_update_the_model_and_the_next_request_follows_it(place, admin, call_as):
    assert offered(call_as, place, ask(place))
    admin.tag_resident(resident_id=place["helper"], tag="quarantined")
    wait_until(
        lambda: resident_row(place, place["helper"])[1] == ["quarantined"], message="the tag did not reach the model"
    )
    request = ask(place)
    assert request["status"] == "unmatched" and not offered(call_as, place, request)
    admin.untag_resident(resident_id=place["helper"], tag="quarantined")
    wait_until(lambda: resident_row(place, place["helper"])[1] == [], message="the untag did not reach the model")
    assert offered(call_as, place, ask(place))


def test_a_household_move_event_updates_the_model_and_the_next_request_follows_it(place, admin):
    ask(place)  # the requester's household is in the model, at small grid a
    admin.move_household(household_id=place["home"], unit_id=place["small_b"])
    wait_until(
        lambda: household_path(place, place["home"]).endswith(f"/{place['small_b']}/"),
        message="the move did not reach the model",
    )
    with pytest.raises(ValidationError) as refused:
        ask(place)
    assert "resident_id" in refused.value.fields
    assert ask(place, unit_id=place["small_b"])["unit_id"] == place["small_b"]


def test_an_operator_resync_rereads_the_model_from_the_grid(place, volunteer, call_as):
    ask(place)
    # A fact gone stale behind the service's back (as after a lost event).
    query(
        place["db"],
        "UPDATE grid_residents SET tags = CAST(:tags AS json) WHERE id = :id RETURNING id",
        tags='["quarantined"]',
        id=int(place["helper"]),
    )
    admin = call_as(token("admin", sub="root")).volunteer
    status = {row["kind"]: row for row in admin.resync_grid_facts()}
    assert set(status) == {"units", "households", "residents"} and all(row["running"] for row in status.values())
    wait_until(lambda: resident_row(place, place["helper"])[1] == [], message="the resync did not repair the row")


def test_a_read_through_and_a_tag_event_at_once_end_in_the_grids_present(volunteer_db):
    """The race a miss must not lose: the read-through asked the grid before a tag, the tag's handler runs
    before the read-through commits. On PostgreSQL the handler waits for the copies lock the read-through
    holds, then stores what the grid says now: the model ends tagged, not with the older answer."""
    grid = FakeGrid()
    grid.add_unit(1, "district")
    grid.add_unit(2, "grid_small", parent_id=1)
    grid.add_household(10, 2)
    grid.add_resident(100, 10)
    engine = make_engine(volunteer_db)
    handled = threading.Event()
    try:
        with Session(engine) as miss:
            assert grid_facts.LocalGrid(miss, grid, FACTS).resident(100)["tags"] == []  # read through, lock held
            grid.set_tag(100, "quarantined")  # the grid changes; its event is handled at once

            def handler():
                with Session(engine) as session:
                    grid_facts.resident_changed(session, grid, FACTS, 100)
                    session.commit()
                handled.set()

            worker = threading.Thread(target=handler)
            worker.start()
            # The handler waits on the lock: proof it got there is PostgreSQL's own view of the wait.
            wait_until(
                lambda: (
                    query(
                        volunteer_db,
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    )[0][0]
                    == 1
                ),
                message="the handler did not wait for the read-through's lock",
            )
            assert not handled.is_set()
            miss.commit()
        worker.join(timeout=30)
        assert handled.is_set()
        assert resident_row({"db": volunteer_db}, 100)[1] == ["quarantined"]
    finally:
        engine.dispose()


def test_a_miss_while_a_handler_holds_the_lock_uses_the_grids_answer_without_waiting(volunteer_db):
    """A hot path never waits behind a handler: with the copies lock held elsewhere, a miss answers from
    the grid at once and keeps nothing (the next miss, or the handler itself, fills the model)."""
    grid = FakeGrid()
    grid.add_unit(1, "district")
    grid.add_unit(2, "grid_small", parent_id=1)
    grid.add_household(10, 2)
    grid.add_resident(100, 10, tags=["quarantined"])
    engine = make_engine(volunteer_db)
    try:
        with Session(engine) as handler, Session(engine) as miss:
            grid_copies.hold(handler)  # a handler at work
            facts = grid_facts.LocalGrid(miss, grid, FACTS)
            assert facts.resident(100)["tags"] == ["quarantined"]
            assert facts.get_household(household_id=10)["address"]["room"] == "10"
            assert facts.unit_path(2, "unit_id") == "/1/2/"
            miss.commit()
            handler.rollback()
        assert resident_row({"db": volunteer_db}, 100) is None
        assert query(volunteer_db, "SELECT count(*) FROM grid_units")[0][0] == 0
    finally:
        engine.dispose()


def test_a_handler_gives_up_on_a_busy_copies_lock_after_its_bound_and_is_retried(volunteer_db):
    """With the grid away the lock's holder waits a whole call's timeout; a handler behind it gives up
    after ``HOLD_WAIT_SECONDS`` (ServiceUnavailable: retried, backing off) instead of holding a pooled
    connection meanwhile. Once it has the lock, the transaction's lock_timeout is as it was."""
    engine = make_engine(volunteer_db)
    try:
        with Session(engine) as holder, Session(engine) as waiter:
            grid_copies.hold(holder)
            with pytest.raises(ServiceUnavailable):
                grid_copies.hold(waiter, wait=0.2)
            waiter.rollback()
            holder.commit()
            grid_copies.hold(waiter, wait=0.2)
            assert waiter.scalar(text("SELECT current_setting('lock_timeout')")) == "0"
            waiter.rollback()
    finally:
        engine.dispose()
