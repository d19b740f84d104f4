"""What notices does when the grid erases a resident (``resident_erased``) or purges one of their health
tags (``tag_purged``).

On ``resident_erased`` (the read model's part is shared.grid_facts.resident_erased, in the same
transaction, with the tombstone that makes the resident unknown here from then on):

- their recipient rows, in every notice: the phone (``address_enc``) and its blind index
  (``address_hash``) → NULL, the vulnerable-tag snapshot emptied (``vulnerable`` false); ids stay, so
  counts and reports stay true;
- their deliveries not yet sent (``queued``, or ``sending`` under a claim) → ``failed`` with detail
  ``recipient erased``: no post after the erasure (a post already on the wire when it came cannot be
  called back);
- their preferences row is deleted;
- a direct message nobody else received (a service's ``general`` text may name them): title and body
  → ``[erased]``;
- acknowledgements and inbound replies keep ids and outcomes only (no phone, no text): unchanged.

On ``tag_purged``: the tag leaves the resident's vulnerable-tag snapshots (``vulnerable`` recomputed) — of
notices created up to the tag's release when the retention ended (a tag set again since stays in the
snapshots taken since), of every notice when an erasure removed it.

Replays change nothing: each step rewrites only what still holds the data. Recipients are found by their
``resident_id`` index (migration 0009). Nothing here commits or logs personal data.

A fan-out page read from the grid before the erasure and written after it was applied here would store
the phone again: the page's write leaves out tombstoned residents (services.notices.audience), and a page
written while the erasure is applied (neither transaction sees the other's rows) is caught by
``sweep_recent``, which the housekeeping timer runs: the erasure applied again to residents erased here
in the last day who hold something again.
"""

import datetime as dt
import logging

from sqlalchemy import delete, exists, func, select, tuple_, update
from sqlalchemy.orm import aliased

from services.notices.models import FACTS, Delivery, Notice, Preference, Recipient
from shared.db import utcnow
from shared.idempotency import forget_replies
from shared.telemetry import CounterSpec

log = logging.getLogger(__name__)

ERASED = "[erased]"
ERASED_DETAIL = "recipient erased"
UNSENT = ("queued", "sending")
SWEEP_WINDOW = dt.timedelta(days=1)  # how long after an erasure the sweep looks at the resident again
SWEEP_BATCH = 100  # residents a sweep applies the erasure to again, at most


def resident_erased(session, resident_id, now=None):
    """Anonymise what notices holds about the resident; {kind: rows changed}."""
    now = now or utcnow()
    mine = Recipient.resident_id == resident_id
    done = {}
    done["recipients"] = session.execute(
        update(Recipient)
        .where(
            mine,
            (Recipient.address_enc.is_not(None))
            | (Recipient.address_hash.is_not(None))
            | (Recipient.vulnerable.is_(True)),
        )
        .values(address_enc=None, address_hash=None, vulnerable_tags=[], vulnerable=False)
        .execution_options(synchronize_session=False)
    ).rowcount
    theirs = select(Recipient.notice_id, Recipient.id).where(mine)  # by ix_deliveries_notice
    done["deliveries"] = session.execute(
        update(Delivery)
        .where(tuple_(Delivery.notice_id, Delivery.recipient_id).in_(theirs), Delivery.status.in_(UNSENT))
        .values(status="failed", detail=ERASED_DETAIL, failed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    done["preferences"] = session.execute(
        delete(Preference).where(Preference.resident_id == resident_id).execution_options(synchronize_session=False)
    ).rowcount
    done["direct_messages"] = _erase_direct_messages(session, resident_id)
    session.flush()
    return done


def sweep_recent(session, now=None, window=SWEEP_WINDOW, batch=SWEEP_BATCH):
    """``resident_erased`` applied again to residents tombstoned here within ``window`` (up to ``batch``)
    who hold something again — a recipient with a phone, its index or tags, a delivery not yet sent, a
    preference, a direct message to them alone with its text — as a fan-out page or a direct message
    written while their erasure was applied leaves. {kind: rows changed} (empty: nothing found)."""
    now = now or utcnow()
    erased = FACTS.erased
    ids = session.scalars(
        select(erased.id)
        .where(erased.applied_at >= now - window, _holds_data(erased.id))
        .order_by(erased.applied_at)
        .limit(batch)
    ).all()
    done: dict[str, int] = {}
    for resident_id in ids:
        for kind, rows in resident_erased(session, resident_id, now).items():
            done[kind] = done.get(kind, 0) + rows
    if ids:
        log.warning(
            "erasure applied again to %d residents: data written while their erasure was applied",
            len(ids),
            extra={"method": "housekeeping", "reason": "erasure_sweep"},
        )
    return done


def _holds_data(resident_id):
    """Whether notices holds something about the resident (a correlated condition on ``resident_id``)."""
    recipient = Recipient.resident_id == resident_id
    other = aliased(Recipient)
    others = (
        select(other.id).where(other.notice_id == Notice.id, other.resident_id != resident_id).correlate_except(other)
    )
    return (
        exists().where(
            recipient,
            Recipient.address_enc.is_not(None) | Recipient.address_hash.is_not(None) | Recipient.vulnerable.is_(True),
        )
        | exists().where(
            recipient,
            Delivery.notice_id == Recipient.notice_id,
            Delivery.recipient_id == Recipient.id,
            Delivery.status.in_(UNSENT),
        )
        | exists().where(Preference.resident_id == resident_id)
        | exists().where(
            recipient,
            Notice.id == Recipient.notice_id,
            Notice.kind == "direct",
            (Notice.title != ERASED) | (Notice.body != ERASED),
            ~exists(others),
        )
    )


def forget_replies_of(uow, vault, resident_id):
    """Blank the remembered replies of idempotent writes (kept 24 h, encrypted, for retries) that name the
    resident (acknowledgements, preferences, inbound replies, direct messages); how many."""
    return forget_replies(uow.session, uow.idempotency_model, vault, resident_ids=[resident_id])


def _erase_direct_messages(session, resident_id):
    """Direct messages whose only recipient was the resident: their text goes."""
    theirs = select(Recipient.notice_id).where(Recipient.resident_id == resident_id)
    shared_with = (
        select(Recipient.notice_id)
        .where(Recipient.notice_id.in_(theirs), Recipient.resident_id != resident_id)
        .group_by(Recipient.notice_id)
    )
    alone = session.scalars(
        select(Notice.id).where(
            Notice.id.in_(theirs),
            Notice.kind == "direct",
            Notice.id.not_in(shared_with),
            (Notice.title != ERASED) | (Notice.body != ERASED),
        )
    ).all()
    if not alone:
        return 0
    return session.execute(
        update(Notice)
        .where(Notice.id.in_(alone))
        .values(title=ERASED, body=ERASED)
        .execution_options(synchronize_session=False)
    ).rowcount


def tag_purged(session, resident_id, tag, released_at, reason):
    """The tag leaves the resident's recipient snapshots; the number of recipient rows changed."""
    query = select(Recipient).where(Recipient.resident_id == resident_id)
    if reason == "retention" and released_at is not None:
        query = query.join(Notice, Notice.id == Recipient.notice_id).where(Notice.created_at <= _aware(released_at))
    changed = 0
    for recipient in session.scalars(query):
        tags = list(recipient.vulnerable_tags or [])
        if tag not in tags:
            continue
        recipient.vulnerable_tags = [t for t in tags if t != tag]
        recipient.vulnerable = bool(recipient.vulnerable_tags)
        changed += 1
    session.flush()
    return changed


def recipients_holding(session, resident_id):
    """How many of the resident's recipient rows still hold a phone, its index or a tag (tests, checks)."""
    return session.scalar(
        select(func.count())
        .select_from(Recipient)
        .where(
            Recipient.resident_id == resident_id,
            Recipient.address_enc.is_not(None) | Recipient.address_hash.is_not(None) | Recipient.vulnerable.is_(True),
        )
    )


def _aware(value):
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


PURGED_KINDS = ("grid_residents", "grid_households", "recipients", "deliveries", "preferences", "direct_messages")
COUNTERS = [
    CounterSpec("grassroots_notices_erasures_total", "Residents' erasures (grid.resident_erased) applied here."),
    CounterSpec(
        "grassroots_notices_derived_data_purged_total",
        "Rows anonymised, failed or deleted because a resident was erased or a health tag purged, by kind.",
        labels=["kind"],
        start_labels=[(k,) for k in PURGED_KINDS],
    ),
]
