"""Duty posts (先锋岗) and their shifts: sign-ups without overlaps or overfilling, check-in and
check-out with hours from the actual times, coverage gaps, and understaffed warnings."""

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from services.volunteer.models import Post, Shift, Signup
from services.volunteer.people import is_self, reachable_volunteer
from shared.db import fetch, locking, serialize_on, utcnow
from shared.errors import Conflict, ValidationError
from shared.paths import in_subtree, path_ids


def create_post(uow, caller, grid, unit_id, name, location):
    path = grid.unit_path(unit_id, field="unit_id")
    caller.require_reach(path_ids(path), "unit")
    post = Post(unit_id=unit_id, unit_path=path, name=name, location=location)
    uow.session.add(post)
    uow.session.flush()
    return post


def add_shift(uow, caller, post_id, starts_at, ends_at, needed):
    post = fetch(uow.session, Post, post_id, "post")
    caller.require_reach(path_ids(post.unit_path), "post")
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": ["Must be after starts_at."]})
    shift = Shift(
        post_id=post.id,
        unit_path=post.unit_path,
        starts_at=starts_at,
        ends_at=ends_at,
        needed=needed,
        understaffed_reported=False,
    )
    uow.session.add(shift)
    uow.session.flush()
    return shift


def signed_count(session, shift_id):
    return session.scalar(
        select(func.count()).select_from(Signup).where(Signup.shift_id == shift_id, Signup.status == "signed")
    )


def _shift_for(session, caller, shift_id, volunteer, *, lock=False):
    """The shift, for a volunteer acting for themselves anywhere in the district; a staff member
    acting for someone else acts in a unit: the shift's post must be in their scope as well."""
    shift = fetch(session, Shift, shift_id, "shift", lock=lock)
    if not is_self(caller, volunteer.id):
        caller.require_reach(path_ids(shift.unit_path), "shift")
    return shift


def sign_up(uow, caller, shift_id, volunteer_id):
    session = uow.session
    volunteer = reachable_volunteer(session, caller, volunteer_id)
    shift = _shift_for(session, caller, shift_id, volunteer, lock=True)  # serialises sign-ups for this shift
    serialize_on(session, "volunteer.shifts", volunteer.id)  # and this volunteer's own sign-ups
    if shift.ends_at <= utcnow():
        raise Conflict(f"shift {shift.id} is over")
    existing = session.get(Signup, (shift.id, volunteer.id))
    if existing is not None and existing.status == "signed":
        raise Conflict("already signed up for this shift")
    if signed_count(session, shift.id) >= shift.needed:
        raise Conflict(f"shift {shift.id} is full")
    overlapping = session.scalar(
        select(Shift.id)
        .join(Signup, Signup.shift_id == Shift.id)
        .where(
            Signup.volunteer_id == volunteer.id,
            Signup.status == "signed",
            Shift.starts_at < shift.ends_at,
            Shift.ends_at > shift.starts_at,
        )
        .limit(1)
    )
    if overlapping is not None:
        raise Conflict("overlaps another shift the volunteer already holds")  # not which: it may be out of scope
    signup = existing or Signup(shift_id=shift.id, volunteer_id=volunteer.id)
    signup.status, signup.signed_at = "signed", utcnow()
    session.add(signup)
    session.flush()
    return signup


def _signup(session, caller, shift_id, volunteer_id):
    volunteer = reachable_volunteer(session, caller, volunteer_id)
    _shift_for(session, caller, shift_id, volunteer)
    signup = session.get(Signup, (shift_id, volunteer_id))
    if signup is None or signup.status != "signed":
        raise Conflict("not signed up for this shift")
    return signup


def withdraw(uow, caller, shift_id, volunteer_id):
    signup = _signup(uow.session, caller, shift_id, volunteer_id)
    if signup.checked_in_at is not None:
        raise Conflict("already checked in")
    signup.status = "withdrawn"
    return signup


def check_in(uow, caller, shift_id, volunteer_id):
    session = uow.session
    signup = _signup(session, caller, shift_id, volunteer_id)
    shift = session.get(Shift, shift_id)
    now = utcnow()
    if not shift.starts_at - dt.timedelta(minutes=30) <= now <= shift.ends_at:
        raise Conflict("check-in opens 30 minutes before the shift and closes at its end")
    if signup.checked_in_at is not None:
        raise Conflict("already checked in")
    signup.checked_in_at = now
    return signup


def check_out(uow, caller, shift_id, volunteer_id):
    signup = _signup(uow.session, caller, shift_id, volunteer_id)
    if signup.checked_in_at is None:
        raise Conflict("not checked in")
    if signup.checked_out_at is not None:
        raise Conflict("already checked out")
    signup.checked_out_at = utcnow()
    signup.hours = (signup.checked_out_at - signup.checked_in_at).total_seconds() / 3600
    return signup


@dataclass(frozen=True)
class ShiftGap:
    """A shift with fewer volunteers signed up than it needs."""

    shift_id: int
    post_id: int
    post: str  # the duty post's name
    starts_at: dt.datetime
    ends_at: dt.datetime
    needed: int
    signed: int

    @property
    def missing(self):
        return self.needed - self.signed


def coverage(session, caller, grid, zone, under, date):
    """Shifts on ``date`` (local) under the unit with fewer volunteers than needed."""
    path = grid.unit_path(under, field="under")
    caller.require_reach(path_ids(path))
    start = dt.datetime.combine(date, dt.time(0), tzinfo=zone)
    signed = (
        select(Signup.shift_id, func.count().label("signed"))
        .where(Signup.status == "signed")
        .group_by(Signup.shift_id)
        .subquery()
    )
    rows = session.execute(
        select(Shift, Post.name, func.coalesce(signed.c.signed, 0))
        .join(Post, Post.id == Shift.post_id)
        .outerjoin(signed, signed.c.shift_id == Shift.id)
        .where(
            in_subtree(Shift.unit_path, path), Shift.starts_at >= start, Shift.starts_at < start + dt.timedelta(days=1)
        )
        .order_by(Shift.starts_at, Shift.id)
    ).all()
    return [
        ShiftGap(shift.id, shift.post_id, name, shift.starts_at, shift.ends_at, shift.needed, count)
        for shift, name, count in rows
        if count < shift.needed
    ]


def report_understaffed(uow, lead, now):
    """shift_understaffed for shifts starting within ``lead`` that are still short (once each)."""
    session = uow.session
    query = (
        select(Shift)
        .where(Shift.understaffed_reported.is_(False), Shift.starts_at > now, Shift.starts_at <= now + lead)
        .limit(100)
    )
    reported = 0
    for shift in session.scalars(locking(query, session, skip_locked=True)).all():
        count = signed_count(session, shift.id)
        if count < shift.needed:
            uow.emit(
                "shift_understaffed",
                f"shift/{shift.id}",
                {
                    "shift_id": str(shift.id),
                    "post_id": str(shift.post_id),
                    "unit_id": str(path_ids(shift.unit_path)[-1]),
                    "unit_path": [str(i) for i in path_ids(shift.unit_path)],
                    "starts_at": shift.starts_at.isoformat(),
                    "needed": shift.needed,
                    "signed": count,
                },
            )
            reported += 1
        shift.understaffed_reported = True
    return reported
