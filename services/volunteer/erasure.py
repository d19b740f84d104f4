"""What volunteer does when the grid erases a resident (``resident_erased``) or purges one of their
health tags (``tag_purged``): the personal data it holds about them goes, ids and statuses stay.

On ``resident_erased`` (the read model's part is shared.grid_facts.resident_erased, in the same
transaction, which also stores the tombstone every later event and read-through checks):

- help requests made for the resident: ``details`` and ``note`` → ``[erased]``, ``address`` → NULL;
  when the erasure emptied the household, the same for every request of the household (those the
  service opened itself keep their neutral wording: it says nothing about anyone);
- their ``care_subjects`` row (their quarantine state) is deleted; the household's care plan loses its
  address when the household emptied, or when no one else in it is cared for (the plan stops if it was
  active: nobody is left to care for; a plan resumed later reads the address again);
- a volunteer registered as the resident: name → ``[erased]``, phone → empty, inactive (no offer goes to
  a person the grid no longer knows); their pledges' text → ``[erased]`` (the pledge board is public),
  notes dropped; and that name, where staff typed it in other people's free text (``details`` and
  ``note`` of the help requests in their home community or served by them, pledges of volunteers in
  that community), is replaced by ``[erased]``. The event carries ids only: a name volunteer does not
  hold (a resident who never volunteered) cannot be scrubbed here (docs/personal-data.md).

On ``tag_purged`` of ``quarantined`` (a released quarantine whose retention ended, or an erasure): the
resident's ``care_subjects`` row goes (unless a newer quarantine is recorded after ``released_at``), and a
stopped care plan whose household has no cared-for subject left loses its address.

The remembered replies of idempotent writes about those requests and that volunteer record (kept 24 h,
encrypted, for retries) are blanked too (``forget_replies_of``; shared.idempotency.forget_replies).

Every step is a no-op when replayed: each function reads what is left and changes only that. Nothing here
commits, logs no personal data, and returns counts by kind (``grassroots_volunteer_*`` counters).
"""

import datetime as dt

from sqlalchemy import func, null, or_, select, update

from services.volunteer import care
from services.volunteer.models import CarePlan, CareSubject, HelpRequest, Pledge, Volunteer
from shared import paths as tree
from shared.db import locking, serialize_on
from shared.idempotency import forget_replies

ERASED = "[erased]"
# The write methods whose reply's ``id`` is a help request's, or a volunteer's.
REQUEST_METHODS = ("create_request", "complete_request", "confirm_request")
VOLUNTEER_METHODS = ("register_volunteer", "update_volunteer", "set_active")
# The reason a plan stopped by an erasure gives (neutral: it reaches volunteers and the event stream).
ERASED_STOP_REASON = care.STOP_REASON
MIN_NAME_LENGTH = 2  # as the grid's scrub: a shorter value would rewrite unrelated text


def resident_erased(uow, resident_id, household_id, household_emptied, now):
    """Anonymise what volunteer holds about the resident; {kind: rows changed} (0s on a replay)."""
    session = uow.session
    done: dict[str, int] = {}
    whose = HelpRequest.resident_id == resident_id
    if household_emptied:
        whose = or_(whose, HelpRequest.household_id == household_id)
    ids = session.scalars(
        select(HelpRequest.id).where(
            whose,
            or_(
                HelpRequest.address.is_not(None),
                HelpRequest.details != ERASED,
                (HelpRequest.note.is_not(None)) & (HelpRequest.note != ERASED),
            ),
        )
    ).all()
    changed = 0
    for request in session.scalars(select(HelpRequest).where(HelpRequest.id.in_(ids))) if ids else ():
        own = request.resident_id == resident_id or request.created_by != care.SYSTEM
        before = (request.address, request.details, request.note)
        request.address = null()  # SQL NULL, not JSON null
        if own:
            request.details = ERASED
            if request.note is not None:
                request.note = ERASED
        changed += before != (None, request.details, request.note)
    done["help_requests"] = changed
    _scrub_names(session, resident_id)
    done["volunteers"] = session.execute(
        update(Volunteer)
        .where(Volunteer.resident_id == resident_id, or_(Volunteer.name != ERASED, Volunteer.active.is_(True)))
        .values(name=ERASED, phone_enc=b"", active=False)
    ).rowcount
    theirs = select(Volunteer.id).where(Volunteer.resident_id == resident_id).scalar_subquery()
    done["pledges"] = session.execute(
        update(Pledge)
        .where(Pledge.volunteer_id.in_(theirs), or_(Pledge.text != ERASED, Pledge.note.is_not(None)))
        .values(text=ERASED, note=None)
    ).rowcount
    done.update(_forget_subject(uow, resident_id, household_id, household_emptied, now, None))
    session.flush()
    return done


def _scrub_names(session, resident_id):
    """Replace the name of a volunteer who was the resident where it stands in other people's free text:
    help requests in their home community or served by them, pledges of volunteers in that community.
    Before the volunteer row is anonymised (a replay finds ``[erased]`` there and scrubs nothing)."""
    for volunteer in session.scalars(
        select(Volunteer).where(Volunteer.resident_id == resident_id, Volunteer.name != ERASED)
    ).all():
        name = (volunteer.name or "").strip()
        if len(name) < MIN_NAME_LENGTH:
            continue
        community = tree.as_path(tree.path_ids(volunteer.home_path)[:3])
        near = or_(tree.in_subtree(HelpRequest.unit_path, community), HelpRequest.volunteer_id == volunteer.id)
        neighbours = select(Volunteer.id).where(tree.in_subtree(Volunteer.home_path, community))
        targets = [
            (HelpRequest, HelpRequest.details, near),
            (HelpRequest, HelpRequest.note, near),
            (Pledge, Pledge.text, Pledge.volunteer_id.in_(neighbours)),
            (Pledge, Pledge.note, Pledge.volunteer_id.in_(neighbours)),
        ]
        for model, column, where in targets:
            session.execute(
                update(model)
                .where(where, column.contains(name, autoescape=True))
                .values({column.key: func.replace(column, name, ERASED)})
                .execution_options(synchronize_session=False)
            )


def forget_replies_of(uow, vault, resident_id, household_id, household_emptied):
    """Blank the remembered replies that told of the resident's help requests or volunteer record; how many."""
    session = uow.session
    whose = HelpRequest.resident_id == resident_id
    if household_emptied:
        whose = or_(whose, HelpRequest.household_id == household_id)
    requests = set(session.scalars(select(HelpRequest.id).where(whose)))
    volunteers = set(session.scalars(select(Volunteer.id).where(Volunteer.resident_id == resident_id)))
    return forget_replies(
        session,
        uow.idempotency_model,
        vault,
        resident_ids=[resident_id],
        fields={
            "household_id": [household_id] if household_emptied else [],
            "request_id": requests,
            "volunteer_id": volunteers,
        },
        records={**dict.fromkeys(REQUEST_METHODS, requests), **dict.fromkeys(VOLUNTEER_METHODS, volunteers)},
    )


def tag_purged(uow, resident_id, household_id, tag, released_at, reason, now):
    """The data derived from the resident's ``tag`` goes; {kind: rows purged}."""
    if tag != "quarantined":
        return {}
    newer_than = None if reason == "erased" else released_at
    return _forget_subject(uow, resident_id, household_id, False, now, newer_than)


def _forget_subject(uow, resident_id, household_id, emptied, now, newer_than):
    """Delete the resident's care subject (unless quarantined again after ``newer_than``), then drop the
    household plan's address when nobody in it is cared for (or it emptied), stopping an active plan."""
    session = uow.session
    serialize_on(session, "care", household_id)  # as care.record_tag: a member tagged meanwhile is seen
    subject = session.scalar(locking(select(CareSubject).where(CareSubject.resident_id == resident_id), session))
    done = {"care_subjects": 0, "care_plans": 0, "care_requests_cancelled": 0}
    if subject is not None:
        current = subject.quarantined and newer_than is not None and subject.changed_at > _aware(newer_than)
        if current:
            return done
        household_id = subject.household_id
        session.delete(subject)
        session.flush()
        done["care_subjects"] = 1
    others = session.scalar(select(CareSubject.resident_id).where(CareSubject.household_id == household_id).limit(1))
    if others is not None and not emptied:
        return done
    plan = session.scalar(locking(select(CarePlan).where(CarePlan.household_id == household_id), session))
    if plan is None:
        return done
    if plan.active and not care.household_quarantined(session, household_id):
        done["care_requests_cancelled"] = len(care.stop(uow, household_id, now, ERASED_STOP_REASON))
    if plan.address is not None and (emptied or not plan.active):
        plan.address = null()  # SQL NULL, not JSON null
        done["care_plans"] = 1
    return done


def _aware(value):
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
