"""Acknowledgements, the per-unit delivery report, and following up who did not acknowledge."""

from collections import defaultdict

from sqlalchemy import case, func, select

from services.notices import access
from services.notices.models import Acknowledgement, Delivery, InboundMessage, Notice, NoticeTarget, Recipient
from shared.db import fetch, locking, utcnow
from shared.errors import Conflict, NotFound, ValidationError
from shared.grid_copies import contains
from shared.paths import as_path, path_ids

EVENT_CHUNK = 500  # residents per notice_unacknowledged event


def acknowledge(uow, caller, grid, notice_id, resident_id):
    """For the resident themselves, or by staff for a resident in their scope (services.notices.access).

    Staff are checked against the recipient's unit path before anything about it is said; when the
    resident is no recipient, they hear so only for a resident in their scope and a notice that concerns their
    subtree (``_path_if_concerned``), else Forbidden — so nobody out of scope learns who received
    a notice, and a notice of another community stays out of reach whatever resident id comes with it.
    """
    session = uow.session
    access.require_some_rule(caller, resident_id, "acknowledge")  # before anything is looked up
    notice = fetch(session, Notice, notice_id, "notice")
    recipient = session.scalar(
        select(Recipient).where(Recipient.notice_id == notice.id, Recipient.resident_id == resident_id)
    )
    access.require_act_for(
        caller,
        resident_id,
        lambda: (
            recipient.unit_path
            if recipient is not None
            else _path_if_concerned(session, caller, grid, notice, resident_id)
        ),
        "acknowledge",
    )
    if recipient is None:
        raise NotFound(f"resident {resident_id} is not a recipient of notice {notice.id}")
    existing = session.get(Acknowledgement, (notice.id, resident_id))
    if existing is None:
        if notice.status == "cancelled":
            raise Conflict(f"notice {notice.id} was cancelled")
        existing = Acknowledgement(notice_id=notice.id, resident_id=resident_id, acknowledged_at=utcnow())
        session.add(existing)
        session.flush()
    return existing


def _path_if_concerned(session, caller, grid, notice, resident_id):
    """For staff asking about a resident who is no recipient: the resident's unit path in the grid
    if the notice concerns the caller — one of its audience units lies under the caller's unit, or
    above the resident — else None (the grid knows no such resident, or the notice is not theirs)."""
    try:
        path = as_path(grid.resident(resident_id)["unit_path"])
    except ValidationError:
        return None
    targets = select(NoticeTarget.unit_path).where(NoticeTarget.notice_id == notice.id)
    for target in session.scalars(targets):
        if caller.reaches(path_ids(target)) or contains(target, path):
            return path
    return None


def delivery_report(session, caller, grid, notice, level):
    """Per unit: targeted, sent, delivered, failed and acknowledged residents (the reply's shape:
    ``schemas.DeliveryReportOut``).

    A resident counts as sent/delivered if any of their deliveries was; as failed if all failed.
    Aggregated by small grid in SQL, rolled up to the requested units here. A caller scoped to a
    unit sees only what lies under it: the units, residents and chat groups in its subtree.
    """
    per_recipient = (
        select(
            Recipient.id.label("rid"),
            Recipient.unit_path.label("path"),
            func.max(case((Delivery.status.in_(("sent", "delivered")), 1), else_=0)).label("sent"),
            func.max(case((Delivery.status == "delivered", 1), else_=0)).label("delivered"),
            func.min(case((Delivery.status == "failed", 1), else_=0)).label("failed"),
            func.max(case((Acknowledgement.resident_id.is_not(None), 1), else_=0)).label("acked"),
        )
        .outerjoin(Delivery, Delivery.recipient_id == Recipient.id)
        .outerjoin(
            Acknowledgement,
            (Acknowledgement.notice_id == Recipient.notice_id) & (Acknowledgement.resident_id == Recipient.resident_id),
        )
        .where(Recipient.notice_id == notice.id)
        .group_by(Recipient.id, Recipient.unit_path)
        .subquery()
    )
    by_path = session.execute(
        select(
            per_recipient.c.path,
            func.count(),
            func.sum(per_recipient.c.sent),
            func.sum(per_recipient.c.delivered),
            func.sum(per_recipient.c.failed),
            func.sum(per_recipient.c.acked),
        ).group_by(per_recipient.c.path)
    ).all()
    groups = {unit_id for unit_id, path in _groups(session, grid, notice, level).items() if caller.reaches(path)}
    empty = {"targeted": 0, "sent": 0, "delivered": 0, "failed": 0, "acknowledged": 0}
    rows: defaultdict[int, dict[str, int]] = defaultdict(lambda: dict(empty))
    totals = dict(empty)
    for path, targeted, sent, delivered, failed, acked in by_path:
        ids = path_ids(path)
        if not caller.reaches(ids):
            continue
        group = next((g for g in ids if g in groups), None)
        for key, value in zip(empty, (targeted, sent, delivered, failed, acked), strict=True):
            totals[key] += int(value or 0)
            if group is not None:
                rows[group][key] += int(value or 0)
    chat: defaultdict[str, int] = defaultdict(int)
    for status, path, count in session.execute(
        select(Delivery.status, Delivery.unit_path, func.count())
        .where(Delivery.notice_id == notice.id, Delivery.channel == "chat_group")
        .group_by(Delivery.status, Delivery.unit_path)
    ):
        if caller.reaches(path_ids(path)):
            chat[status] += count
    return {
        "notice_id": notice.id,
        "level": level,
        **totals,
        "units": [{"unit_id": g, **rows[g]} for g in sorted(groups)],
        "chat_groups": {status: chat.get(status, 0) for status in ("queued", "sent", "delivered", "failed")},
        **_inbound_counts(session, caller, notice),
    }


def _inbound_counts(session, caller, notice):
    """The gateways' inbound reports on the notice within the caller's reach: residents who
    acknowledged by SMS reply and by keypress, and replies and keypresses recorded (any outcome)."""
    counts = {"acknowledged_by_sms": 0, "acknowledged_by_keypress": 0, "inbound_replies": 0}
    acked = InboundMessage.outcome == "acknowledged"
    found = session.execute(
        select(
            Recipient.unit_path,
            InboundMessage.kind,
            func.count(),
            func.count(func.distinct(case((acked, InboundMessage.resident_id)))),
        )
        .join(
            Recipient,
            (Recipient.notice_id == InboundMessage.notice_id) & (Recipient.resident_id == InboundMessage.resident_id),
        )
        .where(InboundMessage.notice_id == notice.id)
        .group_by(Recipient.unit_path, InboundMessage.kind)
    )
    for path, kind, recorded, acknowledged in found:
        if caller.reaches(path_ids(path)):
            counts["inbound_replies"] += recorded
            counts["acknowledged_by_sms" if kind == "sms_reply" else "acknowledged_by_keypress"] += acknowledged
    return counts


def _groups(session, grid, notice, level):
    """{unit id: path ids} of the units to report on: the audience units, or every unit at
    ``level`` under them."""
    if level is None:
        targets = select(NoticeTarget.unit_id, NoticeTarget.unit_path).where(NoticeTarget.notice_id == notice.id)
        return {unit_id: path_ids(path) for unit_id, path in session.execute(targets)}
    found = {}
    for unit_id in notice.audience["under"]:
        unit = grid.get_unit(unit_id=str(unit_id))
        if unit["level"] == level:
            found[int(unit["id"])] = unit["path"]
            continue
        page = 1
        while True:
            listed = grid.list_units(under=str(unit_id), level=level, include_closed=True, page=page, page_size=500)
            found.update({int(u["id"]): u["path"] for u in listed["items"]})
            if not listed["has_more"]:
                break
            page += 1
    return found


def due_ack_checks(session, now, limit=10):
    query = (
        select(Notice)
        .where(
            Notice.requires_ack.is_(True),
            Notice.ack_checked.is_(False),
            Notice.status == "published",
            Notice.ack_deadline <= now,
        )
        .limit(limit)
    )
    return session.scalars(locking(query, session, skip_locked=True)).all()


def report_unacknowledged(uow, notice):
    """Emit notice_unacknowledged (ids only) for vulnerable recipients without an acknowledgement."""
    session = uow.session
    missing = session.execute(
        select(Recipient.resident_id, Recipient.household_id, Recipient.unit_path)
        .where(Recipient.notice_id == notice.id, Recipient.vulnerable.is_(True))
        .where(
            ~select(Acknowledgement.resident_id)
            .where(Acknowledgement.notice_id == notice.id, Acknowledgement.resident_id == Recipient.resident_id)
            .exists()
        )
        .order_by(Recipient.resident_id)
    ).all()
    notice.ack_checked = True
    chunks = [missing[i : i + EVENT_CHUNK] for i in range(0, len(missing), EVENT_CHUNK)]
    for index, chunk in enumerate(chunks, start=1):
        uow.emit(
            "notice_unacknowledged",
            f"notice/{notice.id}",
            {
                "notice_id": str(notice.id),
                "chunk": index,
                "chunks": len(chunks),
                "residents": [
                    {"resident_id": str(r), "household_id": str(h), "unit_id": str(path_ids(p)[-1])}
                    for r, h, p in chunk
                ],
            },
        )
    return len(missing)
