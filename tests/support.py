"""Helpers shared by the tests: real PostgreSQL databases, tokens, free ports."""

import os
import socket
import uuid
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from shared.auth import mint_token

JWT_SECRET = "test-secret-for-grassroots-tests"
PII_KEY = "test-pii-key-0123456789abcdef"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_engine():
    return create_engine(
        POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg2://", 1), isolation_level="AUTOCOMMIT"
    )


def database_url(name):
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def scratch_database(prefix="grassroots_test", template=None):
    """A PostgreSQL database created for the caller and dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        yield name
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def token(*roles, sub="tester", unit=None, pii=False, ttl=3600):
    return mint_token(JWT_SECRET, sub, roles, unit=unit, pii=pii, ttl=ttl)


def id_number(seq, birth=None):
    import datetime as dt

    from services.grid.idnumbers import make_id_number

    return make_id_number("370102", birth or dt.date(1950, 1, 1) + dt.timedelta(days=seq * 37), seq % 1000)


def build_district(grid):
    """Two communities under one street, each down to small grids; returns their ids.

    ``grid`` is an admin's service proxy (``call_as(admin).grid``).
    """
    ids = {}
    ids["district"] = grid.create_unit(parent_id=None, level="district", name="Test District")["id"]
    ids["street"] = grid.create_unit(parent_id=ids["district"], level="street", name="East Street")["id"]
    for tag in ("a", "b"):
        community = grid.create_unit(parent_id=ids["street"], level="community", name=f"Community {tag}")["id"]
        large = grid.create_unit(parent_id=community, level="grid_large", name=f"Large {tag}")["id"]
        medium = grid.create_unit(parent_id=large, level="grid_medium", name=f"Medium {tag}")["id"]
        small = grid.create_unit(parent_id=medium, level="grid_small", name=f"Small {tag}")["id"]
        ids.update(
            {f"community_{tag}": community, f"large_{tag}": large, f"medium_{tag}": medium, f"small_{tag}": small}
        )
    return ids


ADDRESS = {"compound": "Sunny Garden", "building": "3", "entrance": "2", "room": "501"}


def add_household(grid, unit_id, room="501"):
    return grid.register_household(unit_id=unit_id, address={**ADDRESS, "room": room})["id"]


def add_resident(grid, household_id, seq, name=None):
    number = id_number(seq)
    import datetime as dt

    birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    return grid.register_resident(
        household_id=household_id,
        name=name or f"Resident {seq}",
        id_number=number,
        phone=f"138{seq:08d}",
        birth_date=birth.isoformat(),
    )


class Receiver:
    """A real local HTTP server standing in for SMS/voice gateways, the push endpoint and chat robots.

    Records every JSON request by path; ``fail(path, status, times=None, when=callable)`` makes it
    answer with an error status (for ``times`` requests, or while ``when(body)`` is true).

    Behaves as docs/gateways.md asks of a gateway: a request whose ``Idempotency-Key`` it accepted
    before on the same path is answered 200 again but not recorded as a new message; it counts in
    ``duplicates`` (and ``repeats`` names it). ``keys`` lists every request's (path, key, status).
    """

    def __init__(self):
        import eventlet
        from eventlet import wsgi

        self.requests = []
        self.rules = []
        self.keys = []
        self.accepted_keys = set()
        self.repeats = []
        self.duplicates = 0
        self.expected_duplicates = 0  # the receiver fixture fails a test whose duplicates differ
        self.socket = eventlet.listen(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = eventlet.spawn(wsgi.server, self.socket, self.app, log_output=False)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, path, status, times=None, when=None):
        self.rules.append({"path": path, "status": status, "times": times, "when": when})

    def app(self, environ, start_response):
        import json

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"null")
        path = environ["PATH_INFO"]
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None and (path, key) in self.accepted_keys:
            self.duplicates += 1
            self.repeats.append((path, key))
            self.keys.append((path, key, 200))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"errcode": 0, "errmsg": "ok"}']
        for rule in self.rules:
            if (
                rule["path"] == path
                and (rule["when"] is None or rule["when"](body))
                and (rule["times"] is None or rule["times"] > 0)
            ):
                if rule["times"] is not None:
                    rule["times"] -= 1
                self.requests.append((path, body, rule["status"]))
                self.keys.append((path, key, rule["status"]))
                start_response(f"{rule['status']} Error", [("Content-Type", "application/json")])
                return [b'{"error": "refused"}']
        self.requests.append((path, body, 200))
        self.keys.append((path, key, 200))
        if key is not None:
            self.accepted_keys.add((path, key))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"errcode": 0, "errmsg": "ok"}']

    def accepted(self, path):
        return [body for p, body, status in self.requests if p == path and status == 200]

    def reset(self):
        """Forget what was received so far (e.g. messages a fixture's setup caused); keys it accepted
        are still known, and a repeat of one still counts as a duplicate."""
        self.requests.clear()
        self.keys.clear()

    def stop(self):
        self.thread.kill()
        self.socket.close()


def wait_until(predicate, timeout=45.0, interval=0.1, message="condition not met"):
    """Wait for a condition the system must reach; ``timeout`` is patience for a loaded 2-core CI
    machine (a notices fan-out once took over 15 s there), not a speed claim. Kept under notices'
    60 s claim lease, so a delivery stuck in a claim still fails a wait for it."""
    import eventlet

    deadline = eventlet.hubs.get_hub().clock() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if eventlet.hubs.get_hub().clock() > deadline:
            raise AssertionError(message)
        eventlet.sleep(interval)


# Tables the grid's events feed (shared/grid_facts.py, the handlers' dedup keys): they change whenever an
# event from earlier grid calls arrives, whatever the call under test does, so a snapshot leaves them out.
EVENT_FED_TABLES = frozenset(
    {"grid_units", "grid_households", "grid_residents", "grid_facts_sync", "erased_residents", "processed_events"}
)


def table_counts(url, metadata, extra_sql=None):
    """Row counts of every table in ``metadata`` but the event-fed ones (and named extra queries): a
    before/after snapshot of what a call may change."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        tables = [t for t in metadata.tables if t not in EVENT_FED_TABLES]
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
        for name, sql in (extra_sql or {}).items():
            counts[name] = conn.execute(text(sql)).scalar()
    engine.dispose()
    return counts


def expect_invalid(method, field=None, *args, **kwargs):
    """Call ``method``; it must raise our ValidationError naming ``field``."""
    import pytest

    from shared.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        method(*args, **kwargs)
    if field is not None:
        assert field in err.value.fields, f"{field} not named in {err.value.fields}"
    assert err.value.exc_type == "ValidationError"
    return err.value


MEGABYTE = "x" * 1_000_000


def assert_bad_input_refused(method, kwargs, string_field, typed_field, wrong_value, snapshot):
    """Unknown field, 1 MB string, wrong type, positional args, a missing required field: each a
    ValidationError naming the field, and ``snapshot()`` (table counts) unchanged after them all."""
    before = snapshot()
    expect_invalid(method, "bogus", **kwargs, bogus=1)
    expect_invalid(method, string_field, **{**kwargs, string_field: MEGABYTE})
    expect_invalid(method, typed_field, **{**kwargs, typed_field: wrong_value})
    expect_invalid(method, "_args", *kwargs.values())
    assert snapshot() == before


class EventTap:
    """A private queue on a service's event exchange: every event it publishes, as it was sent.

    ``next(type)`` returns the next envelope of that type; ``republish(envelope)`` sends one again
    exactly as a broker redelivery or a producer retry would.
    """

    def __init__(self, amqp_uri, service, routing_key="#"):
        import uuid

        from kombu import Connection, Exchange, Queue

        self.connection = Connection(amqp_uri)
        self.exchange = Exchange(f"{service}.events", type="topic", durable=True)
        queue = Queue(f"tap-{uuid.uuid4().hex}", exchange=self.exchange, routing_key=routing_key, auto_delete=True)
        queue(self.connection.default_channel).declare()
        self.queue = self.connection.SimpleQueue(queue)

    def next(self, event_type, timeout=15.0, where=lambda envelope: True):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.queue.get(timeout=0.5)
            except self.queue.Empty:
                continue
            message.ack()
            if message.payload["type"] == event_type and where(message.payload):
                return message.payload
        raise AssertionError(f"no {event_type} event within {timeout}s")

    def republish(self, envelope, **changes):
        producer = self.connection.Producer()
        producer.publish(
            {**envelope, **changes},
            exchange=self.exchange,
            routing_key=envelope["type"],
            serializer="json",
            declare=[self.exchange],
        )

    def close(self):
        self.queue.close()
        self.connection.release()
