"""Writes can be retried safely: an idempotency key, or a redelivered request, returns the first reply.

Through real RPC on a real broker and PostgreSQL (shared.idempotency)."""

import json
import uuid

import eventlet
import pytest
from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy import create_engine, func, select

from services.grid.models import Incident, Unit
from shared.errors import Conflict, ValidationError
from tests.support import token


def incident_count(grid_db, description):
    engine = create_engine(grid_db.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Incident).where(Incident.description == description))
    finally:
        engine.dispose()


def test_a_write_retried_with_its_key_acts_once_and_returns_the_first_reply(admin, district, grid_db):
    args = {"unit_id": district["small_a"], "category": "other", "description": "lamp out at gate 3"}
    first = admin.report_incident(idempotency_key="client-42", **args)
    again = admin.report_incident(idempotency_key="client-42", **args)
    assert again == first
    assert incident_count(grid_db, "lamp out at gate 3") == 1
    other = admin.report_incident(idempotency_key="client-43", **args)  # another key is another call
    assert other["id"] != first["id"]
    assert incident_count(grid_db, "lamp out at gate 3") == 2


def test_a_key_reused_for_other_arguments_is_refused_and_changes_nothing(admin, district, grid_db):
    admin.report_incident(idempotency_key="k-1", unit_id=district["small_a"], category="other", description="first")
    with pytest.raises(Conflict):
        admin.report_incident(idempotency_key="k-1", unit_id=district["small_a"], category="other", description="x2")
    assert incident_count(grid_db, "x2") == 0


def test_keys_are_scoped_by_caller(admin, district, call_as, grid_db):
    args = {"unit_id": district["small_a"], "category": "other", "description": "same key, two callers"}
    admin.report_incident(idempotency_key="shared-key", **args)
    officer = call_as(token("officer", sub="officer-2", unit=district["street"])).grid
    officer.report_incident(idempotency_key="shared-key", **args)
    assert incident_count(grid_db, "same key, two callers") == 2


@pytest.mark.parametrize("key", ["", "x" * 201, 7, ["k"], "line\nbreak"])
def test_a_bad_key_is_a_validation_error_naming_it(admin, district, grid_db, key):
    with pytest.raises(ValidationError) as raised:
        admin.report_incident(idempotency_key=key, unit_id=district["small_a"], category="other", description="bad")
    assert "idempotency_key" in raised.value.fields
    assert incident_count(grid_db, "bad") == 0


def test_concurrent_retries_under_one_key_act_once(admin, district, grid_db, call_as):
    args = {"unit_id": district["small_a"], "category": "other", "description": "concurrent retries"}
    proxies = [call_as(token("admin", sub="admin")).grid for _ in range(6)]
    pool = eventlet.GreenPool()
    replies = list(pool.imap(lambda p: p.report_incident(idempotency_key="same-moment", **args), proxies))
    assert len({r["id"] for r in replies}) == 1
    assert incident_count(grid_db, "concurrent retries") == 1


def test_a_redelivered_request_acts_once_and_both_deliveries_get_the_first_reply(grid, district, grid_config, grid_db):
    """The request a broker delivers twice (its first consumer died after committing) carries the same
    correlation id: the second delivery returns the first reply instead of creating a second unit."""
    rpc_exchange = Exchange("nameko-rpc", type="topic", durable=True)
    name = f"test-replies-{uuid.uuid4().hex}"
    # nameko replies through its RPC exchange, under the reply queue's name
    reply_queue = Queue(name, exchange=rpc_exchange, routing_key=name, exclusive=True, auto_delete=True)
    correlation_id = str(uuid.uuid4())
    body = {
        "args": [],
        "kwargs": {"parent_id": district["community_a"], "name": "Redelivered grid", "level": "grid_large"},
    }
    with Connection(grid_config["AMQP_URI"]) as conn:
        channel = conn.channel()
        reply_queue(channel).declare()
        producer = Producer(channel)
        for _ in range(2):
            producer.publish(
                json.dumps(body),
                exchange=rpc_exchange,
                routing_key="grid.create_unit",
                reply_to=reply_queue.name,
                correlation_id=correlation_id,
                content_type="application/json",
                headers={"nameko.auth_token": token("admin", sub="admin")},
            )
        replies = []

        def take(body, message):
            replies.append(body)
            message.ack()

        consumer = conn.Consumer(reply_queue, callbacks=[take], accept=["json"])
        with consumer, eventlet.Timeout(60):
            while len(replies) < 2:
                conn.drain_events(timeout=30)
    decoded = [r if isinstance(r, dict) else json.loads(r) for r in replies]
    assert [r["error"] for r in decoded] == [None, None]
    assert decoded[0]["result"] == decoded[1]["result"]
    engine = create_engine(grid_db.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as db:
            assert db.scalar(select(func.count()).select_from(Unit).where(Unit.name == "Redelivered grid")) == 1
    finally:
        engine.dispose()
