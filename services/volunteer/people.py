"""Volunteers, their public pledges (亮牌践诺) and their hours."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from services.volunteer.models import Pledge, Signup, Volunteer
from shared.db import fetch, paged, utcnow
from shared.errors import Conflict, ValidationError
from shared.paths import in_subtree, path_ids

PHONE_CONTEXT = b"phone"


def is_self(caller, volunteer_id):
    return caller.has_role("volunteer") and caller.sub == str(volunteer_id)


def reachable_volunteer(session, caller, volunteer_id, *, lock=False):
    volunteer = fetch(session, Volunteer, volunteer_id, "volunteer", lock=lock)
    if not is_self(caller, volunteer.id):
        caller.require_reach(path_ids(volunteer.home_path), "volunteer")
    return volunteer


def register_volunteer(
    uow,
    caller,
    grid,
    vault,
    name,
    phone,
    home_unit_id,
    skills,
    availability,
    max_active_tasks,
    resident_id,
    party_member,
):
    session = uow.session
    path = grid.unit_path(home_unit_id, "home_unit_id")
    caller.require_reach(path_ids(path), "unit")
    household_id = None
    if resident_id is not None:
        household_id = int(linked_resident(caller, grid, resident_id, home_unit_id)["household_id"])
        if session.scalar(select(Volunteer.id).where(Volunteer.resident_id == resident_id)) is not None:
            raise Conflict(f"resident {resident_id} is already a volunteer")
    volunteer = Volunteer(
        name=name,
        phone_enc=vault.encrypt(phone, PHONE_CONTEXT),
        home_unit_id=home_unit_id,
        home_path=path,
        skills=list(skills),
        availability=list(availability),
        max_active_tasks=max_active_tasks,
        resident_id=resident_id,
        household_id=household_id,
        party_member=party_member,
        active=True,
        created_at=utcnow(),
    )
    session.add(volunteer)
    session.flush()
    return volunteer


def linked_resident(caller, grid, resident_id, home_unit_id, *, check_scope=True):
    """The grid resident a volunteer is linked to: in the caller's scope (checked before anything
    else is said about them) and living inside the volunteer's home unit."""
    person = grid.resident(resident_id)
    if check_scope:
        caller.require_reach(person["unit_path"], "resident")
    if str(home_unit_id) not in {str(i) for i in person["unit_path"]}:
        raise ValidationError({"home_unit_id": [f"Resident {resident_id} does not live inside unit {home_unit_id}."]})
    return person


def update_volunteer(uow, caller, grid, vault, volunteer_id, **changes):
    session = uow.session
    volunteer = reachable_volunteer(session, caller, volunteer_id, lock=True)
    if "home_unit_id" in changes:
        path = grid.unit_path(changes["home_unit_id"], "home_unit_id")
        if not is_self(caller, volunteer.id):
            caller.require_reach(path_ids(path), "unit")
        if volunteer.resident_id is not None:
            # the volunteer's own resident record, already linked: its place is not the caller's to scope
            linked_resident(caller, grid, volunteer.resident_id, changes["home_unit_id"], check_scope=False)
        volunteer.home_unit_id, volunteer.home_path = changes.pop("home_unit_id"), path
    if "phone" in changes:
        volunteer.phone_enc = vault.encrypt(changes.pop("phone"), PHONE_CONTEXT)
    for field, value in changes.items():
        setattr(volunteer, field, list(value) if isinstance(value, list) else value)
    session.flush()
    return volunteer


def set_active(uow, caller, volunteer_id, active):
    volunteer = reachable_volunteer(uow.session, caller, volunteer_id, lock=True)
    volunteer.active = active
    return volunteer


def list_volunteers(session, caller, grid, under, skill, page, page_size):
    path = grid.unit_path(under, field="under")
    caller.require_reach(path_ids(path))
    query = select(Volunteer).where(in_subtree(Volunteer.home_path, path))
    if skill:  # skills are a JSON list: filtered here, portable across databases
        rows = [v for v in session.scalars(query.order_by(Volunteer.id)) if skill in v.skills]
        start = (page - 1) * page_size
        return rows[start : start + page_size], len(rows) > start + page_size
    return paged(session, query.order_by(Volunteer.id), page, page_size)


def make_pledge(uow, caller, volunteer_id, text, due_on):
    volunteer = reachable_volunteer(uow.session, caller, volunteer_id)
    if due_on < utcnow().date():
        raise ValidationError({"due_on": ["Must not be in the past."]})
    pledge = Pledge(
        volunteer_id=volunteer.id,
        unit_path=volunteer.home_path,
        text=text,
        due_on=due_on,
        status="open",
        made_at=utcnow(),
    )
    uow.session.add(pledge)
    uow.session.flush()
    return pledge


def fulfil_pledge(uow, caller, pledge_id, note):
    pledge = fetch(uow.session, Pledge, pledge_id, "pledge", lock=True)
    reachable_volunteer(uow.session, caller, pledge.volunteer_id)
    if pledge.status == "fulfilled":
        raise Conflict(f"pledge {pledge.id} is already fulfilled")
    pledge.status, pledge.note, pledge.fulfilled_at = "fulfilled", note, utcnow()
    return pledge


@dataclass(frozen=True)
class UnitPledges:
    """Pledges made and fulfilled under one child unit."""

    unit_id: int
    pledges: int
    fulfilled: int

    @property
    def fulfilment_rate(self):
        return round(self.fulfilled / self.pledges, 3) if self.pledges else 0.0


@dataclass(frozen=True)
class PledgeBoard:
    items: list[Pledge]
    units: list[UnitPledges]


def list_pledges(session, grid, under, status):
    """Public commitments under a unit, with the fulfilment rate per child unit (pledges made at the
    unit itself count for it)."""
    path = grid.unit_path(under, field="under")
    depth = len(path_ids(path))
    query = select(Pledge).where(in_subtree(Pledge.unit_path, path))
    if status is not None:
        query = query.where(Pledge.status == status)
    pledges = session.scalars(query.order_by(Pledge.id)).all()
    totals: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])  # unit id: [made, fulfilled]
    for pledge in session.scalars(select(Pledge).where(in_subtree(Pledge.unit_path, path))):
        ids = path_ids(pledge.unit_path)
        unit = ids[depth] if len(ids) > depth else ids[-1]
        totals[unit][0] += 1
        totals[unit][1] += pledge.status == "fulfilled"
    units = [UnitPledges(unit, made, done) for unit, (made, done) in sorted(totals.items())]
    return PledgeBoard(list(pledges), units)


@dataclass(frozen=True)
class VolunteerHours:
    volunteer_id: int
    hours: float
    shifts: int
    since: dt.datetime | None


def hours(session, caller, volunteer_id, since):
    """The volunteer's checked-out shifts and their hours, since ``since`` if given."""
    volunteer = reachable_volunteer(session, caller, volunteer_id)
    query = select(func.coalesce(func.sum(Signup.hours), 0), func.count()).where(
        Signup.volunteer_id == volunteer.id, Signup.checked_out_at.is_not(None)
    )
    if since is not None:
        query = query.where(Signup.checked_out_at >= since)
    total, shifts = session.execute(query).one()
    return VolunteerHours(volunteer.id, round(float(total), 2), shifts, since)
