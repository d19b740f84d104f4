"""The legal service on a real broker and PostgreSQL: slots, bookings under contention,
reschedules, idempotency, reminders through notices, confidential summaries, mediation."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from shared.errors import Conflict, Forbidden, ValidationError
from tests.support import add_household, add_resident, token, wait_until

ZONE = ZoneInfo("Asia/Shanghai")
EVERY_DAY = [{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(7)] + [
    {"weekday": d, "start": "14:00", "end": "17:00"} for d in range(7)
]


def local(day, clock):
    hours, minutes = map(int, clock.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=ZONE).astimezone(dt.UTC).isoformat()


@pytest.fixture
def tomorrow():
    return dt.datetime.now(ZONE).date() + dt.timedelta(days=1)


@pytest.fixture
def practice(legal, call_as, admin, district):
    """A station in community a, two lawyers with plans, residents in two households."""
    officer = call_as(token("officer", sub="officer-a", unit=district["community_a"])).legal
    station = officer.create_station(
        unit_id=district["community_a"], name="Sunny Legal Station", address="1 Sunny Road"
    )["id"]
    l1 = officer.register_lawyer(
        name="Lawyer One",
        firm="Firm A",
        license_no="LIC-000001",
        specialties=["family", "labour"],
        station_ids=[station],
    )["id"]
    l2 = officer.register_lawyer(
        name="Lawyer Two", firm="Firm B", license_no="LIC-000002", specialties=["family"], station_ids=[station]
    )["id"]
    officer.set_schedule(lawyer_id=l1, station_id=station, weekly=EVERY_DAY)
    lawyer2 = call_as(token("lawyer", sub=l2)).legal
    lawyer2.set_schedule(
        lawyer_id=l2,
        station_id=station,
        slot_minutes=45,
        buffer_minutes=15,
        weekly=[{"weekday": d, "start": "09:00", "end": "11:00"} for d in range(7)],
    )
    home1 = add_household(admin, district["small_a"], room="1")
    home2 = add_household(admin, district["small_a"], room="2")
    home3 = add_household(admin, district["small_b"], room="3")
    residents = {
        f"r{i}": add_resident(admin, home, i)["id"]
        for i, home in ((1, home1), (2, home1), (3, home2), (4, home3), (5, home3))
    }
    return {**district, **residents, "station": station, "l1": l1, "l2": l2, "officer": officer}


def test_slots_follow_plans_breaks_buffers_and_time_off(practice, call_as, tomorrow):
    resident = call_as(token("resident", sub=practice["r1"], unit=practice["small_a"])).legal
    found = resident.find_slots(specialty="family", date_from=tomorrow.isoformat(), date_to=tomorrow.isoformat())
    by_lawyer: dict[str, list[str]] = {}
    for slot in found:
        by_lawyer.setdefault(slot["lawyer_id"], []).append(slot["starts_at"])
    assert len(by_lawyer[practice["l1"]]) == 12  # 09:00-12:00 and 14:00-17:00 in 30 minutes; 12-14 is a break
    assert by_lawyer[practice["l2"]] == [local(tomorrow, "09:00"), local(tomorrow, "10:00")]  # 45 + 15 buffer
    assert [
        s["lawyer_id"]
        for s in resident.find_slots(specialty="labour", date_from=tomorrow.isoformat(), date_to=tomorrow.isoformat())
    ] == [practice["l1"]] * 12
    practice["officer"].add_time_off(
        lawyer_id=practice["l1"], starts_at=local(tomorrow, "09:00"), ends_at=local(tomorrow, "10:00"), reason="court"
    )
    after = resident.find_slots(specialty="labour", date_from=tomorrow.isoformat(), date_to=tomorrow.isoformat())
    assert len(after) == 10 and after[0]["starts_at"] == local(tomorrow, "10:00")
    far = tomorrow + dt.timedelta(days=20)
    assert resident.find_slots(specialty="family", date_from=far.isoformat(), date_to=far.isoformat()) == []
    # a unit finds the stations serving it or its ancestors
    family_now = resident.find_slots(specialty="family", date_from=tomorrow.isoformat(), date_to=tomorrow.isoformat())
    assert len(family_now) == len(found) - 2
    assert (
        resident.find_slots(
            specialty="family",
            unit_id=practice["small_a"],
            date_from=tomorrow.isoformat(),
            date_to=tomorrow.isoformat(),
        )
        == family_now
    )
    assert (
        resident.find_slots(
            specialty="family",
            unit_id=practice["small_b"],
            date_from=tomorrow.isoformat(),
            date_to=tomorrow.isoformat(),
        )
        == []
    )
    assert [s["id"] for s in resident.list_stations(under=practice["street"])] == [practice["station"]]
    assert resident.list_stations(under=practice["community_b"]) == []


def test_fifty_concurrent_bookings_of_one_slot_make_one_booking(practice, call_as, tomorrow):
    service = call_as(token("service", sub="service:frontdesk")).legal
    slot = local(tomorrow, "09:30")
    replies = [
        service.book.call_async(
            lawyer_id=practice["l1"],
            station_id=practice["station"],
            starts_at=slot,
            resident_id=practice[f"r{1 + i % 5}"],
            topic="Lease dispute",
        )
        for i in range(50)
    ]
    booked, conflicts = [], 0
    for reply in replies:
        try:
            booked.append(reply.result())
        except Conflict:
            conflicts += 1
    assert len(booked) == 1 and conflicts == 49
    listed = service.list_consultations(lawyer_id=practice["l1"], status="booked")["items"]
    assert [c["id"] for c in listed] == [booked[0]["id"]]


def test_reschedule_is_atomic(practice, call_as, tomorrow):
    desk = call_as(token("service", sub="service:frontdesk")).legal
    first = desk.book(
        lawyer_id=practice["l1"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "09:00"),
        resident_id=practice["r1"],
        topic="Wages owed",
    )
    desk.book(
        lawyer_id=practice["l1"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "09:30"),
        resident_id=practice["r2"],
        topic="Divorce",
    )
    with pytest.raises(Conflict):
        desk.reschedule(consultation_id=first["id"], starts_at=local(tomorrow, "09:30"))
    assert desk.get_consultation(consultation_id=first["id"])["starts_at"] == local(tomorrow, "09:00")
    moved = desk.reschedule(consultation_id=first["id"], starts_at=local(tomorrow, "10:00"), lawyer_id=practice["l2"])
    assert (moved["starts_at"], moved["lawyer_id"], moved["status"]) == (
        local(tomorrow, "10:00"),
        practice["l2"],
        "booked",
    )
    free = desk.find_slots(specialty="labour", date_from=tomorrow.isoformat(), date_to=tomorrow.isoformat())
    assert local(tomorrow, "09:00") in [s["starts_at"] for s in free]  # the old slot is free again
    with pytest.raises(ValidationError):
        desk.reschedule(consultation_id=first["id"], starts_at=local(tomorrow, "09:10"))  # not a slot


def test_idempotency_key_returns_the_same_booking(practice, call_as, tomorrow):
    resident = call_as(token("resident", sub=practice["r3"], unit=practice["small_a"])).legal
    args = dict(
        lawyer_id=practice["l1"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "14:00"),
        resident_id=practice["r3"],
        topic="Contract",
        idempotency_key="req-7",
    )
    first = resident.book(**args)
    assert resident.book(**args)["id"] == first["id"]
    with pytest.raises(Conflict):
        resident.book(**{**args, "starts_at": local(tomorrow, "14:30")})
    with pytest.raises(Forbidden):
        resident.book(**{**args, "resident_id": practice["r4"], "idempotency_key": None})


def test_a_resident_holds_a_limited_number_of_upcoming_bookings(practice, call_as, tomorrow):
    desk = call_as(token("service", sub="service:frontdesk")).legal
    for clock in ("14:00", "14:30", "15:00"):
        desk.book(
            lawyer_id=practice["l1"],
            station_id=practice["station"],
            starts_at=local(tomorrow, clock),
            resident_id=practice["r5"],
            topic="Many questions",
        )
    with pytest.raises(Conflict):
        desk.book(
            lawyer_id=practice["l1"],
            station_id=practice["station"],
            starts_at=local(tomorrow, "15:30"),
            resident_id=practice["r5"],
            topic="One more",
        )


def test_summary_is_confidential_and_every_read_is_audited(practice, call_as, tomorrow, legal_db):
    desk = call_as(token("service", sub="service:frontdesk")).legal
    booked = desk.book(
        lawyer_id=practice["l1"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "16:00"),
        resident_id=practice["r1"],
        topic="Inheritance",
    )
    with pytest.raises(Forbidden):
        call_as(token("lawyer", sub=practice["l2"])).legal.complete(
            consultation_id=booked["id"], summary="x", outcome="advice_given"
        )
    lawyer = call_as(token("lawyer", sub=practice["l1"])).legal
    lawyer.complete(consultation_id=booked["id"], summary="Will contested; advised mediation.", outcome="mediation")
    readers = {
        "lawyer": lawyer,
        "resident": call_as(token("resident", sub=practice["r1"], unit=practice["small_a"])).legal,
        "admin": call_as(token("admin", sub="root")).legal,
    }
    for reader in readers.values():
        assert reader.get_consultation(consultation_id=booked["id"])["summary"].startswith("Will contested")
    assert "summary" not in practice["officer"].get_consultation(consultation_id=booked["id"])
    with pytest.raises(Forbidden):
        call_as(token("lawyer", sub=practice["l2"])).legal.get_consultation(consultation_id=booked["id"])
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        audit = conn.execute(text("SELECT reader FROM summary_reads ORDER BY id")).scalars().all()
        stored = conn.execute(text("SELECT summary_enc FROM consultations")).scalar()
    engine.dispose()
    assert audit == [practice["l1"], practice["r1"], "root"]
    assert stored is not None and b"Will contested" not in bytes(stored)


def test_cancel_and_no_show(practice, call_as, tomorrow):
    resident = call_as(token("resident", sub=practice["r2"], unit=practice["small_a"])).legal
    booked = resident.book(
        lawyer_id=practice["l2"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "09:00"),
        resident_id=practice["r2"],
        topic="Tenancy",
    )
    cancelled = resident.cancel(consultation_id=booked["id"], reason="Solved it")
    assert cancelled["status"] == "cancelled"
    with pytest.raises(Conflict):
        resident.cancel(consultation_id=booked["id"], reason="again")
    again = resident.book(
        lawyer_id=practice["l2"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "09:00"),
        resident_id=practice["r2"],
        topic="Tenancy",
    )
    with pytest.raises(Conflict):  # it has not started yet
        call_as(token("lawyer", sub=practice["l2"])).legal.mark_no_show(consultation_id=again["id"])


def test_mediator_with_a_conflict_of_interest_is_refused(practice, call_as, admin):
    officer = practice["officer"]
    # a case links only to an incident that exists, in the caller's scope and inside the case's unit
    incident = admin.report_incident(unit_id=practice["small_a"], category="other", description="Noise")["id"]
    case = officer.open_mediation(
        unit_id=practice["community_a"],
        category="neighbour",
        party_resident_ids=[practice["r1"], practice["r3"]],
        description="Noise through the wall",
        source_incident_id=incident,
    )
    assert case["status"] == "open" and case["party_resident_ids"] == sorted([practice["r1"], practice["r3"]], key=int)
    with pytest.raises(Conflict, match="party"):
        officer.assign_mediator(case_id=case["id"], mediator_id=practice["r3"], kind="social")
    with pytest.raises(Conflict, match="household"):
        officer.assign_mediator(case_id=case["id"], mediator_id=practice["r2"], kind="social")  # lives with r1
    # r4 lives in community b: a social mediator is a resident in the assigning caller's scope
    with pytest.raises(Forbidden):
        officer.assign_mediator(case_id=case["id"], mediator_id=practice["r4"], kind="social")
    street_officer = call_as(token("officer", sub="officer-street", unit=practice["street"])).legal
    assigned = street_officer.assign_mediator(case_id=case["id"], mediator_id=practice["r4"], kind="social")
    assert assigned["status"] == "in_progress"
    officer.assign_mediator(case_id=case["id"], mediator_id=practice["l1"], kind="judicial")
    mediator = call_as(token("mediator", sub=practice["r4"])).legal
    mediator.record_session(
        case_id=case["id"],
        held_at=dt.datetime.now(dt.UTC).isoformat(),
        attendees=["r1", "r3", "mediator"],
        notes="Agreed quiet hours after 22:00.",
    )
    closed = mediator.close_mediation(case_id=case["id"], outcome="agreement", agreement="Quiet after 22:00.")
    assert closed["status"] == "closed" and closed["outcome"] == "agreement"
    full = call_as(token("lawyer", sub=practice["l1"])).legal.get_case(case_id=case["id"])
    assert len(full["sessions"]) == 1 and {m["kind"] for m in full["mediators"]} == {"social", "judicial"}
    with pytest.raises(Forbidden):
        call_as(token("mediator", sub=practice["r5"])).legal.get_case(case_id=case["id"])
    assert [c["id"] for c in officer.list_cases(status="closed")["items"]] == [case["id"]]
    with pytest.raises(ValidationError):
        officer.open_mediation(
            unit_id=practice["community_a"],
            category="family",
            party_resident_ids=[practice["r1"], "99999999"],
            description="x",
        )


def test_scope(practice, call_as, tomorrow):
    officer_b = call_as(token("officer", sub="officer-b", unit=practice["community_b"])).legal
    with pytest.raises(Forbidden):
        officer_b.create_station(unit_id=practice["community_a"], name="Not mine", address="x")
    with pytest.raises(Forbidden):
        officer_b.set_schedule(lawyer_id=practice["l1"], station_id=practice["station"], weekly=EVERY_DAY)
    booked = call_as(token("service", sub="service:desk")).legal.book(
        lawyer_id=practice["l1"],
        station_id=practice["station"],
        starts_at=local(tomorrow, "11:00"),
        resident_id=practice["r1"],
        topic="x",
    )
    with pytest.raises(Forbidden):
        officer_b.get_consultation(consultation_id=booked["id"])
    assert officer_b.list_consultations()["items"] == []
    with pytest.raises(Forbidden):
        officer_b.book(
            lawyer_id=practice["l1"],
            station_id=practice["station"],
            starts_at=local(tomorrow, "11:30"),
            resident_id=practice["r1"],
            topic="x",
        )


def test_reminders_go_out_through_notices_and_not_for_cancelled_bookings(
    container_factory, legal_config, legal_db, grid, notices, receiver, call_as, admin, district, tomorrow
):
    """Bookings are made while reminders are off; a second legal instance then sends them."""
    from services.legal.service import LegalService

    quiet = container_factory(LegalService, {**legal_config, "REMINDER_INTERVAL": 3600})
    quiet.start()
    officer = call_as(token("officer", sub="o", unit=district["community_a"])).legal
    station = officer.create_station(unit_id=district["community_a"], name="Station", address="x")["id"]
    lawyer = officer.register_lawyer(
        name="L", firm="F", license_no="LIC-000009", specialties=["family"], station_ids=[station]
    )["id"]
    officer.set_schedule(lawyer_id=lawyer, station_id=station, weekly=EVERY_DAY)
    home = add_household(admin, district["small_a"])
    keep, drop, later = (add_resident(admin, home, seq)["id"] for seq in (11, 12, 13))
    desk = call_as(token("service", sub="service:desk")).legal
    kept = desk.book(
        lawyer_id=lawyer, station_id=station, starts_at=local(tomorrow, "09:00"), resident_id=keep, topic="a"
    )
    dropped = desk.book(
        lawyer_id=lawyer, station_id=station, starts_at=local(tomorrow, "09:30"), resident_id=drop, topic="b"
    )
    desk.cancel(consultation_id=dropped["id"], reason="not needed")
    quiet.kill()
    reminding = container_factory(LegalService, {**legal_config, "REMINDER_LEAD_MINUTES": 3 * 24 * 60})
    reminding.start()
    wait_until(lambda: receiver.accepted("/sms"), message="no reminder sent")
    # A barrier instead of a pause: a booking made only now, starting after the others, which the same
    # timer must remind on a later tick. A tick takes the due consultations in start order until none is
    # left, so once this one's reminder has reached the gateway, any reminder wrongly owed to the earlier
    # two (the cancelled one, or the kept one again because it was not marked reminded) had been recorded
    # in legal's outbox before it. With that bug the outbox check fails however slowly the wrong message
    # would travel on through notices; the gateway check then says what residents actually received.
    later_one = desk.book(
        lawyer_id=lawyer, station_id=station, starts_at=local(tomorrow, "10:00"), resident_id=later, topic="c"
    )
    wait_until(lambda: "13800000013" in sms_to(receiver), message="the later booking was never reminded")
    assert reminded_consultations(legal_db) == [kept["id"], later_one["id"]]
    assert sms_to(receiver) == ["13800000011", "13800000013"]
    assert "Station" in receiver.accepted("/sms")[0]["text"]
    reminding.kill()


def sms_to(receiver):
    return [body["to"] for body in receiver.accepted("/sms")]


def reminded_consultations(legal_db):
    """The consultation of every reminder legal recorded for notices (a send_direct command whose origin
    is ``legal:consultation/<id>/reminder/<start>``), in the order recorded."""
    engine = create_engine(legal_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        origins = conn.execute(
            text("SELECT payload->>'subject' FROM outbox_events WHERE event_type = 'send_direct' ORDER BY id")
        ).scalars()
        found = [origin.split("/")[1] for origin in origins]
    engine.dispose()
    return found


def test_the_upcoming_cap_holds_under_concurrent_bookings(practice, call_as, tomorrow):
    desk = call_as(token("service", sub="service:frontdesk")).legal
    clocks = ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30", "14:00", "14:30", "15:00", "15:30"]
    replies = [
        desk.book.call_async(
            lawyer_id=practice["l1"],
            station_id=practice["station"],
            starts_at=local(tomorrow, clock),
            resident_id=practice["r4"],
            topic="x",
        )
        for clock in clocks
    ]
    outcomes = []
    for reply in replies:
        try:
            outcomes.append(reply.result()["status"])
        except Conflict:
            outcomes.append("conflict")
    assert outcomes.count("booked") == 3 and outcomes.count("conflict") == 7


def test_plans_at_two_stations_may_not_overlap_and_results_are_capped(practice, call_as, tomorrow):
    officer = call_as(token("officer", sub="officer-street", unit=practice["street"])).legal
    second = officer.create_station(unit_id=practice["street"], name="Street station", address="2 Main St")["id"]
    lawyer = officer.register_lawyer(
        name="Both",
        firm="F",
        license_no="LIC-000003",
        specialties=["consumer"],
        station_ids=[practice["station"], second],
    )["id"]
    officer.set_schedule(
        lawyer_id=lawyer,
        station_id=practice["station"],
        weekly=[{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(7)],
    )
    with pytest.raises(Conflict):
        officer.set_schedule(
            lawyer_id=lawyer, station_id=second, weekly=[{"weekday": 2, "start": "11:00", "end": "13:00"}]
        )
    officer.set_schedule(
        lawyer_id=lawyer, station_id=second, weekly=[{"weekday": d, "start": "13:00", "end": "15:00"} for d in range(7)]
    )
    week = dict(
        specialty="consumer", date_from=tomorrow.isoformat(), date_to=(tomorrow + dt.timedelta(days=6)).isoformat()
    )
    everything = officer.find_slots(**week)
    assert len(everything) == 7 * (6 + 4)
    first_five = officer.find_slots(**week, limit=5)
    assert first_five == everything[:5]
