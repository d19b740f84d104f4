"""Publishing approved notices (a timer drives it) and direct messages for the other services."""

from zoneinfo import ZoneInfo

from sqlalchemy import select

from services.notices import audience, notices
from services.notices.models import Notice, NoticeTarget
from services.notices.templates import render
from shared.db import utcnow
from shared.paths import as_path


def publish_due(uow, grid, vault, timezone, max_pages=20, max_rounds=10, handoff=None):
    """Resolve (part of) due notices' audiences, a notice at a time, and publish those that are
    complete: a generator of steps — each page of an audience, each notice's round — that yields at
    every step boundary for the caller (the publishing timer) to commit there. Returns how many
    notices were published. With a ``handoff`` (``delivery.Handoff``), deliveries due now are written
    already claimed for this process's dispatcher (``audience.write_recipients``)."""
    session = uow.session
    published = 0
    for _ in range(max_rounds):
        now = utcnow()
        due = notices.due_for_publishing(session, now, limit=1)  # locked until this round commits
        if not due:
            break
        notice = due[0]
        if notice.msg_type == "cancel":
            notices.cancel_original(uow, notice, now)
            audience.copy_reached_recipients(uow, notice, notice.references, timezone)
            complete = True
        else:
            complete = yield from audience.resolve_pages(
                uow, grid, vault, notice, timezone, max_pages=max_pages, handoff=handoff
            )
        if complete:
            audience.add_chat_groups(session, notice, now)
            notice.status, notice.published_at = "published", now
            uow.emit(
                "notice_published",
                f"notice/{notice.id}",
                {
                    "notice_id": str(notice.id),
                    "msg_type": notice.msg_type,
                    "category": notice.category,
                    "severity": notice.severity,
                    "urgency": notice.urgency,
                    "references": str(notice.references) if notice.references else None,
                    "audience_unit_ids": [str(u) for u in notice.audience["under"]],
                    "recipient_count": notice.recipient_count,
                    "requires_ack": notice.requires_ack,
                },
            )
            published += 1
        yield  # the round ends: committed here
    return published


def send_direct(uow, caller, grid, vault, timezone, resident_ids, template, params, channels, origin=None):
    """A direct message; with an ``origin`` (a command from another service) at most one per origin:
    a second command for it returns the first message."""
    if origin is not None:
        sent = uow.session.scalar(select(Notice).where(Notice.origin == origin))
        if sent is not None:
            return sent
    if not caller.unrestricted:  # a service or admin token scoped to a unit messages only residents under it
        # Checked on a read without phones: a refused call reads no one's personal data (no access-log row).
        for resident in grid.without_pii().residents(resident_ids, "resident_ids"):
            caller.require_reach(resident["unit_path"], "resident")
    found = grid.residents(resident_ids, "resident_ids")
    return _direct(uow, caller.sub, vault, timezone, found, template, params, channels, origin=origin)


def _direct(uow, author, vault, timezone, found, template, params, channels, *, extra=None, origin=None, unit=None):
    session = uow.session
    title, body = render(template, params)
    now = utcnow()
    message = Notice(
        kind="direct",
        title=title,
        body=body,
        category="direct",
        severity="moderate",
        urgency="immediate",
        msg_type="alert",
        audience={"under": [unit[0]] if unit else [], "template": template, **(extra or {})},
        channels=channels or ["sms"],
        requires_ack=False,
        ack_checked=False,
        status="published",
        author=author,
        approved_by=author,
        created_at=now,
        approved_at=now,
        publish_at=now,
        published_at=now,
        recipient_count=0,
        origin=origin,
    )
    session.add(message)
    session.flush()
    if unit:
        # Lets list_notices(under=..., kind="direct") find the messages a grid's households were sent.
        session.add(NoticeTarget(notice_id=message.id, unit_id=unit[0], unit_path=unit[1]))
    audience.add_recipients(uow, vault, message, audience.DeliveryPlan(message, timezone), found, now)
    return message


QUARANTINE_CHANNELS = ["app_push", "sms"]
QUARANTINED = "quarantined"


def quarantine_instructions(uow, author, grid, vault, timezone, household_id, until):
    """Home-quarantine instructions to every member of a household, once per household and local day.

    Returns ``(message, None)``, or ``(None, why not)``: the household already had them today, or
    nobody in it is quarantined any more (a late or retried event must not send stale instructions).
    """
    zone = ZoneInfo(timezone)
    today = utcnow().astimezone(zone).date()
    origin = f"quarantine:household/{household_id}:{today.isoformat()}"
    if uow.session.scalar(select(Notice.id).where(Notice.origin == origin)) is not None:
        return None, "already sent today"
    household = grid.get_household(household_id=str(household_id))
    found = grid.residents(household["resident_ids"], "resident_ids")
    if not any(QUARANTINED in member["tags"] for member in found):
        return None, "no longer quarantined"
    ends = until.astimezone(zone).date().isoformat() if until else "另行通知 further notice"
    unit_path = as_path(household["unit_path"])
    return _direct(
        uow,
        author,
        vault,
        timezone,
        found,
        "quarantine_instructions",
        {"until": ends},
        QUARANTINE_CHANNELS,
        extra={"household_id": str(household_id)},
        origin=origin,
        unit=(int(household["unit_id"]), unit_path),
    ), None
