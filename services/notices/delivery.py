"""Sending: due deliveries go to their channel's adapter, under a per-channel rate limit, with
retries and backoff, and a voice-call fallback for a failed SMS to a resident living alone.

At least once, and no more often than that needs. Each delivery is claimed — status ``sending``,
``next_attempt_at`` then the end of the claim's lease — in a committed step of its own before it is
posted, and outcomes are recorded as they come back, a few hundred or a fraction of a second at a
time (not once the whole batch is done). A process killed mid-batch leaves only its unrecorded
claims; once their lease has run out another dispatcher (or this one, restarted) posts them again
with the same ``Idempotency-Key`` (the delivery id), and a delivery recorded as sent is never posted
again. Replicas claim with SKIP LOCKED, so no two post the same delivery at once; and a dispatcher
starts no post later than its claim's lease allows (``start_window``), so a live one is never
overtaken by a reclaim.

The steps are the dispatching timer's to commit (services/notices/service.py): ``dispatch_due`` is a
generator that yields at each step boundary — claims made, outcomes recorded — and the timer commits
there before it goes on.
"""

import datetime as dt
import functools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast as sql_cast,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from services.notices.audience import PHONE_CONTEXT
from services.notices.channels import Outbound, Outcome
from services.notices.models import CLAIMABLE, ChatGroup, Delivery, Notice, Recipient
from services.notices.vocabulary import URGENT_SEVERITIES
from shared.db import fetch, utcnow
from shared.errors import Conflict
from shared.paths import path_ids

log = logging.getLogger(__name__)
DELIVERIES = cast(Table, Delivery.__table__)  # Core statements: no ORM bookkeeping on hot paths

LEASE_SECONDS = 60.0  # a claim's lease (NOTICES_CLAIM_LEASE_SECONDS)
RECORD_EVERY = 200  # outcomes recorded at least every this many results ...
RECORD_SECONDS = 0.2  # ... or this many seconds
RECORD_MARGIN_SECONDS = 2.0  # kept between a post's deadline and its claim's lease end, for recording it


class RetryPolicy:
    def __init__(self, max_attempts=4, base_seconds=2.0, cap_seconds=600.0):
        self.max_attempts = int(max_attempts)
        self.base = float(base_seconds)
        self.cap = float(cap_seconds)

    def next_attempt(self, attempts, now):
        return now + dt.timedelta(seconds=min(self.cap, self.base * 2 ** max(0, attempts - 1)))


def start_window(lease, deadline):
    """Seconds after claiming during which a post may start: each post ends within the adapter's
    ``deadline``, so the claim is recorded before its lease runs out and nobody reclaims it while
    it is still in flight (with a lease shorter than twice the deadline, half the lease). A margin
    is kept for recording the outcome; a dispatcher overtaken all the same records nothing over the
    claim that took over (``Recorder``)."""
    return max(float(lease) - float(deadline or 0.0) - RECORD_MARGIN_SECONDS, float(lease) / 2)


@dataclass
class Plan:
    """What a set of outcomes does to their claimed deliveries."""

    sent: list[int] = field(default_factory=list)
    retries: list[dict] = field(default_factory=list)  # {"d_id", "d_next", "d_detail"}
    failed: list[tuple] = field(default_factory=list)  # (Claim, detail): may fall back to a voice call
    released: list[int] = field(default_factory=list)  # never started: back to queued, no attempt used


def plan_outcomes(results, retry, now):
    """``results``: (Claim, Outcome) pairs; a claim's ``attempts`` count it (a claim whose process
    died was an attempt too). Retryable failures back off until ``retry.max_attempts``."""
    plan = Plan()
    for row, outcome in results:
        if outcome.ok:
            plan.sent.append(row.id)
        elif not outcome.started:
            plan.released.append(row.id)
        elif outcome.retryable and row.attempts < retry.max_attempts:
            plan.retries.append(
                {"d_id": row.id, "d_next": retry.next_attempt(row.attempts, now), "d_detail": outcome.detail}
            )
        else:
            plan.failed.append((row, outcome.detail))
    return plan


def due_to_record(pending, since, now, every=RECORD_EVERY, seconds=RECORD_SECONDS):
    """Record now? When ``every`` outcomes wait, or any has waited ``seconds`` (since the last record)."""
    return pending >= every or (pending > 0 and now - since >= seconds)


def _address(channel, row, group, vault):
    """(to, reveal) of an Outbound: a phone stays encrypted until a post reads it (``Outbound.to``)."""
    if channel == "chat_group":
        return (group.webhook_url if group else None), None
    if channel == "app_push":
        return str(row.resident_id), None
    return (row.address_enc, _revealer(vault)) if row.address_enc else (None, None)


def _revealer(vault):
    """Decrypts a stored phone (one closure per batch, not per message)."""

    def reveal(address_enc):
        return vault.decrypt(address_enc, PHONE_CONTEXT)

    return reveal


def dispatch_due(
    uow,
    adapters,
    limiter,
    vault,
    retry,
    now=None,
    batch=2000,
    lease=LEASE_SECONDS,
    record_every=RECORD_EVERY,
    record_seconds=RECORD_SECONDS,
    handoff=None,
):
    """Claim, post and record one batch of due deliveries per channel: a generator that yields where
    the caller must commit — a channel's claims, before any of them is posted (a crash after the
    post must find the claim), and each record of outcomes while posts stream. Returns how many
    deliveries were claimed.

    ``now`` (default: the time of each step) is what claims, leases and outcomes are stamped with.
    Claims a ``handoff`` holds (written already claimed) are posted first.
    """
    attempted = 0
    while handoff is not None and (handed := handoff.take()) is not None:
        if _fail_if_stopped(uow.session, handed, now or utcnow()):
            yield  # committed: a notice cancelled or expired since its page was written sends nothing more
            continue
        adapter = adapters[handed.channel]
        messages = _messages(handed.channel, handed.claims.values(), handed.text, vault)
        uow.close()  # no connection held while posting
        start_by = handed.claimed_at + start_window(handed.lease, getattr(adapter, "deadline", 0.0))
        recorder = Recorder(
            uow, retry, handed.channel, handed.claims, now, record_every, record_seconds, lease_end=handed.lease_end
        )
        yield from _post_and_record(recorder, adapter, handed.channel, messages, start_by, record_seconds)
        attempted += len(handed.claims)
    due = due_channels(uow.session, list(adapters), now or utcnow())
    for channel, adapter in adapters.items():
        if channel not in due:
            continue
        granted = limiter.take(channel, batch)
        if not granted:
            continue
        claimed_at = time.monotonic()
        claimed_now = now or utcnow()
        lease_end = claimed_now + dt.timedelta(seconds=float(lease))
        claims, messages = claim(uow, channel, granted, claimed_now, lease, vault, lease_end=lease_end)
        limiter.give_back(channel, granted - len(claims))
        # Claimed before posted: the claims are committed here, and so are deliveries the claim failed
        # because their notice stopped (even when nothing is left to post, so no later failure undoes them).
        yield
        if not claims:
            continue
        uow.close()  # no connection (nor SQLite's lock) held while posting
        start_by = claimed_at + start_window(lease, getattr(adapter, "deadline", 0.0))
        recorder = Recorder(uow, retry, channel, claims, now, record_every, record_seconds, lease_end=lease_end)
        yield from _post_and_record(recorder, adapter, channel, messages, start_by, record_seconds)
        attempted += len(claims)
    return attempted


class Claim(NamedTuple):
    """A claimed delivery as the dispatcher needs it; ``attempts`` counts this claim's attempt."""

    id: int
    notice_id: int
    recipient_id: int | None
    unit_path: str
    attempts: int
    address_enc: bytes | None
    resident_id: int | None
    vulnerable_tags: list | str | None  # a PostgreSQL claim's is JSON text (fall_back parses it)


def claim(uow, channel, limit, now, lease, vault, lease_end=None):
    """Claim up to ``limit`` due deliveries of ``channel`` and compose their messages: ``({delivery id:
    Claim}, [Outbound])``. The caller commits the claims before posting any (``dispatch_due`` yields
    for that). A reclaimed delivery whose notice was cancelled or expired meanwhile fails without a post."""
    session = uow.session
    rows = claim_rows(session, channel, limit, now, lease_end or now + dt.timedelta(seconds=float(lease)))
    if not rows:
        return {}, []  # nothing changed: the next channel's claim goes on in this transaction
    texts = {
        n.id: n
        for n in session.execute(
            select(Notice.id, Notice.title, Notice.body, Notice.severity, Notice.status).where(
                Notice.id.in_({row.notice_id for row in rows})
            )
        )
    }
    groups = {}
    if channel == "chat_group":
        unit_ids = [path_ids(row.unit_path)[-1] for row in rows]
        groups = {g.unit_id: g for g in session.scalars(select(ChatGroup).where(ChatGroup.unit_id.in_(unit_ids)))}
    claims: dict[int, Claim] = {}
    messages: list[Outbound] = []
    stopped: list[tuple[int, str]] = []
    for row in rows:
        text_ = texts[row.notice_id]
        if text_.status in ("cancelled", "expired"):
            stopped.append((row.id, text_.status))
            continue
        claims[row.id] = row
        group = groups.get(path_ids(row.unit_path)[-1]) if channel == "chat_group" else None
        messages.append(_message(channel, row, text_, group, vault))
    for delivery_id, status in stopped:  # as cancel_original and expire_notices fail queued ones
        session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == delivery_id)
            .values(status="failed", detail=status, failed_at=now)
        )
    return claims, messages


def _message(channel, row, text_, group, vault):
    """The Outbound of a claimed delivery ``row`` of a notice whose ``title``, ``body`` and ``severity``
    are ``text_``'s."""
    to, reveal = _address(channel, row, group, vault)
    severity = text_.severity
    return Outbound(
        row.id, row.notice_id, channel, to, text_.title, text_.body, severity, severity in URGENT_SEVERITIES, reveal
    )


def _messages(channel, claims, text_, vault):
    """The Outbounds of ``claims`` (Claims of one notice, whose text is ``text_``, to residents), made
    in one pass: a handoff's batch is thousands."""
    if channel not in ("sms", "voice_call", "app_push"):
        return [_message(channel, row, text_, None, vault) for row in claims]
    title, body, severity = text_
    urgent = severity in URGENT_SEVERITIES
    if channel == "app_push":
        return [
            Outbound(row.id, row.notice_id, channel, str(row.resident_id), title, body, severity, urgent)
            for row in claims
        ]
    reveal = _revealer(vault)
    return [
        Outbound(row.id, row.notice_id, channel, row.address_enc, title, body, severity, urgent, reveal)
        if row.address_enc
        else Outbound(row.id, row.notice_id, channel, None, title, body, severity, urgent)
        for row in claims
    ]


class NoticeText(NamedTuple):
    title: str
    body: str
    severity: str


@dataclass
class Handed:
    """Deliveries of one channel written already claimed, for this process's dispatcher to post."""

    channel: str
    claims: dict[int, Claim]
    text: NoticeText
    claimed_at: float  # monotonic: when the claims' lease began
    lease_end: dt.datetime
    lease: float  # seconds


def _fail_if_stopped(session, handed, now):
    """As ``claim`` does for claims it takes from the table: a handed batch (one notice's) whose notice
    was cancelled or expired after its page committed fails without a post — only the deliveries still
    under this batch's claim (a gateway's report may have come first). True when it was stopped."""
    notice_id = next(iter(handed.claims.values())).notice_id
    status = session.scalar(select(Notice.status).where(Notice.id == notice_id))
    if status not in ("cancelled", "expired"):
        return False
    session.execute(
        update(DELIVERIES)
        .where(
            among(session, DELIVERIES.c.id, list(handed.claims)),
            DELIVERIES.c.status == "sending",
            DELIVERIES.c.next_attempt_at == handed.lease_end,
        )
        .values(status="failed", detail=status, failed_at=now)
    )
    return True


class Handoff:
    """Claims made where deliveries are written (``audience.write_recipients``), handed to this
    process's dispatcher: a delivery due now is inserted already claimed — ``sending``, its first
    attempt, ``next_attempt_at`` the end of the lease, as ``claim_rows`` would mark it — which saves
    claiming it from the table (an UPDATE of every row). The claims go to the dispatcher only once
    their transaction is committed (``committed``; ``discard`` drops what was not); from then on they
    are posted and recorded as any other claim, and a process that dies before posting them leaves
    them to run out their lease and be claimed again with the same ``Idempotency-Key``.

    The channel's rate limiter grants each claim, and at most ``capacity`` deliveries wait here: past
    that (a dispatcher behind), deliveries are written queued and claimed from the table as usual."""

    def __init__(self, adapters, limiter, lease=LEASE_SECONDS, capacity=10_000, clock=time.monotonic):
        self.adapters, self.limiter, self.lease = adapters, limiter, float(lease)
        self.capacity, self.clock = int(capacity), clock
        self.uncommitted: list[Handed] = []
        self.ready: deque[Handed] = deque()
        self.waiting = 0  # deliveries in ``uncommitted`` and ``ready``

    def reserve(self, channel, wanted):
        """How many of ``wanted`` deliveries of ``channel``, due now, to write claimed."""
        room = min(wanted, self.capacity - self.waiting)
        if channel not in self.adapters or room <= 0:
            return 0
        return self.limiter.take(channel, room)

    def lease_from(self, now):
        """(monotonic start, end) of a lease taken at ``now``."""
        return self.clock(), now + dt.timedelta(seconds=self.lease)

    def add(self, channel, rows, text_, claimed_at, lease_end):
        """Claims written in the current transaction (handed on when it commits): ``rows`` {delivery id:
        the Claim's fields}, of a notice whose (title, body, severity) are ``text_``."""
        if rows:
            # tuple.__new__ makes each Claim in C (Claim._make is a Python call a row).
            claims = dict(zip(rows, map(_new_claim, rows.values()), strict=True))
            self.uncommitted.append(Handed(channel, claims, NoticeText(*text_), claimed_at, lease_end, self.lease))
            self.waiting += len(claims)

    def committed(self):
        self.ready.extend(self.uncommitted)
        self.uncommitted = []

    def discard(self):
        """The transaction did not commit: its claims were never made."""
        self.waiting -= sum(len(handed.claims) for handed in self.uncommitted)
        self.uncommitted = []

    def take(self):
        """The oldest committed batch, or None."""
        if not self.ready:
            return None
        handed = self.ready.popleft()
        self.waiting -= len(handed.claims)
        return handed


_new_claim = functools.partial(tuple.__new__, Claim)


def due_channels(session, channels, now):
    """The channels with a claimable delivery due by ``now``: one statement, an index probe per channel
    (the claim of a channel with nothing due — most of them, most ticks — is not made at all)."""
    if not channels:
        return set()
    probes = [
        exists().where(text(CLAIMABLE), DELIVERIES.c.channel == channel, DELIVERIES.c.next_attempt_at <= now)
        for channel in channels
    ]
    found = session.execute(select(*probes)).one()
    return {channel for channel, due in zip(channels, found, strict=True) if due}


def claim_rows(session, channel, limit, now, lease_end):
    """Mark up to ``limit`` claimable due deliveries ``sending`` until ``lease_end``; their Claims.

    On PostgreSQL one statement picks (SKIP LOCKED: concurrent dispatchers take disjoint rows),
    marks and returns them, recipient columns included. SQLite's units of work are serial already,
    and its RETURNING cannot name a joined table: a SELECT, then an UPDATE.
    """
    deliveries, recipients = DELIVERIES, cast(Table, Recipient.__table__)
    kept = (deliveries.c.id, deliveries.c.notice_id, deliveries.c.recipient_id, deliveries.c.unit_path)
    due = (
        select(
            *kept,
            deliveries.c.attempts,
            recipients.c.address_enc,
            recipients.c.resident_id,
            recipients.c.vulnerable_tags,
        )
        .select_from(deliveries.outerjoin(recipients, recipients.c.id == deliveries.c.recipient_id))
        # The partial index's own predicate, word for word, so both databases use the index.
        .where(text(CLAIMABLE), deliveries.c.channel == channel, deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
    )
    claimed = {"status": "sending", "attempts": deliveries.c.attempts + 1, "next_attempt_at": lease_end}
    if session.bind.dialect.name == "postgresql":
        # OF: lock only the deliveries (the outer-joined side cannot be locked). MATERIALIZED: the
        # pick runs once, whatever plan the UPDATE gets.
        picked = due.with_for_update(of=deliveries, skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        returned = session.connection().execute(
            update(deliveries)
            .where(deliveries.c.id == picked.c.id)
            .values(claimed)
            .returning(
                *kept,
                deliveries.c.attempts,  # as updated: counting this claim
                picked.c.address_enc,
                picked.c.resident_id,
                # As text: only a failure's fall-back reads it (``fall_back``), so no JSON is parsed per row.
                sql_cast(picked.c.vulnerable_tags, Text),
            )
        )
        return sorted(map(Claim._make, returned), key=attrgetter("id"))
    rows = session.execute(due).all()
    if rows:
        session.execute(update(deliveries).where(deliveries.c.id.in_([row.id for row in rows])).values(claimed))
    return [Claim(*row)._replace(attempts=row.attempts + 1) for row in rows]


def among(session, column, ids):
    """``column IN ids``; on PostgreSQL one array parameter (thousands of ids, no expanding IN)."""
    if session.bind.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
    return column.in_(ids)


def _post_and_record(recorder, adapter, channel, messages, start_by, seconds):
    """Post the claimed messages and record their outcomes as they stream back; yields at each record
    for the caller to commit it."""
    addressed = []
    for message in messages:
        if not message.addressed:
            recorder.add([(message, Outcome(False, retryable=False, detail="no address for this channel"))])
        else:
            addressed.append(message)
    stream = _outcomes(adapter, addressed, seconds, start_by)
    try:
        while True:
            try:
                chunk = next(stream)
            except StopIteration:
                break
            except Exception as exc:  # an adapter bug must not lose the batch: what it left unanswered retries
                log.exception("channel adapter raised", extra={"method": channel})
                error = Outcome(False, retryable=True, detail=f"adapter error: {type(exc).__name__}")
                recorder.add([(m, error) for m in addressed if m.delivery_id not in recorder.answered])
                break
            recorder.add(chunk)
            if recorder.due():
                yield from _record(recorder)
    finally:
        # Stops the posts still out if recording failed, or the worker is being killed (or the caller
        # closed this generator: its commit failed).
        stream.close()
    yield from _record(recorder)


def _record(recorder):
    """Record what waits, if anything: committed at the yield, in a transaction of its own; then the
    connection goes back while posts are still out."""
    if recorder.record():
        yield
        recorder.uow.close()


def _outcomes(adapter, messages, tick, start_by):
    """(message, Outcome) pairs in chunks as they come back; an adapter without ``send_each``
    answers the whole batch at once."""
    if not messages:
        return
    if hasattr(adapter, "send_each"):
        yield from adapter.send_each(messages, tick=tick, start_by=start_by)
    else:
        yield list(zip(messages, adapter.send_many(messages), strict=True))  # one outcome per message


class Recorder:
    """Outcomes waiting to be recorded, and recording them: one UPDATE for every sent delivery, one
    for released claims, a statement per failure — each time in a transaction of its own, which the
    dispatching timer commits (``record`` only writes; ``dispatch_due`` yields after it). Only a
    delivery still ``sending`` under this dispatcher's claim is touched: a gateway's report
    (``record_delivery_status``) may have come first, and it stands; and a claim another dispatcher
    took over once its lease ran out (this one was paused, or slow) is that one's — its lease end,
    kept in ``next_attempt_at``, tells them apart."""

    def __init__(self, uow, retry, channel, claims, now, every, seconds, clock=time.monotonic, lease_end=None):
        self.uow, self.retry, self.channel, self.claims = uow, retry, channel, claims
        self.now, self.every, self.seconds, self.clock = now, every, seconds, clock
        self.lease_end = lease_end
        self.pending: list[tuple] = []  # (Claim, Outcome) of the failures and releases
        self.sent: list[int] = []  # the sent ones' ids: all a sent outcome needs (most of them)
        self.message_ids: dict[int, str] = {}  # sent ones the gateway named: delivery id -> its message id
        self.answered: set[int] = set()
        self.since = clock()

    def add(self, results):
        claims, sent, pending, named = self.claims, self.sent, self.pending, self.message_ids
        for message, outcome in results:
            if outcome.ok:
                sent.append(message.delivery_id)
                if outcome.message_id is not None:
                    named[message.delivery_id] = outcome.message_id
            else:
                pending.append((claims[message.delivery_id], outcome))
        self.answered.update([message.delivery_id for message, _outcome in results])

    def due(self):
        waiting = len(self.pending) + len(self.sent)
        return due_to_record(waiting, self.since, self.clock(), self.every, self.seconds)

    def record(self):
        """Write the waiting outcomes into the unit of work (uncommitted); how many there were."""
        self.since = self.clock()
        if not self.pending and not self.sent:
            return 0
        now = self.now or utcnow()
        plan = plan_outcomes(self.pending, self.retry, now)
        plan.sent = self.sent + plan.sent
        session = self.uow.session
        sending = DELIVERIES.c.status == "sending"
        if self.lease_end is not None:
            sending = and_(sending, DELIVERIES.c.next_attempt_at == self.lease_end)
        named, self.message_ids = self.message_ids, {}
        if named:
            named = self._answerable(session, named)
        unnamed = [delivery_id for delivery_id in plan.sent if delivery_id not in named] if named else plan.sent
        if unnamed:
            session.execute(
                update(DELIVERIES)
                .where(among(session, DELIVERIES.c.id, unnamed), sending)
                .values(status="sent", sent_at=now, detail=None)
            )
        if named:
            record_message_ids(session, named, sending, now)
        if plan.released:
            session.execute(
                update(DELIVERIES)
                .where(among(session, DELIVERIES.c.id, plan.released), sending)
                .values(status="queued", attempts=DELIVERIES.c.attempts - 1, next_attempt_at=now)
            )
        if plan.retries:
            session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == bindparam("d_id"), sending)
                .values(status="queued", next_attempt_at=bindparam("d_next"), detail=bindparam("d_detail")),
                plan.retries,
            )
        for row, detail in plan.failed:
            failed = session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == row.id, sending)
                .values(status="failed", failed_at=now, detail=detail)
            )
            if failed.rowcount:
                fall_back(
                    session,
                    row.id,
                    self.channel,
                    row.notice_id,
                    row.unit_path,
                    row.recipient_id,
                    row.vulnerable_tags,
                    now,
                )
        recorded, self.pending, self.sent = len(self.pending) + len(self.sent), [], []
        return recorded

    def _answerable(self, session, named):
        """Of ``named``, the deliveries of notices that ask for an acknowledgement: a reply is matched by
        message id only to one of those (services/notices/inbound.py). Writing the id for every delivery
        of every notice cost about 15% of a large fan-out, for ids nobody would ever look up."""
        claims = self.claims
        notices = {claims[d].notice_id for d in named if d in claims}
        if not notices:
            return {}
        asking = set(session.scalars(select(Notice.id).where(Notice.id.in_(notices), Notice.requires_ack.is_(True))))
        return {d: m for d, m in named.items() if d in claims and claims[d].notice_id in asking}


def record_message_ids(session, named, sending, now):
    """Mark sent the deliveries in ``named`` ({delivery id: the gateway's message id}) that ``sending``
    still holds, each with its message id: on PostgreSQL one UPDATE joined to the two arrays (as cheap
    as the sent ones without an id), elsewhere a statement a delivery. A gateway's report that came
    first stands, and the id is then not kept (a reply names the delivery id or the phone instead)."""
    if session.bind.dialect.name == "postgresql":
        given = (
            func.unnest(
                bindparam("m_ids", list(named), type_=ARRAY(BigInteger)),
                bindparam("m_names", list(named.values()), type_=ARRAY(Text)),
            )
            .table_valued("id", "name")
            .render_derived(name="given")
        )
        session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == given.c.id, sending)
            .values(status="sent", sent_at=now, detail=None, gateway_message_id=given.c.name)
        )
        return
    session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == bindparam("m_id"), sending)
        .values(status="sent", sent_at=now, detail=None, gateway_message_id=bindparam("m_name")),
        [{"m_id": delivery_id, "m_name": name} for delivery_id, name in named.items()],
    )


def fall_back(session, delivery_id, channel, notice_id, unit_path, recipient_id, vulnerable_tags, now):
    """A failed SMS to a resident living alone becomes a voice call (once). ``vulnerable_tags``: a list,
    or its JSON text (as a PostgreSQL claim returns it)."""
    if isinstance(vulnerable_tags, str):
        vulnerable_tags = json.loads(vulnerable_tags)
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
    # A report may come before the dispatcher has recorded the gateway's acceptance (``sending``).
    order = {"queued": 0, "sending": 0, "sent": 1, "delivered": 2, "failed": 2}
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
