"""Residents report problems themselves (居民自助), as Open311 / FixMyStreet let citizens do.

A resident's report is an incident (services/grid/incidents.py) opened at the small grid of the
resident's own household, so escalation, deadlines, departments and ``incident_reported`` work as for
any other; it carries its reporter, its Open311 ``service_code`` (the incident category), an optional
note on where in the compound and an optional photo reference.

- Each resident may report at most ``REPORT_LIMIT`` problems per ``REPORT_LIMIT_PERIOD`` seconds,
  counted in the database under a per-resident lock, so the limit holds across replicas.
- Residents follow reports (``report_followers``): their own, and the ones their reports were merged
  into as duplicates (``merge_reports``). ``my_reports`` shows each with Open311's field names, the
  department's public notes (``status_notes``) and the trail of steps with staff shown only by role.
- Within ``REPORT_CONFIRM_WINDOW`` seconds of a resolution a follower confirms it, or reopens the
  report: it is open again at the unit it was reported at (``incident_reopened``).
- The public list (``public_reports``, and the Open311 view in services/grid/open311.py) shows the
  public reports under a unit: category, status, dates, the department and its public notes. Never
  free text a resident wrote (a description may name people), never who reported.
"""

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select

from services.grid import incidents
from services.grid.models import Household, Incident, IncidentStep, ReportFollower, Resident, Unit
from services.grid.vocabulary import INCIDENT_CATEGORIES
from shared import paths as tree
from shared.db import fetch, paged, serialize_on, utcnow
from shared.errors import Conflict, Forbidden, RateLimited, ValidationError
from shared.telemetry import CounterSpec, SqlGauge

RESIDENT_ACTOR = "resident:"

# Open311 services (services.json): one per incident category. Names and descriptions are the
# category's, in English; ``group`` is the department that takes it once it leaves the district.
SERVICES = {
    "dispute": (
        "Dispute between neighbours",
        "A dispute between neighbours or with a business in the compound, for mediation.",
        ["dispute", "neighbours", "noise", "mediation"],
    ),
    "public_health": (
        "Public health",
        "Sanitation, waste not collected, pests, a health risk in the compound.",
        ["health", "sanitation", "waste", "pests"],
    ),
    "safety_hazard": (
        "Safety hazard",
        "A fire risk, a blocked escape route, a dangerous structure or installation.",
        ["safety", "fire", "hazard"],
    ),
    "resident_need": (
        "A resident needs help",
        "Someone in the compound needs help with daily life.",
        ["help", "assistance", "care"],
    ),
    "infrastructure": (
        "Building or compound repair",
        "Broken lights, gates, lifts, water pipes, drains, roads in the compound.",
        ["repair", "lights", "lift", "water", "drain"],
    ),
    "other": ("Other problem", "Any other problem in the compound.", ["other"]),
}
assert set(SERVICES) == set(INCIDENT_CATEGORIES)  # one Open311 service per category, no drift

OPEN311_STATUS = {"open": "open", "escalated": "open", "resolved": "closed"}

# What operators watch (read from the database at scrape time, so the same on every replica).
GAUGES = [
    SqlGauge(
        "grassroots_grid_resident_reports",
        "Residents' reports by service code and status (merged duplicates as status merged).",
        "SELECT coalesce(service_code, category),"
        " CASE WHEN merged_into_id IS NOT NULL THEN 'merged' ELSE status END, count(*)"
        " FROM incidents WHERE source = 'resident' GROUP BY 1, 2",
        labels=["service_code", "status"],
    ),
    SqlGauge(
        "grassroots_grid_reports_reopened",
        "Times residents reopened a resolution of their report, by service code.",
        "SELECT coalesce(service_code, category), coalesce(sum(reopened), 0) FROM incidents"
        " WHERE source = 'resident' GROUP BY 1",
        labels=["service_code"],
    ),
    SqlGauge(
        "grassroots_grid_reports_awaiting_confirmation",
        "Resolved residents' reports whose reporter has neither confirmed nor reopened them yet.",
        "SELECT count(*) FROM incidents WHERE source = 'resident' AND status = 'resolved'"
        " AND merged_into_id IS NULL AND confirmed_at IS NULL",
    ),
]
REFUSALS = "grassroots_grid_report_refusals"
# Per replica: a refusal writes nothing to count in the database.
COUNTERS = [
    CounterSpec(
        REFUSALS, "Residents' reports refused, by reason (rate_limit).", ["reason"], start_labels=[("rate_limit",)]
    )
]


def count_refusal(telemetry, reason):
    """Count a refused resident report (``grassroots_grid_report_refusals_total{reason}``)."""
    telemetry.count(REFUSALS, reason)


@dataclass(frozen=True)
class ReportRules:
    """The resident-report settings (config.yml)."""

    limit: int = 5
    period: float = 24 * 3600.0
    confirm_window: float = 7 * 24 * 3600.0
    private_codes: frozenset = frozenset({"dispute"})

    @classmethod
    def from_config(cls, config):
        config = config or {}
        private = config.get("REPORT_PRIVATE_CODES")
        if isinstance(private, str):
            private = [code.strip() for code in private.split(",") if code.strip()]
        return cls(
            limit=int(config.get("REPORT_LIMIT", cls.limit)),
            period=float(config.get("REPORT_LIMIT_PERIOD", cls.period)),
            confirm_window=float(config.get("REPORT_CONFIRM_WINDOW", cls.confirm_window)),
            private_codes=frozenset(cls.private_codes if private is None else private),
        )


# ---- views --------------------------------------------------------------------------------------


@dataclass
class StepView:
    """One step of a report's trail as a resident sees it: who by role, never a staff member's id."""

    action: str
    actor: str  # resident, staff or system
    by_you: bool
    from_level: str | None
    to_level: str | None
    note: str | None
    at: dt.datetime


def actor_role(actor):
    if actor.startswith(RESIDENT_ACTOR):
        return "resident"
    if actor.startswith("system:"):
        return "system"
    return "staff"


def step_view(step, resident_id):
    mine = step.actor == f"{RESIDENT_ACTOR}{resident_id}"
    # Public notes are written for residents; a resident's own reason for reopening is shown to them.
    note = step.note if step.action == "public_note" or (mine and step.action == "reopened") else None
    return StepView(step.action, actor_role(step.actor), mine, step.from_level, step.to_level, note, step.at)


@dataclass
class ReportView:
    """A report as a resident following it sees it, with Open311's field names."""

    service_request_id: int
    service_code: str
    service_name: str
    status: str  # Open311: open or closed
    detailed_status: str  # open, escalated, resolved, merged
    status_notes: str | None
    agency_responsible: str
    handling_level: str
    requested_datetime: dt.datetime
    updated_datetime: dt.datetime
    expected_datetime: dt.datetime | None
    relation: str  # reporter (your own report) or follower (a report yours was merged into)
    description: str | None
    location_note: str | None
    photo_ref: str | None
    merged_into: int | None
    awaiting_confirmation: bool
    confirm_until: dt.datetime | None
    confirmed_datetime: dt.datetime | None
    reopened: int
    steps: list = field(default_factory=list)


def _code(incident):
    return incident.service_code or incident.category


def detailed_status(incident):
    return "merged" if incident.merged_into_id is not None else incident.status


def confirm_until(incident, rules):
    if incident.status != "resolved" or incident.merged_into_id is not None or incident.resolved_at is None:
        return None
    return incident.resolved_at + dt.timedelta(seconds=rules.confirm_window)


def report_view(incident, resident_id, rules, steps, now):
    own = incident.reporter_resident_id == resident_id
    until = confirm_until(incident, rules)
    code = _code(incident)
    return ReportView(
        service_request_id=incident.id,
        service_code=code,
        service_name=SERVICES.get(code, SERVICES["other"])[0],
        status=OPEN311_STATUS[incident.status],
        detailed_status=detailed_status(incident),
        status_notes=incident.status_notes,
        agency_responsible=incident.department,
        handling_level=incident.handling_level,
        requested_datetime=incident.reported_at,
        updated_datetime=incident.updated_at or incident.reported_at,
        expected_datetime=incident.due_at,
        relation="reporter" if own else "follower",
        description=incident.description if own else None,
        location_note=incident.location_note if own else None,
        photo_ref=incident.photo_ref if own else None,
        merged_into=incident.merged_into_id,
        awaiting_confirmation=until is not None and incident.confirmed_at is None and now < until,
        confirm_until=until,
        confirmed_datetime=incident.confirmed_at,
        reopened=incident.reopened or 0,
        steps=[step_view(step, resident_id) for step in steps],
    )


def _steps_of(session, incident_ids):
    found: dict[int, list] = {i: [] for i in incident_ids}
    if incident_ids:
        query = select(IncidentStep).where(IncidentStep.incident_id.in_(incident_ids)).order_by(IncidentStep.id)
        for step in session.scalars(query):
            found[step.incident_id].append(step)
    return found


def _view(session, incident, resident_id, rules):
    return report_view(incident, resident_id, rules, _steps_of(session, [incident.id])[incident.id], utcnow())


# ---- the resident -------------------------------------------------------------------------------


def resident_id_of(caller):
    """The resident a resident token names (its ``sub``), or None when it names none."""
    sub = caller.sub
    if isinstance(sub, str) and sub.isascii() and sub.isdigit() and 0 < len(sub) <= 18 and int(sub) > 0:
        return int(sub)
    return None


def _reporter(session, caller):
    resident_id = resident_id_of(caller)
    resident = session.get(Resident, resident_id) if resident_id is not None else None
    if resident is None or getattr(resident, "erased_at", None) is not None:
        raise Forbidden("the token's subject is no registered resident")
    return resident


# ---- reporting ----------------------------------------------------------------------------------


def check_rate(session, rules, resident_id, now):
    """RateLimited when the resident reported ``rules.limit`` problems in the last ``rules.period``
    seconds. Call under the resident's lock (``report_problem``)."""
    since = now - dt.timedelta(seconds=rules.period)
    count, oldest = session.execute(
        select(func.count(), func.min(Incident.reported_at)).where(
            Incident.reporter_resident_id == resident_id, Incident.reported_at > since
        )
    ).one()
    if count >= rules.limit:
        retry = rules.period if oldest is None else max(1, int((oldest - since).total_seconds()) + 1)
        raise RateLimited(
            f"at most {rules.limit} reports per {int(rules.period)} s per resident (REPORT_LIMIT); "
            f"retry in {int(retry)} s; nothing was changed",
            {
                "field": "report_problem",
                "limit": rules.limit,
                "period_seconds": int(rules.period),
                "retry_after_seconds": int(retry),
            },
        )


def report_problem(uow, caller, policy, rules, service_code, description, location_note=None, photo_ref=None):
    """A resident's report at their own household's small grid: an incident (source ``resident``)."""
    session = uow.session
    resident = _reporter(session, caller)
    # One report at a time per resident, on every replica: the count below is then exact.
    serialize_on(session, "grid.report_problem", resident.id)
    now = utcnow()
    check_rate(session, rules, resident.id, now)
    household = session.get(Household, resident.household_id)
    unit = session.get(Unit, household.unit_id)
    incident = incidents._open(
        uow,
        policy,
        unit,
        service_code,
        description,
        [],
        f"{RESIDENT_ACTOR}{resident.id}",
        source="resident",
        reporter_resident_id=resident.id,
        service_code=service_code,
        location_note=location_note,
        photo_ref=photo_ref,
        public=service_code not in rules.private_codes,
    )
    session.add(ReportFollower(incident_id=incident.id, resident_id=resident.id, since=now))
    session.flush()
    return _view(session, incident, resident.id, rules)


def my_reports(session, caller, rules, status, page, page_size):
    """The reports the resident follows (their own, and those theirs were merged into), newest first."""
    resident_id = resident_id_of(caller)
    if resident_id is None:
        return [], False
    query = (
        select(Incident)
        .join(ReportFollower, ReportFollower.incident_id == Incident.id)
        .where(ReportFollower.resident_id == resident_id)
    )
    if status == "open":
        query = query.where(Incident.status != "resolved")
    elif status == "closed":
        query = query.where(Incident.status == "resolved")
    rows, more = paged(session, query.order_by(Incident.id.desc()), page, page_size)
    steps = _steps_of(session, [row.id for row in rows])
    now = utcnow()
    return [report_view(row, resident_id, rules, steps[row.id], now) for row in rows], more


def _followed(session, caller, incident_id):
    """The incident, locked, when the calling resident follows it; else Forbidden (NotFound: no such id)."""
    resident_id = resident_id_of(caller)
    if resident_id is None:
        raise Forbidden("the token's subject is no registered resident")
    incident = fetch(session, Incident, incident_id, "report", lock=True)
    if session.get(ReportFollower, (incident.id, resident_id)) is None:
        raise Forbidden(f"report {incident.id} is not one of the caller's reports")
    return incident, resident_id


def _in_window(incident, rules, now):
    if incident.merged_into_id is not None:
        raise Conflict(f"report {incident.id} was merged into report {incident.merged_into_id}: follow that one")
    if incident.status != "resolved":
        raise Conflict(f"report {incident.id} is not resolved")
    until = confirm_until(incident, rules)
    if until is None or now >= until:
        raise Conflict(f"the window to confirm or reopen report {incident.id} closed at {until.isoformat()}")


def confirm_resolution(uow, caller, rules, incident_id):
    """The resident confirms the resolution (once: a second confirmation changes nothing)."""
    session = uow.session
    incident, resident_id = _followed(session, caller, incident_id)
    if incident.confirmed_at is None:
        now = utcnow()
        _in_window(incident, rules, now)
        incident.confirmed_at = now
        incidents._step(session, incident, "confirmed", f"{RESIDENT_ACTOR}{resident_id}", at=now)
        session.flush()
    return _view(session, incident, resident_id, rules)


def reopen_report(uow, caller, policy, rules, incident_id, reason=None):
    """The problem is not solved: open again at the unit it was reported at, with that level's deadline."""
    session = uow.session
    incident, resident_id = _followed(session, caller, incident_id)
    now = utcnow()
    if incident.confirmed_at is not None:
        raise Conflict(f"the resolution of report {incident.id} was confirmed; report the problem afresh")
    _in_window(incident, rules, now)
    unit = session.get(Unit, incident.unit_id)
    from_level = incident.handling_level
    incident.status, incident.handling_unit_id, incident.handling_level = "open", unit.id, unit.level
    incident.due_at, incident.resolved_at, incident.resolution = policy.due(unit.level, now), None, None
    incident.reopened = (incident.reopened or 0) + 1
    actor = f"{RESIDENT_ACTOR}{resident_id}"
    incidents._step(
        session, incident, "reopened", actor, note=reason, from_level=from_level, to_level=unit.level, at=now
    )
    uow.emit("incident_reopened", f"incident/{incident.id}", incidents._event(incident, reopened=incident.reopened))
    session.flush()
    return _view(session, incident, resident_id, rules)


# ---- staff --------------------------------------------------------------------------------------


def add_public_note(uow, caller, incident_id, note):
    """Staff reaching the incident write a note every follower and the public list read."""
    incident = incidents.load_incident(uow.session, caller, incident_id, lock=True)
    incidents.note_publicly(uow.session, incident, note, caller.sub, utcnow())
    uow.session.flush()
    return incident


def merge_reports(uow, caller, primary_id, duplicate_id):
    """Close ``duplicate_id`` as a duplicate of ``primary_id``; its followers follow the primary.

    Both must be in the caller's reach. Merging again changes nothing; a report merged elsewhere, a
    primary that was itself merged (so no chain and no cycle), or a resolved one, is a Conflict.
    """
    if primary_id == duplicate_id:
        raise ValidationError({"duplicate_id": ["Must not be the primary_id: a report is no duplicate of itself."]})
    session = uow.session
    # Lock in id order: two merges of the same pair, either way round, cannot deadlock.
    locked = {i: incidents.load_incident(session, caller, i, lock=True) for i in sorted((primary_id, duplicate_id))}
    primary, duplicate = locked[primary_id], locked[duplicate_id]
    if duplicate.merged_into_id == primary.id:
        return duplicate  # merged already: nothing changes
    if duplicate.merged_into_id is not None:
        raise Conflict(f"report {duplicate.id} was merged into report {duplicate.merged_into_id} already")
    if primary.merged_into_id is not None:
        raise Conflict(f"report {primary.id} was itself merged into report {primary.merged_into_id}: merge into that")
    for incident in (duplicate, primary):
        if incident.status == "resolved":
            raise Conflict(f"report {incident.id} is resolved: only open reports are merged")
    now = utcnow()
    duplicate.merged_into_id = primary.id
    from_level = duplicate.handling_level
    duplicate.status, duplicate.resolved_at, duplicate.due_at = "resolved", now, None
    duplicate.resolution = f"duplicate of report {primary.id}"
    incidents._step(
        session, duplicate, "merged", caller.sub, note=f"merged into report {primary.id}", from_level=from_level, at=now
    )
    incidents._step(
        session, primary, "merged_in", caller.sub, note=f"report {duplicate.id} merged into this one", at=now
    )
    following = set(session.scalars(select(ReportFollower.resident_id).where(ReportFollower.incident_id == primary.id)))
    movers = session.scalars(select(ReportFollower.resident_id).where(ReportFollower.incident_id == duplicate.id)).all()
    for resident_id in sorted(set(movers) - following):
        session.add(ReportFollower(incident_id=primary.id, resident_id=resident_id, since=now))
    uow.emit("incident_merged", f"incident/{duplicate.id}", incidents._event(duplicate, merged_into_id=str(primary.id)))
    session.flush()
    return duplicate


# ---- the public list ----------------------------------------------------------------------------


@dataclass
class PublicReport:
    """A public report: no free text a resident wrote, nobody's identity."""

    service_request_id: int
    service_code: str
    service_name: str
    status: str
    detailed_status: str
    status_notes: str | None
    agency_responsible: str
    requested_datetime: dt.datetime
    updated_datetime: dt.datetime
    expected_datetime: dt.datetime | None
    unit_id: int
    address: str  # the small grid's name, never a household's address
    age_days: int


def public_report(incident, unit_name, now):
    code = _code(incident)
    return PublicReport(
        service_request_id=incident.id,
        service_code=code,
        service_name=SERVICES.get(code, SERVICES["other"])[0],
        status=OPEN311_STATUS[incident.status],
        detailed_status=detailed_status(incident),
        status_notes=incident.status_notes,
        agency_responsible=incident.department,
        requested_datetime=incident.reported_at,
        updated_datetime=incident.updated_at or incident.reported_at,
        expected_datetime=incident.due_at,
        unit_id=incident.unit_id,
        address=unit_name,
        age_days=max(0, (now - incident.reported_at).days),
    )


def public_query(unit, statuses=None, codes=None, ids=None, start=None, end=None):
    """The public reports under ``unit`` (merged duplicates left out), with their small grid's name."""
    query = (
        select(Incident, Unit.name)
        .join(Unit, Unit.id == Incident.unit_id)
        .where(
            Incident.public.is_(True), Incident.merged_into_id.is_(None), tree.in_subtree(Incident.unit_path, unit.path)
        )
    )
    if statuses:
        wanted = [s for s, open311 in OPEN311_STATUS.items() if open311 in statuses]
        query = query.where(Incident.status.in_(wanted))
    if codes:
        query = query.where(Incident.category.in_(sorted(codes)))
    if ids:
        query = query.where(Incident.id.in_(sorted(ids)))
    if start is not None:
        query = query.where(Incident.reported_at >= start)
    if end is not None:
        query = query.where(Incident.reported_at <= end)
    return query.order_by(Incident.id.desc())


def public_reports(session, unit_id, status, service_code, page, page_size):
    """The public list under any unit: answered to every caller (it holds no personal data)."""
    unit = fetch(session, Unit, unit_id, "unit")
    query = public_query(unit, {status} if status else None, {service_code} if service_code else None)
    rows = session.execute(query.offset((page - 1) * page_size).limit(page_size + 1)).all()
    now = utcnow()
    return [public_report(incident, name, now) for incident, name in rows[:page_size]], len(rows) > page_size
