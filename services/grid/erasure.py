"""Erasure of a resident (PIPL): two managers — one requests, another approves — then the grid
anonymises what it holds about the resident and emits ``resident_erased`` so every service does.

The ``erasure_requests`` row is the audit trail: who requested and why, who approved (or cancelled)
and when. It holds ids and the managers' reasons, no personal data of the resident: the approval
replaces the resident's name, phone and ID number in the reasons of their requests by ``[erased]``
(a manager may well have typed "Zhang Wei asked at the counter").

What the approval does, in the approver's transaction:

- the resident row stays (other tables and services refer to its id) but says nothing: name
  ``[erased]``, ID and phone numbers encryptions of the empty string, the ID number's blind index
  ``erased:<id>`` (unique, and no longer the hash of a number), birth date 1900-01-01, ``erased_at``;
- its tags are removed (``resident_untagged``, reason ``erased``), its released tags' records too,
  and ``tag_purged`` (reason ``erased``) is emitted once per tag either held;
- if no other resident (not erased) lives in its household, the household's address becomes
  ``[erased]`` and its screening visits' notes are cleared (``household_emptied``). The household
  row is locked (FOR UPDATE) before the resident's, as ``move_household`` and ``register_resident``
  lock it: the last two residents erased at once take turns, and the second sees the first erased;
- its own reports (incidents it reported): description ``[erased]``, location note and photo
  reference cleared, the reporter link cut, ``resident:<id>`` actors rewritten; it follows no report;
- its name, phone and ID number are replaced by ``[erased]`` wherever staff wrote them in free text
  (incident descriptions, resolutions, public notes and steps at its community and above, visit notes
  of its household, tag notes under its community);
- incidents keep the bare ids in ``party_resident_ids``: an id is no personal data once the row it
  names is anonymised.

- the remembered replies of idempotent writes (kept 24 h, encrypted) that name the resident, hold
  their name, phone or ID number, tell of a report they reported or followed (``report_problem``,
  ``confirm_resolution``, ``reopen_report`` replies by ``service_request_id``: their own description,
  location note, photo and reasons), or (household emptied) tell of their household
  (``register_household``, ``move_household``, any reply with its ``household_id``) are blanked at
  once (``shared.idempotency.forget_replies``): a retry of such a write is refused, not run again. A
  reply about one of those reports to another follower is blanked too (the reply does not say whose
  it is).

The access log keeps its rows about the resident (ids only): who read their data stays
accountable until the log's own retention ends.
"""

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import case, delete, func, or_, select, update

from services.grid import retention
from services.grid.models import (
    ErasureRequest,
    Household,
    Incident,
    IncidentStep,
    ReleasedTag,
    ReportFollower,
    Resident,
    ResidentTag,
    ScreeningVisit,
)
from services.grid.residents import ID_INDEX, tag_event
from services.grid.units import reachable_unit
from services.grid.vocabulary import ERASED
from shared import paths as tree
from shared.db import fetch, locking, utcnow
from shared.errors import Conflict
from shared.idempotency import forget_replies

ERASED_BIRTH_DATE = dt.date(1900, 1, 1)
# The reply's status for each state of a request.
STATUS_OUT = {"pending": "pending_approval", "done": "erased", "cancelled": "cancelled"}
MIN_SCRUB_LENGTH = {"name": 2, "number": 7}  # shorter values would rewrite unrelated text


@dataclass
class ErasureStep:
    """An erasure request as a reply shows it, with what this call did (``step``: requested, erased,
    cancelled, or ``unchanged`` for an answer repeated)."""

    request: ErasureRequest
    step: str
    purged: Counter | None = None  # (tag, reason): tags purged, counted by the entrypoint at commit

    def __getattr__(self, name):
        return getattr(self.request, name)

    @property
    def erasure_id(self):
        return self.request.id

    @property
    def status(self):
        return STATUS_OUT[self.request.status]


def _reachable_resident(session, caller, resident_id, with_household=False):
    """The resident, locked: erasures of one resident take turns. Forbidden for a caller out of reach
    before anything about the resident's state is said. ``with_household``: its household is locked
    first (the order ``move_household`` and ``register_resident`` take), so erasures in one household
    take turns too and each counts the others' erasures (``_empty_household``)."""
    if not with_household:
        resident = fetch(session, Resident, resident_id, "resident", lock=True)
        caller.require_reach(tree.path_ids(resident.unit_path), "resident")
        return resident
    found = fetch(session, Resident, resident_id, "resident")
    caller.require_reach(tree.path_ids(found.unit_path), "resident")
    session.execute(locking(select(Household.id).where(Household.id == found.household_id), session))
    # Read again under the lock: what the read above saw may have changed while this call waited.
    query = select(Resident).where(Resident.id == found.id).execution_options(populate_existing=True)
    return session.scalar(locking(query, session))


def erase_resident(uow, caller, vault, resident_id, reason, lifecycle=None):
    """The first manager's call files a pending request; another manager's call approves and carries
    it out. The requester calling again is a Conflict. An erased resident answers ``erased``."""
    session = uow.session
    resident = _reachable_resident(session, caller, resident_id, with_household=True)
    if resident.erased_at is not None:
        done = session.scalar(
            select(ErasureRequest)
            .where(ErasureRequest.resident_id == resident.id, ErasureRequest.status == "done")
            .order_by(ErasureRequest.id.desc())
            .limit(1)
        )
        return ErasureStep(done, "unchanged")
    pending = session.scalar(
        select(ErasureRequest).where(ErasureRequest.resident_id == resident.id, ErasureRequest.status == "pending")
    )
    now = utcnow()
    if pending is None:
        request = ErasureRequest(
            resident_id=resident.id, reason=reason, status="pending", requested_by=caller.sub, requested_at=now
        )
        session.add(request)
        session.flush()
        return ErasureStep(request, "requested")
    if pending.requested_by == caller.sub:
        raise Conflict(
            f"erasure request {pending.id} for resident {resident.id} was filed by this caller: "
            "another manager must approve it"
        )
    pending.status = "done"
    pending.approved_by, pending.approved_at, pending.approval_reason = caller.sub, now, reason
    emptied, purged = anonymise(uow, vault, resident, now)
    pending.household_emptied = emptied
    session.flush()
    uow.emit(
        "resident_erased",
        f"resident/{resident.id}",
        {
            **retention.resident_facts(resident),
            "household_emptied": emptied,
            "erasure_id": str(pending.id),
            "erased_at": now.isoformat(),
        },
    )
    return ErasureStep(pending, "erased", purged)


def cancel_erasure(uow, caller, erasure_id):
    """Withdraw a pending request: its requester or another manager who reaches the resident."""
    session = uow.session
    request = fetch(session, ErasureRequest, erasure_id, "erasure request", lock=True)
    _reachable_resident(session, caller, request.resident_id)
    if request.status != "pending":
        raise Conflict(
            f"erasure request {request.id} is {STATUS_OUT[request.status]}: only a pending one can be cancelled"
        )
    request.status, request.cancelled_by, request.cancelled_at = "cancelled", caller.sub, utcnow()
    session.flush()
    return ErasureStep(request, "cancelled")


def list_erasures(session, caller, under, status, page, page_size):
    """Erasure requests for residents under unit ``under``, newest first; ``status`` filters (pending,
    done, cancelled)."""
    root = reachable_unit(session, caller, under)
    query = (
        select(ErasureRequest)
        .join(Resident, Resident.id == ErasureRequest.resident_id)
        .where(tree.in_subtree(Resident.unit_path, root.path))
    )
    if status is not None:
        query = query.where(ErasureRequest.status == status)
    rows = session.scalars(
        query.order_by(ErasureRequest.id.desc()).offset((page - 1) * page_size).limit(page_size + 1)
    ).all()
    return [ErasureStep(row, "unchanged") for row in rows[:page_size]], len(rows) > page_size


def anonymise(uow, vault, resident, now):
    """Carry out the erasure of ``resident`` (see the module docstring); returns (household_emptied,
    Counter of (tag, "erased") purged)."""
    session = uow.session
    secrets = {
        "name": resident.name,
        "phone": vault.decrypt(resident.phone_enc, b"phone"),
        "id_number": vault.decrypt(resident.id_number_enc, ID_INDEX),
    }
    purged = _purge_tags(uow, resident, now)
    resident.name = ERASED
    resident.phone_enc = vault.encrypt("", b"phone")
    resident.id_number_enc = vault.encrypt("", ID_INDEX)
    resident.id_number_hash = f"erased:{resident.id}"
    resident.birth_date = ERASED_BIRTH_DATE
    resident.erased_at = now
    emptied = _empty_household(session, resident)
    reports = _reports_of(session, resident.id)  # before _forget_reports cuts the links
    _forget_reports(session, resident.id)
    _scrub_free_text(session, resident, emptied, secrets)
    session.flush()
    household = {resident.household_id} if emptied else set()
    forget_replies(
        session,
        uow.idempotency_model,
        vault,
        resident_ids=[resident.id],
        fields={"household_id": household, "service_request_id": reports},
        records={
            "register_resident": {resident.id},
            "register_household": household,
            "move_household": household,
        },
        needles=[value for value in secrets.values() if value and value != ERASED],
    )
    return emptied, purged


def _purge_tags(uow, resident, now):
    session = uow.session
    current = session.scalars(
        locking(select(ResidentTag).where(ResidentTag.resident_id == resident.id).order_by(ResidentTag.tag), session)
    ).all()
    # Locked as the purge locks them: a release the timer is purging right now is waited for, then gone.
    released = session.scalars(
        locking(select(ReleasedTag).where(ReleasedTag.resident_id == resident.id), session)
    ).all()
    released_at: dict = {}
    for row in released:
        released_at[row.tag] = max(released_at.get(row.tag, row.released_at), row.released_at)
        session.delete(row)
    for row in current:
        released_at[row.tag] = now
        session.delete(row)
        uow.emit("resident_untagged", f"resident/{resident.id}", {**tag_event(resident, row.tag), "reason": "erased"})
    purged: Counter = Counter()
    for tag in sorted(released_at):
        retention.tag_purged(uow, resident, tag, released_at[tag], "erased")
        purged[(tag, "erased")] += 1
    session.flush()
    return purged


def _empty_household(session, resident):
    """Blank the household's address when nobody (not erased) lives there any more. The household row
    is locked (by ``erase_resident`` already; again here, for any other caller) before the count: a
    concurrent erasure or registration in the household has committed, or waits for this one."""
    session.execute(locking(select(Household.id).where(Household.id == resident.household_id), session))
    others = session.scalar(
        select(func.count())
        .select_from(Resident)
        .where(
            Resident.household_id == resident.household_id,
            Resident.id != resident.id,
            Resident.erased_at.is_(None),
        )
    )
    if others:
        return False
    household = session.get(Household, resident.household_id)
    household.compound = household.building = household.entrance = household.room = ERASED
    session.execute(
        update(ScreeningVisit)
        .where(ScreeningVisit.household_id == household.id, ScreeningVisit.note.is_not(None))
        .values(note=None)
        .execution_options(synchronize_session=False)
    )
    return True


def _reports_of(session, resident_id):
    """Ids of the incidents the resident reported or follows (their replies tell of them)."""
    reported = select(Incident.id).where(Incident.reporter_resident_id == resident_id)
    followed = select(ReportFollower.incident_id).where(ReportFollower.resident_id == resident_id)
    return set(session.scalars(reported)) | set(session.scalars(followed))


def _forget_reports(session, resident_id):
    """The resident's own reports keep their status for staff, but no longer say who or what they wrote."""
    actor = f"resident:{resident_id}"
    erased_actor = f"resident:{ERASED}"
    session.execute(
        update(Incident)
        .where(Incident.reporter_resident_id == resident_id)
        .values(description=ERASED, location_note=None, photo_ref=None, reporter_resident_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Incident)
        .where(Incident.reported_by == actor)
        .values(reported_by=erased_actor)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(IncidentStep)
        .where(IncidentStep.actor == actor)
        .values(actor=erased_actor, note=case((IncidentStep.note.is_(None), None), else_=ERASED))
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(ReportFollower).where(ReportFollower.resident_id == resident_id))


def _scrub_free_text(session, resident, emptied, secrets):
    """Replace the resident's name, phone and ID number where staff typed them in free text."""
    values = [
        value
        for kind, value in secrets.items()
        if value and len(value) >= MIN_SCRUB_LENGTH["name" if kind == "name" else "number"] and value != ERASED
    ]
    if not values:
        return
    # The managers' reasons on the resident's erasure requests, this approval's included (in memory:
    # the reply shows them too).
    for request in session.scalars(select(ErasureRequest).where(ErasureRequest.resident_id == resident.id)):
        for attribute in ("reason", "approval_reason"):
            text = original = getattr(request, attribute)
            for value in values:
                text = text.replace(value, ERASED) if text else text
            if text != original:
                setattr(request, attribute, text)
    ids = tree.path_ids(resident.unit_path)
    community = tree.as_path(ids[:3])
    above = [tree.as_path(ids[:depth]) for depth in range(1, min(3, len(ids)))]
    near = or_(tree.in_subtree(Incident.unit_path, community), Incident.unit_path.in_(above))
    incidents = select(Incident.id).where(near)
    targets = [
        (Incident, Incident.description, near),
        (Incident, Incident.resolution, near),
        (Incident, Incident.status_notes, near),
        (Incident, Incident.location_note, near),
        (IncidentStep, IncidentStep.note, IncidentStep.incident_id.in_(incidents)),
        (ResidentTag, ResidentTag.note, tree.in_subtree(ResidentTag.unit_path, community)),
    ]
    if not emptied:  # an emptied household's visit notes are gone already
        targets.append((ScreeningVisit, ScreeningVisit.note, ScreeningVisit.household_id == resident.household_id))
    for model, column, where in targets:
        for value in values:
            session.execute(
                update(model)
                .where(where, column.contains(value, autoescape=True))
                .values({column.key: func.replace(column, value, ERASED)})
                .execution_options(synchronize_session=False)
            )
