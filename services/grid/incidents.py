"""Incidents (问题联办): reported at a unit, climbing level by level to a department."""

import datetime as dt

from sqlalchemy import select

from services.grid.events import path_out
from services.grid.models import Incident, IncidentStep, Resident, Unit
from services.grid.units import RowView, reachable_unit
from services.grid.vocabulary import DEPARTMENT_LEVEL
from shared import paths as tree
from shared.db import fetch, locking, paged, utcnow
from shared.errors import Conflict, ValidationError

SYSTEM_ACTOR = "system:deadline"
# Where a dispute goes when mediation refers it to court.
COURT_DEPARTMENT = "political_legal"


class Policy:
    """Department per category and seconds allowed at each level (from config)."""

    def __init__(self, departments, deadlines):
        self.departments = departments
        self.deadlines = deadlines

    def due(self, level, now):
        seconds = self.deadlines.get(level)
        return None if seconds is None else now + dt.timedelta(seconds=float(seconds))


def _event(incident, **extra):
    return {
        "incident_id": str(incident.id),
        "unit_id": str(incident.unit_id),
        "unit_path": path_out(incident.unit_path),
        "category": incident.category,
        "department": incident.department,
        "status": incident.status,
        "handling_level": incident.handling_level,
        "handling_unit_id": str(incident.handling_unit_id) if incident.handling_unit_id else None,
        **extra,
    }


def _step(session, incident, action, actor, note=None, from_level=None, to_level=None, at=None):
    at = at or utcnow()
    incident.updated_at = at  # every change is a step: Open311's updated_datetime
    session.add(
        IncidentStep(
            incident_id=incident.id,
            action=action,
            from_level=from_level,
            to_level=to_level,
            note=note,
            actor=actor,
            at=at,
        )
    )


def _open(uow, policy, unit, category, description, parties, reporter, origin=None, source=None, **report):
    """``report``: a resident's report's own columns (services/grid/reports.py)."""
    session = uow.session
    now = utcnow()
    source = source or ("service" if origin is not None else "staff")
    incident = Incident(
        unit_id=unit.id,
        unit_path=unit.path,
        category=category,
        description=description,
        department=policy.departments[category],
        party_resident_ids=parties,
        status="open",
        handling_unit_id=unit.id,
        handling_level=unit.level,
        escalations=0,
        due_at=policy.due(unit.level, now),
        reported_by=reporter,
        reported_at=now,
        origin=origin,
        source=source,
        updated_at=now,
        reopened=0,
        **report,
    )
    session.add(incident)
    session.flush()
    _step(session, incident, "reported", reporter, to_level=unit.level, at=now)
    uow.emit(
        "incident_reported",
        f"incident/{incident.id}",
        _event(incident, party_resident_ids=[str(p) for p in parties], source=source),
    )
    return incident


def report_incident(uow, caller, policy, unit_id, category, description, party_resident_ids):
    session = uow.session
    unit = reachable_unit(session, caller, unit_id)
    parties = sorted(set(party_resident_ids or []))
    if parties:
        found = dict(session.execute(select(Resident.id, Resident.unit_path).where(Resident.id.in_(parties))).all())
        missing = [str(p) for p in parties if p not in found]
        if missing:
            raise ValidationError({"party_resident_ids": [f"Unknown residents: {', '.join(missing)}."]})
        # Every party must be the caller's to name: a dispute opens a mediation case showing their names.
        for path in found.values():
            caller.require_reach(tree.path_ids(path), "party resident")
        # ...and live inside the incident's unit: whoever reaches the incident (and the case legal opens
        # for a dispute) reads its parties' names, so they may name no one living elsewhere.
        outside = [str(p) for p in parties if unit.id not in tree.path_ids(found[p])]
        if outside:
            raise ValidationError({"party_resident_ids": [f"Not living inside unit {unit.id}: {', '.join(outside)}."]})
    return _open(uow, policy, unit, category, description, parties, caller.sub)


def raise_incident(uow, policy, origin, unit_id, category, description, reporter):
    """An incident a service raises by itself (bottom-up), once per ``origin``.

    Returns ``(incident, created)``; a second delivery of the same origin finds the first incident.
    """
    session = uow.session
    existing = session.scalar(select(Incident).where(Incident.origin == origin))
    if existing is not None:
        return existing, False
    unit = session.get(Unit, unit_id)
    if unit is None:
        raise ValidationError({"unit_id": [f"Unknown unit {unit_id}."]})
    return _open(uow, policy, unit, category, description, [], reporter, origin=origin), True


def load_incident(session, caller, incident_id, *, lock=False):
    incident = fetch(session, Incident, incident_id, "incident", lock=lock)
    caller.require_reach(tree.path_ids(incident.unit_path), "incident")
    return incident


def _climb(uow, policy, incident, actor, reason, now):
    session = uow.session
    if incident.status == "resolved":
        raise Conflict(f"incident {incident.id} is resolved")
    if incident.handling_unit_id is None:
        raise Conflict(f"incident {incident.id} is already with the {incident.department} department")
    current = session.get(Unit, incident.handling_unit_id)
    if current.parent_id is None:
        return _hand_on(uow, policy, incident, None, DEPARTMENT_LEVEL, actor, reason, now, actor == SYSTEM_ACTOR)
    parent = session.get(Unit, current.parent_id)
    return _hand_on(uow, policy, incident, parent.id, parent.level, actor, reason, now, actor == SYSTEM_ACTOR)


def _hand_on(uow, policy, incident, unit_id, level, actor, reason, now, automatic):
    """The incident goes to whoever handles it next (a unit, or with ``unit_id`` None the department),
    with that level's deadline; the step is recorded and announced."""
    from_level = incident.handling_level
    incident.handling_unit_id, incident.handling_level = unit_id, level
    incident.status, incident.due_at = "escalated", policy.due(level, now)
    incident.escalations += 1
    _step(uow.session, incident, "escalated", actor, note=reason, from_level=from_level, to_level=level, at=now)
    event = _event(incident, from_level=from_level, automatic=automatic)
    uow.emit("incident_escalated", f"incident/{incident.id}", event)
    return incident


def _resolve(uow, incident, resolution, actor, now):
    incident.status, incident.resolution, incident.resolved_at, incident.due_at = "resolved", resolution, now, None
    _step(uow.session, incident, "resolved", actor, note=resolution, from_level=incident.handling_level, at=now)
    uow.emit("incident_resolved", f"incident/{incident.id}", _event(incident))
    return incident


def escalate_incident(uow, caller, policy, incident_id, reason):
    incident = load_incident(uow.session, caller, incident_id, lock=True)
    return _climb(uow, policy, incident, caller.sub, reason, utcnow())


def escalate_overdue(uow, policy, now, limit=200):
    """Climb every unresolved incident past its deadline one level; returns how many."""
    session = uow.session
    query = (
        select(Incident)
        .where(Incident.status != "resolved", Incident.due_at <= now)
        .order_by(Incident.due_at)
        .limit(limit)
    )
    overdue = session.scalars(locking(query, session, skip_locked=True)).all()
    for incident in overdue:
        _climb(uow, policy, incident, SYSTEM_ACTOR, "deadline passed", now)
    session.flush()
    return len(overdue)


def raise_for_unmatched_request(uow, policy, request_id, unit_id, kind, urgency):
    """Nobody could take a help request: the unit it came from takes it up."""
    return raise_incident(
        uow,
        policy,
        f"volunteer:request/{request_id}",
        unit_id,
        "resident_need",
        f"Help request {request_id} ({kind}, urgency {urgency}) found no volunteer.",
        "system:volunteer",
    )


def raise_for_understaffed_shift(uow, policy, shift_id, post_id, unit_id, starts_at, needed, signed):
    """A duty post will be short of volunteers: its unit has to find people."""
    return raise_incident(
        uow,
        policy,
        f"volunteer:shift/{shift_id}",
        unit_id,
        "other",
        f"Shift {shift_id} at duty post {post_id} starting {starts_at} has {signed} of {needed} volunteers.",
        "system:volunteer",
    )


def refer_to_department(uow, policy, incident, department, actor, reason):
    """Hand an incident straight to a department, skipping the levels between (e.g. a court referral)."""
    if incident.status == "resolved":
        raise Conflict(f"incident {incident.id} is resolved")
    incident.department = department
    return _hand_on(uow, policy, incident, None, DEPARTMENT_LEVEL, actor, reason, utcnow(), automatic=True)


def settle_from_mediation(uow, policy, incident_id, case_id, outcome, actor):
    """A mediation case opened from this incident closed: resolve it, or refer it on when it went to court.

    Returns the incident, or None when it is unknown or already settled (a repeated event changes nothing).
    """
    incident = uow.session.scalar(locking(select(Incident).where(Incident.id == incident_id), uow.session))
    if incident is None or incident.status == "resolved":
        return None
    if outcome == "referred_to_court":
        if incident.handling_level == DEPARTMENT_LEVEL and incident.department == COURT_DEPARTMENT:
            return None  # already there (climbed on its deadlines, or this event came twice)
        return refer_to_department(
            uow, policy, incident, COURT_DEPARTMENT, actor, f"mediation case {case_id} referred to court"
        )
    return _resolve(uow, incident, f"mediation case {case_id} closed: {outcome}", actor, utcnow())


def resolve_incident(uow, caller, incident_id, resolution, public_note=None):
    """``public_note``: what residents following the report and the public list read (``status_notes``);
    the ``resolution`` itself stays with staff."""
    session = uow.session
    incident = load_incident(session, caller, incident_id, lock=True)
    if incident.status == "resolved":
        raise Conflict(f"incident {incident.id} is already resolved")
    # Only whoever handles it now (or someone above) may close it.
    origin_ids = tree.path_ids(incident.unit_path)
    if incident.handling_unit_id is None:
        handling_ids = origin_ids[:1]
    else:
        handling_ids = origin_ids[: origin_ids.index(incident.handling_unit_id) + 1]
    caller.require_reach(handling_ids, f"incident handled at {incident.handling_level}")
    now = utcnow()
    if public_note is not None:
        note_publicly(session, incident, public_note, caller.sub, now)
    return _resolve(uow, incident, resolution, caller.sub, now)


def note_publicly(session, incident, note, actor, now):
    """The department's public note on an incident: its ``status_notes`` from now on, and a step."""
    incident.status_notes = note
    _step(session, incident, "public_note", actor, note=note, from_level=incident.handling_level, at=now)


def incident_trail(session, caller, incident_id):
    """The incident with its steps, oldest first."""
    incident = load_incident(session, caller, incident_id)
    steps = session.scalars(
        select(IncidentStep).where(IncidentStep.incident_id == incident.id).order_by(IncidentStep.id)
    ).all()
    return RowView(incident, steps=list(steps))


def list_incidents(session, caller, under, status, page, page_size, source="any"):
    root = reachable_unit(session, caller, under)
    query = select(Incident).where(tree.in_subtree(Incident.unit_path, root.path))
    if status is not None:
        query = query.where(Incident.status == status)
    if source != "any":
        query = query.where(Incident.source == source)
    return paged(session, query.order_by(Incident.id.desc()), page, page_size)
