"""A resident erased under PIPL art. 47, end to end on a real broker and PostgreSQL with all four services
running: two managers erase her at the grid, every service applies ``resident_erased``, and then
tools/pii_scan — the check the issue asks us to name — finds her name, phone, ID number and address
nowhere in any service's database, but in a mediation case kept under a legal hold, reported as held.

Before the erasure the same scan must find her in every service: the check can fail."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from shared.pii import PiiVault
from tests.support import PII_KEY, add_resident, id_number, token, wait_until
from tools import pii_scan

ZONE = ZoneInfo("Asia/Shanghai")
NAME = "欧阳翠花"
PHONE = "13912340077"
ID_NUMBER = id_number(777)
ADDRESS = {"compound": "Zephyrwood Court", "building": "9", "entrance": "1", "room": "1203"}
# her neighbour across the landing: same compound and building, another room — never a hit
NEIGHBOUR_ADDRESS = {**ADDRESS, "room": "1204"}
NEEDLES = pii_scan.needles(NAME, PHONE, ID_NUMBER, [ADDRESS["compound"], ADDRESS["building"], ADDRESS["room"]])
EVERY_DAY = [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(7)]
SERVICES = ("grid", "notices", "legal", "volunteer")


# Small pools: other test runs share PostgreSQL's 100 connections.
SMALL = {"DB_POOL_SIZE": 3, "max_workers": 6}


@pytest.fixture
def grid_config(grid_config):
    return {**grid_config, **SMALL}


@pytest.fixture
def legal_config(legal_config):
    return {**legal_config, **SMALL}


def later(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def engine_for(url):
    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def sql(url, query, **params):
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query), params).all()
    finally:
        engine.dispose()


@pytest.fixture
def suite(grid, notices, legal, volunteer):
    return {"grid": grid, "notices": notices, "legal": legal, "volunteer": volunteer}


@pytest.fixture
def databases(grid_db, notices_db, legal_db, volunteer_db):
    return {"grid": grid_db, "notices": notices_db, "legal": legal_db, "volunteer": volunteer_db}


def scan(databases, found=NEEDLES):
    return pii_scan.scan(databases, found, PiiVault(PII_KEY))


def her_birth():
    return dt.date(int(ID_NUMBER[6:10]), int(ID_NUMBER[10:12]), int(ID_NUMBER[12:14])).isoformat()


@pytest.fixture
def world(suite, admin, district, call_as, receiver):
    """She lives alone in small grid a and has data in every service: quarantine care (volunteer), a help
    request naming her, an SMS notice to her phone (notices), a consultation with a summary and a mediation
    case with a session she attended (legal), a report of her own and a read of her record (grid)."""
    small_a = district["small_a"]
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    home = admin.register_household(unit_id=small_a, address=ADDRESS)["id"]
    her = admin.register_resident(
        household_id=home, name=NAME, id_number=ID_NUMBER, phone=PHONE, birth_date=her_birth()
    )["id"]
    home_n = admin.register_household(unit_id=small_a, address=NEIGHBOUR_ADDRESS)["id"]
    neighbour = add_resident(admin, home_n, 3, name="李明")["id"]

    # volunteer: quarantine care for her household, and a help request a worker typed her details into
    admin.tag_resident(resident_id=her, tag="elderly_alone")
    admin.tag_resident(resident_id=her, tag="quarantined", until=later(days=14))
    wait_until(
        lambda: len(household_requests(officer, small_a, home)) >= 2, message="no quarantine care for her household"
    )
    officer.volunteer.create_request(
        unit_id=small_a,
        kind="medicine",
        details=f"Insulin for {NAME}, call {PHONE} first",
        urgency="high",
        needed_by=later(hours=3),
        household_id=home,
        resident_id=her,
    )

    # notices: an SMS to the grid's elderly, acknowledgement asked (recipients keep the phone and its hash)
    notice = officer.notices.create_notice(
        title="Water cut",
        body="No water on Friday 9-12.",
        category="community_activity",
        severity="moderate",
        urgency="expected",
        audience={"under": [small_a], "tags_any": ["elderly_alone"]},
        channels=["sms"],
        requires_ack=True,
        ack_deadline=later(hours=2),
    )
    officer.notices.approve_notice(notice_id=notice["id"])
    wait_until(lambda: receiver.accepted("/sms"), message="the SMS was not sent")

    # legal: a consultation with a summary naming her, read by its lawyer; a mediation case she is a party to
    legal_officer = call_as(token("officer", sub="legal-officer", unit=district["street"])).legal
    station = legal_officer.create_station(unit_id=district["community_a"], name="Legal station", address="1 Main Rd")
    lawyer = legal_officer.register_lawyer(
        name="Lawyer Zhang",
        firm="Binzhou Law Firm",
        license_no="LAW-000123",
        specialties=["neighbour_dispute", "family"],
        station_ids=[station["id"]],
    )["id"]
    legal_officer.set_schedule(lawyer_id=lawyer, station_id=station["id"], weekly=EVERY_DAY)
    tomorrow = dt.datetime.now(ZONE).date() + dt.timedelta(days=1)
    starts = dt.datetime.combine(tomorrow, dt.time(16, 0), tzinfo=ZONE).astimezone(dt.UTC).isoformat()
    booked = call_as(token("service", sub="service:frontdesk")).legal.book(
        lawyer_id=lawyer, station_id=station["id"], starts_at=starts, resident_id=her, topic="Inheritance"
    )
    as_lawyer = call_as(token("lawyer", sub=lawyer)).legal
    as_lawyer.complete(
        consultation_id=booked["id"], summary=f"{NAME} ({PHONE}) asks about her husband's will.", outcome="advice_given"
    )
    as_lawyer.get_consultation(consultation_id=booked["id"])  # a summary read: legal tells the grid's access log
    worker = call_as(token("grid_worker", sub="worker", unit=small_a))
    incident = worker.grid.report_incident(
        unit_id=small_a,
        category="dispute",
        description="Water leaking from the flat above",
        party_resident_ids=[her, neighbour],
    )
    case = wait_until(
        lambda: next(
            (c for c in officer.legal.list_cases(under=small_a)["items"] if c["source_incident_id"] == incident["id"]),
            None,
        ),
        message="no mediation case",
    )
    officer.legal.assign_mediator(case_id=case["id"], mediator_id=lawyer, kind="judicial")
    as_lawyer.record_session(
        case_id=case["id"],
        held_at=later(hours=-1),
        attendees=[NAME, "李明", "Lawyer Zhang"],
        notes=f"{NAME} agreed to have the pipe repaired.",
    )
    as_lawyer.get_case(case_id=case["id"])  # the assigned lawyer sees the parties' phones: logged too

    # grid: a report of her own, and a read of her record with personal data shown
    as_her = call_as(token("resident", sub=her)).grid
    as_her.report_problem(
        service_code="infrastructure",
        description=f"The lift at {ADDRESS['compound']} building 9 has been broken for a week ({NAME}, {PHONE})",
        location_note=f"{ADDRESS['compound']} 9-1-1203, by the lift",
        photo_ref="https://photos.example.com/lift-1203.jpg",
    )
    call_as(token("officer", sub="pii-officer", unit=district["street"], pii=True)).grid.get_resident(resident_id=her)
    return {
        **district,
        "officer": officer,
        "her": her,
        "home": home,
        "neighbour": neighbour,
        "consultation": booked["id"],
        "case": case["id"],
        "lawyer": lawyer,
    }


def household_requests(officer, unit, household):
    return [
        r for r in officer.volunteer.list_requests(under=unit, page_size=100)["items"] if r["household_id"] == household
    ]


def access_log(officer, resident_id):
    return officer.grid.access_log(resident_id=resident_id, page_size=100)["items"]


def erase(call_as, street, her):
    first = call_as(token("officer", sub="manager-a", unit=street)).grid
    second = call_as(token("officer", sub="manager-b", unit=street)).grid
    requested = first.erase_resident(resident_id=her, reason="Her request under PIPL art. 47")
    assert requested["status"] == "pending_approval"
    erased = second.erase_resident(resident_id=her, reason="Identity checked at the community office")
    assert (erased["status"], erased["household_emptied"]) == ("erased", True)
    assert (erased["requested_by"], erased["approved_by"]) == ("manager-a", "manager-b")
    return erased


def applied_everywhere(databases, her):
    """Each service has applied ``resident_erased``: the grid's row says erased, each other service holds
    the tombstone it writes in the same transaction as its anonymisation."""
    done = {
        "grid": bool(sql(databases["grid"], "SELECT 1 FROM residents WHERE id = :id AND erased_at IS NOT NULL", id=her))
    }
    for service in ("notices", "legal", "volunteer"):
        done[service] = bool(sql(databases[service], "SELECT 1 FROM erased_residents WHERE id = :id", id=her))
    return all(done.values())


def found_before_erasure(report):
    """The scan finds her in every service before the erasure, in each kind of column: the check can fail."""
    where = {
        (h.service, h.table, "address columns" if "+" in h.column else h.column)  # e.g. compound+building+room
        for h in report.hits + report.held  # held or not, it is there
    }
    assert {service for service, _, _ in where} == set(SERVICES), report.lines()
    expected = {
        ("grid", "residents", "name"),
        ("grid", "residents", "phone_enc"),  # encrypted
        ("grid", "residents", "id_number_enc"),
        ("grid", "residents", "id_number_hash"),  # a blind index
        ("grid", "households", "address columns"),  # an address in columns of its own
        ("notices", "recipients", "address_enc"),
        ("notices", "recipients", "address_hash"),
        ("legal", "consultations", "summary_enc"),
        ("legal", "mediation_sessions", "attendees"),
        ("volunteer", "help_requests", "details"),  # text
        ("volunteer", "help_requests", "address"),
    }
    assert expected <= where, sorted(expected - where)


def test_an_erased_resident_leaves_nothing_in_any_service(world, databases, call_as, grid_config, tmp_path):
    her, officer = world["her"], world["officer"]
    # the data-protection officer takes the needles from the grid before the erasure (the CLI's --capture)
    needles_file = tmp_path / "needles.json"
    captured, others = pii_scan.capture(her, str(needles_file), amqp_uri=grid_config["AMQP_URI"])
    assert others == 0  # she lives alone: her address is one of the needles
    assert [(n.kind, n.parts) for n in captured] == [
        ("name", (NAME,)),
        ("phone", (PHONE,)),
        ("id_number", (ID_NUMBER,)),
        ("address", tuple(ADDRESS.values())),
    ]
    assert needles_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    found = pii_scan.needles_from_file(str(needles_file))
    found_before_erasure(scan(databases, found))
    # the access log shows who read her data and why, across services (before and after the erasure)
    reads = wait_until(
        lambda: (lambda log: log if {"consultation_summary", "case_party_phone"} <= {e["what"] for e in log} else None)(
            access_log(officer, her)
        ),
        message="legal's reads did not reach the grid's access log",
    )
    by_what = {e["what"]: e for e in reads}
    assert by_what["consultation_summary"]["service"] == "legal"
    assert by_what["consultation_summary"]["record"] == f"consultation/{world['consultation']}"
    assert by_what["consultation_summary"]["reader"] == world["lawyer"]
    assert any(e["service"] == "grid" and e["reader"] == "pii-officer" for e in reads)

    erase(call_as, world["street"], her)
    wait_until(lambda: applied_everywhere(databases, her), message="not every service applied the erasure")

    report = scan(databases, found)
    assert report.clean, "\n".join(report.lines())
    assert report.held == []
    assert sum(report.tables.values()) > 0 and report.cells > 0
    # nothing more than her: her neighbour (same building, same case) is untouched
    assert officer.grid.get_resident(resident_id=world["neighbour"])["name"] == "李明"
    # the log of who read her data stays (ids only), for accountability
    assert {"consultation_summary", "case_party_phone"} <= {e["what"] for e in access_log(officer, her)}


def test_a_case_under_legal_hold_is_kept_and_flagged(world, databases, call_as):
    her, case = world["her"], world["case"]
    held = world["officer"].legal.set_legal_hold(
        record="case", record_id=case, reason="Court proceedings pending on this dispute"
    )
    assert held["held"] is True
    found_before_erasure(scan(databases))

    erase(call_as, world["street"], her)
    wait_until(lambda: applied_everywhere(databases, her), message="not every service applied the erasure")

    report = scan(databases)
    assert report.clean, "\n".join(report.lines())  # nothing outside the hold
    # the held case's session still names her: kept, reported as held, and the case flagged
    assert ("legal", "mediation_sessions", "attendees") in {(h.service, h.table, h.column) for h in report.held}
    assert {h.service for h in report.held} == {"legal"}
    assert "kept under legal hold" in "\n".join(report.lines())
    assert sql(databases["legal"], "SELECT erasure_deferred FROM mediation_cases WHERE id = :id", id=case) == [(True,)]
    # her consultation was not held: its summary is gone
    assert ("legal", "consultations", "summary_enc") not in {(h.service, h.table, h.column) for h in report.held}
