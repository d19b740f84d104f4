"""The shared plumbing on a real broker and database, through a small test service:
outbox (commit ⇔ publish), handler dedup, retries, dead-lettering of poison messages."""

import json
import uuid

import pytest
from kombu import Connection, Exchange, Queue
from marshmallow import fields
from nameko.dependency_providers import Config
from nameko.exceptions import RemoteError
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shared import queues
from shared.auth import Auth
from shared.db import BigId, Database
from shared.endpoints import endpoint, on_event
from shared.handlers import DEAD_QUEUE_ARGUMENTS
from shared.outbox import OutboxRelay, outbox_models
from shared.telemetry import Telemetry
from shared.validation import Str, StrictSchema
from shared.web import ObservableMixin
from tests.support import JWT_SECRET, database_url, free_port, scratch_database, token, wait_until


class Base(DeclarativeBase):
    pass


Outbox, Processed = outbox_models(Base)


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    note: Mapped[str] = mapped_column(String(100))


class Seen(Base):
    __tablename__ = "seen"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(100))


class AddEntry(StrictSchema):
    note = Str(required=True, max_length=100)
    fail_after_emit = fields.Boolean(load_default=False)


class EntryOut(StrictSchema):
    note = fields.String()


class EntryAdded(StrictSchema):
    note = Str(required=True, max_length=100)


class LedgerService(ObservableMixin):
    name = "ledger"
    config = Config()
    db = Database(Base, outbox_model=Outbox, processed_model=Processed)
    relay = OutboxRelay(poll_interval=0.2)
    auth = Auth()
    telemetry = Telemetry()

    @rpc
    @endpoint(roles=("admin",), schema=AddEntry(), returns=EntryOut())
    def add(self, caller, note, fail_after_emit):
        entry = Entry(note=note)
        self.db.session.add(entry)
        self.db.emit("entry_added", "entry", {"note": note})
        if fail_after_emit:
            raise RuntimeError("failed after emitting")
        return entry


class ListenerService:
    name = "listener"
    config = Config()
    db = Database(Base, outbox_model=Outbox, processed_model=Processed)
    telemetry = Telemetry()
    failures = 0

    @on_event("ledger", "entry_added", schema=EntryAdded())
    def on_entry(self, envelope, data):
        self.db.session.add(Seen(event_id=envelope["id"], note=data["note"]))
        return "handled"

    @on_event("ledger", "flaky")
    def on_flaky(self, envelope, data):
        type(self).failures += 1
        raise RuntimeError("downstream unavailable")


# Retries after 25–50 ms, then 50–100 ms: three attempts in all (shared.handlers.RetrySchedule).
FAST_RETRIES = {
    "EVENT_RETRY_BASE_SECONDS": 0.05,
    "EVENT_RETRY_MAX_DELAY_SECONDS": 0.1,
    "EVENT_RETRY_HORIZON_SECONDS": 0.06,
}


@pytest.fixture
def ledger_db():
    with scratch_database("grassroots_test_ledger") as name:
        url = database_url(name)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        Base.metadata.create_all(engine)
        yield engine, url
        engine.dispose()


@pytest.fixture
def config(rabbit_config, ledger_db):
    return {
        **rabbit_config,
        "DATABASE_URL": ledger_db[1],
        "GRASSROOTS_JWT_SECRET": JWT_SECRET,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        **FAST_RETRIES,
    }


@pytest.fixture
def ledger(container_factory, config):
    container = container_factory(LedgerService, config)
    container.start()
    yield container
    container.kill()


@pytest.fixture
def listener(container_factory, config):
    ListenerService.failures = 0
    container = container_factory(ListenerService, config)
    container.start()
    yield container
    container.kill()


@pytest.fixture
def tap(config):
    """A queue bound to every ledger event, to see exactly what was published."""
    with Connection(config["AMQP_URI"]) as conn:
        exchange = Exchange("ledger.events", type="topic", durable=True)
        queue = Queue(f"tap-{uuid.uuid4().hex}", exchange=exchange, routing_key="#", auto_delete=False)
        queue(conn.default_channel).declare()
        yield conn.SimpleQueue(queue)


def drain(simple_queue, wait=1.5):
    messages: list = []
    while True:
        try:
            message = simple_queue.get(timeout=wait)
        except simple_queue.Empty:
            return messages
        message.ack()
        messages.append(message)
        wait = 0.5


def publish(config, routing_key, body, content_type="application/json"):
    with Connection(config["AMQP_URI"]) as conn:
        exchange = Exchange("ledger.events", type="topic", durable=True)
        producer = conn.Producer()
        producer.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            declare=[exchange],
            content_type=content_type,
            content_encoding="utf-8",
            serializer=None,
        )


def envelope(event_type, data, event_id=None):
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "grassroots/ledger",
            "type": event_type,
            "time": "2026-11-26T08:00:00+00:00",
            "subject": "entry",
            "data": data,
        }
    )


def dead_letters(config, queue_name, count):
    """Raw messages (undecoded: some are not JSON) parked in a dead-letter queue, once ``count`` are."""
    messages = []

    def arrived():
        with Connection(config["AMQP_URI"]) as conn:
            # declared as the handler declares it (the broker refuses other arguments)
            arguments = queues.durable_arguments(config, DEAD_QUEUE_ARGUMENTS)
            bound = Queue(queue_name, durable=True, queue_arguments=arguments)(conn.default_channel)
            bound.declare()
            while (message := bound.get(no_ack=True)) is not None:
                messages.append(message)
        return len(messages) >= count

    wait_until(arrived, message=f"{count} dead letters never reached {queue_name}")
    return messages


def test_rolled_back_change_publishes_nothing_and_committed_publishes_once(ledger, tap, config, ledger_db):
    with ClusterRpcProxy(config, context_data={"auth_token": token("admin")}) as proxy:
        with pytest.raises(RemoteError) as err:
            proxy.ledger.add(note="never", fail_after_emit=True)
        # the caller learns the call id to report, not our internals
        assert err.value.exc_type == "InternalError" and "call id ledger.add." in err.value.value
        assert "failed after emitting" not in err.value.value
        assert drain(tap) == []
        assert proxy.ledger.add(note="kept") == {"note": "kept"}
    messages = drain(tap)
    assert len(messages) == 1
    body = messages[0].payload
    assert body["type"] == "entry_added" and body["data"] == {"note": "kept"}
    assert body["source"] == "grassroots/ledger" and len(body["id"]) == 36
    assert messages[0].headers["nameko.call_id_stack"][-1].startswith("ledger.add.")
    with Session(ledger_db[0]) as session:
        assert session.scalars(select(Entry.note)).all() == ["kept"]
        rows = session.scalars(select(Outbox)).all()
        assert len(rows) == 1 and rows[0].published_at is not None


def test_events_committed_while_the_relay_was_stopped_go_out_when_it_returns(container_factory, config, tap):
    container = container_factory(LedgerService, config)
    container.start()
    relay = next(d for d in container.dependencies if d.attr_name == "relay")
    relay.stop()  # as if the process died after committing
    with ClusterRpcProxy(config, context_data={"auth_token": token("admin")}) as proxy:
        proxy.ledger.add(note="a")
        proxy.ledger.add(note="b")
    assert drain(tap, wait=1.0) == []
    assert relay.pending_count() == 2
    relay.start()
    relay.wake()
    assert [m.payload["data"]["note"] for m in drain(tap)] == ["a", "b"]
    container.kill()


def test_handler_deduplicates_by_envelope_id(listener, config, ledger_db):
    event_id = str(uuid.uuid4())
    with entrypoint_waiter(listener, "on_entry") as first:
        publish(config, "entry_added", envelope("entry_added", {"note": "hello"}, event_id))
    assert first.get() == "handled"
    with entrypoint_waiter(listener, "on_entry") as second:
        publish(config, "entry_added", envelope("entry_added", {"note": "hello"}, event_id))
    assert second.get() == "duplicate"
    with Session(ledger_db[0]) as session:
        assert session.scalar(select(func.count()).select_from(Seen)) == 1
        assert session.scalar(select(func.count()).select_from(Processed)) == 1


def _metric(container, name, **labels):
    telemetry = next(d for d in container.dependencies if d.attr_name == "telemetry")
    return telemetry.registry.get_sample_value(name, labels) or 0


def test_poison_messages_are_dead_lettered_and_the_service_keeps_working(listener, config, ledger_db):
    queue = "evt-ledger-entry_added--listener.on_entry"
    with entrypoint_waiter(listener, "on_entry"):
        publish(config, "entry_added", json.dumps({"no": "envelope"}))
    with entrypoint_waiter(listener, "on_entry"):
        publish(config, "entry_added", envelope("entry_added", {"note": "x" * 500}))  # payload too long
    publish(config, "entry_added", b"{not json", content_type="application/json")
    with entrypoint_waiter(listener, "on_entry") as ok:
        publish(config, "entry_added", envelope("entry_added", {"note": "fine"}))
    assert ok.get() == "handled"
    dead = dead_letters(config, f"{queue}.dead", 3)
    reasons = sorted(m.headers["x-grassroots-dead-reason"].split(":")[0] for m in dead)
    assert reasons == ["malformed", "malformed", "undecodable"]
    assert _metric(listener, "grassroots_dead_letters_total", service="listener", handler="on_entry") == 3
    with Session(ledger_db[0]) as session:
        assert session.scalars(select(Seen.note)).all() == ["fine"]


def test_failing_handler_is_retried_then_dead_lettered(listener, config):
    queue = "evt-ledger-flaky--listener.on_flaky"
    publish(config, "flaky", envelope("flaky", {"n": 1}))
    dead = dead_letters(config, f"{queue}.dead", 1)
    assert len(dead) == 1
    assert dead[0].headers["x-grassroots-attempt"] == 3
    assert ListenerService.failures == 3
    assert (
        _metric(
            listener,
            "grassroots_requests_total",
            service="listener",
            entrypoint="event",
            method="on_flaky",
            outcome="error",
        )
        == 3
    )
    assert _metric(listener, "grassroots_dead_letters_total", service="listener", handler="on_flaky") == 1


def test_a_service_client_reply_queue_is_classic_whatever_the_default_queue_type(
    volunteer, rabbit_manager, rabbit_config
):
    """Production vhosts default to quorum queues; the short-lived reply queue must stay classic."""
    replies = [
        q for q in rabbit_manager.get_queues(rabbit_config["vhost"]) if q["name"].startswith("rpc.reply-volunteer")
    ]
    assert replies, "the volunteer service declared no reply queue"
    assert all(q["arguments"].get("x-queue-type") == "classic" for q in replies)
