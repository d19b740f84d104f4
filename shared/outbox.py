"""Transactional outbox: events — and commands to other services (shared.commands) — are rows
written in the same transaction as the change they announce; a relay publishes committed rows with
publisher confirms.

A message goes out if and only if its transaction committed (at least once: a crash between
publish and marking it sent republishes it, and receivers deduplicate by the envelope id and by
the effect's origin key). A command no queue takes yet (its service never started) is published
``mandatory``: the broker returns it, and the row waits (``retry_at``) without holding up the rows
behind it.
"""

import datetime as dt
import logging
import uuid
from typing import Any

import amqp.exceptions
import eventlet
import eventlet.semaphore
from kombu import Exchange
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange
from sqlalchemy import JSON, DateTime, Integer, String, delete, func, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import BigId, locking, utcnow
from shared.idempotency import idempotency_ttl

log = logging.getLogger(__name__)

# A command the broker did not take, for now: no queue bound (UndeliverableMessage), no exchange yet
# (404), or a sender the broker's permissions refuse (403, a deployment mistake, logged each time).
NOT_DELIVERED_YET = (UndeliverableMessage, amqp.exceptions.NotFound, amqp.exceptions.AccessRefused)
# Seconds a publish waits for the broker's confirm: a queue without a majority must not hold the
# relay's transaction open for ever.
CONFIRM_TIMEOUT = 30

SPEC_VERSION = "1.0"


def envelope(source, event_type, subject, data):
    """A CloudEvents-shaped envelope (attribute names per CloudEvents 1.0)."""
    return {
        "specversion": SPEC_VERSION,
        "id": str(uuid.uuid4()),
        "source": f"grassroots/{source}",
        "type": event_type,
        "time": utcnow().isoformat(),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


class OutboxEventMixin:
    """Columns of a service's ``outbox_events`` table (each service owns one)."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSON)
    headers: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # None: the service's own ``<service>.events``; else the exchange a command goes to.
    destination: Mapped[str | None] = mapped_column(String(100))
    # A command the broker returned (no queue yet) waits until then.
    retry_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ProcessedEventMixin:
    """Columns of a service's ``processed_events`` table: handler dedup keys."""

    __tablename__ = "processed_events"

    handler: Mapped[str] = mapped_column(String(150), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def outbox_models(base: type[Any]):
    """A service's ``outbox_events`` and ``processed_events`` tables, on its own declarative base."""

    class OutboxEvent(OutboxEventMixin, base):
        pass

    class ProcessedEvent(ProcessedEventMixin, base):
        pass

    return OutboxEvent, ProcessedEvent


class OutboxRelay(DependencyProvider):
    """Publishes the service's committed outbox rows to ``<service>.events``.

    Woken right after a unit of work that emitted events commits, and polls as
    a safety net (rows left by a crashed process, a broker that was down).
    Several replicas may run: PostgreSQL's SKIP LOCKED gives each row to one.
    """

    def __init__(self, database_attr="db", batch_size=200, poll_interval=2.0, retention_days=7):
        self.database_attr = database_attr
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = dt.timedelta(days=retention_days)

    def setup(self):
        self.database = next(dep for dep in self.container.dependencies if dep.attr_name == self.database_attr)
        self.model = self.database.outbox_model
        self.exchange = get_event_exchange(self.container.service_name, self.container.config)
        self.publisher = Publisher(
            self.container.config[AMQP_URI_CONFIG_KEY],
            serializer="json",
            use_confirms=True,
            declare=[self.exchange],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
        self._exchanges: dict[str, Exchange] = {}
        self._wakeup = eventlet.semaphore.Semaphore(0)
        self._running = False
        self._gt = None
        self.published_total = 0
        self.database.after_commit.append(self.wake)

    def start(self):
        self._running = True
        self._gt = self.container.spawn_managed_thread(self._run, identifier="outbox_relay")

    def stop(self):
        self._running = False
        self.wake()
        if self._gt is not None:
            self._gt.wait()

    def kill(self):
        self._running = False
        if self._gt is not None:
            self._gt.kill()

    def wake(self):
        if self._wakeup.balance < 1:
            self._wakeup.release()

    def get_dependency(self, worker_ctx):
        return self

    def _run(self):
        from shared.reconnect import max_interval  # the consumers' reconnect ceiling (issue 13)

        # Retries back off to that ceiling (5 s by default; was 30), so events flow again within
        # seconds of the broker's return; one traceback per outage, then a line a minute.
        ceiling = max_interval(self.container.config)
        failures = 0
        last_purge = logged_at = 0.0
        while self._running:
            try:
                sent = self.publish_pending()
                if failures:
                    log.warning("outbox relay publishing again", extra={"count": failures})
                failures = 0
                if sent >= self.batch_size:
                    continue  # more waiting: don't sleep
                now = eventlet.hubs.get_hub().clock()
                if now - last_purge > 3600:
                    self.purge_published()
                    last_purge = now
            except Exception as exc:
                failures += 1
                now = eventlet.hubs.get_hub().clock()
                if failures == 1 or now - logged_at >= 60:
                    logged_at = now
                    log.warning(
                        "outbox relay failed; will retry",
                        exc_info=failures == 1,
                        extra={"error_type": type(exc).__name__, "count": failures},
                    )
                eventlet.sleep(min(ceiling, 0.5 * 2 ** min(failures, 6)))
                continue
            self._wakeup.acquire(timeout=self.poll_interval)

    def publish_pending(self):
        """Publish one batch of unpublished rows; returns how many were sent."""
        model = self.model
        with self.database.session_scope() as session:
            now = utcnow()
            query = (
                select(model)
                .where(model.published_at.is_(None), or_(model.retry_at.is_(None), model.retry_at <= now))
                .order_by(model.id)
            )
            query = locking(query.limit(self.batch_size), session, skip_locked=True)
            rows = session.scalars(query).all()
            sent = 0
            for row in rows:
                row.attempts = (row.attempts or 0) + 1
                if row.destination is None:
                    exchange, extra = self.exchange, {}
                else:
                    exchange, extra = self._command_exchange(row.destination), {"mandatory": True}
                try:
                    self.publisher.publish(
                        row.payload,
                        exchange=exchange,
                        routing_key=row.event_type,
                        headers=row.headers or {},
                        message_id=row.event_id,
                        confirm_timeout=CONFIRM_TIMEOUT,
                        **extra,
                    )
                except NOT_DELIVERED_YET as exc:
                    if row.destination is None:
                        raise
                    # The receiver has not started once (no exchange, no queue yet), or the broker
                    # refuses this sender: this row waits, the rows behind it go on.
                    row.retry_at = now + dt.timedelta(seconds=min(60.0, 2.0 * row.attempts))
                    log.warning(
                        "command not delivered yet; will retry",
                        extra={
                            "event_type": row.event_type,
                            "destination": row.destination,
                            "error_type": type(exc).__name__,
                        },
                    )
                    continue
                row.published_at = now
                sent += 1
        self.published_total += sent
        return len(rows)

    def _command_exchange(self, name):
        exchange = self._exchanges.get(name)
        if exchange is None:
            # Declared by the receiver (its command queues bind to it); a sender may only write to it.
            exchange = self._exchanges[name] = Exchange(name, type="topic", durable=True, no_declare=True)
        return exchange

    def pending_count(self):
        with self.database.session_scope() as session:
            return session.scalar(select(func.count()).select_from(self.model).where(self.model.published_at.is_(None)))

    def purge_published(self):
        cutoff = utcnow() - self.retention
        with self.database.session_scope() as session:
            session.execute(delete(self.model).where(self.model.published_at < cutoff))
        remembered = self.database.idempotency_model
        if remembered is not None:
            kept_from = utcnow() - idempotency_ttl(self.container.config)
            with self.database.session_scope() as session:
                session.execute(delete(remembered).where(remembered.created_at < kept_from))
