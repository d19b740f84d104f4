"""Counting effects and duplicates straight from the services' databases and the stub gateway.

The services' RPC views page, scope and redact; a fault scenario needs the plain count of every
row an effect left (and of every copy), read the same way whatever state the services are in —
even while one is killed or stopped. Each function returns ``tests.faults.report.Tally`` objects
or the raw multisets they are built from.
"""

import contextlib
import json
import time
import uuid
from collections import Counter

from sqlalchemy import create_engine, pool, text

from services import registry
from tests.faults.report import Tally


class Databases:
    """Read-only SQL on the suite's databases ({service: URL}); one short connection per query."""

    def __init__(self, urls):
        self.engines = {
            name: create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), poolclass=pool.NullPool)
            for name, url in urls.items()
        }

    def rows(self, service, sql, **params):
        with self.engines[service].connect() as conn:
            return conn.execute(text(sql), params).all()

    def scalar(self, service, sql, **params):
        with self.engines[service].connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def close(self):
        for engine in self.engines.values():
            engine.dispose()


# ---- notices --------------------------------------------------------------------------------------


def instruction_households(db):
    """Counter of household ids that got a quarantine-instructions message (origin
    ``quarantine:household/<id>:<local day>``): one per household and day."""
    rows = db.rows("notices", "SELECT origin FROM notices WHERE origin LIKE 'quarantine:household/%'")
    return Counter(int(origin.split("/", 1)[1].split(":", 1)[0]) for (origin,) in rows)


def offer_message_recipients(db):
    """Counter of resident ids sent a ``volunteer_offer`` direct message (one count per message)."""
    rows = db.rows(
        "notices",
        "SELECT n.audience, r.resident_id FROM notices n JOIN recipients r ON r.notice_id = n.id "
        "WHERE n.kind = 'direct'",
    )
    return Counter(
        int(resident) for audience, resident in rows if (audience or {}).get("template") == "volunteer_offer"
    )


def gateway_deliveries(db):
    """{delivery id (str): status} of every delivery to a gateway channel (sms, voice, push)."""
    rows = db.rows("notices", "SELECT id, status FROM deliveries WHERE channel IN ('sms', 'voice_call', 'app_push')")
    return {str(i): status for i, status in rows}


def unposted_deliveries(db, gateway):
    """The rows of gateway deliveries the gateway never saw: (id, channel, status, attempts, detail,
    notice id, created, sent) — where a lost message stopped."""
    posted = set(gateway.keys())
    rows = db.rows(
        "notices",
        "SELECT id, channel, status, attempts, detail, notice_id, created_at, sent_at FROM deliveries "
        "WHERE channel IN ('sms', 'voice_call', 'app_push') ORDER BY id",
    )
    return [tuple(row) for row in rows if str(row[0]) not in posted]


def unfinished_deliveries(db):
    """Deliveries still to post: queued, or claimed (``sending``) by a dispatcher that may have died
    with the claim (another takes it over once its lease runs out)."""
    return db.scalar("notices", "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending')")


def delivery_statuses(db):
    return Counter(dict(db.rows("notices", "SELECT status, count(*) FROM deliveries GROUP BY status")))


# ---- volunteer ------------------------------------------------------------------------------------


def care_plans(db):
    return Counter(h for (h,) in db.rows("volunteer", "SELECT household_id FROM care_plans"))


def care_requests(db):
    """Counter of (household id, kind) of care requests (origin ``care:<household>:<kind>:<day>``)."""
    rows = db.rows("volunteer", "SELECT origin FROM help_requests WHERE origin LIKE 'care:%'")
    counter: Counter = Counter()
    for (origin,) in rows:
        _, household, kind, _ = origin.split(":", 3)
        counter[(int(household), kind)] += 1
    return counter


def offered_residents(db):
    """Counter of the resident ids of volunteers offered a request (one count per offer): each offer
    is owed exactly one ``volunteer_offer`` message to that resident."""
    rows = db.rows(
        "volunteer",
        "SELECT v.resident_id FROM offers o JOIN volunteers v ON v.id = o.volunteer_id WHERE v.resident_id IS NOT NULL",
    )
    return Counter(int(r) for (r,) in rows)


def request_statuses(db):
    return Counter(dict(db.rows("volunteer", "SELECT status, count(*) FROM help_requests GROUP BY status")))


# ---- grid and legal -------------------------------------------------------------------------------


def incidents_by_description(db, prefix):
    rows = db.rows("grid", "SELECT description FROM incidents WHERE description LIKE :p", p=f"{prefix}%")
    return Counter(d for (d,) in rows)


def mediation_incidents(db):
    rows = db.rows("legal", "SELECT source_incident_id FROM mediation_cases WHERE source_incident_id IS NOT NULL")
    return Counter(int(i) for (i,) in rows)


def unpublished_outbox(db, service):
    return db.scalar(service, "SELECT count(*) FROM outbox_events WHERE published_at IS NULL")


# ---- the quarantine flow as a whole ---------------------------------------------------------------


def quarantine_tallies(db, gateway, households, with_care=True):
    """The quarantine flow's effects for ``households`` (ids): instructions once per household,
    every gateway delivery's message sent once, a care plan and one request of each kind per household,
    one offer message per offer."""
    tallies = [Tally.of("instructions", households, instruction_households(db))]
    deliveries = gateway_deliveries(db)
    # The effect is the message a gateway sends: one per key, as docs/gateways.md requires of it. A
    # post repeated under the same key after a dispatcher died is no second message; it is counted
    # apart and bounded (scenario.repost_problems).
    tallies.append(Tally.of("gateway_messages", list(deliveries), Counter(gateway.keys().keys())))
    if with_care:
        tallies.append(Tally.of("care_plans", households, care_plans(db)))
        tallies.append(
            Tally.of(
                "care_requests", [(h, k) for h in households for k in ("groceries", "check_in")], care_requests(db)
            )
        )
        tallies.append(Tally.of("offer_messages", offered_residents(db), offer_message_recipients(db)))
    return tallies


def pending_detail(db, vhost, services=registry.NAMES):
    """What is still in flight, by place: messages in the vhost's queues (not dead letters, reply
    queues or the tests' own ``tap-`` queues), unpublished outbox rows, unfinished deliveries."""
    pending: Counter = Counter()
    for name, (ready, unacked, _) in vhost.queues().items():
        if name.endswith(".dead") or name.startswith(("rpc.reply", "tap-")):
            continue
        pending[name] += ready + unacked
    for service in services:
        if service in db.engines:
            pending[f"{service} outbox"] += unpublished_outbox(db, service)
    if "notices" in db.engines:
        pending["notices deliveries"] += unfinished_deliveries(db)
    return +pending


def pending_work(db, vhost, services=registry.NAMES):
    """How much is still in flight (pending_detail, summed): 0 when the suite is idle."""
    return sum(pending_detail(db, vhost, services).values())


def settle(measure, done, timeout, quiet=5.0, idle=None, interval=1.0):
    """Poll ``measure()`` until the value has not changed for ``quiet`` seconds and either nothing is
    in flight any more (``idle()`` returns 0: what is missing then will not come, and late copies
    have had their chance), or — without ``idle`` — ``done(value)`` holds; or until ``timeout``
    seconds. Returns (value, the ``time.monotonic()`` at which it last changed, settled): the
    recovery of a scenario is that moment less the end of its last fault."""
    started = time.monotonic()
    value = measure()
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        if now - changed >= quiet and (idle() == 0 if idle is not None else done(value)):
            # ``value`` was measured before the idle check: work that finished in between (posts out
            # at the last measure, recorded since) is only in a measure taken after it.
            final = measure()
            if final == value:
                return value, changed, True
            value, changed = final, time.monotonic()
            continue
        if now - started > timeout:
            return value, changed, False
        time.sleep(interval)
        new = measure()
        if new != value:
            value, changed = new, time.monotonic()


class EventCopies:
    """A private queue on a service's event exchange: how many copies of each envelope were
    published (the outbox relay publishes at least once; receivers must not act twice)."""

    def __init__(self, amqp_uri, service):
        from kombu import Connection, Exchange, Queue

        self.connection = Connection(amqp_uri)
        exchange = Exchange(f"{service}.events", type="topic", durable=True)
        self.queue = Queue(f"tap-{uuid.uuid4().hex}", exchange=exchange, routing_key="#", durable=False)
        self.queue(self.connection.default_channel).declare()

    def count(self):
        """Counter of envelope ids received so far (drains the queue)."""
        ids: Counter = Counter()
        channel = self.connection.default_channel
        while True:
            message = self.queue(channel).get(no_ack=True)
            if message is None:
                return ids
            try:
                ids[json.loads(message.body)["id"]] += 1
            except (ValueError, KeyError, TypeError):
                ids["?"] += 1

    def close(self):
        with contextlib.suppress(Exception):
            self.queue(self.connection.default_channel).delete()
        self.connection.release()
