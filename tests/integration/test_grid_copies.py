"""Copies of grid facts stay in step: a community and a household moved, and small grids closed, in the
middle of a running home-quarantine flow, with all four services on a real broker and PostgreSQL.
Notices, volunteer and legal follow the grid's ``unit_moved``, ``household_moved`` and ``unit_closed``
(services/<name>/grid_changes.py); a redelivery, a replay under a new id and a late replay of an older
move change nothing."""

import datetime as dt
import uuid
from contextlib import ExitStack
from typing import Any

import pytest
from nameko.testing.services import entrypoint_hook, entrypoint_waiter
from sqlalchemy import create_engine, text

from services.legal import grid_changes as legal_changes
from services.notices import grid_changes as notices_changes
from services.volunteer import grid_changes as volunteer_changes, service as volunteer_service
from shared.errors import Forbidden
from tests.support import add_household, add_resident, token, wait_until

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
COPIES = {
    "volunteer": volunteer_changes.UNIT_PATHS,
    "notices": notices_changes.UNIT_PATHS,
    "legal": legal_changes.UNIT_PATHS,
}


def later(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def query(url, sql, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.fixture
def suite(grid, notices, legal, volunteer, volunteer_db, notices_db, legal_db):
    """All four services running on this test's vhost and databases (and the databases' URLs)."""
    return {
        "grid": grid,
        "notices": notices,
        "legal": legal,
        "volunteer": volunteer,
        "db": {"volunteer": volunteer_db, "notices": notices_db, "legal": legal_db},
    }


def copies(suite):
    """Every path copy in the three services' databases: {"service table.column": sorted paths}."""
    found = {}
    for service, columns in COPIES.items():
        for column in columns:
            table = column.class_.__tablename__
            rows = query(suite["db"][service], f"SELECT {column.key} FROM {table} ORDER BY 1")
            found[f"{service} {table}.{column.key}"] = [path for (path,) in rows]
    return found


@pytest.fixture
def town(suite, admin, district, call_as):
    """A second street to move community a to; a household of two in small grid a to be quarantined,
    a neighbour volunteer there, and a volunteer in small grid b."""
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    ids = {"officer": officer}
    ids["street2"] = admin.create_unit(parent_id=district["district"], level="street", name="West Street")["id"]
    ids["home"] = add_household(admin, district["small_a"], room="101")
    ids["r1"] = add_resident(admin, ids["home"], 1)["id"]
    ids["r2"] = add_resident(admin, ids["home"], 2)["id"]
    ids["home_n"] = add_household(admin, district["small_a"], room="102")
    ids["neighbour"] = add_resident(admin, ids["home_n"], 3)["id"]
    ids["home_b"] = add_household(admin, district["small_b"], room="201")
    ids["far"] = add_resident(admin, ids["home_b"], 4)["id"]

    def register(resident, unit, name):
        return officer.volunteer.register_volunteer(
            name=name,
            phone="13912345678",
            home_unit_id=unit,
            skills=["delivery", "elderly_care"],
            availability=ALWAYS,
            max_active_tasks=5,
            resident_id=resident,
        )["id"]

    ids["v_neighbour"] = register(ids["neighbour"], district["small_a"], "neighbour")
    ids["v_far"] = register(ids["far"], district["small_b"], "community b")
    return {**district, **ids}


def household_requests(staff, unit, household):
    return [
        r for r in staff.volunteer.list_requests(under=unit, page_size=100)["items"] if r["household_id"] == household
    ]


def offered_to(call_as, volunteer_id):
    me = call_as(token("volunteer", sub=volunteer_id)).volunteer
    return {o["request_id"] for o in me.my_tasks(volunteer_id=volunteer_id)["offers"]}


def instructions(staff, unit, household):
    return [
        m
        for m in staff.notices.list_notices(under=unit, kind="direct", page_size=100)["items"]
        if m["audience"].get("household_id") == household
    ]


def quarantine(admin, suite, town, resident):
    """Tag ``resident`` quarantined; returns the household's two care requests once offered."""
    with (
        entrypoint_waiter(suite["volunteer"], "on_resident_tagged"),
        entrypoint_waiter(suite["notices"], "on_resident_tagged"),
    ):
        admin.tag_resident(resident_id=resident, tag="quarantined", until=later(days=14))
    care = household_requests(town["officer"], town["small_a"], town["home"])
    assert {r["kind"] for r in care} == {"groceries", "check_in"} and {r["status"] for r in care} == {"offered"}
    return {r["id"] for r in care}


class Handled:
    """Wait for one run of a handler in several services at once: ``with Handled(...) as runs``, then
    ``runs["volunteer"]`` is what that service's handler returned."""

    def __init__(self, suite, method, services):
        self.suite, self.method, self.services = suite, method, services

    def __enter__(self):
        self.stack = ExitStack()
        self.waiters = {
            s: self.stack.enter_context(entrypoint_waiter(self.suite[s], self.method, timeout=30))
            for s in self.services
        }
        self.results: dict[str, Any] = {}
        return self.results

    def __exit__(self, *exc):
        self.stack.__exit__(*exc)
        if exc[0] is None:
            self.results.update({s: waiter.get() for s, waiter in self.waiters.items()})


def unchanged(runs):
    return all(value == 0 for result in runs.values() for value in result.values())


# ---- a unit moved -------------------------------------------------------------


def test_a_community_moved_during_a_quarantine_takes_every_copy_along(
    town, admin, call_as, grid_events, suite, receiver, monkeypatch
):
    east, street, street2, community = town["officer"], town["street"], town["street2"], town["community_a"]
    # The flow under way: instructions sent, daily care offered to the neighbour.
    care = quarantine(admin, suite, town, town["r1"])
    assert care <= offered_to(call_as, town["v_neighbour"])
    # More copies of community a's place: a notice still to be published, small grid a's chat group, a
    # duty post with tomorrow's shift, a legal station and a mediation case.
    notice = east.notices.create_notice(
        title="Water cut",
        body="No water on Friday 9-12.",
        category="community_activity",
        severity="moderate",
        urgency="expected",
        audience={"under": [community]},
        channels=["sms"],
        publish_at=later(seconds=3),
    )
    east.notices.approve_notice(notice_id=notice["id"])
    east.notices.register_chat_group(unit_id=town["small_a"], name="Grid A", webhook_url=receiver.url("/robot/a"))
    post = east.volunteer.create_post(unit_id=community, name="Vanguard post", location="Gate 1")
    east.volunteer.add_shift(post_id=post["id"], starts_at=later(days=1), ends_at=later(days=1, hours=2), needed=1)
    station = east.legal.create_station(unit_id=community, name="Sunny Legal Station", address="1 Sunny Road")["id"]
    case = east.legal.open_mediation(
        unit_id=town["small_a"],
        category="neighbour",
        party_resident_ids=[town["r2"], town["neighbour"]],
        description="Noise at night.",
    )["id"]
    old_place = f"/{town['district']}/{street}/{community}/"
    assert all(any(p.startswith(old_place) for p in paths) for paths in copies(suite).values() if paths)

    with Handled(suite, "on_unit_moved", ("volunteer", "notices", "legal")) as runs:
        admin.move_unit(unit_id=community, new_parent_id=street2)
    moved = grid_events.next("unit_moved", where=lambda e: e["data"]["unit_id"] == community)
    assert runs["volunteer"]["help_requests.unit_path"] == 2 and runs["volunteer"]["care_plans.unit_path"] == 1
    records = {column: count for column, count in runs["legal"].items() if not column.startswith("grid_")}
    assert records == {"stations.unit_path": 1, "consultations.station_path": 0, "mediation_cases.unit_path": 1}
    assert runs["legal"]["grid_units.path"] >= 2  # its read model (shared.grid_facts): community a, small grid a
    assert runs["notices"]["notice_targets.unit_path"] == 2 and runs["notices"]["chat_groups.unit_path"] == 1

    new_place = f"/{town['district']}/{street2}/{community}/"
    after = copies(suite)
    assert not any(p.startswith(old_place) for paths in after.values() for p in paths)
    # Staff of the new street see (and act on) it all; those of the old one no longer do.
    west = call_as(token("officer", sub="west", unit=street2))
    assert {r["id"] for r in household_requests(west, street2, town["home"])} == care
    assert household_requests(east, street, town["home"]) == []
    for request_id in care:
        assert west.volunteer.get_request(request_id=request_id)["household_id"] == town["home"]
        with pytest.raises(Forbidden):
            east.volunteer.get_request(request_id=request_id)
    assert town["v_neighbour"] in {v["id"] for v in west.volunteer.list_volunteers(under=street2)["items"]}
    assert [m["id"] for m in instructions(west, street2, town["home"])]
    assert not instructions(east, street, town["home"])
    assert notice["id"] in {n["id"] for n in west.notices.list_notices(under=street2)["items"]}
    assert notice["id"] not in {n["id"] for n in east.notices.list_notices(under=street)["items"]}
    assert station in {s["id"] for s in west.legal.list_stations(under=street2)}
    assert station not in {s["id"] for s in west.legal.list_stations(under=street)}
    assert case in {c["id"] for c in west.legal.list_cases(under=street2)["items"]}
    with pytest.raises(Forbidden):
        east.legal.get_case(case_id=case)

    # The flow goes on from the new place: the notice reaches community a's three residents, reported
    # to the new street's officer; tomorrow's care opens there too.
    report = wait_until(
        lambda: (lambda r: r if r["targeted"] == 3 else None)(west.notices.delivery_report(notice_id=notice["id"])),
        message="the notice was not published to community a",
    )
    assert [(u["unit_id"], u["targeted"]) for u in report["units"]] == [(community, 3)]
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    monkeypatch.setattr(volunteer_service, "utcnow", lambda: tomorrow)
    with entrypoint_hook(suite["volunteer"], "open_daily_care") as open_daily_care:
        open_daily_care()
    monkeypatch.undo()
    assert len(household_requests(west, street2, town["home"])) == 4

    # The same event again (a redelivery), and a copy under a new id (a producer retry): nothing changes.
    settled = copies(suite)
    with Handled(suite, "on_unit_moved", ("volunteer", "notices", "legal")) as runs:
        grid_events.republish(moved)
    assert set(runs.values()) == {"duplicate"}
    with Handled(suite, "on_unit_moved", ("volunteer", "notices", "legal")) as runs:
        grid_events.republish(moved, id=str(uuid.uuid4()))
    assert unchanged(runs) and copies(suite) == settled

    # Moved back; then the first move arrives once more, late (a retried or replayed event): the
    # copies stay where the grid says the community is.
    with Handled(suite, "on_unit_moved", ("volunteer", "notices", "legal")):
        admin.move_unit(unit_id=community, new_parent_id=street)
    back = copies(suite)
    assert not any(p.startswith(new_place) for paths in back.values() for p in paths)
    with Handled(suite, "on_unit_moved", ("volunteer", "notices", "legal")) as runs:
        grid_events.republish(moved, id=str(uuid.uuid4()))
    assert unchanged(runs) and copies(suite) == back
    assert {r["id"] for r in household_requests(east, street, town["home"])} >= care


# ---- a household moved ----------------------------------------------------------


def quiet_all_morning(officer, residents):
    """Quiet hours around now: a moderate message to these residents waits (stays queued)."""
    now_local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    start = (now_local - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now_local + dt.timedelta(hours=2)).strftime("%H:%M")
    for resident in residents:
        officer.notices.set_preferences(
            resident_id=resident, channels=["sms"], quiet_hours={"start": start, "end": end}
        )


def test_a_household_moved_during_its_quarantine_takes_its_pending_help_along(
    town, admin, call_as, grid_events, suite, monkeypatch
):
    small_a, small_b, home = town["small_a"], town["small_b"], town["home"]
    worker_a = call_as(token("grid_worker", sub="worker-a", unit=small_a))
    worker_b = call_as(token("grid_worker", sub="worker-b", unit=small_b))
    # r2 volunteers too: a volunteer's home follows their household.
    v_home = town["officer"].volunteer.register_volunteer(
        name="lives here",
        phone="13912345679",
        home_unit_id=small_a,
        skills=["delivery"],
        availability=ALWAYS,
        max_active_tasks=2,
        resident_id=town["r2"],
    )["id"]
    quiet_all_morning(town["officer"], (town["r1"], town["r2"]))
    care = quarantine(admin, suite, town, town["r1"])
    message = instructions(worker_a, small_a, home)[0]["id"]
    assert query(
        suite["db"]["notices"], "SELECT DISTINCT status FROM deliveries WHERE notice_id = :n", n=int(message)
    ) == [("queued",)]

    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        admin.move_household(household_id=home, unit_id=small_b)
    moved = grid_events.next("household_moved", where=lambda e: e["data"]["household_id"] == home)
    assert runs["volunteer"] == {"care_plans": 1, "help_requests": 2, "volunteers": 1}
    assert runs["notices"] == {"deliveries": 2, "recipients": 2, "notice_targets": 1, "chat_groups_retired": 0}

    # The household's care and its instructions are now small grid b's, not a's.
    assert {r["id"] for r in household_requests(worker_b, small_b, home)} == care
    assert household_requests(worker_a, small_a, home) == []
    for request_id in care:
        assert worker_b.volunteer.get_request(request_id=request_id)["unit_id"] == small_b
        with pytest.raises(Forbidden):
            worker_a.volunteer.get_request(request_id=request_id)
    assert [m["id"] for m in instructions(worker_b, small_b, home)] == [message]
    assert instructions(worker_a, small_a, home) == []
    b_path = query(suite["db"]["volunteer"], "SELECT unit_path FROM care_plans WHERE household_id = :h", h=int(home))
    assert query(
        suite["db"]["notices"],
        "SELECT DISTINCT r.unit_path, d.unit_path FROM recipients r JOIN deliveries d ON d.recipient_id = r.id"
        " WHERE r.notice_id = :n",
        n=int(message),
    ) == [(b_path[0][0], b_path[0][0])]
    assert worker_b.volunteer.get_volunteer(volunteer_id=v_home)["home_unit_id"] == small_b
    # Nothing is lost on the way: the offers made in grid a stand ...
    assert care <= offered_to(call_as, town["v_neighbour"])
    # ... and tomorrow's care is matched from the new home: the volunteer of grid b is nearest now.
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    monkeypatch.setattr(volunteer_service, "utcnow", lambda: tomorrow)
    with entrypoint_hook(suite["volunteer"], "open_daily_care") as open_daily_care:
        open_daily_care()
    monkeypatch.undo()
    next_day = {r["id"] for r in household_requests(worker_b, small_b, home)} - care
    assert len(next_day) == 2 and next_day <= offered_to(call_as, town["v_far"])

    # A redelivery and a replay under a new id change nothing.
    settled = copies(suite)
    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        grid_events.republish(moved)
    assert set(runs.values()) == {"duplicate"}
    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        grid_events.republish(moved, id=str(uuid.uuid4()))
    assert unchanged(runs) and copies(suite) == settled

    # Moved back to a; the move to b arrives once more, late: everything stays in a, where it lives.
    with Handled(suite, "on_household_moved", ("volunteer", "notices")):
        admin.move_household(household_id=home, unit_id=small_a)
    assert {r["id"] for r in household_requests(worker_a, small_a, home)} == care | next_day
    back = copies(suite)
    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        grid_events.republish(moved, id=str(uuid.uuid4()))
    assert unchanged(runs) and copies(suite) == back
    assert [m["id"] for m in instructions(worker_a, small_a, home)] == [message]


# ---- a unit closed --------------------------------------------------------------


def chat_groups(suite):
    return {str(unit) for (unit,) in query(suite["db"]["notices"], "SELECT unit_id FROM chat_groups")}


def test_a_closed_small_grid_keeps_its_pending_help_and_its_chat_group_until_nobody_lives_there(
    town, admin, suite, receiver
):
    small_a, small_b = town["small_a"], town["small_b"]
    officer = town["officer"]
    small_c = admin.create_unit(parent_id=town["medium_a"], level="grid_small", name="Small c")["id"]
    for unit in (small_a, small_c):
        officer.notices.register_chat_group(
            unit_id=unit, name=f"Grid {unit}", webhook_url=receiver.url(f"/robot/{unit}")
        )
    care = quarantine(admin, suite, town, town["r1"])
    officer.legal.open_mediation(
        unit_id=small_a, category="neighbour", party_resident_ids=[town["r2"], town["neighbour"]], description="Noise."
    )

    # Nobody lives in c: its chat group is retired at once.
    with Handled(suite, "on_unit_closed", ("volunteer", "notices", "legal")) as runs:
        admin.close_unit(unit_id=small_c)
    assert runs["notices"] == {"chat_groups_retired": 1}
    assert chat_groups(suite) == {small_a}

    # Grid a still has its households: their help goes on, its chat group stays.
    with Handled(suite, "on_unit_closed", ("volunteer", "notices", "legal")) as runs:
        admin.close_unit(unit_id=small_a)
    assert runs["volunteer"]["open_requests"] == 2 and runs["volunteer"]["active_care_plans"] == 1
    assert runs["legal"]["open_cases"] == 1
    assert runs["notices"] == {"chat_groups_retired": 0}
    assert {r["status"] for r in household_requests(officer, small_a, town["home"])} == {"offered"}
    assert chat_groups(suite) == {small_a}

    # The grid moves its households out; when the last has left, its chat group goes.
    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        admin.move_household(household_id=town["home"], unit_id=small_b)
    assert runs["notices"]["chat_groups_retired"] == 0
    with Handled(suite, "on_household_moved", ("volunteer", "notices")) as runs:
        admin.move_household(household_id=town["home_n"], unit_id=small_b)
    assert runs["notices"]["chat_groups_retired"] == 1 and runs["volunteer"]["volunteers"] == 1
    assert chat_groups(suite) == set()
    assert {r["id"] for r in household_requests(officer, small_b, town["home"])} == care
