"""The seam unit tests run domain code through: a service's own tables on a private in-memory
SQLite (``shared.db.Database.local``), units of work as a worker gets them, callers as tokens make
them, and the events a change recorded. No broker, no PostgreSQL, no other service (their typed
clients' fakes stand in: ``services.grid.client.FakeGrid``, ``services.notices.client.FakeNotices``).

    db = local_database("volunteer")
    with unit_of_work(db) as uow:
        request = requests.create_request(uow, staff(unit=path[-1]), grid, notices, policy, ...)
        uow.commit()                      # what the entrypoint would do
    assert events(db) == [...]
"""

import datetime as dt
import importlib
from contextlib import contextmanager

from sqlalchemy import select

from shared.auth import Caller
from shared.db import Database
from shared.pii import PiiVault

VAULT = PiiVault("unit-test-pii-key-0123456789abcdef")


def local_database(service):
    models = importlib.import_module(f"services.{service}.models")
    return Database.local(
        models.Base,
        service,
        outbox_model=models.OutboxEvent,
        processed_model=models.ProcessedEvent,
        idempotency_model=models.IdempotentRequest,
    )


@contextmanager
def unit_of_work(db, request_id=None):
    """A worker's unit of work; rolled back and closed at the end (commit it to keep its work). SQLite
    units of work are serial: close one before opening the next."""
    uow = db.unit_of_work(request_id=request_id)
    try:
        yield uow
    finally:
        uow.rollback()
        uow.close()


def caller(*roles, unit=None, pii=False, sub="tester"):
    return Caller(sub=sub, roles=frozenset(roles), unit=None if unit is None else str(unit), pii=pii)


def events(db, event_type=None):
    """``(type, subject, data)`` of every event (and command) recorded in the outbox, oldest first."""
    outbox = db.outbox_model
    with unit_of_work(db) as uow:
        rows = uow.session.scalars(select(outbox).order_by(outbox.id)).all()
        found = [(row.event_type, row.payload.get("subject"), row.payload.get("data")) for row in rows]
    return [event for event in found if event_type is None or event[0] == event_type]


class Clock:
    """The time domain modules read (their ``utcnow``), moved by the test, never by waiting."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += dt.timedelta(**delta)
        return self.now

    @classmethod
    def install(cls, monkeypatch, now, *modules):
        """A clock at ``now`` that every module of ``modules`` reading ``utcnow`` reads instead."""
        clock = cls(now)
        for module in modules:
            if hasattr(module, "utcnow"):
                monkeypatch.setattr(module, "utcnow", clock)
        return clock
