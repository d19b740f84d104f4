"""What legal does when the grid erases a resident (``resident_erased``), and legal holds.

On ``resident_erased`` (the read model's part is shared.grid_facts.resident_erased, in the same
transaction, with the tombstone that makes the resident unknown here from then on):

- the resident's consultations: ``topic`` and ``cancel_reason`` → ``[erased]``, the summary → NULL;
- mediation cases naming the resident as a party: ``description`` and ``agreement`` → ``[erased]``, and
  their sessions' ``notes`` and ``attendees`` (free-text names: which one was theirs is not known, so
  every one) → ``[erased]``;
- a lawyer registered as the resident: name → ``[erased]``, and that name, where it stands in other
  people's free text (consultations' ``topic`` and ``cancel_reason``, cases' ``description`` and
  ``agreement``, sessions' ``notes`` and ``attendees``, time off ``reason``) of records not under a legal
  hold, → ``[erased]``. Legal stores no party's name (it reads them from the grid): the event carries
  ids only, so another resident's name it does not hold cannot be scrubbed here (docs/personal-data.md);
- a consultation still booked is cancelled (its slot is given back; ``consultation_cancelled`` tells
  the lawyer), held or not.

Ids, statuses, outcomes and times stay (the registers' counts stay true). A record under a **legal hold**
is kept as it is and flagged instead: ``erasure_deferred`` is set and the erasure waits in
``deferred_erasures``; releasing the hold applies every erasure waiting on the record (PIPL art. 47 lets
a record be kept while a law requires it). Staff set and release holds (``set_legal_hold`` /
``release_legal_hold``, audited in ``legal_hold_log``). Held automatically, when an erasure reaches it: a
mediation case closed as ``referred_to_court`` and a consultation whose outcome is ``litigation`` (the
matter went to court) — unless a hold on that record was released before (staff decided then).

Every step is idempotent: a replay finds the record anonymised or already deferred and changes nothing.
Nothing here commits or logs personal data.
"""

from sqlalchemy import String, cast, func, select, true, update

from services.legal import bookings
from services.legal.directory import staff_reaches
from services.legal.models import (
    CaseMediator,
    Consultation,
    DeferredErasure,
    Lawyer,
    LegalHoldLog,
    MediationCase,
    MediationSession,
    TimeOff,
)
from shared.db import fetch, locking, utcnow
from shared.errors import Conflict, Forbidden
from shared.idempotency import forget_replies

ERASED = "[erased]"
SYSTEM = "system:legal"
# The outcomes that put a record under a hold by themselves when an erasure reaches it.
AUTO_HOLDS = {
    "consultation": ("litigation", "automatic: the consultation led to litigation"),
    "case": ("referred_to_court", "automatic: the case was referred to court"),
}
KINDS = {"consultation": (Consultation, "consultation"), "case": (MediationCase, "mediation case")}
MIN_NAME_LENGTH = 2  # as the grid's scrub: a shorter value would rewrite unrelated text


def record_key(kind, row_id):
    return f"{kind}/{row_id}"


def _held(row):
    return row.legal_hold_reason is not None


def _auto_hold(session, kind, row, now):
    """Hold ``row`` automatically if its outcome calls for it and no hold on it was ever released."""
    outcome, reason = AUTO_HOLDS[kind]
    if row.outcome != outcome:
        return False
    key = record_key(kind, row.id)
    released = session.scalar(
        select(LegalHoldLog.id).where(LegalHoldLog.record == key, LegalHoldLog.action == "release").limit(1)
    )
    if released is not None:
        return False
    row.legal_hold_reason, row.legal_hold_by, row.legal_hold_at = reason, SYSTEM, now
    session.add(LegalHoldLog(record=key, action="auto", reason=reason, actor=SYSTEM, actor_roles=[], at=now))
    return True


def _defer(session, kind, row, resident_id, erasure_id, now):
    key = record_key(kind, row.id)
    row.erasure_deferred = True
    if session.get(DeferredErasure, (key, resident_id)) is None:
        session.add(DeferredErasure(record=key, resident_id=resident_id, erasure_id=erasure_id, deferred_at=now))
        return 1
    return 0


def anonymise_consultation(session, consultation):
    """True when something was still there to erase."""
    before = (consultation.topic, consultation.summary_enc, consultation.cancel_reason)
    consultation.topic, consultation.summary_enc = ERASED, None
    if consultation.cancel_reason is not None:
        consultation.cancel_reason = ERASED
    return before != (consultation.topic, consultation.summary_enc, consultation.cancel_reason)


def anonymise_case(session, case):
    """The case's free text and its sessions' notes and attendees; {kind: rows changed}."""
    before = (case.description, case.agreement)
    case.description = ERASED
    if case.agreement is not None:
        case.agreement = ERASED
    sessions = 0
    for held in session.scalars(select(MediationSession).where(MediationSession.case_id == case.id)):
        attendees = [ERASED] * len(held.attendees)
        if held.notes != ERASED or held.attendees != attendees:
            held.notes, held.attendees = ERASED, attendees
            sessions += 1
    return {"mediation_cases": int(before != (case.description, case.agreement)), "mediation_sessions": sessions}


def cases_of(session, resident_id, lock=False):
    """The mediation cases naming the resident as a party (a text match narrows, the list decides)."""
    query = select(MediationCase).where(cast(MediationCase.party_resident_ids, String).like(f"%{resident_id}%"))
    rows = session.scalars(locking(query, session) if lock else query).all()
    return [case for case in rows if resident_id in {int(i) for i in case.party_resident_ids}]


def resident_erased(uow, resident_id, erasure_id, now=None):
    """Anonymise what legal holds about the resident, deferring held records; {kind: rows}."""
    session, now = uow.session, now or utcnow()
    done = {
        "consultations": 0,
        "cancelled": 0,
        "mediation_cases": 0,
        "mediation_sessions": 0,
        "lawyers": 0,
        "deferred": 0,
    }
    query = select(Consultation).where(Consultation.resident_id == resident_id)
    for consultation in session.scalars(locking(query, session)).all():
        if _held(consultation) or _auto_hold(session, "consultation", consultation, now):
            done["deferred"] += _defer(session, "consultation", consultation, resident_id, erasure_id, now)
        else:
            done["consultations"] += anonymise_consultation(session, consultation)
        if consultation.status == "booked":  # a slot kept for nobody: given back (the lawyer is told)
            consultation.status, consultation.updated_at = "cancelled", now
            if consultation.cancel_reason is None and not _held(consultation):
                consultation.cancel_reason = ERASED
            uow.emit("consultation_cancelled", f"consultation/{consultation.id}", bookings.event_of(consultation))
            done["cancelled"] += 1
    for case in cases_of(session, resident_id, lock=True):
        if _held(case) or _auto_hold(session, "case", case, now):
            done["deferred"] += _defer(session, "case", case, resident_id, erasure_id, now)
        else:
            for kind, rows in anonymise_case(session, case).items():
                done[kind] += rows
    for lawyer in session.scalars(select(Lawyer).where(Lawyer.resident_id == resident_id, Lawyer.name != ERASED)):
        _scrub_name(session, lawyer)
        lawyer.name = ERASED
        done["lawyers"] += 1
    session.flush()
    return done


def _scrub_name(session, lawyer):
    """The name of a lawyer who was the erased resident, replaced where staff typed it in free text of
    records not under a legal hold (a held record is kept as it is)."""
    name = (lawyer.name or "").strip()
    if len(name) < MIN_NAME_LENGTH:
        return
    free = Consultation.legal_hold_reason.is_(None)
    open_case = MediationCase.legal_hold_reason.is_(None)
    cases = select(MediationCase.id).where(open_case)
    targets = [
        (Consultation, Consultation.topic, free),
        (Consultation, Consultation.cancel_reason, free),
        (MediationCase, MediationCase.description, open_case),
        (MediationCase, MediationCase.agreement, open_case),
        (MediationSession, MediationSession.notes, MediationSession.case_id.in_(cases)),
        (TimeOff, TimeOff.reason, true()),
    ]
    for model, column, where in targets:
        session.execute(
            update(model)
            .where(where, column.contains(name, autoescape=True))
            .values({column.key: func.replace(column, name, ERASED)})
            .execution_options(synchronize_session=False)
        )
    # Attendees (a list of names): in the sessions of the cases the lawyer mediated.
    mediated = select(CaseMediator.case_id).where(
        CaseMediator.kind == "judicial", CaseMediator.mediator_id == str(lawyer.id)
    )
    query = select(MediationSession).where(MediationSession.case_id.in_(mediated), MediationSession.case_id.in_(cases))
    for held in session.scalars(query):
        attendees = [a.replace(name, ERASED) if isinstance(a, str) else a for a in held.attendees]
        if attendees != held.attendees:
            held.attendees = attendees


# The write methods whose reply's ``id`` is a consultation's, or a mediation case's.
CONSULTATION_METHODS = ("book", "cancel", "reschedule", "mark_no_show", "complete")
CASE_METHODS = ("open_mediation", "assign_mediator", "close_mediation")


def forget_replies_of(uow, vault, resident_id):
    """Blank the remembered replies of idempotent writes (kept 24 h, encrypted, for retries) that told
    of the resident's consultations or cases (a session's attendees, a case's parties); how many. A held
    record keeps its row, not a copy of an old reply."""
    session = uow.session
    consultations = set(session.scalars(select(Consultation.id).where(Consultation.resident_id == resident_id)))
    cases = {case.id for case in cases_of(session, resident_id)}
    return forget_replies(
        session,
        uow.idempotency_model,
        vault,
        resident_ids=[resident_id],
        fields={"consultation_id": consultations, "case_id": cases},
        records={**dict.fromkeys(CONSULTATION_METHODS, consultations), **dict.fromkeys(CASE_METHODS, cases)},
    )


# ---- legal holds ------------------------------------------------------------------------------------


def _reachable(session, caller, kind, record_id):
    model, what = KINDS[kind]
    row = fetch(session, model, record_id, what, lock=True)
    path = row.station_path if kind == "consultation" else row.unit_path
    if not (caller.unrestricted or staff_reaches(caller, path)):
        raise Forbidden(f"{what} is outside the caller's reach")
    return row


def _log(session, caller, key, action, reason, now):
    session.add(
        LegalHoldLog(
            record=key, action=action, reason=reason, actor=caller.sub, actor_roles=sorted(caller.roles), at=now
        )
    )


def hold_state(session, kind, row):
    key = record_key(kind, row.id)
    waiting = session.scalars(select(DeferredErasure.erasure_id).where(DeferredErasure.record == key)).all()
    return {
        "record": kind,
        "record_id": row.id,
        "held": _held(row),
        "reason": row.legal_hold_reason,
        "held_by": row.legal_hold_by,
        "held_at": row.legal_hold_at,
        "erasure_deferred": bool(row.erasure_deferred),
        "deferred_erasure_ids": [i for i in waiting if i is not None],
    }


def set_legal_hold(uow, caller, record, record_id, reason):
    """Put a consultation or mediation case under a legal hold (or change the reason of its hold)."""
    session, now = uow.session, utcnow()
    row = _reachable(session, caller, record, record_id)
    row.legal_hold_reason, row.legal_hold_by, row.legal_hold_at = reason, caller.sub, now
    _log(session, caller, record_key(record, row.id), "set", reason, now)
    session.flush()
    return hold_state(session, record, row)


def release_legal_hold(uow, caller, record, record_id, reason):
    """Release a record's hold: every erasure deferred on it is applied now."""
    session, now = uow.session, utcnow()
    row = _reachable(session, caller, record, record_id)
    if not _held(row):
        raise Conflict(f"{KINDS[record][1]} {record_id} is not under a legal hold")
    row.legal_hold_reason, row.legal_hold_by, row.legal_hold_at = None, None, None
    key = record_key(record, row.id)
    _log(session, caller, key, "release", reason, now)
    waiting = session.scalars(select(DeferredErasure).where(DeferredErasure.record == key)).all()
    if waiting:
        if record == "consultation":
            anonymise_consultation(session, row)
        else:
            anonymise_case(session, row)
        for deferred in waiting:
            session.delete(deferred)
    row.erasure_deferred = False
    session.flush()
    return hold_state(session, record, row)
