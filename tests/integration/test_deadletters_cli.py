"""``grassroots deadletters list|replay`` on the real broker, each test on its own vhost.

Dead letters are parked the way shared.handlers and shared.rpc park them (body, our headers, the
call id stack; no body for RPC requests and events refused unread), then listed — counts, reasons,
never the event's data, nothing taken off the queue — and replayed: moved back with our headers
gone, the rest left in place, nothing read twice. End to end, a real ``on_event`` handler that
fails until "fixed" dead-letters an event; the replay applies it exactly once, and a second copy of
it (an interrupted replay) changes nothing.
"""

import json
import uuid
from collections import Counter
from typing import ClassVar

import amqp
import pytest
from kombu import Connection, Exchange
from nameko.dependency_providers import Config
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from shared.db import Database
from shared.endpoints import on_event
from shared.outbox import outbox_models
from tests.support import database_url, free_port, scratch_database, wait_until
from tools.cli.__main__ import main
from tools.cli.deadletters import declared_queue_names, management_url

MARKER = "private-data-5d1f03"  # in every event's data: must never be printed
HANDLER_QUEUE = "evt-ledger-tagged--probe.on_tagged"
DEAD = f"{HANDLER_QUEUE}.dead"
RPC_DEAD = "rpc-probe.dead"
STACK = ["ledger.publish.1f2e", "probe.on_tagged.9a7b"]


def envelope(event_type="tagged", subject="household/7"):
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "grassroots/ledger",
        "type": event_type,
        "time": "2026-11-26T08:00:00+00:00",
        "subject": subject,
        "data": {"note": MARKER, "household_id": "7"},
    }


class Broker:
    """Raw AMQP on the test's vhost: declare, park as the services do, count, take."""

    def __init__(self, uri):
        self.connection = Connection(uri)
        self.connection.connect()
        self.raw = self.connection.connection

    def declare(self, name, queue_type="classic"):
        channel = self.raw.channel()
        arguments = {"x-queue-type": queue_type} if queue_type != "classic" else {}
        channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
        channel.close()

    def publish(self, queue, body, headers, **properties):
        channel = self.raw.channel()
        message = amqp.Message(body, application_headers=headers, delivery_mode=2, **properties)
        channel.basic_publish_confirm(message, exchange="", routing_key=queue)
        channel.close()

    def park_event(self, queue, attempts=5, reason="failed 5 times: RuntimeError", event=None, **fields):
        """A dead letter as ReliableEventHandler.dead_letter writes it; returns its envelope."""
        event = event or envelope(**fields)
        headers = {"nameko.call_id_stack": STACK, "x-grassroots-attempt": attempts, "x-grassroots-dead-reason": reason}
        self.publish(
            queue, json.dumps(event).encode(), headers, content_type="application/json", content_encoding="utf-8"
        )
        return event

    def park_refused(self, queue, body_bytes=2_000_000):
        """An event refused unread (too long): parked without its body."""
        headers = {
            "x-grassroots-dead-reason": "refused: The body is longer than 1048576 bytes.",
            "x-grassroots-body-bytes": body_bytes,
        }
        self.publish(queue, b"", headers)

    def park_rpc(self, queue, method="probe.report_incident"):
        headers = {
            "x-grassroots-dead-reason": "no reply_to: the request cannot be answered",
            "x-grassroots-method": method,
            "x-grassroots-body-bytes": 120,
            "x-grassroots-content-type": "application/json",
            "x-grassroots-dead-at": "2026-11-26T08:00:05+00:00",
        }
        self.publish(queue, b"", headers, correlation_id=uuid.uuid4().hex)

    def depth(self, name):
        channel = self.raw.channel()
        try:
            return channel.queue_declare(name, passive=True).message_count
        finally:
            channel.close()

    def take(self, name):
        """Every message of ``name``, consumed (raw: bodies as bytes)."""
        channel = self.raw.channel()
        channel.auto_decode = False
        taken = []
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            taken.append(message)
        channel.close()
        return taken

    def close(self):
        self.connection.release()


@pytest.fixture
def broker(rabbit_config):
    client = Broker(rabbit_config["AMQP_URI"])
    yield client
    client.close()


@pytest.fixture
def management(request):
    return request.config.getoption("RABBIT_API_URI")


@pytest.fixture
def cli(rabbit_config, management, capsys, monkeypatch):
    """cli(*argv) -> (exit code, stdout, stderr): ``grassroots deadletters …`` on this test's vhost."""
    monkeypatch.delenv("GRASSROOTS_MANAGEMENT_URL", raising=False)

    def run(*argv, management_url=management):
        extra = ["--management-url", management_url] if management_url else []
        code = main(["deadletters", *argv, "--amqp-uri", rabbit_config["AMQP_URI"], *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def ids(messages):
    return [json.loads(m.body)["id"] for m in messages]


@pytest.fixture(params=["classic", "quorum"])
def parked(request, broker):
    """Two events that failed, one refused unread, in a handler's dead queue; one dead RPC request."""
    broker.declare(HANDLER_QUEUE, request.param)
    broker.declare(DEAD, request.param)
    broker.declare(RPC_DEAD, request.param)
    first = broker.park_event(DEAD)
    broker.park_refused(DEAD)
    second = broker.park_event(DEAD, attempts=1, reason="malformed: {'household_id': ['Not a valid id.']}")
    broker.park_rpc(RPC_DEAD)
    return first, second, request.param


def test_list_shows_counts_reasons_and_events_but_never_their_data(parked, broker, cli):
    first, second, queue_type = parked
    code, out, err = cli("list")
    assert code == 0, err
    assert MARKER not in out and 'household_id": ' not in out
    assert f"{DEAD}  3 messages" in out and f"{RPC_DEAD}  1 message" in out
    assert "4 dead letters in 2 queues" in out
    for event in (first, second):
        assert f"tagged  id {event['id']}  subject household/7" in out
    assert "reason: failed 5 times: RuntimeError" in out
    assert "not replayable (refused unread, kept without its body)" in out
    assert "probe.report_incident" in out and "dead at 2026-11-26T08:00:05+00:00" in out
    assert "not replayable (RPC request, kept without its body)" in out

    code, out, err = cli("list", "--service", "probe", "--json")
    assert code == 0, err
    assert MARKER not in out
    listing = json.loads(out)
    queues = {q["queue"]: q for q in listing["queues"]}
    assert set(queues) == {DEAD, RPC_DEAD}
    dead = queues[DEAD]
    assert (dead["kind"], dead["service"], dead["handler"], dead["target"]) == (
        "event",
        "probe",
        "on_tagged",
        HANDLER_QUEUE,
    )
    assert dead["messages"] == 3
    letters = dead["letters"]
    assert [letter["id"] for letter in letters] == [first["id"], None, second["id"]]
    assert [letter["replayable"] for letter in letters] == [True, False, True]
    assert [letter["attempts"] for letter in letters] == [5, None, 1]
    assert all("data" not in letter for letter in letters)
    assert queues[RPC_DEAD]["kind"] == "rpc" and queues[RPC_DEAD]["letters"][0]["method"] == "probe.report_incident"

    code, out, _ = cli("list", "--queue", HANDLER_QUEUE, "--limit", "1")
    assert code == 0 and "… 2 more (--limit)" in out and second["id"] not in out

    # Read, not taken: every message is still there (a quorum queue takes them back asynchronously,
    # and behind the messages it took back before: only a classic queue keeps its order).
    wait_until(lambda: broker.depth(DEAD) == 3, message=f"{DEAD}: {broker.depth(DEAD)} of 3 messages left")
    assert broker.depth(RPC_DEAD) == 1
    left = [json.loads(m.body)["id"] if m.body else None for m in broker.take(DEAD)]
    if queue_type == "classic":
        assert left == [first["id"], None, second["id"]]
    else:
        assert sorted(left, key=str) == sorted([first["id"], None, second["id"]], key=str)


def test_an_empty_broker_has_no_dead_letters(cli):
    code, out, err = cli("list")
    assert code == 0, err
    assert out.strip() == "no dead letters"


def test_list_without_the_management_api_looks_for_the_suites_own_queues(broker, cli):
    queue = next(name for name in declared_queue_names() if name.startswith("evt-"))
    broker.declare(f"{queue}.dead")
    event = broker.park_event(f"{queue}.dead")
    code, out, err = cli("list", management_url=f"http://127.0.0.1:{free_port()}")
    assert code == 0, out
    assert "cannot list the queues" in err
    assert f"{queue}.dead  1 message" in out and event["id"] in out


def test_the_management_api_is_found_from_the_broker_uri(rabbit_config, management, broker, cli):
    if management_url(None, rabbit_config["AMQP_URI"], environ={}) != management.rstrip("/"):
        pytest.skip("the management API is not on the broker's host at port 15672 with its credentials")
    broker.declare(DEAD)
    broker.park_event(DEAD)
    code, out, err = cli("list", management_url=None)
    assert code == 0 and err == ""
    assert f"{DEAD}  1 message" in out


def test_replay_moves_events_back_with_a_fresh_retry_budget(parked, broker, cli):
    first, second, _ = parked
    code, out, err = cli("replay", "--queue", HANDLER_QUEUE, "--dry-run")
    assert code == 0, err
    assert "would move 2, skipped 1 (1 refused unread, kept without its body)" in out
    wait_until(lambda: broker.depth(DEAD) == 3, message="a dry run took messages")
    assert broker.depth(HANDLER_QUEUE) == 0

    code, out, err = cli("replay", "--queue", DEAD)
    assert code == 0, err
    assert f"{DEAD} → {HANDLER_QUEUE}: moved 2, skipped 1" in out
    moved = broker.take(HANDLER_QUEUE)
    assert ids(moved) == [first["id"], second["id"]]
    for message in moved:
        headers = {k: v for k, v in message.headers.items() if k != "x-delivery-count"}  # a quorum queue's own
        assert headers == {"nameko.call_id_stack": STACK}, "our headers were not reset"
        assert message.properties["content_type"] == "application/json"
        assert message.properties["delivery_mode"] == 2
    assert json.loads(moved[0].body) == first  # the body as it was

    # Left in place: the event without a body; the RPC request (refused when named, passed over by --all).
    assert broker.depth(DEAD) == 1 and broker.depth(RPC_DEAD) == 1
    code, out, err = cli("replay", "--queue", "rpc-probe")
    assert code == 2 and "cannot be replayed" in err
    code, out, err = cli("replay", "--all", "--service", "probe")
    assert code == 0, err
    assert f"{RPC_DEAD} → rpc-probe: moved 0, skipped 1 (1 RPC request, kept without its body)" in out
    assert "moved 0, skipped 2 in 2 dead queue(s)" in out
    assert broker.depth(DEAD) == 1 and broker.depth(RPC_DEAD) == 1 and broker.depth(HANDLER_QUEUE) == 0


def test_replay_one_event_or_a_few(broker, cli):
    broker.declare(HANDLER_QUEUE)
    broker.declare(DEAD)
    events = [broker.park_event(DEAD) for _ in range(4)]

    code, out, err = cli("replay", "--queue", HANDLER_QUEUE, "--event-id", events[2]["id"])
    assert code == 0, err
    assert "moved 1, skipped 0, 3 not the event asked for" in out
    assert ids(broker.take(HANDLER_QUEUE)) == [events[2]["id"]]

    code, out, err = cli("replay", "--queue", HANDLER_QUEUE, "--limit", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["moved"] == 2
    assert ids(broker.take(HANDLER_QUEUE)) == [events[0]["id"], events[1]["id"]]
    assert ids(broker.take(DEAD)) == [events[3]["id"]]  # the rest, in order


def test_replay_leaves_the_messages_when_the_queue_is_gone(broker, cli):
    broker.declare(DEAD)
    broker.park_event(DEAD)
    code, out, _ = cli("replay", "--queue", HANDLER_QUEUE)
    assert code == 1
    assert f"no queue {HANDLER_QUEUE} (start its service first)" in out
    assert broker.depth(DEAD) == 1


# ---- end to end: a real handler dead-letters an event, is fixed, and the replay applies it once ----


class Base(DeclarativeBase):
    pass


Outbox, Processed = outbox_models(Base)


class FlakyService:
    """A handler that fails while ``broken`` (a downstream service down), and ``fail_next`` more times."""

    name = "flaky"
    config = Config()
    db = Database(Base, outbox_model=Outbox, processed_model=Processed)
    broken: ClassVar[bool] = True
    fail_next: ClassVar[int] = 0
    runs: ClassVar[Counter] = Counter()
    effects: ClassVar[Counter] = Counter()

    @on_event("ledger", "tagged")
    def on_tagged(self, envelope, data):
        cls = type(self)
        cls.runs[envelope["id"]] += 1
        if cls.broken or cls.fail_next > 0:
            cls.fail_next = max(0, cls.fail_next - 1)
            raise RuntimeError("downstream unavailable")
        cls.effects[envelope["id"]] += 1


FLAKY_QUEUE = "evt-ledger-tagged--flaky.on_tagged"


@pytest.fixture
def flaky(container_factory, rabbit_config):
    with scratch_database("grassroots_test_flaky") as name:
        url = database_url(name)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        Base.metadata.create_all(engine)
        engine.dispose()
        FlakyService.broken, FlakyService.fail_next = True, 0
        FlakyService.runs.clear()
        FlakyService.effects.clear()
        config = {
            **rabbit_config,
            "DATABASE_URL": url,
            "max_workers": 1,  # one at a time, in queue order (the duplicate check below relies on it)
            "EVENT_RETRY_BASE_SECONDS": 0.05,
            "EVENT_RETRY_MAX_DELAY_SECONDS": 0.05,
            "EVENT_RETRY_HORIZON_SECONDS": 0.1,
        }
        container = container_factory(FlakyService, config)
        container.start()
        yield container
        container.kill()


def publish_event(amqp_uri, event):
    with Connection(amqp_uri) as connection:
        exchange = Exchange("ledger.events", type="topic", durable=True)
        connection.Producer().publish(
            event, exchange=exchange, routing_key=event["type"], declare=[exchange], serializer="json"
        )


def test_a_fixed_handler_applies_a_replayed_event_exactly_once(flaky, rabbit_config, broker, cli):
    uri = rabbit_config["AMQP_URI"]
    max_attempts = next(e for e in flaky.entrypoints if e.method_name == "on_tagged").max_attempts
    event = envelope()
    publish_event(uri, event)

    def dead_count():
        try:
            return broker.depth(f"{FLAKY_QUEUE}.dead")
        except amqp.exceptions.NotFound:  # declared with the first dead letter
            return 0

    wait_until(lambda: dead_count() == 1, timeout=60, message="the failing event was not dead-lettered")
    assert FlakyService.runs[event["id"]] == max_attempts and not FlakyService.effects

    code, out, err = cli("list", "--service", "flaky", "--json")
    assert code == 0, err
    (letter,) = json.loads(out)["queues"][0]["letters"]
    assert letter["id"] == event["id"] and "RuntimeError" in letter["reason"]
    assert letter["attempts"] == max_attempts and letter["replayable"]
    assert MARKER not in out

    # Fixed — but the first replayed run still fails: only a fresh retry budget gets it through.
    FlakyService.broken, FlakyService.fail_next = False, 1
    code, out, err = cli("replay", "--service", "flaky", "--all")
    assert code == 0, err
    assert "moved 1, skipped 0" in out
    wait_until(lambda: FlakyService.effects[event["id"]] == 1, timeout=30, message="the replayed event was not applied")
    assert FlakyService.runs[event["id"]] == max_attempts + 2
    assert dead_count() == 0

    code, out, _ = cli("replay", "--service", "flaky", "--all")  # again: nothing left to move
    assert code == 0 and "moved 0, skipped 0" in out

    # A replay interrupted between the broker's confirm and the ack leaves a copy in .dead: replaying
    # it again is harmless (the handler runs an envelope id once).
    copy = broker.park_event(f"{FLAKY_QUEUE}.dead", attempts=max_attempts, event=event)
    other = broker.park_event(f"{FLAKY_QUEUE}.dead")  # queued behind it
    code, out, err = cli("replay", "--queue", FLAKY_QUEUE)
    assert code == 0, err
    assert "moved 2" in out and copy["id"] == event["id"]
    wait_until(lambda: FlakyService.effects[other["id"]] == 1, timeout=30, message="the second event was not applied")
    # One worker, in queue order: the duplicate was handled (as a duplicate) before the second event.
    assert FlakyService.effects[event["id"]] == 1
    assert FlakyService.runs[event["id"]] == max_attempts + 2
