"""Finding slots and booking them: never a double booking (the database refuses it),
idempotent by key, atomic reschedules; confidential summaries with an audit trail."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import eventlet
from sqlalchemy import func, or_, select

from services.legal import slots
from services.legal.directory import STAFF, is_lawyer, staff_reaches
from services.legal.models import Consultation, Lawyer, LawyerStation, Schedule, Station, SummaryRead, TimeOff
from services.legal.views import RowView
from shared.db import fetch, locking, paged, serialize_on, utcnow
from shared.errors import Conflict, Forbidden, ValidationError

SUMMARY_CONTEXT = b"consultation summary"


class Policy:
    """Booking rules from config."""

    def __init__(self, config):
        self.min_notice = dt.timedelta(minutes=float(config.get("MIN_NOTICE_MINUTES", 120)))
        self.horizon = dt.timedelta(days=float(config.get("BOOKING_HORIZON_DAYS", 30)))
        self.max_upcoming = int(config.get("MAX_UPCOMING_BOOKINGS", 3))
        self.reminder_lead = dt.timedelta(minutes=float(config.get("REMINDER_LEAD_MINUTES", 24 * 60)))
        self.zone = ZoneInfo(config.get("TIMEZONE") or "Asia/Shanghai")

    def window(self, now):
        return now + self.min_notice, now + self.horizon


def _plans(session, specialty, station_ids, lawyer_id=None):
    query = (
        select(Schedule, Lawyer)
        .join(Lawyer, Lawyer.id == Schedule.lawyer_id)
        .join(
            LawyerStation,
            (LawyerStation.lawyer_id == Schedule.lawyer_id) & (LawyerStation.station_id == Schedule.station_id),
        )
        .where(Schedule.station_id.in_(station_ids))
    )
    if lawyer_id is not None:
        query = query.where(Schedule.lawyer_id == lawyer_id)
    rows = session.execute(query).all()
    return [
        (slots.Plan(s.lawyer_id, s.station_id, tuple(s.weekly), s.slot_minutes, s.buffer_minutes), lawyer)
        for s, lawyer in rows
        if specialty is None or specialty in lawyer.specialties
    ]


def _busy(session, lawyer_ids, start, end, exclude_consultation=None):
    """Busy intervals per lawyer between start and end: time off and booked consultations."""
    busy: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {lawyer_id: [] for lawyer_id in lawyer_ids}
    for row in session.execute(
        select(TimeOff.lawyer_id, TimeOff.starts_at, TimeOff.ends_at).where(
            TimeOff.lawyer_id.in_(lawyer_ids), TimeOff.ends_at > start, TimeOff.starts_at < end
        )
    ):
        busy[row[0]].append((row[1], row[2]))
    query = select(Consultation.lawyer_id, Consultation.starts_at, Consultation.ends_at).where(
        Consultation.lawyer_id.in_(lawyer_ids),
        Consultation.status == "booked",
        Consultation.ends_at > start,
        Consultation.starts_at < end,
    )
    if exclude_consultation is not None:
        query = query.where(Consultation.id != exclude_consultation)
    for row in session.execute(query):
        busy[row[0]].append((row[1], row[2]))
    return {lawyer_id: slots.Busy(intervals) for lawyer_id, intervals in busy.items()}


@dataclass(frozen=True)
class Slot:
    """A free slot of a lawyer's plan at a station."""

    lawyer_id: int
    lawyer_name: str
    station_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime


def find_slots(session, grid, policy, specialty, date_from, date_to, station_id, unit_id, limit=1000):
    """The earliest ``limit`` free slots in the range, in start order.

    Built a day at a time and stopped once a day fills the limit, and the event loop is
    yielded to between plans, so a wide search neither runs long nor stalls other calls.
    """
    if station_id is not None:
        station_ids = [fetch(session, Station, station_id, "station").id]
    elif unit_id is not None:
        # Stations serving the unit or any of its ancestors.
        chain = [int(u["id"]) for u in grid.ancestors(unit_id=str(unit_id))] + [unit_id]
        station_ids = session.scalars(select(Station.id).where(Station.unit_id.in_(chain))).all()
    else:
        station_ids = session.scalars(select(Station.id)).all()
    plans = _plans(session, specialty, station_ids)
    if not plans:
        return []
    now = utcnow()
    earliest, latest = policy.window(now)
    range_start = dt.datetime.combine(date_from, dt.time(0), tzinfo=policy.zone)
    range_end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(0), tzinfo=policy.zone)
    busy = _busy(session, {plan.lawyer_id for plan, _ in plans}, range_start, range_end)
    found: list[Slot] = []
    day = date_from
    while day <= date_to and len(found) < limit:
        for plan, lawyer in plans:
            for start, end in slots.open_slots(plan, busy[plan.lawyer_id], day, day, policy.zone, earliest, latest):
                found.append(Slot(lawyer.id, lawyer.name, plan.station_id, start, end))
            eventlet.sleep(0)  # a cooperative pause: other calls on this process keep flowing
        day += dt.timedelta(days=1)
    found.sort(key=lambda slot: (slot.starts_at, slot.lawyer_id))
    return found[:limit]


def _authorize_for_resident(caller, grid, resident_id):
    """Residents book for themselves; staff for residents in their scope; services for anyone.

    Each role grants only its own: a resident who is also staff books for others in the staff scope.
    """
    if caller.has_role("resident") and caller.sub == str(resident_id):
        return
    if not caller.has_role(*STAFF):
        raise Forbidden("residents book only for themselves")
    caller.require_reach(grid.resident(resident_id)["unit_path"], "resident")


def _check_slot(session, policy, lawyer_id, station_id, starts_at, exclude=None):
    """The slot's (start, end) if it is bookable now, else a typed error."""
    station = fetch(session, Station, station_id, "station")
    fetch(session, Lawyer, lawyer_id, "lawyer")
    schedule = session.get(Schedule, (lawyer_id, station.id))
    serves = session.get(LawyerStation, (lawyer_id, station.id))
    if schedule is None or serves is None:
        raise ValidationError({"station_id": [f"Lawyer {lawyer_id} has no schedule at station {station.id}."]})
    plan = slots.Plan(lawyer_id, station.id, tuple(schedule.weekly), schedule.slot_minutes, schedule.buffer_minutes)
    slot = slots.slot_at(plan, starts_at, policy.zone)
    if slot is None:
        raise ValidationError({"starts_at": ["Not a slot of this lawyer's schedule at this station."]})
    earliest, latest = policy.window(utcnow())
    if not earliest <= starts_at <= latest:
        raise ValidationError({"starts_at": [f"Must be between {earliest.isoformat()} and {latest.isoformat()}."]})
    busy = _busy(session, [lawyer_id], slot[0], slot[1], exclude_consultation=exclude)[lawyer_id]
    if busy.overlaps(*slot):
        raise Conflict("that slot is taken or the lawyer is away")
    return station, slot


def book(uow, caller, grid, policy, lawyer_id, station_id, starts_at, resident_id, topic, mode):
    """A retried booking (same ``idempotency_key``) gets the first reply: shared.idempotency."""
    session = uow.session
    _authorize_for_resident(caller, grid, resident_id)
    station, (start, end) = _check_slot(session, policy, lawyer_id, station_id, starts_at)
    # One booking at a time per resident, so two concurrent ones cannot both pass the cap.
    serialize_on(session, "legal.book.resident", resident_id)
    now = utcnow()
    upcoming = session.scalar(
        select(func.count())
        .select_from(Consultation)
        .where(Consultation.resident_id == resident_id, Consultation.status == "booked", Consultation.starts_at > now)
    )
    if upcoming >= policy.max_upcoming:
        raise Conflict(f"resident already holds {upcoming} upcoming bookings (the most allowed)")
    consultation = Consultation(
        lawyer_id=lawyer_id,
        station_id=station.id,
        station_path=station.unit_path,
        resident_id=resident_id,
        starts_at=start,
        ends_at=end,
        topic=topic,
        mode=mode,
        status="booked",
        booked_by=caller.sub,
        created_at=now,
        updated_at=now,
    )
    session.add(consultation)
    session.flush()  # the database's constraint decides a race for the slot here
    uow.emit("consultation_booked", f"consultation/{consultation.id}", _event(consultation))
    return consultation


def _event(consultation, **extra):
    return {
        "consultation_id": str(consultation.id),
        "lawyer_id": str(consultation.lawyer_id),
        "station_id": str(consultation.station_id),
        "resident_id": str(consultation.resident_id),
        "starts_at": consultation.starts_at.isoformat(),
        "status": consultation.status,
        **extra,
    }


event_of = _event  # the consultation_* events' data, for services.legal.erasure


def reachable_consultation(session, caller, consultation_id, *, lock=False):
    consultation = fetch(session, Consultation, consultation_id, "consultation", lock=lock)
    if is_lawyer(caller, consultation.lawyer_id) or caller.unrestricted:
        return consultation
    if caller.has_role("resident") and caller.sub == str(consultation.resident_id):
        return consultation
    if staff_reaches(caller, consultation.station_path):
        return consultation
    raise Forbidden("consultation is outside the caller's reach")


def _booked(consultation):
    if consultation.status != "booked":
        raise Conflict(f"consultation {consultation.id} is {consultation.status}")


def cancel(uow, caller, consultation_id, reason):
    consultation = reachable_consultation(uow.session, caller, consultation_id, lock=True)
    _booked(consultation)
    consultation.status, consultation.cancel_reason, consultation.updated_at = "cancelled", reason, utcnow()
    uow.emit("consultation_cancelled", f"consultation/{consultation.id}", _event(consultation))
    return consultation


def reschedule(uow, caller, policy, consultation_id, starts_at, lawyer_id):
    """Move a booking in one transaction: the old slot is given up only if the new one is held."""
    session = uow.session
    consultation = reachable_consultation(session, caller, consultation_id, lock=True)
    _booked(consultation)
    lawyer_id = lawyer_id or consultation.lawyer_id
    _, (start, end) = _check_slot(
        session, policy, lawyer_id, consultation.station_id, starts_at, exclude=consultation.id
    )
    consultation.lawyer_id, consultation.starts_at, consultation.ends_at = lawyer_id, start, end
    consultation.reminded_at, consultation.updated_at = None, utcnow()
    session.flush()  # a racing booking of the new slot fails here; the transaction keeps the old one
    uow.emit("consultation_rescheduled", f"consultation/{consultation.id}", _event(consultation))
    return consultation


def mark_no_show(uow, caller, consultation_id):
    consultation = reachable_consultation(uow.session, caller, consultation_id, lock=True)
    # the consultation's own lawyer or staff reaching its station: not its resident, whatever other
    # role (another consultation's lawyer) the token holds
    if not (is_lawyer(caller, consultation.lawyer_id) or staff_reaches(caller, consultation.station_path)):
        raise Forbidden("only the consultation's lawyer or staff reaching its station mark a no-show")
    _booked(consultation)
    if consultation.starts_at > utcnow():
        raise Conflict("the consultation has not started yet")
    consultation.status, consultation.updated_at = "no_show", utcnow()
    return consultation


def complete(uow, caller, vault, consultation_id, summary, outcome):
    consultation = reachable_consultation(uow.session, caller, consultation_id, lock=True)
    if not is_lawyer(caller, consultation.lawyer_id):
        raise Forbidden("only the consultation's lawyer completes it")
    _booked(consultation)
    consultation.status, consultation.outcome = "completed", outcome
    consultation.summary_enc = vault.encrypt(summary, SUMMARY_CONTEXT)
    consultation.updated_at = utcnow()
    uow.emit("consultation_completed", f"consultation/{consultation.id}", _event(consultation, outcome=outcome))
    return consultation


@dataclass(frozen=True)
class ConsultationRead(RowView):
    """A consultation as one caller reads it: ``summary`` is None unless they may read it."""

    row: Consultation
    summary: str | None


def read_consultation(uow, caller, vault, consultation_id):
    consultation = reachable_consultation(uow.session, caller, consultation_id)
    return ConsultationRead(consultation, read_summary(uow, caller, vault, consultation))


def may_read_summary(caller, consultation):
    return (
        is_lawyer(caller, consultation.lawyer_id)
        or caller.has_role("admin")
        or (caller.has_role("resident") and caller.sub == str(consultation.resident_id))
    )


def read_summary(uow, caller, vault, consultation):
    """The summary for those allowed (audited), else None."""
    if consultation.summary_enc is None or not may_read_summary(caller, consultation):
        return None
    now = utcnow()
    uow.session.add(
        SummaryRead(consultation_id=consultation.id, reader=caller.sub, reader_roles=sorted(caller.roles), read_at=now)
    )
    # For the resident's access log at the grid (grid.access_log): ids and codes only.
    record = f"consultation/{consultation.id}"
    uow.emit(
        "sensitive_data_read",
        record,
        sensitive_data_read(consultation.resident_id, caller, "consultation_summary", record, SUMMARY_PURPOSE, now),
    )
    return vault.decrypt(consultation.summary_enc, SUMMARY_CONTEXT)


SUMMARY_PURPOSE = "legal consultation: the summary read by a participant"


def sensitive_data_read(resident_id, caller, what, record, purpose, at):
    """The ``sensitive_data_read`` event's data (services/legal/events.py)."""
    return {
        "resident_id": str(resident_id),
        "reader": caller.sub,
        "reader_roles": sorted(caller.roles),
        "what": what,
        "record": record,
        "purpose": purpose,
        "at": at.isoformat(),
    }


def _own_id(caller):
    """The id the caller's ``sub`` names (a resident's or a lawyer's), or -1, which names nothing."""
    return int(caller.sub) if caller.sub.isdigit() and int(caller.sub) < 2**63 else -1


def list_consultations(session, caller, resident_id, lawyer_id, station_id, status, page, page_size):
    """Each of the caller's roles adds what it alone may see, never more: a resident their own
    consultations, a lawyer theirs, staff those at stations under their unit (``admin`` and ``service``
    naming no unit: all). The filters narrow that."""
    query = select(Consultation)
    if not caller.unrestricted:
        seen = []
        if caller.has_role("resident"):
            seen.append(Consultation.resident_id == _own_id(caller))
        if caller.has_role("lawyer"):
            seen.append(Consultation.lawyer_id == _own_id(caller))
        if caller.scope_unit is not None:
            # the caller's unit on the station's path: the station is in the caller's subtree
            seen.append(Consultation.station_path.contains(f"/{caller.scope_unit}/", autoescape=True))
        if not seen:
            raise Forbidden("token names no unit scope")
        query = query.where(or_(*seen))
    for column, value in (
        (Consultation.resident_id, resident_id),
        (Consultation.lawyer_id, lawyer_id),
        (Consultation.station_id, station_id),
        (Consultation.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    return paged(session, query.order_by(Consultation.starts_at, Consultation.id), page, page_size)


def next_due_reminder(session, policy, now):
    """One booked consultation due a reminder, locked so that one replica sends it."""
    query = (
        select(Consultation)
        .where(
            Consultation.status == "booked",
            Consultation.reminded_at.is_(None),
            Consultation.starts_at > now,
            Consultation.starts_at <= now + policy.reminder_lead,
        )
        .order_by(Consultation.starts_at)
        .limit(1)
    )
    return session.scalar(locking(query, session, skip_locked=True))


def send_reminder(notices, uow, policy, consultation):
    """Remind the resident (and the lawyer, when registered as a resident) through notices: once per
    consultation and start time (a reschedule re-arms it), sent after this transaction commits."""
    session = uow.session
    station = session.get(Station, consultation.station_id)
    lawyer = session.get(Lawyer, consultation.lawyer_id)
    recipients = [str(consultation.resident_id)]
    if lawyer.resident_id and lawyer.resident_id != consultation.resident_id:  # a lawyer consulting themself
        recipients.append(str(lawyer.resident_id))
    local = consultation.starts_at.astimezone(policy.zone).strftime("%Y-%m-%d %H:%M")
    starts = consultation.starts_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%MZ")
    notices.send_direct(
        uow,
        origin=f"legal:consultation/{consultation.id}/reminder/{starts}",
        resident_ids=recipients,
        template="consultation_reminder",
        params={"station": station.name, "starts_at": local},
    )
    consultation.reminded_at = utcnow()
