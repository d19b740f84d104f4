"""Help requests, matched to nearby volunteers one offer (or a few) at a time."""

import datetime as dt
import logging
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select, update

from services.volunteer import matching
from services.volunteer.models import CarePlan, HelpRequest, Offer, Volunteer
from services.volunteer.people import is_self, reachable_volunteer
from services.volunteer.vocabulary import ACTIVE_TASK_STATUSES, STAFF_ROLES
from shared.db import fetch, locking, paged, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from shared.paths import in_subtree, path_ids

log = logging.getLogger(__name__)
QUARANTINE_CHECK_BATCH = 20


class Policy:
    def __init__(self, config):
        self.offer_timeout = dt.timedelta(seconds=float(config.get("OFFER_TIMEOUT_SECONDS", 600)))
        self.fanout = int(config.get("OFFER_FANOUT", 1))
        self.recent_days = int(config.get("FAIRNESS_DAYS", 30))
        self.zone = ZoneInfo(config.get("TIMEZONE") or "Asia/Shanghai")
        # Quarantine care is matched within the household's own grid: path depth 4 is the large grid.
        self.care_floor = int(config.get("CARE_SEARCH_FLOOR", 4))
        self.door_knock_within = dt.timedelta(hours=float(config.get("DOOR_KNOCK_WITHIN_HOURS", 12)))


def _event(request, **extra):
    return {
        "request_id": str(request.id),
        "unit_id": str(request.unit_id),
        "unit_path": [str(i) for i in path_ids(request.unit_path)],
        "kind": request.kind,
        "urgency": request.urgency,
        "status": request.status,
        "household_id": str(request.household_id) if request.household_id else None,
        "volunteer_id": str(request.volunteer_id) if request.volunteer_id else None,
        **extra,
    }


def create_request(
    uow, caller, grid, notices, policy, unit_id, kind, details, urgency, needed_by, household_id, resident_id
):
    """A request at ``unit_id`` for a resident and/or a household: a resident asks for themselves and
    their own household; staff and services for residents and households in their scope. Either way
    both live inside ``unit_id``; every id is checked before anything about it is said."""
    path = grid.unit_path(unit_id, "unit_id")
    for_self = caller.has_role("resident") and resident_id is not None and caller.sub == str(resident_id)
    if not for_self:
        if not caller.has_role(*STAFF_ROLES):
            raise Forbidden("residents ask for help for themselves")
        caller.require_reach(path_ids(path), "unit")
    person = None
    if resident_id is not None:
        person = grid.resident(resident_id)
        if not for_self:
            caller.require_reach(person["unit_path"], "resident")
    home = int(person["household_id"]) if person is not None else None
    if for_self and household_id not in (None, home):
        raise Forbidden("residents ask for help for their own household")
    household = None
    if household_id is not None or home is not None:
        household = _household(grid, household_id or home)
        if not for_self:
            caller.require_reach(household["unit_path"], "household")
    for field, where in (("resident_id", person), ("household_id", household)):
        if where is not None and str(unit_id) not in {str(i) for i in where["unit_path"]}:
            raise ValidationError({field: [f"Does not live inside unit {unit_id}."]})
    if household_id is None:
        household_id = home  # a resident's request is their household's
    elif home is not None and household_id != home:
        raise ValidationError({"resident_id": [f"Does not live in household {household_id}."]})
    address = household["address"] if household is not None else None
    request = HelpRequest(
        unit_id=unit_id,
        unit_path=path,
        kind=kind,
        details=details,
        urgency=urgency,
        needed_by=needed_by,
        household_id=household_id,
        resident_id=resident_id,
        status="open",
        address=address,
        created_by=caller.sub,
        created_at=utcnow(),
    )
    return _submit(uow, grid, notices, policy, request)


def _household(grid, household_id):
    try:
        return grid.get_household(household_id=str(household_id))
    except NotFound:
        raise ValidationError({"household_id": [f"Unknown household {household_id}."]}) from None


def staff_reaches(caller, request):
    """Staff and services act on (and see the whole of) a request in their scope; any other role a
    caller also holds grants only its own (the volunteer's, the requester's view)."""
    return caller.has_role(*STAFF_ROLES) and caller.reaches(path_ids(request.unit_path))


def _submit(uow, grid, notices, policy, request):
    uow.session.add(request)
    uow.session.flush()
    uow.emit("request_created", f"request/{request.id}", _event(request))
    offer_next(uow, grid, notices, policy, request, new=True)
    return request


def open_request(uow, grid, notices, policy, origin, *, created_by, **fields):
    """A request a service opens by itself, once per ``origin``: returns (request, created)."""
    existing = uow.session.scalar(select(HelpRequest).where(HelpRequest.origin == origin))
    if existing is not None:
        return existing, False
    request = HelpRequest(origin=origin, status="open", created_by=created_by, created_at=utcnow(), **fields)
    return _submit(uow, grid, notices, policy, request), True


OPEN_STATUSES = ("open", "offered", "matched", "unmatched")


def cancel_requests(uow, query, reason):
    """Cancel the not-yet-done requests ``query`` selects, withdrawing their offers; returns them."""
    session = uow.session
    cancelled = session.scalars(locking(query.where(HelpRequest.status.in_(OPEN_STATUSES)), session)).all()
    now = utcnow()
    for request in cancelled:
        request.status, request.note = "cancelled", reason
        session.execute(
            update(Offer)
            .where(Offer.request_id == request.id, Offer.status == "pending")
            .values(status="withdrawn", responded_at=now)
        )
        uow.emit("request_cancelled", f"request/{request.id}", _event(request, reason=reason))
    return cancelled


def isolated_households(session):
    """Households under quarantine care (known from the grid's events): they send nobody out. They
    are few, so all are read once rather than an IN list as long as the candidates."""
    return set(session.scalars(select(CarePlan.household_id).where(CarePlan.active.is_(True))))


def _candidates(session, scope, now, policy, isolated=None):
    rows = session.execute(
        select(
            Volunteer.id,
            Volunteer.home_path,
            Volunteer.skills,
            Volunteer.availability,
            Volunteer.max_active_tasks,
            Volunteer.household_id,
            Volunteer.resident_id,
        ).where(Volunteer.active.is_(True), in_subtree(Volunteer.home_path, scope))
    ).all()
    if not rows:
        return [], {}
    ids = [row.id for row in rows]
    # Current load and recent tasks in one statement (a round trip saved on the hot path).
    is_active = HelpRequest.status.in_(ACTIVE_TASK_STATUSES)
    is_recent = HelpRequest.matched_at >= now - dt.timedelta(days=policy.recent_days)
    active, recent = {}, {}
    for volunteer_id, current, lately in session.execute(
        select(
            HelpRequest.volunteer_id,
            func.count(case((is_active, 1))),
            func.count(case((is_recent, 1))),
        )
        .where(HelpRequest.volunteer_id.in_(ids), is_active | is_recent)
        .group_by(HelpRequest.volunteer_id)
    ):
        active[volunteer_id], recent[volunteer_id] = current, lately
    if isolated is None:
        isolated = isolated_households(session)
    candidates = [
        matching.Candidate(
            row.id,
            row.home_path,
            row.skills,
            row.availability,
            row.max_active_tasks,
            row.household_id,
            active.get(row.id, 0),
            recent.get(row.id, 0),
            quarantined=row.household_id in isolated,
        )
        for row in rows
    ]
    return candidates, {row.id: row.resident_id for row in rows}


def _drop_quarantined(grid, ranked, residents, wanted):
    """The first ``wanted`` of ``ranked`` not tagged quarantined in the grid (asked in small batches)."""
    chosen = []
    for start in range(0, len(ranked), QUARANTINE_CHECK_BATCH):
        batch = ranked[start : start + QUARANTINE_CHECK_BATCH]
        linked = [str(residents[c.volunteer_id]) for c in batch if residents.get(c.volunteer_id)]
        quarantined = set()
        if linked:
            for item in grid.get_residents(resident_ids=linked)["items"]:
                if "quarantined" in item["tags"]:
                    quarantined.add(int(item["id"]))
        chosen += [c for c in batch if residents.get(c.volunteer_id) not in quarantined]
        if len(chosen) >= wanted:
            return chosen[:wanted]
    return chosen


def best_volunteers(session, grid, policy, request, now, wanted, *, new=False):
    """The best ``wanted`` eligible volunteers, searching the request's own small grid first, then wider.
    ``new``: the request was just created, so nobody was offered it yet (no query for that)."""
    offered = set() if new else set(session.scalars(select(Offer.volunteer_id).where(Offer.request_id == request.id)))
    isolated = isolated_households(session)  # once, not once per widening scope
    chosen: list[matching.Candidate] = []
    residents: dict[int, int | None] = {}  # volunteer id: resident id
    for scope in matching.search_scopes(request.unit_path, request.search_floor):
        candidates, found = _candidates(session, scope, now, policy, isolated)
        residents.update(found)
        taken = offered | {c.volunteer_id for c in chosen}
        ranked = matching.rank(
            candidates, request.unit_path, request.kind, request.needed_by, policy.zone, request.household_id, taken
        )
        chosen += _drop_quarantined(grid, ranked, residents, wanted - len(chosen))
        if len(chosen) >= wanted:
            break
    return chosen, residents


def offer_next(uow, grid, notices, policy, request, *, new=False):
    """Offer the request to the next best volunteer(s); unmatched when nobody is left."""
    session = uow.session
    now = utcnow()
    chosen, residents = best_volunteers(session, grid, policy, request, now, policy.fanout, new=new)
    if not chosen:
        request.status = "unmatched"
        uow.emit("request_unmatched", f"request/{request.id}", _event(request))
        return []
    offers = []
    for candidate in chosen:
        offer = Offer(
            request_id=request.id,
            volunteer_id=candidate.volunteer_id,
            status="pending",
            offered_at=now,
            expires_at=now + policy.offer_timeout,
        )
        session.add(offer)
        offers.append(offer)
    request.status = "offered"
    session.flush()
    respond_by = (now + policy.offer_timeout).astimezone(policy.zone).strftime("%H:%M")
    for offer in offers:
        resident_id = residents.get(offer.volunteer_id)
        if resident_id is None:
            continue  # a volunteer who is not a resident sees the offer in my_tasks only
        # Sent after this transaction commits, once per offer (shared.commands).
        notices.send_direct(
            uow,
            origin=f"volunteer:offer/{offer.id}",
            resident_ids=[str(resident_id)],
            template="volunteer_offer",
            params={"kind": request.kind, "respond_by": respond_by},
            channels=["app_push", "sms"],
        )
    return offers


class OfferAnswer(NamedTuple):
    offer: Offer
    request: HelpRequest  # as it stands after the answer


def respond_offer(uow, caller, grid, notices, policy, offer_id, accept):
    """The offered volunteer (or an admin reaching the request) accepts or declines; a decline offers
    the request on once no offer of it is pending, an accept matches it and withdraws the others."""
    session = uow.session
    offer = fetch(session, Offer, offer_id, "offer")
    if not is_self(caller, offer.volunteer_id):
        if not caller.has_role("admin"):
            raise Forbidden("only the volunteer offered answers the offer")
        # an admin with a unit answers only for requests in it
        request_path = session.scalar(select(HelpRequest.unit_path).where(HelpRequest.id == offer.request_id))
        caller.require_reach(path_ids(request_path), "request")
    request = fetch(session, HelpRequest, offer.request_id, "request", lock=True)  # one answer at a time
    session.refresh(offer)
    now = utcnow()
    if offer.status != "pending" or offer.expires_at <= now:
        raise Conflict(f"offer {offer.id} is no longer open")
    offer.responded_at = now
    if not accept:
        offer.status = "declined"
        if not _pending_offers(session, request.id):
            offer_next(uow, grid, notices, policy, request)
        return OfferAnswer(offer, request)
    if request.status != "offered":
        raise Conflict(f"request {request.id} is already {request.status}")
    offer.status = "accepted"
    request.status, request.volunteer_id, request.matched_at = "matched", offer.volunteer_id, now
    session.execute(
        update(Offer)
        .where(Offer.request_id == request.id, Offer.status == "pending")
        .values(status="withdrawn", responded_at=now)
    )
    uow.emit("request_matched", f"request/{request.id}", _event(request))
    return OfferAnswer(offer, request)


def _pending_offers(session, request_id):
    return session.scalar(
        select(func.count()).select_from(Offer).where(Offer.request_id == request_id, Offer.status == "pending")
    )


def expire_offers(uow, grid, notices, policy, now):
    """Offers past their timeout expire; their requests move on to the next candidate."""
    session = uow.session
    query = (
        select(HelpRequest)
        .where(
            HelpRequest.status == "offered",
            HelpRequest.id.in_(select(Offer.request_id).where(Offer.status == "pending", Offer.expires_at <= now)),
        )
        .limit(50)
    )
    moved = 0
    for request in session.scalars(locking(query, session, skip_locked=True)).all():
        session.execute(
            update(Offer)
            .where(Offer.request_id == request.id, Offer.status == "pending", Offer.expires_at <= now)
            .values(status="expired")
        )
        if not _pending_offers(session, request.id):
            offer_next(uow, grid, notices, policy, request)
        moved += 1
    return moved


def reachable_request(session, caller, request_id, *, lock=False):
    request = fetch(session, HelpRequest, request_id, "request", lock=lock)
    if caller.has_role("volunteer") and request.volunteer_id is not None and is_self(caller, request.volunteer_id):
        return request
    caller_volunteer = int(caller.sub) if caller.sub.isdigit() else -1
    if caller.has_role("volunteer") and session.scalar(
        select(Offer.id).where(Offer.request_id == request.id, Offer.volunteer_id == caller_volunteer)
    ):
        return request
    if caller.has_role("resident") and request.resident_id is not None and caller.sub == str(request.resident_id):
        return request
    caller.require_reach(path_ids(request.unit_path), "request")
    return request


def complete_request(uow, caller, request_id, note):
    request = reachable_request(uow.session, caller, request_id, lock=True)
    if not (is_self(caller, request.volunteer_id or -1) or staff_reaches(caller, request)):
        raise Forbidden("only the assigned volunteer (or staff in scope) completes the request")
    if request.status != "matched":
        raise Conflict(f"request {request.id} is {request.status}")
    request.status, request.note, request.completed_at = "completed", note, utcnow()
    uow.emit("request_completed", f"request/{request.id}", _event(request))
    return request


def confirm_request(uow, caller, request_id, rating):
    request = reachable_request(uow.session, caller, request_id, lock=True)
    requester = caller.has_role("resident") and caller.sub == str(request.resident_id)
    if not (requester or staff_reaches(caller, request)):
        raise Forbidden("the requester (or staff in scope) confirms, not the volunteer")
    if request.status != "completed":
        raise Conflict(f"request {request.id} is {request.status}")
    request.status, request.rating = "confirmed", rating
    return request


def list_requests(session, caller, grid, under, status, page, page_size):
    path = grid.unit_path(under, "under")
    caller.require_reach(path_ids(path))
    query = select(HelpRequest).where(in_subtree(HelpRequest.unit_path, path))
    if status is not None:
        query = query.where(HelpRequest.status == status)
    return paged(session, query.order_by(HelpRequest.id.desc()), page, page_size)


@dataclass(frozen=True)
class Tasks:
    tasks: list[HelpRequest]
    offers: list[Offer]


def my_tasks(session, caller, volunteer_id):
    """The volunteer's tasks and pending offers: all of them for the volunteer; staff reaching the
    volunteer see only those whose request is in their scope too (a volunteer may help anywhere)."""
    reachable_volunteer(session, caller, volunteer_id)
    tasks = session.scalars(
        select(HelpRequest)
        .where(HelpRequest.volunteer_id == volunteer_id, HelpRequest.status == "matched")
        .order_by(HelpRequest.needed_by)
    ).all()
    offers = session.execute(
        select(Offer, HelpRequest.unit_path)
        .join(HelpRequest, HelpRequest.id == Offer.request_id)
        .where(Offer.volunteer_id == volunteer_id, Offer.status == "pending")
        .order_by(Offer.expires_at)
    ).all()
    if is_self(caller, volunteer_id):
        return Tasks(list(tasks), [offer for offer, _ in offers])
    return Tasks(
        [task for task in tasks if caller.reaches(path_ids(task.unit_path))],
        [offer for offer, path in offers if caller.reaches(path_ids(path))],
    )
