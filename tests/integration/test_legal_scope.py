"""Scope on every id a legal caller passes: an officer or grid worker of community a reaching into
community b gets Forbidden and nothing changes; the same call inside the caller's scope succeeds."""

import datetime as dt
import uuid
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from services.legal.models import Base
from shared.errors import Conflict, Forbidden, ValidationError
from tests.support import add_household, add_resident, table_counts, token, wait_until

ZONE = ZoneInfo("Asia/Shanghai")
MORNINGS = [{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(7)]
AFTERNOONS = [{"weekday": d, "start": "14:00", "end": "17:00"} for d in range(7)]


def at(clock):
    """The day after tomorrow at ``clock``, local time, as the ISO string a caller sends: always more than
    the reminder lead (24 h) ahead, so no reminder's event lands in an ``unchanged()`` block (with
    tomorrow, every run after 14:00 local had the reminder timer racing the snapshots)."""
    day = dt.datetime.now(ZONE).date() + dt.timedelta(days=2)
    hours, minutes = map(int, clock.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=ZONE).astimezone(dt.UTC).isoformat()


def processed_events(legal_db):
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM processed_events")).scalar()
    engine.dispose()
    return count


@pytest.fixture
def world(legal, call_as, admin, district, legal_db):
    """A station in each community, a lawyer serving both, residents in a (two households and a third)
    and in b, an incident in each community; officers and a grid worker of a, an officer of b."""
    root = call_as(token("admin", sub="root")).legal
    station_a = root.create_station(unit_id=district["community_a"], name="Station A", address="1 A Road")["id"]
    station_b = root.create_station(unit_id=district["community_b"], name="Station B", address="1 B Road")["id"]
    lawyer = root.register_lawyer(
        name="Both", firm="F", license_no="LIC-100001", specialties=["family"], station_ids=[station_a, station_b]
    )["id"]
    root.set_schedule(lawyer_id=lawyer, station_id=station_a, weekly=MORNINGS)
    root.set_schedule(lawyer_id=lawyer, station_id=station_b, weekly=AFTERNOONS)
    homes = [add_household(admin, district["small_a"], room=str(n)) for n in (1, 2, 3)]
    home_b = add_household(admin, district["small_b"], room="4")
    people = {
        "ra1": add_resident(admin, homes[0], 1)["id"],
        "ra2": add_resident(admin, homes[1], 2)["id"],
        "ra3": add_resident(admin, homes[2], 3)["id"],
        "rb1": add_resident(admin, home_b, 4)["id"],
        "rb2": add_resident(admin, home_b, 5)["id"],
    }
    incidents = {
        tag: admin.report_incident(unit_id=district[f"small_{tag}"], category="other", description=f"In {tag}")["id"]
        for tag in ("a", "b")
    }
    # legal records every incident_reported it handles: wait, so that snapshots below stay still
    wait_until(lambda: processed_events(legal_db) >= 2, message="legal did not handle the incidents")
    return {
        **district,
        **people,
        "station_a": station_a,
        "station_b": station_b,
        "lawyer": lawyer,
        "incident_a": incidents["a"],
        "incident_b": incidents["b"],
        "officer_a": call_as(token("officer", sub="officer-a", unit=district["community_a"])).legal,
        "worker_a": call_as(token("grid_worker", sub="worker-a", unit=district["small_a"])).legal,
        "officer_b": call_as(token("officer", sub="officer-b", unit=district["community_b"])).legal,
        "street_officer": call_as(token("officer", sub="street", unit=district["street"])).legal,
    }


@pytest.fixture
def unchanged(legal_db):
    """``with unchanged(): ...``: the legal tables' row counts are the same after the block."""
    from contextlib import contextmanager

    @contextmanager
    def check():
        before = table_counts(legal_db, Base.metadata)
        yield
        assert table_counts(legal_db, Base.metadata) == before

    return check


def dispute(w, unit, parties, **extra):
    return {
        "unit_id": w[unit],
        "category": "neighbour",
        "party_resident_ids": [w[p] for p in parties],
        "description": "Noise",
        **extra,
    }


def test_open_mediation_checks_every_party_against_the_callers_scope(world, unchanged):
    w = world
    with unchanged():
        for caller in (w["officer_a"], w["worker_a"]):
            with pytest.raises(Forbidden, match="party"):
                caller.open_mediation(**dispute(w, "small_a", ["ra1", "rb1"]))
        with pytest.raises(Forbidden):  # the first party out of scope too: refused before the second is looked at
            w["officer_a"].open_mediation(**dispute(w, "community_a", ["rb1", "rb2"]))
        # in the caller's scope but outside the case's unit: whoever reaches the case must reach its parties
        with pytest.raises(ValidationError) as outside:
            w["street_officer"].open_mediation(**dispute(w, "community_a", ["ra1", "rb1"]))
        assert "party_resident_ids" in outside.value.fields
    case = w["worker_a"].open_mediation(**dispute(w, "small_a", ["ra1", "ra2"]))
    assert case["party_resident_ids"] == sorted([w["ra1"], w["ra2"]], key=int)
    names = {p["name"] for p in w["officer_a"].get_case(case_id=case["id"])["parties"]}
    assert names == {"Resident 1", "Resident 2"}
    assert w["street_officer"].open_mediation(**dispute(w, "street", ["ra1", "rb1"]))["status"] == "open"


def test_open_mediation_links_only_an_incident_in_scope_and_inside_the_case(world, unchanged):
    w = world
    with unchanged():
        with pytest.raises(Forbidden, match="incident"):
            w["officer_a"].open_mediation(
                **dispute(w, "community_a", ["ra1", "ra2"], source_incident_id=w["incident_b"])
            )
        with pytest.raises(ValidationError) as unknown:
            w["officer_a"].open_mediation(**dispute(w, "community_a", ["ra1", "ra2"], source_incident_id="99999999"))
        assert "source_incident_id" in unknown.value.fields
        # both in the street officer's scope, but closing a case in a would settle b's incident
        with pytest.raises(ValidationError) as elsewhere:
            w["street_officer"].open_mediation(
                **dispute(w, "community_a", ["ra1", "ra2"], source_incident_id=w["incident_b"])
            )
        assert "source_incident_id" in elsewhere.value.fields
    case = w["officer_a"].open_mediation(
        **dispute(w, "community_a", ["ra1", "ra2"], source_incident_id=w["incident_a"])
    )
    assert case["source_incident_id"] == w["incident_a"]


def test_a_booking_key_reveals_nothing_to_another_caller(world, call_as, unchanged):
    w = world
    resident_b = call_as(token("resident", sub=w["rb1"])).legal
    args = {
        "lawyer_id": w["lawyer"],
        "station_id": w["station_b"],
        "starts_at": at("14:00"),
        "resident_id": w["rb1"],
        "topic": "Lease",
        "idempotency_key": "key-b",
    }
    first = resident_b.book(**args)
    assert resident_b.book(**args)["id"] == first["id"]  # the same caller retrying gets their booking
    with unchanged():
        with pytest.raises(Forbidden):  # b's resident: refused before the key is looked at
            w["officer_a"].book(**args)
        for caller, resident in ((w["officer_a"], "ra1"), (call_as(token("resident", sub=w["ra1"])).legal, "ra1")):
            with pytest.raises(Conflict) as taken:  # a resident in scope: the key is taken, nothing more
                caller.book(**{**args, "resident_id": w[resident]})
            assert first["id"] not in str(taken.value)
        with pytest.raises(Conflict):  # b's officer reaches the resident but did not make this booking
            w["officer_b"].book(**args)
    assert resident_b.book(**args)["id"] == first["id"]
    # an admin whose token names a unit is scoped like anyone else
    with pytest.raises(Forbidden):
        call_as(token("admin", sub="admin-a", unit=w["community_a"])).legal.get_consultation(
            consultation_id=first["id"]
        )
    seen = call_as(token("admin", sub="admin-b", unit=w["community_b"])).legal.get_consultation(
        consultation_id=first["id"]
    )
    assert seen["id"] == first["id"]


def test_register_lawyer_checks_stations_and_the_linked_resident(world, unchanged):
    w = world
    lawyer = {"name": "N", "firm": "F", "specialties": ["labour"], "station_ids": [w["station_a"]]}
    with unchanged():
        with pytest.raises(Forbidden, match="resident"):
            w["officer_a"].register_lawyer(**lawyer, license_no="LIC-200001", resident_id=w["rb1"])
        with pytest.raises(Forbidden, match="station"):
            w["officer_a"].register_lawyer(
                **{**lawyer, "station_ids": [w["station_a"], w["station_b"]]}, license_no="LIC-200001"
            )
        with pytest.raises(Forbidden):  # scope first: an out-of-scope call does not learn the licence is taken
            w["officer_a"].register_lawyer(**{**lawyer, "station_ids": [w["station_b"]]}, license_no="LIC-100001")
    made = w["officer_a"].register_lawyer(**lawyer, license_no="LIC-200001", resident_id=w["ra3"])
    assert made["station_ids"] == [w["station_a"]]


def test_an_officer_plans_a_shared_lawyer_only_at_stations_in_scope(world, call_as, unchanged):
    w = world
    with unchanged(), pytest.raises(Forbidden, match="station"):
        w["officer_a"].set_schedule(lawyer_id=w["lawyer"], station_id=w["station_b"], weekly=AFTERNOONS)
    assert w["officer_a"].set_schedule(lawyer_id=w["lawyer"], station_id=w["station_a"], weekly=MORNINGS)["weekly"]
    # the lawyer plans their own week at every station they serve
    lawyer = call_as(token("lawyer", sub=w["lawyer"])).legal
    assert lawyer.set_schedule(lawyer_id=w["lawyer"], station_id=w["station_b"], weekly=AFTERNOONS)["weekly"]


def test_create_station_checks_scope_before_the_units_level(world, unchanged):
    w = world
    # a small grid of b: Forbidden, not "not a grid_small", which would describe the unit
    with unchanged(), pytest.raises(Forbidden):
        w["officer_a"].create_station(unit_id=w["small_b"], name="S", address="A")
    with pytest.raises(ValidationError):
        w["officer_a"].create_station(unit_id=w["small_a"], name="S", address="A")


def test_a_social_mediator_is_a_resident_in_scope(world, unchanged):
    w = world
    case = w["officer_a"].open_mediation(**dispute(w, "community_a", ["ra1", "ra2"]))
    with unchanged():
        with pytest.raises(Forbidden, match="mediator"):
            w["officer_a"].assign_mediator(case_id=case["id"], mediator_id=w["rb1"], kind="social")
        with pytest.raises(Forbidden):
            w["officer_b"].assign_mediator(case_id=case["id"], mediator_id=w["rb1"], kind="social")
    assert (
        w["officer_a"].assign_mediator(case_id=case["id"], mediator_id=w["ra3"], kind="social")["status"]
        == "in_progress"
    )


def test_list_cases_without_a_unit_is_refused_not_an_internal_error(world, call_as):
    w = world
    case = w["officer_a"].open_mediation(**dispute(w, "community_a", ["ra1", "ra2"]))
    w["officer_a"].assign_mediator(case_id=case["id"], mediator_id=w["ra3"], kind="social")
    mediator = call_as(token("mediator", sub=w["ra3"])).legal
    with pytest.raises(Forbidden):
        mediator.list_cases()
    with pytest.raises(Forbidden):
        mediator.list_cases(under=w["community_a"])
    assert mediator.get_case(case_id=case["id"])["id"] == case["id"]  # their own case, one by one
    with pytest.raises(Forbidden):
        w["officer_b"].list_cases(under=w["community_a"])
    assert [c["id"] for c in w["officer_a"].list_cases()["items"]] == [case["id"]]


def test_a_unit_on_a_self_role_token_reaches_nothing_but_its_own_records(world, call_as):
    """Issue 12, review: a mediator's or lawyer's token naming a unit listed every case under it, and a
    {resident, lawyer} token every consultation at the unit's stations; they see their own only."""
    w = world
    case = w["officer_a"].open_mediation(**dispute(w, "community_a", ["ra1", "ra2"]))
    w["officer_a"].open_mediation(**dispute(w, "community_a", ["ra2", "ra3"]))
    w["officer_a"].assign_mediator(case_id=case["id"], mediator_id=w["ra3"], kind="social")
    for roles, sub in ((("mediator",), w["ra3"]), (("lawyer",), w["lawyer"]), (("mediator", "lawyer"), w["ra3"])):
        scoped = call_as(token(*roles, sub=sub, unit=w["community_a"])).legal
        with pytest.raises(Forbidden):
            scoped.list_cases()
        with pytest.raises(Forbidden):
            scoped.list_cases(under=w["community_a"])
    mediator = call_as(token("mediator", sub=w["ra3"], unit=w["community_a"])).legal
    assert mediator.get_case(case_id=case["id"])["id"] == case["id"]  # their own case, one by one
    # the token's sub names a resident and a lawyer alike: a resident whose id no lawyer has
    me, neighbour = ("ra2", "ra1") if w["ra2"] != w["lawyer"] else ("ra3", "ra1")
    mine = w["officer_a"].book(
        lawyer_id=w["lawyer"], station_id=w["station_a"], starts_at=at("09:00"), resident_id=w[me], topic="Lease"
    )
    w["officer_a"].book(
        lawyer_id=w["lawyer"], station_id=w["station_a"], starts_at=at("09:30"), resident_id=w[neighbour], topic="Debt"
    )
    for roles in (("resident", "lawyer"), ("resident",)):
        listed = call_as(token(*roles, sub=w[me], unit=w["community_a"])).legal.list_consultations()
        assert [c["id"] for c in listed["items"]] == [mine["id"]], roles
    lawyer = call_as(token("lawyer", "mediator", sub=w["lawyer"], unit=w["community_b"])).legal
    assert len(lawyer.list_consultations()["items"]) == 2  # the lawyer's own, at a's station: their sub, not the unit
    assert len(w["officer_a"].list_consultations()["items"]) == 2


def test_report_incident_names_only_parties_living_inside_its_unit(world, call_as, admin):
    """Issue 12, review: an officer reported a dispute at one small grid naming residents of another, and
    that grid's worker read their names in the mediation case legal opened."""
    w = world
    small_a2 = admin.create_unit(parent_id=w["medium_a"], level="grid_small", name="Small a2")["id"]
    officer = call_as(token("officer", sub="officer-a", unit=w["community_a"])).grid
    report = {"category": "dispute", "description": "Noise", "party_resident_ids": [w["ra1"], w["ra2"]]}
    before = officer.list_incidents(under=w["community_a"])["items"]
    with pytest.raises(ValidationError) as outside:
        officer.report_incident(unit_id=small_a2, **report)  # both in scope, neither living at a2
    assert "party_resident_ids" in outside.value.fields and w["ra1"] in str(outside.value.fields)
    assert officer.list_incidents(under=w["community_a"])["items"] == before
    reported = officer.report_incident(unit_id=w["small_a"], **report)
    case = wait_until(
        lambda: next(
            (c for c in w["worker_a"].list_cases()["items"] if c["source_incident_id"] == reported["id"]), None
        ),
        message="legal opened no case for the dispute",
    )
    assert case["party_resident_ids"] == sorted([w["ra1"], w["ra2"]], key=int)


def test_a_dispute_event_naming_parties_outside_its_unit_leaves_them_out_of_the_case(
    world, admin, grid_events, legal_db
):
    """Legal no longer takes an incident's parties as they are: one living outside the incident's unit
    (an incident reported before the grid refused them) is left out of the case."""
    w = world
    incident = admin.report_incident(unit_id=w["small_a"], category="other", description="Shouting")["id"]
    reported = grid_events.next("incident_reported", where=lambda e: e["data"]["incident_id"] == incident)
    data = {**reported["data"], "category": "dispute", "party_resident_ids": [w["ra1"], w["ra2"], w["rb1"]]}
    grid_events.republish(reported, id=str(uuid.uuid4()), data=data)
    wait_until(lambda: _case_of(legal_db, incident) is not None, message="legal opened no case")
    assert sorted(_case_of(legal_db, incident)) == sorted(int(w[r]) for r in ("ra1", "ra2"))


def _case_of(legal_db, incident_id):
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        parties = conn.execute(
            text("SELECT party_resident_ids FROM mediation_cases WHERE source_incident_id = :i"),
            {"i": int(incident_id)},
        ).scalar()
    engine.dispose()
    return parties


def _started(legal_db, consultation_id):
    """Move a booking into the past, as if its time had come (an hour per id apart: no two overlap)."""
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE consultations SET starts_at = now() - interval '1 day' - id * interval '1 hour', "
                "ends_at = now() - interval '1 day' - id * interval '1 hour' + interval '30 minutes' WHERE id = :c"
            ),
            {"c": int(consultation_id)},
        )
    engine.dispose()


def test_only_the_consultations_own_lawyer_or_staff_mark_a_no_show(world, call_as, legal_db):
    """Issue 12, review: a resident holding the lawyer role marked their own booking a no-show."""
    from sqlalchemy.orm import Session

    from services.legal import bookings
    from shared.auth import Caller

    w = world
    other_lawyer = call_as(token("admin", sub="root")).legal.register_lawyer(
        name="Other", firm="F", license_no="LIC-300001", specialties=["family"], station_ids=[w["station_a"]]
    )["id"]
    # a resident whose id names no lawyer: the token's sub would name that lawyer too
    me = next(w[r] for r in ("ra1", "ra2", "ra3") if w[r] not in (w["lawyer"], other_lawyer))
    booked = [
        w["officer_a"].book(
            lawyer_id=w["lawyer"], station_id=w["station_a"], starts_at=at(clock), resident_id=me, topic="Lease"
        )["id"]
        for clock in ("10:00", "10:30")
    ]
    for consultation in booked:
        _started(legal_db, consultation)
    # over RPC the resident role is dropped (mark_no_show does not allow it) and the lawyer is not this one's
    for roles, sub in ((("resident", "lawyer"), me), (("lawyer",), other_lawyer)):
        with pytest.raises(Forbidden):
            call_as(token(*roles, sub=sub)).legal.mark_no_show(consultation_id=booked[0])
    # the rule holds in the function itself, whatever roles a method lets through
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with Session(engine) as session:
            resident_lawyer = Caller(sub=me, roles=frozenset({"resident", "lawyer"}))
            with pytest.raises(Forbidden):
                bookings.mark_no_show(SimpleNamespace(session=session), resident_lawyer, int(booked[0]))
            session.rollback()
    finally:
        engine.dispose()
    assert w["officer_a"].get_consultation(consultation_id=booked[0])["status"] == "booked"
    own_lawyer = call_as(token("lawyer", sub=w["lawyer"])).legal
    assert own_lawyer.mark_no_show(consultation_id=booked[0])["status"] == "no_show"
    assert w["officer_a"].mark_no_show(consultation_id=booked[1])["status"] == "no_show"
