"""A per-replica cache of units for ``get_unit``, kept right by the grid's own unit events.

``get_unit`` is the suite's hottest read (every service asks it for paths and levels) and units
change rarely: a hit answers without the database. What makes a cached unit stale is a unit
event — ``unit_created``, ``unit_moved``, ``unit_closed``, ``unit_updated`` (services/grid/events.py)
— and each replica drops the entries an event touches twice:

- at the commit of the transaction that recorded it, in the replica that made the write: the
  event's outbox row is seen at the flush (``after_flush``) and applied once the commit has
  returned (``after_commit``), so before the write replies — its caller's next ``get_unit`` sees
  the change, whichever greenthread of that replica serves it;
- when the published event reaches every replica: each one consumes ``grid.events``' unit events
  on a queue of its own (exclusive, auto-delete, renamed on each connection: a broadcast).

A move drops the moved unit and every cached unit below it (their paths changed): every entry
whose path holds the moved unit's id.

A read that races with a write must not put what it read back after the drop: ``put`` takes the
``generation`` the reader saw before its query, and every invalidation bumps it, so a read that
started before a drop stores nothing. (A read that started after the drop began its query after
the commit had returned, and saw it.)

The cache serves only while its broadcast consumer consumes: events published while it is away
are lost with its queue, so every (re)connection clears it, and until then every call reads the
database. ``max_age`` bounds how long any entry is trusted whatever happens to the events.
Callers' reach is checked on every call, hit or miss (``units.cached_unit``).
"""

import logging
import time
import uuid
from dataclasses import dataclass, field

from kombu import Queue, binding
from marshmallow import ValidationError as SchemaError
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer, QueueConsumer
from nameko.standalone.events import get_event_exchange
from sqlalchemy import event

from shared import amqp_wire
from shared.paths import path_ids
from shared.replies import dump_reply

log = logging.getLogger(__name__)

# The grid's events after which a cached unit may differ from its row.
UNIT_EVENTS = ("unit_created", "unit_moved", "unit_closed", "unit_updated")
_PENDING = "grid.unit_cache.pending"  # session.info key: unit events flushed in this transaction


@dataclass(frozen=True, slots=True)
class CachedUnit:
    """A unit row as ``get_unit`` replies with it (``schemas.UnitOut`` reads these attributes)."""

    COLUMNS = ("id", "parent_id", "level", "name", "code", "path", "closed", "party_org_name")

    id: int
    parent_id: int | None
    level: str
    name: str
    code: str | None
    path: str
    closed: bool
    party_org_name: str | None
    path_ids: tuple  # ids from the district down, for the caller's reach and a move's drop
    # Its reply, dumped once per reply schema: get_unit's reply shows every caller the same unit.
    replies: dict = field(default_factory=dict, compare=False, repr=False)

    def kept_reply(self, returns, caller):
        """The reply ``returns`` dumps of this unit (shared.endpoints), dumped on the first call only."""
        found = self.replies.get(returns)
        if found is None:
            found = self.replies[returns] = dump_reply(returns, caller, self)
        return found

    @classmethod
    def of(cls, row):
        """From anything with a unit's columns as attributes (a row, a ``Unit``)."""
        return cls(
            row.id,
            row.parent_id,
            row.level,
            row.name,
            row.code,
            row.path,
            bool(row.closed),
            row.party_org_name,
            tuple(path_ids(row.path)),
        )


class UnitCache:
    """The entries, their generation and the invalidation rules (pure: no broker, no database).

    It serves once both its invalidations are in place — the broadcast consumer consumes
    (``connected``) and this replica's commits are watched (``watch``) — and not while either is
    missing (tests of the logic alone make one ``serving`` from the start)."""

    def __init__(self, max_entries=20_000, max_age=30.0, serving=False, clock=time.monotonic):
        self.max_entries = max_entries
        self.max_age = max_age
        self.serving = serving
        self._connected = self._watching = serving
        self.clock = clock
        self.generation = 0
        self.hits = 0  # calls answered from the cache (for tests and debugging)
        self._entries: dict[int, tuple[CachedUnit, float]] = {}

    def connected(self):
        """The broadcast consumes (again): what was sent while no queue of ours existed is lost."""
        self._connected = True
        self._serve()

    def disconnected(self):
        self._connected = False
        self.serving = False

    def _serve(self):
        # Always afresh: a read in flight since before (it may predate a write nobody dropped) keeps nothing.
        self.clear()
        self.serving = self._connected and self._watching

    def __len__(self):
        return len(self._entries)

    def get(self, unit_id):
        """The cached unit, or None (not cached, too old, or the cache is not serving)."""
        if not self.serving:
            return None
        entry = self._entries.get(unit_id)
        if entry is None:
            return None
        if self.clock() - entry[1] > self.max_age:
            self._entries.pop(unit_id, None)
            return None
        self.hits += 1
        return entry[0]

    def put(self, unit, generation):
        """Keep ``unit``, read by a query started when the generation was ``generation``; nothing is
        kept if an invalidation came since (what was read may predate it). True if kept."""
        if not self.serving or generation != self.generation:
            return False
        if unit.id not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest put
        self._entries[unit.id] = (unit, self.clock())
        return True

    def invalidate(self, event_type, unit_id):
        """Drop what a unit event makes stale: the unit, and for a move every unit below it too."""
        self.generation += 1
        if event_type == "unit_moved":
            for key in [key for key, (unit, _at) in self._entries.items() if unit_id in unit.path_ids]:
                del self._entries[key]
        else:
            self._entries.pop(unit_id, None)

    def clear(self):
        self.generation += 1
        self._entries.clear()

    def apply(self, body):
        """Apply one delivery of a unit event (its envelope); anything it cannot read clears the
        whole cache (it cannot tell what the event changed). Returns what it did."""
        from services.grid.events import EVENTS
        from shared.endpoints import ENVELOPE

        try:
            envelope = ENVELOPE.load(body)
            if envelope["type"] not in UNIT_EVENTS:
                raise SchemaError({"type": ["Not a unit event."]})
            data = EVENTS[envelope["type"]].load(envelope["data"])
        except Exception as exc:  # whatever it is, this replica must not keep what it may have changed
            self.clear()
            log.warning("unreadable unit event: unit cache cleared", extra={"error_type": type(exc).__name__})
            return "cleared"
        self.invalidate(envelope["type"], int(data["unit_id"]))
        return "invalidated"

    # ---- the writing replica: drop at commit -----------------------------------------------

    def watch(self, sessionmaker, outbox_model):
        """Drop the units of the unit events each transaction of ``sessionmaker`` records, once it
        has committed (see the module docstring); a rollback drops nothing."""

        def flushed(session, _context):
            for row in session.new:
                if isinstance(row, outbox_model) and row.destination is None and row.event_type in UNIT_EVENTS:
                    session.info.setdefault(_PENDING, []).append((row.event_type, int(row.payload["data"]["unit_id"])))

        def committed(session):
            for event_type, unit_id in session.info.pop(_PENDING, ()):
                self.invalidate(event_type, unit_id)

        def rolled_back(session):
            session.info.pop(_PENDING, None)

        event.listen(sessionmaker, "after_flush", flushed)
        event.listen(sessionmaker, "after_commit", committed)
        event.listen(sessionmaker, "after_rollback", rolled_back)
        self._watching = True
        self._serve()


# ---- every replica: the broadcast -------------------------------------------------------------


class BroadcastQueueConsumer(amqp_wire.GuardedQueueConsumer, QueueConsumer):
    """The broadcast's own connection, so that its (re)connections are its own to see: each one
    gets a fresh queue and clears the cache, and the cache stops serving when it is lost."""

    def get_consumers(self, consumer_cls, channel):
        for provider in self._providers:
            provider.renew_queue()
        return super().get_consumers(consumer_cls, channel)

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        for provider in self._providers:
            provider.cache.connected()
        return super().on_consume_ready(connection, channel, consumers, **kwargs)

    def consume(self, *args, **kwargs):
        try:
            yield from super().consume(*args, **kwargs)
        finally:
            for provider in self._providers:
                provider.cache.disconnected()

    def on_decode_error(self, message, exc):
        self._undecodable(None, message, exc)

    def _undecodable(self, provider, message, exc):
        for each in self._providers:
            each.cache.clear()
        log.warning("undecodable unit event: unit cache cleared", extra={"error_type": type(exc).__name__})
        self.ack_message(message)


class UnitEventBroadcast(Consumer):
    """Entrypoint: every replica's own queue of the grid's unit events (not an ``@on_event`` handler:
    those share one durable queue among the replicas, and each event reaches one of them)."""

    queue_consumer = BroadcastQueueConsumer()
    telemetry_kind = "event"  # its calls are counted and logged as event handling (shared.telemetry)

    def __init__(self, **kwargs):
        super().__init__(queue=None, **kwargs)

    def setup(self):
        self.exchange = get_event_exchange(self.container.service_name, self.container.config)
        self.cache = next(d for d in self.container.dependencies if isinstance(d, UnitCacheProvider)).cache
        self.renew_queue()
        super().setup()

    def renew_queue(self):
        """A fresh name on each connection: the broker may not have dropped the last one's queue yet."""
        service = self.container.service_name
        self.queue = Queue(
            f"evt-{service}-unit_events--{service}.{self.method_name}-{uuid.uuid4().hex}",
            bindings=[binding(self.exchange, routing_key=event_type) for event_type in UNIT_EVENTS],
            durable=False,
            exclusive=True,
            auto_delete=True,
            queue_arguments={"x-queue-type": "classic"},  # whatever the vhost's default type
        )


unit_event_broadcast = UnitEventBroadcast.decorator


class UnitCacheProvider(DependencyProvider):
    """Gives workers the replica's ``UnitCache``, watching the service's database for commits."""

    def __init__(self, database_attr="db"):
        self.database_attr = database_attr
        # Made here, not in setup: the broadcast entrypoint's setup may run first and take it.
        self.cache = UnitCache()

    def setup(self):
        config = self.container.config
        self.cache.max_entries = int(config.get("UNIT_CACHE_MAX_ENTRIES", self.cache.max_entries))
        self.cache.max_age = float(config.get("UNIT_CACHE_MAX_AGE", self.cache.max_age))

    def start(self):
        database = next(d for d in self.container.dependencies if d.attr_name == self.database_attr)
        self.cache.watch(database.sessionmaker, database.outbox_model)  # made in the database's setup

    def get_dependency(self, worker_ctx):
        return self.cache
