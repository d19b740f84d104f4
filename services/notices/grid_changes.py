"""Notices' copies of grid facts, kept in step when the grid's tree changes (the grid's ``unit_moved``,
``household_moved`` and ``unit_closed``; until these, the copies went stale).

The copies: each notice's audience units (``notice_targets``), each recipient's small grid and each
delivery's (``recipients``, ``deliveries``: ``unit_path``), and chat groups (``chat_groups``); and the
read model of the grid's units, households and residents that audience and scope checks read instead of
the grid (``models.FACTS``, shared.grid_facts: a created or closed unit and a moved household are re-read
from the grid into it, a moved unit rebases its paths with the copies). How each change is taken
(shared.grid_copies reads where the unit or household is now, so replays and moves handled out of order
end in the grid's present):

- **A unit moved** — the same unit under a new parent. Every copy through it is rebased, sent notices
  included: lists by subtree, scope checks and delivery reports read these paths, so a notice left at
  the old path would drop out of its own audience unit's list and stay visible to staff who no longer
  have the unit (the grid rewrites its own history the same way).
- **A household moved** to another small grid. What is still to come for it follows it; what was done
  stays where it was done (a delivery report counts the residents an audience had when it was sent).
  Following: deliveries not yet sent to its members (``queued``, ``sending``), its members' recipient
  rows while a delivery is pending or an acknowledgement is awaited (the new grid's staff acknowledge
  for them and follow them up), and a direct message addressed to the household itself (quarantine
  instructions) whose deliveries are pending: it is then listed under the new small grid. When the
  small grid it left is closed and now empty, that grid's chat group is retired (below).
- **A unit closed** — it takes no new households; those in it stay until the grid moves them. Nothing
  is cancelled. A closed small grid's chat group is retired (its registration removed) once nobody
  lives in the grid — posting a district's notices to the group of a grid that no longer exists would
  mislead — and kept while anyone does; a chat post still queued for it then fails ("no address").
"""

import logging

from sqlalchemy import delete, select

from services.notices.models import FACTS, Acknowledgement, ChatGroup, Delivery, Notice, NoticeTarget, Recipient
from services.notices.vocabulary import DIRECT
from shared import grid_copies, grid_facts
from shared.errors import NotFound
from shared.paths import as_path

log = logging.getLogger(__name__)

UNIT_PATHS = (
    NoticeTarget.unit_path,
    Recipient.unit_path,
    Delivery.unit_path,
    ChatGroup.unit_path,
    *FACTS.path_columns,  # the read model's units and households (shared.grid_facts)
)
# Deliveries still to be posted (services/notices/models.py CLAIMABLE).
PENDING_DELIVERY = ("queued", "sending")


def unit_moved(session, grid, unit_id):
    """Rebase every copy through the unit on its current path; {"table.column": rows changed}."""
    return grid_copies.unit_moved(session, grid, UNIT_PATHS, unit_id)


def _pending_delivery(recipient_id):
    return (
        select(Delivery.id).where(Delivery.recipient_id == recipient_id, Delivery.status.in_(PENDING_DELIVERY)).exists()
    )


def household_moved(session, grid, household_id, left_unit_id):
    """What is still to come for the household follows it to its small grid; {table: rows changed}."""
    grid_copies.hold(session)
    try:
        household = grid.get_household(household_id=str(household_id))
    except NotFound:
        return {}
    grid_facts.store_household(session, FACTS, household)  # the read model's place of it, too
    unit_id, path = int(household["unit_id"]), as_path(household["unit_path"])
    members = select(Recipient.id).where(Recipient.household_id == household_id)
    awaiting_ack = (
        Recipient.notice_id.in_(
            select(Notice.id).where(
                Notice.requires_ack.is_(True), Notice.ack_checked.is_(False), Notice.status == "published"
            )
        )
    ) & ~(
        select(Acknowledgement.resident_id)
        .where(Acknowledgement.notice_id == Recipient.notice_id, Acknowledgement.resident_id == Recipient.resident_id)
        .exists()
    )
    changed = {
        "deliveries": grid_copies.follow(
            session,
            Delivery.unit_path,
            Delivery.recipient_id.in_(members) & Delivery.status.in_(PENDING_DELIVERY),
            path,
        ),
        "recipients": grid_copies.follow(
            session,
            Recipient.unit_path,
            (Recipient.household_id == household_id) & (_pending_delivery(Recipient.id) | awaiting_ack),
            path,
        ),
        "notice_targets": _household_messages(session, household_id, unit_id, path),
    }
    changed["chat_groups_retired"] = int(retire_chat_group(session, grid, left_unit_id))
    return changed


def _household_messages(session, household_id, unit_id, path):
    """Direct messages addressed to the household with deliveries pending: listed under its new grid."""
    pending = select(Delivery.notice_id).where(
        Delivery.status.in_(PENDING_DELIVERY),
        Delivery.recipient_id.in_(select(Recipient.id).where(Recipient.household_id == household_id)),
    )
    moved = 0
    for notice in session.scalars(select(Notice).where(Notice.kind == DIRECT, Notice.id.in_(pending))).all():
        if notice.audience.get("household_id") != str(household_id):
            continue  # a message to residents of several households (an offer, a reminder)
        targets = session.scalars(select(NoticeTarget).where(NoticeTarget.notice_id == notice.id)).all()
        if not targets or all(grid_copies.contains(t.unit_path, path) for t in targets):
            continue
        session.execute(delete(NoticeTarget).where(NoticeTarget.notice_id == notice.id))
        session.add(NoticeTarget(notice_id=notice.id, unit_id=unit_id, unit_path=path))
        notice.audience = {**notice.audience, "under": [unit_id]}
        moved += 1
    session.flush()
    return moved


def unit_closed(session, grid, unit_id):
    """A closed small grid's chat group is retired if nobody lives there any more (and the read model
    marks the unit closed)."""
    grid_facts.unit_changed(session, grid, FACTS, unit_id)
    return {"chat_groups_retired": int(retire_chat_group(session, grid, unit_id))}


def unit_created(session, grid, unit_id):
    """A new unit: into the read model of grid facts."""
    return grid_facts.unit_changed(session, grid, FACTS, unit_id)


def retire_chat_group(session, grid, unit_id):
    """Remove the chat group of ``unit_id`` when the grid says the unit is closed and nobody lives
    under it; True if removed."""
    group = session.get(ChatGroup, unit_id)
    if group is None:
        return False
    try:
        unit = grid.get_unit(unit_id=str(unit_id))
    except NotFound:
        return False
    if not unit["closed"]:
        return False
    # Whether anyone lives there: no phone needed, so no read of personal data (no access-log row).
    if grid.without_pii().find_residents_async(under=str(unit_id), page_size=1).result()["items"]:
        log.info("closed grid's chat group kept: residents still live there", extra={"unit_id": str(unit_id)})
        return False
    session.delete(group)
    session.flush()
    log.info("closed grid's chat group retired: nobody lives there", extra={"unit_id": str(unit_id)})
    return True
