"""Care the grid's events call for: daily groceries and a daily check-in for a household under
home quarantine (居家隔离), and a door-knock for households that did not acknowledge a notice.

Every request opened here carries an ``origin`` (unique), so an event delivered twice, or a
timer run again after a restart, opens nothing new.
"""

import datetime as dt
import logging

from sqlalchemy import select

from services.volunteer import requests
from services.volunteer.models import CarePlan, CareSubject, HelpRequest
from shared.db import locking, serialize_on
from shared.errors import NotFound
from shared.paths import as_path

log = logging.getLogger(__name__)

CARE_KINDS = ("groceries", "check_in")
# Neutral wording: the volunteer learns the need, not the household's health status.
CARE_DETAILS = {
    "groceries": "Daily groceries for a household staying at home: contactless, leave them at the door and call.",
    "check_in": "Daily check-in: call or knock, ask how the household is and what it needs today.",
}
CARE_DUE_HOUR = {"groceries": 17, "check_in": 10}  # local time the help is wanted by
MIN_LEAD = dt.timedelta(hours=2)
DOOR_KNOCK_DETAILS = (
    "Door-knock check-in: someone in this household did not acknowledge an important notice; "
    "make sure they received it and are well."
)
SYSTEM = "system:volunteer"


def record_tag(session, resident_id, household_id, quarantined, at):
    """Remember a resident's quarantine tag as of ``at``; False when a newer state is already known.

    Serialised per household: two members tagged or released at once must each see the other's
    change, or the last release would think someone is still quarantined and care never stop.
    """
    serialize_on(session, "care", household_id)
    subject = session.scalar(locking(select(CareSubject).where(CareSubject.resident_id == resident_id), session))
    if subject is not None and subject.changed_at > at:
        return False
    if subject is None:
        session.add(
            CareSubject(resident_id=resident_id, household_id=household_id, quarantined=quarantined, changed_at=at)
        )
    else:
        subject.household_id, subject.quarantined, subject.changed_at = household_id, quarantined, at
    session.flush()
    return True


def household_quarantined(session, household_id):
    return (
        session.scalar(
            select(CareSubject.resident_id)
            .where(CareSubject.household_id == household_id, CareSubject.quarantined.is_(True))
            .limit(1)
        )
        is not None
    )


def start(uow, grid, notices, policy, household_id, now):
    """Start (or resume) daily care for the household and open today's requests."""
    session = uow.session
    plan = session.scalar(locking(select(CarePlan).where(CarePlan.household_id == household_id), session))
    if plan is None:
        household = grid.get_household(household_id=str(household_id))
        plan = CarePlan(
            household_id=household_id,
            unit_id=int(household["unit_id"]),
            unit_path=as_path(household["unit_path"]),
            address=household["address"],
            kinds=list(CARE_KINDS),
            active=True,
            started_at=now,
        )
        session.add(plan)
    elif not plan.active:
        plan.active, plan.started_at, plan.stopped_at = True, now, None
        if plan.address is None:  # dropped while stopped (services.volunteer.erasure): read it again
            plan.address = grid.get_household(household_id=str(household_id))["address"]
    session.flush()
    return plan, open_today(uow, grid, notices, policy, plan, now)


# Neutral on purpose: the reason reaches volunteers (the request's note) and the event stream.
STOP_REASON = "no longer needed"


def stop(uow, household_id, now, reason=STOP_REASON):
    """Stop the household's daily care and cancel its requests not yet done; returns them."""
    session = uow.session
    plan = session.scalar(locking(select(CarePlan).where(CarePlan.household_id == household_id), session))
    if plan is None or not plan.active:
        return []
    plan.active, plan.stopped_at = False, now
    return requests.cancel_requests(
        uow,
        select(HelpRequest).where(
            HelpRequest.household_id == household_id, HelpRequest.origin.like(f"care:{household_id}:%")
        ),
        reason,
    )


def _care_origin(household_id, kind, day):
    return f"care:{household_id}:{kind}:{day.isoformat()}"


def _needed_by(kind, day, policy, now):
    wanted = dt.datetime.combine(day, dt.time(CARE_DUE_HOUR[kind]), tzinfo=policy.zone).astimezone(dt.UTC)
    return max(wanted, now + MIN_LEAD)


def open_today(uow, grid, notices, policy, plan, now):
    """Open today's (local day) requests of an active plan that are not open yet; returns the new ones."""
    day = now.astimezone(policy.zone).date()
    opened = []
    for kind in plan.kinds:
        request, created = requests.open_request(
            uow,
            grid,
            notices,
            policy,
            _care_origin(plan.household_id, kind, day),
            created_by=SYSTEM,
            unit_id=plan.unit_id,
            unit_path=plan.unit_path,
            kind=kind,
            details=CARE_DETAILS[kind],
            urgency="high",
            needed_by=_needed_by(kind, day, policy, now),
            household_id=plan.household_id,
            resident_id=None,
            address=plan.address,
            search_floor=policy.care_floor,
        )
        if created:
            opened.append(request)
    return opened


def due_households(session, policy, now, limit=1000):
    """The daily recurrence, first step: households (at most ``limit``, by id) whose active plan is
    still missing some of today's (local day) requests."""
    day = now.astimezone(policy.zone).date()
    plans = session.scalars(select(CarePlan).where(CarePlan.active.is_(True)).order_by(CarePlan.household_id)).all()
    wanted = {_care_origin(p.household_id, k, day): p for p in plans for k in p.kinds}
    have = set()
    origins = list(wanted)
    for start_at in range(0, len(origins), 1000):
        have.update(
            session.scalars(
                select(HelpRequest.origin).where(HelpRequest.origin.in_(origins[start_at : start_at + 1000]))
            )
        )
    due: dict[int, None] = {}  # household ids in plan order, once each
    for origin, plan in wanted.items():
        if origin not in have:
            due.setdefault(plan.household_id)
    return list(due)[:limit]


def open_due(uow, grid, notices, policy, household_id, now):
    """The daily recurrence, one step: today's missing requests of one household from
    ``due_households``; the caller commits each household on its own, so one slow match holds no
    long transaction and a restart loses nothing (what was opened has its origin; the rest follows).

    The plan is claimed again here: one stopped since ``due_households`` read it is skipped, and
    another replica's timer working on the same household passes it by."""
    session = uow.session
    plan = session.scalar(
        locking(
            select(CarePlan).where(CarePlan.household_id == household_id, CarePlan.active.is_(True)),
            session,
            skip_locked=True,
        )
    )
    if plan is None:
        return []
    return open_today(uow, grid, notices, policy, plan, now)


def door_knocks(uow, grid, notices, policy, notice_id, residents, now):
    """One check_in request per household with a member who did not acknowledge notice ``notice_id``."""
    session = uow.session
    household_ids = sorted({int(r["household_id"]) for r in residents})
    origins = {h: f"unack:notice/{notice_id}:household/{h}" for h in household_ids}
    done = set(session.scalars(select(HelpRequest.origin).where(HelpRequest.origin.in_(list(origins.values())))))
    todo = [h for h in household_ids if origins[h] not in done]
    # Ask the grid about every household at once, before any offer goes out, then open the
    # requests one by one (a grid failure here retries the event without having notified anyone).
    pending = {h: grid.get_household_async(household_id=str(h)) for h in todo}
    households = {}
    for household_id in todo:
        try:
            households[household_id] = pending[household_id].result()
        except NotFound:
            log.warning("household %s from notice %s is gone: no door-knock", household_id, notice_id)
    opened = []
    for household_id, household in households.items():
        request, created = requests.open_request(
            uow,
            grid,
            notices,
            policy,
            origins[household_id],
            created_by=SYSTEM,
            unit_id=int(household["unit_id"]),
            unit_path=as_path(household["unit_path"]),
            kind="check_in",
            details=DOOR_KNOCK_DETAILS,
            urgency="high",
            needed_by=now + policy.door_knock_within,
            household_id=household_id,
            resident_id=None,
            address=household["address"],
            search_floor=None,
        )
        if created:
            opened.append(request)
    return opened
