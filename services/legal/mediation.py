"""Mediation cases (司法调解 + 社会调解): opened for residents in dispute, given judicial (lawyer)
or social (community) mediators free of conflicts of interest, closed with an outcome."""

import logging
from dataclasses import dataclass

from sqlalchemy import select

from services.legal.bookings import sensitive_data_read
from services.legal.directory import staff_reaches
from services.legal.erasure import ERASED
from services.legal.models import FACTS, CaseMediator, Lawyer, MediationCase, MediationSession
from services.legal.views import RowView
from shared import grid_facts
from shared.db import fetch, paged, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from shared.paths import in_subtree, path_ids
from shared.pii import mask_phone

log = logging.getLogger(__name__)
# Grid incidents are not sub-categorised; a dispute raised at a grid is most often between neighbours.
INCIDENT_CASE_CATEGORY = "neighbour"


def _under(unit_id, unit_path):
    """True if a unit path (ids, district first, as the grid returns them) is in ``unit_id``'s subtree."""
    return str(unit_id) in {str(i) for i in unit_path}


def _check_incident(caller, grid, unit_id, incident_id):
    """The incident a caller links a case to: in the caller's scope, and inside the case's unit (whoever
    may close the case settles the incident)."""
    try:
        incident = grid.get_incident(incident_id=str(incident_id))
    except NotFound:
        raise ValidationError({"source_incident_id": [f"Unknown incident {incident_id}."]}) from None
    incident_path = path_ids(grid.unit_path(incident["unit_id"], "source_incident_id"))
    caller.require_reach(incident_path, "incident")
    if not _under(unit_id, incident_path):
        raise ValidationError({"source_incident_id": [f"Incident {incident_id} is not inside unit {unit_id}."]})


def open_mediation(uow, caller, grid, unit_id, category, party_resident_ids, description, source_incident_id):
    """A case opened by a caller: the unit, every party and the source incident in the caller's scope
    (checked before anything about them is said), the parties living inside the case's unit."""
    path = grid.unit_path(unit_id, "unit_id")
    caller.require_reach(path_ids(path), "unit")
    parties = grid.residents(sorted(set(party_resident_ids)), "party_resident_ids")
    for party in parties:
        caller.require_reach(party["unit_path"], "party")
    outside = [str(p["id"]) for p in parties if not _under(unit_id, p["unit_path"])]
    if outside:
        # whoever reaches the case reads its parties' names: they must reach every party too
        raise ValidationError({"party_resident_ids": [f"Not living inside unit {unit_id}: {', '.join(outside)}."]})
    if source_incident_id is not None:
        _check_incident(caller, grid, unit_id, source_incident_id)
    return _open(uow, caller, unit_id, path, category, parties, description, source_incident_id)


def _open(uow, caller, unit_id, path, category, parties, description, source_incident_id):
    if len(parties) < 2:
        raise ValidationError({"party_resident_ids": ["A dispute needs at least two different parties."]})
    case = MediationCase(
        unit_id=unit_id,
        unit_path=path,
        category=category,
        description=description,
        party_resident_ids=[int(p["id"]) for p in parties],
        party_household_ids=sorted({int(p["household_id"]) for p in parties}),
        source_incident_id=source_incident_id,
        status="open",
        opened_by=caller.sub,
        opened_at=utcnow(),
    )
    uow.session.add(case)
    uow.session.flush()
    uow.emit("mediation_opened", f"mediation/{case.id}", _event(case))
    return case


def open_from_incident(uow, caller, grid, incident_id, unit_id, party_resident_ids):
    """A dispute reported at the grid opens its mediation case (once per incident).

    Returns the case, or None when the dispute names fewer than two parties to mediate between.
    """
    existing = uow.session.scalar(select(MediationCase).where(MediationCase.source_incident_id == incident_id))
    if existing is not None:
        return existing
    if len(set(party_resident_ids)) < 2:
        log.warning("dispute incident %s names fewer than two parties: no mediation case opened", incident_id)
        return None
    description = grid.get_incident(incident_id=str(incident_id))["description"]
    path = grid.unit_path(unit_id, "unit_id")
    parties = grid.residents(sorted(set(party_resident_ids)), "party_resident_ids")
    # The grid refuses a party living outside the incident's unit (as open_mediation does); one named
    # anyway (an incident reported before it refused them) is left out: whoever reaches the case reads
    # its parties' names.
    inside = [p for p in parties if _under(unit_id, p["unit_path"])]
    if len(inside) < len(parties):
        log.warning(
            "dispute incident %s names %d parties outside its unit: left out of the case",
            incident_id,
            len(parties) - len(inside),
        )
    if len(inside) < 2:
        log.warning("dispute incident %s names fewer than two parties inside its unit: no case opened", incident_id)
        return None
    return _open(uow, caller, unit_id, path, INCIDENT_CASE_CATEGORY, inside, description, incident_id)


@dataclass(frozen=True)
class CaseDetail(RowView):
    """A case as a case worker reads it: its parties, its mediators (by kind, then id) and its sessions."""

    row: MediationCase
    parties: list[dict]
    mediators: list[CaseMediator]
    sessions: list[MediationSession]


def case_detail(uow, caller, grid_contacts, case_id):
    """The case with its parties' names and phones from the grid: read unmasked (``grid_contacts``, with
    the ``pii`` claim) only when the caller may contact the parties, else without the claim (the grid
    masks the phones and records no read in the parties' access logs). Each party whose phone is shown
    unmasked is told to the grid's access log (``sensitive_data_read``, one per party); an erased party
    is shown as erased, from the tombstone, without asking the grid."""
    session = uow.session
    case = reachable_case(session, caller, case_id)
    mediators = sorted(_mediators(session, case), key=lambda m: (m.kind, m.mediator_id))
    sessions = session.scalars(
        select(MediationSession).where(MediationSession.case_id == case.id).order_by(MediationSession.held_at)
    ).all()
    reveal = may_contact_parties(session, caller, case)
    erased = grid_facts.erased_among(session, FACTS, case.party_resident_ids)
    parties = parties_of(grid_contacts if reveal else grid_contacts.without_pii(), case, reveal, erased)
    if reveal:
        now, record = utcnow(), f"case/{case.id}"
        for party in parties:
            if party["phone"]:
                data = sensitive_data_read(party["resident_id"], caller, "case_party_phone", record, PHONE_PURPOSE, now)
                uow.emit("sensitive_data_read", record, data)
    return CaseDetail(case, parties, mediators, list(sessions))


PHONE_PURPOSE = "mediation: contacting the parties"


def may_contact_parties(session, caller, case):
    """Assigned mediators (and callers holding ``pii``) see the parties' phone numbers unmasked."""
    return caller.pii or _is_assigned(session, caller, case)


def parties_of(grid, case, reveal, erased=frozenset()):
    """The parties' names and phones (phones masked unless ``reveal``); never ID numbers or tags. A party
    in ``erased`` (ids the grid erased) is not asked about and shows nothing but ``[erased]``."""
    asked = [str(i) for i in case.party_resident_ids if int(i) not in erased]
    found = grid.get_residents(resident_ids=asked)["items"] if asked else []
    return [
        {
            "resident_id": p["id"],
            "household_id": p["household_id"],
            "name": p["name"],
            "phone": (p["phone"] if reveal else mask_phone(p["phone"])) if p.get("phone") else "",
        }
        for p in found
    ] + [{"resident_id": str(i), "household_id": None, "name": ERASED, "phone": ""} for i in sorted(erased)]


def _event(case, **extra):
    return {
        "case_id": str(case.id),
        "unit_id": str(case.unit_id),
        "unit_path": [str(i) for i in path_ids(case.unit_path)],
        "category": case.category,
        "status": case.status,
        "party_resident_ids": [str(i) for i in case.party_resident_ids],
        "source_incident_id": str(case.source_incident_id) if case.source_incident_id else None,
        **extra,
    }


def _mediators(session, case):
    return session.scalars(select(CaseMediator).where(CaseMediator.case_id == case.id)).all()


def mediator_ids(session, case):
    return {(m.kind, m.mediator_id) for m in _mediators(session, case)}


def _is_assigned(session, caller, case):
    assigned = mediator_ids(session, case)
    return (caller.has_role("mediator") and ("social", caller.sub) in assigned) or (
        caller.has_role("lawyer") and ("judicial", caller.sub) in assigned
    )


def reachable_case(session, caller, case_id, *, lock=False):
    case = fetch(session, MediationCase, case_id, "mediation case", lock=lock)
    if staff_reaches(caller, case.unit_path):
        return case
    if _is_assigned(session, caller, case):
        return case
    raise Forbidden("mediation case is outside the caller's reach")


def assign_mediator(uow, caller, grid, case_id, mediator_id, kind):
    session = uow.session
    case = reachable_case(session, caller, case_id, lock=True)
    if not caller.has_role("admin", "officer", "service"):
        raise Forbidden("officers assign mediators")
    if case.status == "closed":
        raise Conflict(f"case {case.id} is closed")
    if kind == "judicial":
        lawyer = fetch(session, Lawyer, mediator_id, "lawyer")
        resident_id = lawyer.resident_id  # a lawyer may also live in the district
    else:
        resident_id = mediator_id  # a community mediator is a resident
    if resident_id is not None:
        person = grid.resident(resident_id, "mediator_id")
        if kind == "social":
            # a community mediator is a resident the caller names: in the caller's scope, checked
            # before the conflict checks say anything about where they live
            caller.require_reach(person["unit_path"], "mediator")
        if int(person["id"]) in case.party_resident_ids:
            raise Conflict("the mediator is a party to the dispute")
        if int(person["household_id"]) in case.party_household_ids:
            raise Conflict("the mediator lives in a party's household")
    if (kind, str(mediator_id)) in mediator_ids(session, case):
        raise Conflict("already assigned")
    session.add(CaseMediator(case_id=case.id, mediator_id=str(mediator_id), kind=kind, assigned_at=utcnow()))
    if case.status == "open":
        case.status = "in_progress"
    session.flush()
    return case


def record_session(uow, caller, case_id, held_at, attendees, notes):
    session = uow.session
    case = reachable_case(session, caller, case_id)
    if case.status == "closed":
        raise Conflict(f"case {case.id} is closed")
    if held_at > utcnow():
        raise ValidationError({"held_at": ["A session is recorded after it is held."]})
    record = MediationSession(
        case_id=case.id, held_at=held_at, attendees=list(attendees), notes=notes, recorded_by=caller.sub
    )
    session.add(record)
    session.flush()
    return record


def close_mediation(uow, caller, case_id, outcome, agreement):
    case = reachable_case(uow.session, caller, case_id, lock=True)
    if case.status == "closed":
        raise Conflict(f"case {case.id} is already closed")
    case.status, case.outcome, case.agreement, case.closed_at = "closed", outcome, agreement, utcnow()
    uow.emit("mediation_closed", f"mediation/{case.id}", _event(case, outcome=outcome))
    return case


def list_cases(session, caller, grid, under, status, page, page_size):
    query = select(MediationCase)
    if under is None and not caller.unrestricted:
        # a mediator's or lawyer's token reaches no unit, whatever unit it names: they read their
        # cases one by one
        if caller.scope_unit is None or not caller.scope_unit.isdigit():
            raise Forbidden("token names no unit scope")
        under = int(caller.scope_unit)
    if under is not None:
        path = grid.unit_path(under, "under")
        caller.require_reach(path_ids(path))
        query = query.where(in_subtree(MediationCase.unit_path, path))
    if status is not None:
        query = query.where(MediationCase.status == status)
    return paged(session, query.order_by(MediationCase.id.desc()), page, page_size)
