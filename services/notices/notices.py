"""The notice workflow: draft → approved → published (by a timer, at publish_at), with
update and cancel messages that reference an earlier notice."""

from sqlalchemy import select, update

from services.notices import units
from services.notices.models import Delivery, Notice, NoticeTarget
from services.notices.vocabulary import URGENT_SEVERITIES
from shared.db import fetch, locking, paged, utcnow
from shared.errors import Conflict, Forbidden, ValidationError
from shared.grid_copies import contains
from shared.paths import in_subtree, path_ids


def create_notice(uow, caller, grid, audience, **fields):
    session = uow.session
    paths = units.unit_paths(grid, audience["under"], field="audience")
    for path in paths.values():
        caller.require_reach(path_ids(path), "audience unit")
    paths = units.outermost(paths)
    if fields["references"] is not None:
        referenced_notice(session, caller, fields["references"], fields["msg_type"], paths)
    notice = Notice(
        kind="notice",
        audience={**audience, "under": sorted(paths)},
        status="draft",
        author=caller.sub,
        created_at=utcnow(),
        recipient_count=0,
        ack_checked=False,
        **fields,
    )
    session.add(notice)
    session.flush()
    for unit_id, path in paths.items():
        session.add(NoticeTarget(notice_id=notice.id, unit_id=unit_id, unit_path=path))
    session.flush()
    return notice


def referenced_notice(session, caller, notice_id, msg_type, paths):
    """The notice an update or cancel references, checked in this order before anything about it
    is revealed: it exists; the caller reaches every one of its audience units (a cancel stops all
    of its deliveries and messages everyone it reached, so reaching one unit is not enough); it
    can still be updated or cancelled; and the new audience (``paths``: {unit id: path}) fits it —
    a cancel's is the same units (it goes to everyone the original reached), an update's lies
    within the original's."""
    original = fetch(session, Notice, notice_id, "notice")
    original_paths = require_reach_all(session, caller, original, "the referenced notice")
    if original.kind != "notice" or original.status in ("draft", "cancelled", "expired"):
        what = "a direct message" if original.kind != "notice" else original.status
        raise Conflict(f"notice {original.id} is {what} and cannot be {msg_type}d")
    if msg_type == "cancel" and set(paths) != {int(u) for u in original.audience["under"]}:
        units_of = ", ".join(str(u) for u in original.audience["under"])
        raise ValidationError(
            {"audience": [f"A cancel goes to the audience of the notice it cancels: under must be [{units_of}]."]}
        )
    if msg_type == "update" and not all(any(contains(o, p) for o in original_paths) for p in paths.values()):
        raise ValidationError({"audience": ["An update's audience must lie within the notice it updates."]})
    return original


def target_paths(session, notice):
    """The paths of the notice's audience units."""
    return session.scalars(select(NoticeTarget.unit_path).where(NoticeTarget.notice_id == notice.id)).all()


def require_reach_all(session, caller, notice, what):
    """The notice's audience paths, if the caller reaches every one of them (else Forbidden)."""
    paths = target_paths(session, notice)
    if not caller.unrestricted and not paths:  # a direct message to no unit: services' only
        raise Forbidden(f"{what} is outside the caller's unit scope")
    for path in paths:
        caller.require_reach(path_ids(path), what)
    return paths


def reachable_notice(session, caller, notice_id, *, lock=False):
    notice = fetch(session, Notice, notice_id, "notice", lock=lock)
    if caller.unrestricted:
        return notice
    paths = target_paths(session, notice)
    if not paths or not any(caller.reaches(path_ids(path)) for path in paths):
        raise Forbidden("notice is outside the caller's unit scope")
    return notice


def approve_notice(uow, caller, notice_id):
    session = uow.session
    notice = reachable_notice(session, caller, notice_id, lock=True)
    # The approver must reach every audience unit, not only one of them; for an update or cancel
    # also every audience unit of the notice it references (checked at creation too: this holds
    # for drafts created before that check).
    require_reach_all(session, caller, notice, "audience unit")
    if notice.references is not None:
        original = session.get(Notice, notice.references)
        if original is not None:
            require_reach_all(session, caller, original, "the referenced notice")
    if notice.status != "draft":
        raise Conflict(f"notice {notice.id} is {notice.status}, not a draft")
    if notice.severity in URGENT_SEVERITIES and caller.sub == notice.author:
        raise Forbidden(f"a {notice.severity} notice needs approval by someone other than its author")
    now = utcnow()
    if notice.expires_at is not None and notice.expires_at <= now:
        raise Conflict(f"notice {notice.id} expired before approval")
    notice.status, notice.approved_by, notice.approved_at = "approved", caller.sub, now
    if notice.publish_at is None:
        notice.publish_at = now
    return notice


def list_notices(session, caller, grid, under, status, kind, page, page_size):
    query = select(Notice).where(Notice.kind == kind)
    if under is None and not caller.unrestricted:
        if caller.scope_unit is None or not caller.scope_unit.isdigit():  # e.g. staff beside resident, no unit claim
            raise Forbidden("token names no unit scope")
        under = int(caller.scope_unit)
    if under is not None:
        path = units.unit_paths(grid, [under])[under]
        caller.require_reach(path_ids(path))
        query = query.where(
            Notice.id.in_(select(NoticeTarget.notice_id).where(in_subtree(NoticeTarget.unit_path, path)))
        )
    if status is not None:
        query = query.where(Notice.status == status)
    return paged(session, query.order_by(Notice.id.desc()), page, page_size)


def due_for_publishing(session, now, limit=5):
    query = (
        select(Notice)
        .where(Notice.status == "approved", Notice.publish_at <= now)
        .order_by(Notice.publish_at)
        .limit(limit)
    )
    return session.scalars(locking(query, session, skip_locked=True)).all()


def stop_queued(session, notice, why, now):
    """The notice's deliveries not yet claimed fail, ``detail`` saying why (a claimed one is stopped
    when its claim is found stale: ``delivery.claim``)."""
    session.execute(
        update(Delivery)
        .where(Delivery.notice_id == notice.id, Delivery.status == "queued")
        .values(status="failed", detail=why, failed_at=now)
    )


def cancel_original(uow, cancel_notice, now):
    """A published cancel stops the original's pending deliveries and marks it cancelled."""
    session = uow.session
    original = fetch(session, Notice, cancel_notice.references, "notice", lock=True)
    stop_queued(session, original, "cancelled", now)
    if original.status not in ("cancelled",):
        original.status, original.cancelled_at = "cancelled", now
        uow.emit(
            "notice_cancelled",
            f"notice/{original.id}",
            {"notice_id": str(original.id), "cancelled_by": str(cancel_notice.id)},
        )
    return original


def expire_notices(uow, now):
    """Published notices past expires_at stop delivering: their queued deliveries fail as expired."""
    session = uow.session
    query = select(Notice).where(Notice.status.in_(("approved", "published")), Notice.expires_at <= now)
    expired = session.scalars(locking(query, session, skip_locked=True)).all()
    for notice in expired:
        stop_queued(session, notice, "expired", now)
        notice.status = "expired"
    return len(expired)
