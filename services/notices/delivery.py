"""Sending: due deliveries go to their channel's adapter, under a per-channel rate limit, with
retries and backoff, and a voice-call fallback for a failed SMS to a resident living alone."""

import datetime as dt
import logging

from sqlalchemy import insert, select, update

from services.notices.channels import Outbound, Outcome
from services.notices.models import ChatGroup, Delivery, Notice, Recipient
from services.notices.vocabulary import URGENT_SEVERITIES
from shared.db import fetch, utcnow
from shared.errors import Conflict
from shared.paths import path_ids

log = logging.getLogger(__name__)
PHONE_CONTEXT = b"phone"


class RetryPolicy:
    def __init__(self, max_attempts=4, base_seconds=2.0, cap_seconds=600.0):
        self.max_attempts = int(max_attempts)
        self.base = float(base_seconds)
        self.cap = float(cap_seconds)

    def next_attempt(self, attempts, now):
        return now + dt.timedelta(seconds=min(self.cap, self.base * 2 ** max(0, attempts - 1)))


def _address(channel, row, group, vault):
    if channel == "chat_group":
        return group.webhook_url if group else None
    if channel == "app_push":
        return str(row.resident_id)
    return vault.decrypt(row.address_enc, PHONE_CONTEXT) if row.address_enc else None


def dispatch_due(uow, adapters, limiter, vault, retry, now=None, batch=2000):
    """Send one batch of due deliveries per channel; returns how many were attempted.

    Reads only the columns it needs (a batch is thousands of rows) and hands the batch to the
    adapter at once; an accepted batch is recorded with a single UPDATE.
    """
    session = uow.session
    now = now or utcnow()
    attempted = 0
    for channel, adapter in adapters.items():
        granted = limiter.take(channel, batch)
        if not granted:
            continue
        query = (
            select(
                Delivery.id,
                Delivery.notice_id,
                Delivery.recipient_id,
                Delivery.unit_path,
                Delivery.attempts,
                Recipient.address_enc,
                Recipient.resident_id,
                Recipient.vulnerable_tags,
            )
            .outerjoin(Recipient, Recipient.id == Delivery.recipient_id)
            .where(Delivery.status == "queued", Delivery.channel == channel, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(granted)
        )
        if session.bind.dialect.name == "postgresql":
            # OF: lock only the deliveries (the outer-joined side cannot be locked).
            query = query.with_for_update(of=Delivery, skip_locked=True)
        rows = session.execute(query).all()
        limiter.give_back(channel, granted - len(rows))
        if not rows:
            continue
        texts = {
            n.id: n
            for n in session.execute(
                select(Notice.id, Notice.title, Notice.body, Notice.severity).where(
                    Notice.id.in_({row.notice_id for row in rows})
                )
            )
        }
        groups = {}
        if channel == "chat_group":
            unit_ids = [path_ids(row.unit_path)[-1] for row in rows]
            groups = {g.unit_id: g for g in session.scalars(select(ChatGroup).where(ChatGroup.unit_id.in_(unit_ids)))}
        messages = []
        for row in rows:
            text = texts[row.notice_id]
            group = groups.get(path_ids(row.unit_path)[-1]) if channel == "chat_group" else None
            messages.append(
                Outbound(
                    delivery_id=row.id,
                    notice_id=row.notice_id,
                    channel=channel,
                    to=_address(channel, row, group, vault),
                    title=text.title,
                    body=text.body,
                    severity=text.severity,
                    mention_all=text.severity in URGENT_SEVERITIES,
                )
            )
        _record(session, retry, channel, rows, _send_all(adapter, messages), now)
        attempted += len(rows)
    return attempted


def _send_all(adapter, messages):
    outcomes: list[Outcome | None] = [None] * len(messages)
    addressed = []
    for index, message in enumerate(messages):
        if message.to is None:
            outcomes[index] = Outcome(False, retryable=False, detail="no address for this channel")
        else:
            addressed.append(index)
    try:
        sent = adapter.send_many([messages[i] for i in addressed])
    except Exception as exc:  # an adapter bug must not lose the batch: all of it retries
        log.exception("channel adapter raised", extra={"method": messages[0].channel})
        sent = [Outcome(False, retryable=True, detail=f"adapter error: {type(exc).__name__}")] * len(addressed)
    for index, outcome in zip(addressed, sent, strict=True):  # adapters answer each message they are given
        outcomes[index] = outcome
    return outcomes


def _record(session, retry, channel, rows, outcomes, now):
    sent_ids = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome.ok]
    if sent_ids:
        # One statement for the common case: every accepted message in the batch.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(sent_ids))
            .values(status="sent", attempts=Delivery.attempts + 1, sent_at=now, detail=None)
            .execution_options(synchronize_session=False)
        )
    for row, outcome in zip(rows, outcomes, strict=True):
        if outcome.ok:
            continue
        attempts = row.attempts + 1
        if outcome.retryable and attempts < retry.max_attempts:
            session.execute(
                update(Delivery)
                .where(Delivery.id == row.id)
                .values(attempts=attempts, next_attempt_at=retry.next_attempt(attempts, now), detail=outcome.detail)
            )
        else:
            session.execute(
                update(Delivery)
                .where(Delivery.id == row.id)
                .values(attempts=attempts, status="failed", failed_at=now, detail=outcome.detail)
            )
            fall_back(
                session, row.id, channel, row.notice_id, row.unit_path, row.recipient_id, row.vulnerable_tags, now
            )


def fall_back(session, delivery_id, channel, notice_id, unit_path, recipient_id, vulnerable_tags, now):
    """A failed SMS to a resident living alone becomes a voice call (once)."""
    if channel != "sms" or recipient_id is None or "elderly_alone" not in (vulnerable_tags or []):
        return False
    if session.scalar(select(Delivery.id).where(Delivery.fallback_of == delivery_id)):
        return False
    session.execute(
        insert(Delivery).values(
            notice_id=notice_id,
            recipient_id=recipient_id,
            unit_path=unit_path,
            channel="voice_call",
            status="queued",
            attempts=0,
            next_attempt_at=now,
            fallback_of=delivery_id,
            created_at=now,
        )
    )
    return True


def record_delivery_status(uow, caller, delivery_id, status, detail):
    """A gateway's report: sent → delivered, or failed (which may fall back to a voice call).

    A caller scoped to a unit reports only on deliveries under it (checked before the delivery's
    state is revealed)."""
    session = uow.session
    delivery = fetch(session, Delivery, delivery_id, "delivery", lock=True)
    caller.require_reach(path_ids(delivery.unit_path), "delivery")
    now = utcnow()
    order = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}
    if delivery.status in ("delivered", "failed") and delivery.status != status:
        raise Conflict(f"delivery {delivery.id} is already {delivery.status}")
    if order[status] < order[delivery.status]:
        raise Conflict(f"delivery {delivery.id} is already {delivery.status}")
    delivery.status, delivery.detail = status, detail
    if status == "sent":
        delivery.sent_at = delivery.sent_at or now
    elif status == "delivered":
        delivery.delivered_at = now
        delivery.sent_at = delivery.sent_at or now
    else:
        delivery.failed_at = now
        recipient = session.get(Recipient, delivery.recipient_id) if delivery.recipient_id else None
        fall_back(
            session,
            delivery.id,
            delivery.channel,
            delivery.notice_id,
            delivery.unit_path,
            delivery.recipient_id,
            recipient.vulnerable_tags if recipient else None,
            now,
        )
    session.flush()
    return delivery
