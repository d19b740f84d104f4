"""Publishing approved notices (a timer drives it) and direct messages for the other services."""
from services.notices import audience, notices
from services.notices.models import Notice
from services.notices.templates import render
from shared import grid_lookup
from shared.db import utcnow


def publish_due(uow, grid, vault, timezone, max_pages=20, max_rounds=10):
    """Resolve (part of) due notices' audiences, a notice at a time, each round its own
    transaction; publish those that are complete."""
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
            complete = audience.resolve_pages(uow, grid, vault, notice, timezone, max_pages=max_pages)
        if complete:
            audience.add_chat_groups(session, notice, now)
            notice.status, notice.published_at = "published", now
            uow.emit("notice_published", f"notice/{notice.id}", {
                "notice_id": str(notice.id), "msg_type": notice.msg_type, "category": notice.category,
                "severity": notice.severity, "urgency": notice.urgency,
                "references": str(notice.references) if notice.references else None,
                "audience_unit_ids": [str(u) for u in notice.audience["under"]],
                "recipient_count": notice.recipient_count, "requires_ack": notice.requires_ack,
            })
            published += 1
        uow.commit()
    return published


def send_direct(uow, caller, grid, vault, timezone, resident_ids, template, params, channels):
    session = uow.session
    title, body = render(template, params)
    found = grid_lookup.residents(grid, resident_ids, "resident_ids")
    now = utcnow()
    message = Notice(
        kind="direct", title=title, body=body, category="direct", severity="moderate", urgency="immediate",
        msg_type="alert", audience={"under": [], "template": template}, channels=channels or ["sms"],
        requires_ack=False, ack_checked=False, status="published", author=caller.sub, approved_by=caller.sub,
        created_at=now, approved_at=now, publish_at=now, published_at=now, recipient_count=0,
    )
    session.add(message)
    session.flush()
    audience.add_recipients(uow, vault, message, audience.DeliveryPlan(message, timezone), found, now)
    return message
