"""Volunteer, legal and notices acting on the grid's ``resident_erased`` and ``tag_purged`` on a real broker
and PostgreSQL with all four services running. The events are published on the grid's exchange as the
grid publishes them (the grid's own erase flow is tests/integration/test_flow_erasure*.py); each service's
handler is awaited, then its database is read: no name, phone or address of the erased resident is left
outside records under a legal hold, held records are flagged, and a replay changes nothing more."""

import datetime as dt
import json
import urllib.request
import uuid
from zoneinfo import ZoneInfo

import pytest
from nameko.testing.services import entrypoint_waiter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from shared.outbox import envelope
from tests.support import add_household, add_resident, token, wait_until

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
EVERY_DAY = [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(7)]
ZONE = ZoneInfo("Asia/Shanghai")
NAME, PHONE, ROOM = "Wang Erasable", "13800000071", "7101"


def query(url, sql, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def tables(url):
    return [
        name
        for (name,) in query(
            url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
    ]


def leaks(url, skip=lambda table, row: False):
    """Every row of every table whose JSON text holds the resident's name, phone or room: [(table, row)]."""
    found = []
    for table in tables(url):
        for (row,) in query(url, f'SELECT row_to_json(t)::text FROM "{table}" t'):
            if any(needle in row for needle in (NAME, PHONE, f'"{ROOM}"')) and not skip(table, json.loads(row)):
                found.append((table, row))
    return found


def later(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def grid_event(event_type, data):
    """An envelope as the grid's outbox publishes it."""
    return envelope("grid", event_type, f"resident/{data['resident_id']}", data)


@pytest.fixture
def suite(grid, notices, legal, volunteer):
    return {"grid": grid, "notices": notices, "legal": legal, "volunteer": volunteer}


@pytest.fixture
def world(suite, admin, district, call_as, volunteer_db, notices_db):
    """Resident r1 (alone in household ``home``, room 7101): a volunteer, asking for help, quarantined
    (daily care, quarantine instructions by SMS), with notice preferences, a booked and a completed
    consultation, and two mediation cases with r2 (one to be held). r2 lives next door."""
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    small = district["small_a"]
    home = add_household(admin, small, room=ROOM)
    r1 = add_resident(admin, home, 71, name=NAME)["id"]
    home2 = add_household(admin, small, room="7102")
    r2 = add_resident(admin, home2, 72, name="Li Kept")["id"]
    volunteer_id = officer.volunteer.register_volunteer(
        name=NAME,
        phone=PHONE,
        home_unit_id=small,
        skills=["delivery"],
        availability=ALWAYS,
        max_active_tasks=3,
        resident_id=r1,
    )["id"]
    request = officer.volunteer.create_request(
        unit_id=small,
        kind="groceries",
        details=f"{NAME} in room {ROOM} needs rice",
        urgency="high",
        needed_by=later(hours=3),
        resident_id=r1,
    )
    officer.notices.set_preferences(resident_id=r1, channels=["sms"])
    with entrypoint_waiter(suite["volunteer"], "on_resident_tagged"):
        admin.tag_resident(resident_id=r1, tag="quarantined", until=later(days=14))
    wait_until(
        lambda: query(notices_db, "SELECT 1 FROM recipients WHERE resident_id = :r", r=int(r1)) or None,
        message="no quarantine instructions for r1",
    )
    wait_until(
        lambda: query(volunteer_db, "SELECT 1 FROM care_plans WHERE household_id = :h", h=int(home)) or None,
        message="no care plan",
    )

    legal = call_as(token("officer", sub="officer-a", unit=district["community_a"])).legal
    station = legal.create_station(unit_id=district["community_a"], name="Station", address="1 Road")["id"]
    lawyer = legal.register_lawyer(
        name="Lawyer One", firm="Firm", license_no="LIC-E-1", specialties=["family"], station_ids=[station]
    )["id"]
    legal.set_schedule(lawyer_id=lawyer, station_id=station, weekly=EVERY_DAY)
    tomorrow = dt.datetime.now(ZONE).date() + dt.timedelta(days=1)

    def slot(clock):
        hours, minutes = (int(part) for part in clock.split(":"))
        start = dt.datetime.combine(tomorrow, dt.time(hours, minutes), tzinfo=ZONE)
        return start.astimezone(dt.UTC).isoformat()

    desk = call_as(token("service", sub="service:desk")).legal
    args = {"lawyer_id": lawyer, "station_id": station, "resident_id": r1}
    booked = desk.book(starts_at=slot("09:00"), topic=f"{NAME}'s lease", **args)["id"]
    done = desk.book(starts_at=slot("10:00"), topic=f"{NAME}'s loan", **args)["id"]
    call_as(token("lawyer", sub=lawyer)).legal.complete(
        consultation_id=done, summary=f"{NAME}, phone {PHONE}", outcome="advice_given"
    )
    cases = []
    for what in ("noise", "held"):
        case = legal.open_mediation(
            unit_id=small,
            category="neighbour",
            party_resident_ids=[r1, r2],
            description=f"{NAME} and Li Kept: {what}",
            source_incident_id=None,
        )["id"]
        legal.record_session(case_id=case, held_at=later(hours=-1), attendees=[NAME, "Li Kept"], notes=f"{NAME} said")
        cases.append(case)
    legal.set_legal_hold(record="case", record_id=cases[1], reason="Appeal pending at the court")
    return {
        **district,
        "r1": r1,
        "r2": r2,
        "home": home,
        "home2": home2,
        "volunteer_id": volunteer_id,
        "request": request["id"],
        "booked": booked,
        "done": done,
        "case": cases[0],
        "held": cases[1],
        "legal": legal,
    }


def erased_data(world, erasure_id="9"):
    return {
        "resident_id": world["r1"],
        "household_id": world["home"],
        "unit_id": world["small_a"],
        "unit_path": [world["district"], world["street"], world["community_a"], world["large_a"]]
        + [world["medium_a"], world["small_a"]],
        "household_emptied": True,
        "erasure_id": erasure_id,
        "erased_at": later(),
    }


def publish_and_wait(suite, grid_events, body, services=("volunteer", "legal", "notices"), method="on_resident_erased"):
    """Publish ``body`` on the grid's exchange and wait until each service's handler returned; their results."""
    waiters = {name: entrypoint_waiter(suite[name], method, timeout=30) for name in services}
    results = {name: waiter.__enter__() for name, waiter in waiters.items()}
    grid_events.republish(body)
    for waiter in waiters.values():
        waiter.__exit__(None, None, None)
    return {name: result.get() for name, result in results.items()}


def erased_columns(world, volunteer_db, legal_db, notices_db):
    """What the erasure wrote, as text: a replay must leave it exactly so."""
    r1, home = int(world["r1"]), int(world["home"])
    reads = (
        (
            volunteer_db,
            "SELECT id, details, address::text, note, status FROM help_requests WHERE household_id = :h "
            "OR resident_id = :r ORDER BY id",
        ),
        (volunteer_db, "SELECT id, name, active FROM volunteers WHERE resident_id = :r"),
        (volunteer_db, "SELECT household_id, address::text, active FROM care_plans WHERE household_id = :h"),
        (legal_db, "SELECT id, topic, summary_enc IS NULL, status, erasure_deferred FROM consultations ORDER BY id"),
        (legal_db, "SELECT id, description, agreement, erasure_deferred FROM mediation_cases ORDER BY id"),
        (legal_db, "SELECT id, notes, attendees::text FROM mediation_sessions ORDER BY id"),
        (
            notices_db,
            "SELECT id, address_enc IS NULL, vulnerable_tags::text FROM recipients WHERE resident_id = :r ORDER BY id",
        ),
        (
            notices_db,
            "SELECT d.id, d.status, d.detail FROM deliveries d JOIN recipients r ON r.id = d.recipient_id "
            "WHERE r.resident_id = :r AND d.detail = 'recipient erased' ORDER BY d.id",
        ),
    )
    return [query(url, sql, r=r1, h=home) for url, sql in reads]


def held_case_row(world):
    def skip(table, row):
        if table == "mediation_cases":
            return row["id"] == int(world["held"])
        return table == "mediation_sessions" and row["case_id"] == int(world["held"])

    return skip


def metric(config, name, **labels):
    """A sample of the service's /metrics (0 when absent)."""
    url = f"http://{config['WEB_SERVER_ADDRESS']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0


def test_every_service_erases_the_resident_and_a_held_case_waits_for_its_release(
    world, suite, grid_events, volunteer_db, legal_db, notices_db, volunteer_config, legal_config, notices_config
):
    r1 = int(world["r1"])
    assert leaks(volunteer_db) and leaks(legal_db)  # what there is to erase
    body = grid_event("resident_erased", erased_data(world))
    results = publish_and_wait(suite, grid_events, body)
    assert results["volunteer"]["help_requests"] >= 1 and results["volunteer"]["volunteers"] == 1
    assert results["legal"]["deferred"] == 1 and results["legal"]["cancelled"] == 1
    assert results["notices"]["recipients"] >= 1 and results["notices"]["preferences"] == 1
    for service, config in (("volunteer", volunteer_config), ("legal", legal_config), ("notices", notices_config)):
        assert metric(config, f"grassroots_{service}_erasures_total") == 1
    assert metric(volunteer_config, "grassroots_volunteer_derived_data_purged_total", kind="volunteers") == 1
    assert metric(legal_config, "grassroots_legal_erased_rows_total", kind="deferred") == 1
    assert metric(legal_config, "grassroots_legal_erasure_deferred_records", record="case") == 1
    assert metric(notices_config, "grassroots_notices_derived_data_purged_total", kind="preferences") == 1

    # volunteer: nothing of theirs but ids and statuses
    assert leaks(volunteer_db) == []
    assert query(volunteer_db, "SELECT name, phone_enc, active FROM volunteers WHERE resident_id = :r", r=r1) == [
        ("[erased]", b"", False)
    ]
    assert query(
        volunteer_db, "SELECT count(*) FROM help_requests WHERE resident_id = :r AND address IS NOT NULL", r=r1
    ) == [(0,)]
    assert query(
        volunteer_db,
        "SELECT count(*) FROM help_requests WHERE household_id = :h AND address IS NOT NULL",
        h=int(world["home"]),
    ) == [(0,)]
    assert query(volunteer_db, "SELECT count(*) FROM care_subjects WHERE resident_id = :r", r=r1) == [(0,)]
    assert query(volunteer_db, "SELECT address FROM care_plans WHERE household_id = :h", h=int(world["home"])) == [
        (None,)
    ]
    # notices: no phone, no blind index, no preferences, no post after the erasure
    assert query(
        notices_db,
        "SELECT count(*) FROM recipients WHERE resident_id = :r "
        "AND (address_enc IS NOT NULL OR address_hash IS NOT NULL)",
        r=r1,
    ) == [(0,)]
    assert query(notices_db, "SELECT count(*) FROM preferences WHERE resident_id = :r", r=r1) == [(0,)]
    assert query(
        notices_db,
        "SELECT count(*) FROM deliveries d JOIN recipients r ON r.id = d.recipient_id "
        "WHERE r.resident_id = :r AND d.status IN ('queued', 'sending')",
        r=r1,
    ) == [(0,)]
    # every service keeps the tombstone, and no read-model row
    for url in (volunteer_db, legal_db, notices_db):
        assert query(url, "SELECT id FROM erased_residents") == [(r1,)]
        assert query(url, "SELECT count(*) FROM grid_residents WHERE id = :r", r=r1) == [(0,)]
    # legal: everything but the held case, which is flagged
    assert leaks(legal_db, skip=held_case_row(world)) == []
    assert leaks(legal_db)  # the held case keeps its text
    assert query(
        legal_db,
        "SELECT erasure_deferred, legal_hold_reason IS NOT NULL FROM mediation_cases WHERE id = :c",
        c=int(world["held"]),
    ) == [(True, True)]
    assert query(legal_db, "SELECT record, resident_id, erasure_id FROM deferred_erasures") == [
        (f"case/{world['held']}", r1, 9)
    ]
    assert query(legal_db, "SELECT status FROM consultations WHERE id = :c", c=int(world["booked"])) == [("cancelled",)]

    # the same envelope again is a duplicate; the grid's event again under a new id changes nothing
    before = erased_columns(world, volunteer_db, legal_db, notices_db)
    assert set(publish_and_wait(suite, grid_events, body).values()) == {"duplicate"}
    again = publish_and_wait(suite, grid_events, {**body, "id": str(uuid.uuid4())})
    assert all(set(result.values()) == {0} for result in again.values()), again
    assert erased_columns(world, volunteer_db, legal_db, notices_db) == before

    # releasing the hold applies the deferred erasure
    released = world["legal"].release_legal_hold(record="case", record_id=world["held"], reason="Appeal decided")
    assert released["held"] is False and released["erasure_deferred"] is False
    assert leaks(legal_db) == []
    assert query(legal_db, "SELECT count(*) FROM deferred_erasures") == [(0,)]


def test_a_purged_quarantine_tag_goes_from_volunteer_care_and_notices_snapshots(
    suite, admin, district, call_as, grid_events, volunteer_db, notices_db
):
    home = add_household(admin, district["small_a"], room="7201")
    r3 = add_resident(admin, home, 73)["id"]
    with entrypoint_waiter(suite["volunteer"], "on_resident_untagged"):
        with entrypoint_waiter(suite["volunteer"], "on_resident_tagged"):
            admin.tag_resident(resident_id=r3, tag="quarantined", until=later(days=14))
        wait_until(
            lambda: query(notices_db, "SELECT 1 FROM recipients WHERE resident_id = :r", r=int(r3)) or None,
            message="no quarantine instructions",
        )
        admin.untag_resident(resident_id=r3, tag="quarantined")
    assert query(notices_db, "SELECT vulnerable_tags::text FROM recipients WHERE resident_id = :r", r=int(r3)) == [
        ('["quarantined"]',)
    ]
    assert query(
        volunteer_db, "SELECT active, address IS NOT NULL FROM care_plans WHERE household_id = :h", h=int(home)
    ) == [(False, True)]
    data = {
        "resident_id": r3,
        "household_id": home,
        "unit_id": district["small_a"],
        "unit_path": [district["district"], district["street"], district["community_a"], district["large_a"]]
        + [district["medium_a"], district["small_a"]],
        "tag": "quarantined",
        "released_at": later(),
        "reason": "retention",
    }
    body = grid_event("tag_purged", data)
    results = publish_and_wait(suite, grid_events, body, services=("volunteer", "notices"), method="on_tag_purged")
    assert results["volunteer"]["care_subjects"] == 1 and results["volunteer"]["care_plans"] == 1
    assert results["notices"] == {"recipients": 1}
    assert query(volunteer_db, "SELECT count(*) FROM care_subjects WHERE resident_id = :r", r=int(r3)) == [(0,)]
    assert query(volunteer_db, "SELECT address FROM care_plans WHERE household_id = :h", h=int(home)) == [(None,)]
    assert query(
        notices_db, "SELECT vulnerable_tags::text, vulnerable FROM recipients WHERE resident_id = :r", r=int(r3)
    ) == [("[]", False)]
    again = publish_and_wait(
        suite, grid_events, {**body, "id": str(uuid.uuid4())}, services=("volunteer", "notices"), method="on_tag_purged"
    )
    assert again["notices"] == {"recipients": 0} and set(again["volunteer"].values()) == {0}


def test_the_grids_own_erasure_reaches_every_handler(
    suite, admin, district, call_as, volunteer_db, legal_db, notices_db
):
    """The grid's real ``erase_resident`` (two managers) and its events as it emits them: each service
    applies it (the handler-level checks are above; the whole flow is test_flow_erasure.py)."""
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    home = add_household(admin, district["small_a"], room="7301")
    r4 = add_resident(admin, home, 74, name=NAME)["id"]
    request = officer.volunteer.create_request(
        unit_id=district["small_a"],
        kind="groceries",
        details=f"{NAME} needs rice",
        urgency="high",
        needed_by=later(hours=3),
        resident_id=r4,
    )["id"]
    officer.notices.set_preferences(resident_id=r4, channels=["sms"])
    first = call_as(token("officer", sub="manager-1", unit=district["community_a"])).grid
    second = call_as(token("officer", sub="manager-2", unit=district["community_a"])).grid
    assert first.erase_resident(resident_id=r4, reason="The resident asked")["status"] == "pending_approval"
    waiters = [
        entrypoint_waiter(suite[name], "on_resident_erased", timeout=30) for name in ("volunteer", "legal", "notices")
    ]
    results = [waiter.__enter__() for waiter in waiters]
    assert second.erase_resident(resident_id=r4, reason="Approved")["status"] == "erased"
    for waiter in waiters:
        waiter.__exit__(None, None, None)
    assert all(isinstance(result.get(), dict) for result in results)
    for url in (volunteer_db, legal_db, notices_db):
        assert (int(r4),) in query(url, "SELECT id FROM erased_residents")
    assert query(volunteer_db, "SELECT details, address FROM help_requests WHERE id = :i", i=int(request)) == [
        ("[erased]", None)
    ]
    assert query(notices_db, "SELECT count(*) FROM preferences WHERE resident_id = :r", r=int(r4)) == [(0,)]
    assert leaks(volunteer_db) == [] and leaks(notices_db) == []
