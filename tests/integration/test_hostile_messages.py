"""Raw AMQP messages nobody's client would send, straight onto every service's RPC queue (issue 12).

Each service must keep running and answer a normal call afterwards; a request that can be answered
gets the suite's typed error; one that cannot (no reply_to, or a body that cannot be decoded) is
not run, lands in ``rpc-<service>.dead`` and is counted on /metrics; no message body — the
distinctive MARKER below — ever reaches a log line. Bytes that are not UTF-8 in a routing key or a
property, and a reply the broker refuses, kill nothing either. Event handlers get the same treatment
for their headers: a bad attempt header cannot make an event loop, a bad call id stack cannot kill.
A compressed body, a content encoding kombu would run a codec for, or a body over MAX_MESSAGE_BYTES is
never decoded (a 10 KB gzip body held 10 MB); a publish that fails the same way every time cannot
loop an event; a dead RPC request is parked without its body (personal data) in a bounded queue.
One suite serves the RPC cases of the module (they change nothing); the others start their own.
"""

import bz2
import json
import logging
import pickle
import re
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import amqp
import pytest
import yaml
from kombu import Connection, Exchange, Queue
from nameko.dependency_providers import Config
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from shared.db import Database
from shared.endpoints import on_event
from shared.errors import ValidationError
from shared.logs import JsonFormatter
from shared.outbox import outbox_models
from shared.rpc import DEAD_QUEUE_ARGUMENTS
from shared.telemetry import Telemetry
from shared.validation import Str, StrictSchema
from tests.integration import module_suite
from tests.integration.module_suite import SERVICES
from tests.support import database_url, scratch_database, token, wait_until
from tools import asyncapi

MARKER = "hostile-body-7c1e9a"  # in every body sent here; must never appear in a log
ADMIN = token("admin", sub="root")
RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)


@pytest.fixture(scope="module")
def module_rabbit(request, vhost_pipeline):
    yield from module_suite.module_vhost(request, vhost_pipeline)


@pytest.fixture(scope="module")
def suite(request, module_rabbit):
    yield from module_suite.running_suite(request, module_rabbit)


def writing_method(service):
    """A method of ``service`` that changes data (so that running it would show)."""
    rpcs, _, _ = asyncapi.entrypoints(asyncapi.service_classes()[service])
    return next(name for name, contract in rpcs if not contract["read_only"])


class Wire:
    """A raw AMQP client on the suite's vhost: publishes anything, collects replies on its own queue;
    counts a queue's messages (ready and unacknowledged) through the management API."""

    def __init__(self, amqp_uri, manager, vhost):
        self.connection = Connection(amqp_uri)
        self.manager = manager
        self.vhost = vhost
        self.reply_key = f"hostile-{uuid.uuid4().hex}"
        queue = Queue(self.reply_key, exchange=RPC_EXCHANGE, routing_key=self.reply_key, auto_delete=True)
        self.replies = self.connection.SimpleQueue(queue)
        self.received = {}

    def send(self, routing_key, body, *, content_type="application/json", answer=True, headers=None, **properties):
        """Publish ``body`` (bytes, sent as they are) and return its correlation id."""
        correlation_id = uuid.uuid4().hex
        if answer:
            properties.update(reply_to=self.reply_key, correlation_id=correlation_id)
        self.connection.Producer().publish(
            body if isinstance(body, bytes) else json.dumps(body).encode(),
            exchange=RPC_EXCHANGE,
            routing_key=routing_key,
            serializer=None,
            content_type=content_type,
            content_encoding=properties.pop("content_encoding", "utf-8"),
            headers={"nameko.auth_token": ADMIN, **(headers or {})},
            **properties,
        )
        return correlation_id

    def send_raw(self, routing_key, body, *, exchange="nameko-rpc", answer=True, headers=None, **properties):
        """Publish with py-amqp itself: exactly these properties and headers (kombu adds and
        encodes its own). Returns the correlation id."""
        correlation_id = uuid.uuid4().hex
        if answer:
            properties = {"reply_to": self.reply_key, "correlation_id": correlation_id, **properties}
        headers = {"nameko.auth_token": ADMIN, **(headers or {})}
        message = amqp.Message(body, application_headers=headers, **properties)
        self.connection.default_channel.basic_publish(message, exchange=exchange, routing_key=routing_key)
        return correlation_id

    def reply(self, correlation_id, timeout=15):
        def arrived():
            while True:
                try:
                    message = self.replies.get(timeout=0.1)
                except self.replies.Empty:
                    return correlation_id in self.received
                message.ack()
                self.received[message.properties.get("correlation_id")] = message.payload

        wait_until(arrived, timeout=timeout, message=f"no reply to {correlation_id}")
        return self.received.pop(correlation_id)

    def take_dead(self, queue_name, expected, timeout=15):
        """The first ``expected`` messages of a dead-letter queue, consumed as raw AMQP messages
        (kombu would try to decode, decompress, …)."""
        taken = []
        channel = self.connection.channel()

        def enough():
            nonlocal channel
            try:
                while (message := channel.basic_get(queue_name, no_ack=True)) is not None:
                    taken.append(message)
            except self.connection.channel_errors:  # not declared yet: the first dead letter declares it
                channel = self.connection.channel()
                return False
            return len(taken) >= expected

        wait_until(enough, timeout=timeout, message=f"{queue_name}: {len(taken)} of {expected} dead letters")
        channel.close()
        return taken

    def queued(self, queue_name):
        """Messages in the queue: ready (live, from the broker) and delivered but not acknowledged
        (the management API's, refreshed every few seconds: see ``drained``)."""
        channel = self.connection.channel()
        try:
            ready = channel.queue_declare(queue_name, passive=True).message_count
        finally:
            channel.close()
        unacked = self.manager.get_queue(self.vhost, queue_name).get("messages_unacknowledged") or 0
        return ready + unacked

    def drained(self, *queue_names, timeout=30):
        """Wait until none of the queues holds a message, ready or unacknowledged: a message a
        consumer keeps requeueing (a loop) or never acknowledges never gets there."""
        wait_until(
            lambda: all(self.queued(name) == 0 for name in queue_names),
            timeout=timeout,
            message=f"messages left in {queue_names}: {[self.queued(name) for name in queue_names]}",
        )

    def close(self):
        self.replies.close()
        self.connection.release()


@pytest.fixture
def wire(suite, rabbit_manager):
    config = suite.configs["grid"]
    client = Wire(config["AMQP_URI"], rabbit_manager, config["vhost"])
    yield client
    client.close()


def dead_letter_count(suite, service):
    found = re.search(
        rf'grassroots_dead_letters_total{{handler="rpc",service="{service}"}} (\S+)', suite.metrics(service)
    )
    assert found, f"{service} does not export its RPC dead-letter counter"
    return float(found.group(1))


def calls_of(suite, service, method):
    found = re.findall(rf'grassroots_requests_total{{[^}}]*method="{method}"[^}}]*}} (\S+)', suite.metrics(service))
    return sum(float(value) for value in found)


def assert_no_body_logged(caplog, capfd):
    out, err = capfd.readouterr()
    assert MARKER not in caplog.text
    assert not any(MARKER in repr(record.args) or MARKER in str(record.msg) for record in caplog.records)
    assert MARKER not in out and MARKER not in err


def error_of(reply):
    assert reply["result"] is None and reply["error"] is not None, reply
    return reply["error"]


def assert_answers_normally(suite, service):
    """The service is alive and serves an ordinary call (on an empty database)."""
    assert suite.alive(service), f"{service} died"
    with ClusterRpcProxy(suite.configs[service], context_data={"auth_token": ADMIN}, timeout=15) as proxy:
        if service == "grid":
            assert proxy.grid.list_units()["items"] == []
        elif service == "notices":
            assert proxy.notices.list_notices()["items"] == []
        elif service == "legal":
            assert proxy.legal.list_stations() == []
        else:
            with pytest.raises(ValidationError) as err:  # asks grid about unit 1: an answer through both
                proxy.volunteer.list_volunteers(under="1")
            assert "under" in err.value.fields


UNDECODABLE: dict[str, tuple[dict[str, Any], bytes]] = {
    "bad_json": ({"content_type": "application/json"}, b'{"args": [], "kwargs": {"x": "' + MARKER.encode() + b'"'),
    "pickle": (
        {"content_type": "application/x-python-serialize", "content_encoding": "binary"},
        pickle.dumps({"args": [], "kwargs": {"x": MARKER}}),
    ),
    "not_utf8": (
        {"content_type": "application/json"},
        b'{"args": [], "kwargs": {"x": "\xff\xfe' + MARKER.encode() + b'"}}',
    ),
    "deep_json": ({"content_type": "application/json"}, ("[" * 10_000 + json.dumps(MARKER) + "]" * 10_000).encode()),
}
# What an RPC dead letter may carry: why, which method, how long the body was, its content type and
# encoding, when; never the body, the token or any other header the sender chose.
DEAD_LETTER_HEADERS = {
    "x-grassroots-dead-reason",
    "x-grassroots-method",
    "x-grassroots-body-bytes",
    "x-grassroots-content-type",
    "x-grassroots-content-encoding",
    "x-grassroots-dead-at",
}


def assert_parked_without_body(dead, service, method):
    for message in dead:
        assert not message.body, "a request body (personal data) was parked"
        assert set(message.headers) <= DEAD_LETTER_HEADERS, sorted(message.headers)
        assert MARKER not in repr(message.headers) and MARKER not in repr(message.properties)
        assert message.headers["x-grassroots-method"] == f"{service}.{method}"
        assert message.headers["x-grassroots-body-bytes"] > 0


@pytest.mark.parametrize("service", SERVICES)
def test_unanswerable_requests_are_dead_lettered_not_run_and_nobody_dies(service, suite, wire, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    method = writing_method(service)
    dead_before = dead_letter_count(suite, service)
    calls_before = calls_of(suite, service, method)
    # A well-formed request with a valid token but nowhere to reply: nameko ran the method, then
    # died on the reply (KeyError: 'reply_to'), again after every restart.
    wire.send(f"{service}.{method}", {"args": [], "kwargs": {"name": MARKER}}, answer=False, headers={"x-note": MARKER})
    wire.send(f"{service}.{method}", b"{" + MARKER.encode(), answer=False)  # undecodable and unanswerable
    answered = {
        case: wire.send(f"{service}.{method}", body, **properties) for case, (properties, body) in UNDECODABLE.items()
    }
    for case, correlation_id in answered.items():
        error = error_of(wire.reply(correlation_id))
        assert error["exc_type"] == "ValidationError", (case, error)
        assert "_body" in json.loads(error["value"]), (case, error)
    dead = wire.take_dead(f"rpc-{service}.dead", 2 + len(UNDECODABLE))
    reasons = sorted(m.headers["x-grassroots-dead-reason"].split(":")[0] for m in dead)
    assert reasons == ["no reply_to"] + ["undecodable"] * (1 + len(UNDECODABLE))
    assert all("nameko.auth_token" not in m.headers for m in dead), "a bearer token was parked in a queue"
    assert_parked_without_body(dead, service, method)
    wait_until(lambda: dead_letter_count(suite, service) == dead_before + len(dead), message="dead letters not counted")
    wire.drained(f"rpc-{service}")  # nothing went back to the RPC queue (a crash loop)
    assert calls_of(suite, service, method) == calls_before, "an unanswerable request was run"
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


def test_the_rpc_dead_letter_queue_is_bounded(suite, wire, rabbit_manager):
    """Dead letters nobody waits for cannot fill the broker's disk: the newest 10,000, for 7 days."""
    wire.send("grid.list_units", {"args": [], "kwargs": {}}, answer=False)
    wire.take_dead("rpc-grid.dead", 1)
    queue = rabbit_manager.get_queue(wire.vhost, "rpc-grid.dead")
    assert queue["arguments"] == DEAD_QUEUE_ARGUMENTS
    assert DEAD_QUEUE_ARGUMENTS == {"x-max-length": 10_000, "x-overflow": "drop-head", "x-message-ttl": 604_800_000}


# A request that runs if anything decodes it (kombu: it would), padded with 10 MB of JSON whitespace:
# compressed, about 10 KB.
REQUEST = json.dumps({"args": [], "kwargs": {"name": MARKER}}).encode()
PADDED = REQUEST + b" " * 10_000_000
JSON_UTF8 = {"content_type": "application/json", "content_encoding": "utf-8"}


def refused_cases():
    import lzma

    return {
        "gzip": ({**JSON_UTF8, "headers": {"compression": "application/x-gzip"}}, zlib.compress(PADDED, 9)),
        "bz2": ({**JSON_UTF8, "headers": {"compression": "bzip2"}}, bz2.compress(PADDED, 9)),
        "lzma": ({**JSON_UTF8, "headers": {"compression": "lzma"}}, lzma.compress(PADDED)),
        "unknown_compression": ({**JSON_UTF8, "headers": {"compression": "application/x-bogus"}}, REQUEST),
        # No content type, or a trusted one: kombu ran codecs.decode(body, content_encoding).
        "zlib_encoding_no_type": ({"content_encoding": "zlib"}, zlib.compress(PADDED, 9)),
        "bz2_encoding_data": ({"content_type": "application/data", "content_encoding": "bz2"}, bz2.compress(PADDED)),
        "zlib_encoding_text": ({"content_type": "application/text", "content_encoding": "zlib"}, zlib.compress(PADDED)),
        "zlib_encoding_json": (
            {"content_type": "application/json", "content_encoding": "zlib"},
            zlib.compress(REQUEST),
        ),
        "too_long": (JSON_UTF8, REQUEST[:-2] + b" " * (1024 * 1024) + REQUEST[-2:]),
    }


REFUSED_PROBLEMS = {"Compressed bodies", "The content encoding", "The body is longer"}


@pytest.mark.parametrize("service", SERVICES)
def test_compressed_encoded_and_long_bodies_are_refused_unread(service, suite, wire, caplog, capfd):
    """kombu decompressed (gzip, bz2, lzma header) or ran a codec (content_encoding) in the consumer
    thread with no limit before any of our code ran: a 16 MB body became GBs, the pod was OOM-killed,
    and the redelivered message killed it again. Each is refused unread, answered and parked."""
    caplog.set_level(logging.DEBUG)
    method = writing_method(service)
    dead_before = dead_letter_count(suite, service)
    calls_before = calls_of(suite, service, method)
    cases = refused_cases()
    assert all(len(body) < 1024 * 1024 for case, (_, body) in cases.items() if case != "too_long")
    sent = {}
    for case, (properties, body) in cases.items():
        properties = dict(properties)
        sent[case] = wire.send_raw(f"{service}.{method}", body, headers=properties.pop("headers", {}), **properties)
    # One nobody can be answered for: parked all the same.
    wire.send_raw(f"{service}.{method}", zlib.compress(PADDED), answer=False, headers={"compression": "gzip"})
    for case, correlation_id in sent.items():
        error = error_of(wire.reply(correlation_id))
        assert error["exc_type"] == "ValidationError", (case, error)
        (problem,) = json.loads(error["value"])["_body"]
        assert any(problem.startswith(p) for p in REFUSED_PROBLEMS), (case, problem)
    dead = wire.take_dead(f"rpc-{service}.dead", len(cases) + 1)
    assert {m.headers["x-grassroots-dead-reason"].split(":")[0] for m in dead} == {"refused"}
    assert_parked_without_body(dead, service, method)
    wait_until(lambda: dead_letter_count(suite, service) == dead_before + len(dead), message="dead letters not counted")
    wire.drained(f"rpc-{service}")
    assert calls_of(suite, service, method) == calls_before, "a refused request was decoded and run"
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


MALFORMED = {
    "empty_object": ({}, "ValidationError", {"args", "kwargs"}),
    "json_list": ([MARKER, {"args": [], "kwargs": {}}], "ValidationError", {"_body"}),
    "json_string": (MARKER, "ValidationError", {"_body"}),
    "kwargs_not_a_dict": ({"args": [], "kwargs": [MARKER]}, "ValidationError", {"kwargs"}),
    "args_not_a_list": ({"args": {"x": MARKER}, "kwargs": {}}, "ValidationError", {"args"}),
}


@pytest.mark.parametrize("service", SERVICES)
def test_malformed_requests_get_typed_errors(service, suite, wire, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    method = writing_method(service)
    calls_before = calls_of(suite, service, method)
    sent = {case: wire.send(f"{service}.{method}", body) for case, (body, _, _) in MALFORMED.items()}
    for case, (_, exc_type, named) in MALFORMED.items():
        error = error_of(wire.reply(sent[case]))
        assert error["exc_type"] == exc_type, (case, error)
        assert set(json.loads(error["value"])) == named, (case, error)
    # No content type: kombu hands the raw bytes over undecoded ("application/data" is trusted).
    raw = error_of(wire.reply(wire.send(f"{service}.{method}", MARKER.encode(), content_type=None)))
    assert raw["exc_type"] == "ValidationError" and set(json.loads(raw["value"])) == {"_body"}
    unknown = error_of(wire.reply(wire.send(f"{service}.no_such_method", {"args": [], "kwargs": {"x": MARKER}})))
    assert unknown["exc_type"] == "NotFound" and "no_such_method" in unknown["value"]
    odd = error_of(wire.reply(wire.send(f"{service}.\x00{MARKER}", {"args": [], "kwargs": {}})))
    assert odd["exc_type"] == "NotFound" and MARKER not in odd["value"]
    # nameko extends a deque with this header in the worker: an integer there killed the container.
    for stack in (5, "x" * 1000, [MARKER * 100], [1, 2], {"a": 1}):
        error = error_of(
            wire.reply(
                wire.send(f"{service}.{method}", {"args": [], "kwargs": {}}, headers={"nameko.call_id_stack": stack})
            )
        )
        assert error["exc_type"] == "ValidationError" and "nameko.call_id_stack" in json.loads(error["value"])
    assert calls_of(suite, service, method) == calls_before
    wire.drained(f"rpc-{service}")
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


@pytest.mark.parametrize("service", SERVICES)
def test_bytes_that_are_not_utf8_in_a_routing_key_or_a_property_kill_nothing(service, suite, wire, caplog, capfd):
    """py-amqp decodes these while reading frames: a UnicodeDecodeError there killed the container
    (and the redelivered message killed it again). The broker does not check them."""
    method = writing_method(service)
    dead_before = dead_letter_count(suite, service)
    calls_before = calls_of(suite, service, method)
    channel = wire.connection.channel()

    def publish(routing_key, reply_to=wire.reply_key, content_type="application/json", correlation_id=None):
        body = json.dumps({"args": [], "kwargs": {"x": MARKER}}).encode()
        properties = {"reply_to": reply_to, "correlation_id": correlation_id or uuid.uuid4().hex}
        message = channel.prepare_message(
            body, content_type=content_type, content_encoding="utf-8", headers={"nameko.auth_token": ADMIN}
        )
        message.properties.update(properties)
        channel.basic_publish(message, exchange="nameko-rpc", routing_key=routing_key)
        return properties["correlation_id"]

    unknown = publish(f"{service}.".encode() + b"\xff\xfe" + MARKER.encode())
    undecodable = publish(f"{service}.{method}", content_type=b"application/\xffjson")
    # No queue has such a name: the method ran (its writes happened) and the reply went nowhere.
    # Not run now: dead-lettered like a request without reply_to.
    for reply_to in (b"\xff\xfe", b"reply\x00to", "reply\nto", "\x7f"):
        publish(f"{service}.{method}", reply_to=reply_to)
    error = error_of(wire.reply(unknown))
    assert error["exc_type"] == "NotFound" and MARKER not in error["value"]
    error = error_of(wire.reply(undecodable))
    assert error["exc_type"] == "ValidationError" and "_body" in json.loads(error["value"])
    dead = wire.take_dead(f"rpc-{service}.dead", 5)
    reasons = sorted(m.headers["x-grassroots-dead-reason"].split(":")[0] for m in dead)
    assert reasons == ["bad reply_to"] * 4 + ["undecodable"]
    wait_until(lambda: dead_letter_count(suite, service) == dead_before + 5, message="dead letters not counted")
    channel.close()
    wire.drained(f"rpc-{service}")
    assert calls_of(suite, service, method) == calls_before, "a request with an unusable reply_to was run"
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


@pytest.mark.parametrize("service", SERVICES)
def test_a_token_that_is_not_ascii_text_is_unauthenticated(service, suite, wire):
    """py-amqp reads header bytes that are not UTF-8 leniently (shared.amqp_wire), as lone surrogates;
    jwt then raised UnicodeEncodeError, outside the endpoint's guard: an untyped error."""
    method = writing_method(service)
    tokens = {
        "not_utf8": ADMIN.encode()[:-2] + b"\xff\xfe",
        "encoded_surrogate": ADMIN[:-1] + "\ud800",
        "not_ascii": ADMIN[:-1] + "é",
        "control": ADMIN[:10] + "\x00" + ADMIN[10:],
        "huge": "e" * 100_000,
    }
    sent = {
        case: wire.send_raw(f"{service}.{method}", REQUEST, headers={"nameko.auth_token": value}, **JSON_UTF8)
        for case, value in tokens.items()
    }
    for case, correlation_id in sent.items():
        error = error_of(wire.reply(correlation_id))
        assert error["exc_type"] == "Unauthenticated", (case, error)
    assert_answers_normally(suite, service)


def test_bodies_decode_as_plain_json(suite, wire):
    """kombu's JSON decoder made {"__type__": "datetime", "__value__": …} a datetime (also date, time,
    decimal, uuid, bytes): a Date field compared it with a date and raised TypeError, untyped.
    Bodies are plain JSON: such an object is an object, which no date or string field takes."""

    def kombu_object(kind, value):
        return {"__type__": kind, "__value__": value}

    slots = {
        "specialty": "family",
        "date_from": kombu_object("datetime", "2030-01-01T00:00:00"),
        "date_to": kombu_object("date", "2030-01-02"),
    }
    error = error_of(wire.reply(wire.send("legal.find_slots", {"args": [], "kwargs": slots})))
    assert error["exc_type"] == "ValidationError", error
    assert {"date_from", "date_to"} <= set(json.loads(error["value"])), error
    request = {
        "unit_id": "1",
        "kind": kombu_object("bytes", "errand"),
        "details": kombu_object("uuid", {"hex": uuid.uuid4().hex}),
        "needed_by": kombu_object("datetime", "2030-01-01T00:00:00+00:00"),
    }
    error = error_of(wire.reply(wire.send("volunteer.create_request", {"args": [], "kwargs": request})))
    assert error["exc_type"] == "ValidationError", error
    assert {"kind", "details", "needed_by"} <= set(json.loads(error["value"])), error


# ---- event handlers: headers cannot make a message loop or kill the service ----------------


class Base(DeclarativeBase):
    pass


Outbox, Processed = outbox_models(Base)


class StrictNote(StrictSchema):
    note = Str(max_length=100)


class PickyService:
    """A handler that always fails (downstream down), one that always succeeds (and keeps the data
    it was given), and one whose payload schema refuses unknown fields."""

    name = "picky"
    config = Config()
    db = Database(Base, outbox_model=Outbox, processed_model=Processed)
    telemetry = Telemetry()
    runs: ClassVar[Counter] = Counter()
    seen: ClassVar[dict] = {}

    @on_event("ledger", "always_fails")
    def on_always_fails(self, envelope, data):
        type(self).runs[envelope["id"]] += 1
        raise RuntimeError("downstream unavailable")

    @on_event("ledger", "fine")
    def on_fine(self, envelope, data):
        type(self).runs[envelope["id"]] += 1
        type(self).seen[envelope["id"]] = data
        return "handled"

    @on_event("ledger", "strict", schema=StrictNote())
    def on_strict(self, envelope, data):
        type(self).runs[envelope["id"]] += 1


# Retries after 25–50 ms, then 50–100 ms: three attempts in all (shared.handlers.RetrySchedule).
FAST_RETRIES = {
    "EVENT_RETRY_BASE_SECONDS": 0.05,
    "EVENT_RETRY_MAX_DELAY_SECONDS": 0.1,
    "EVENT_RETRY_HORIZON_SECONDS": 0.06,
}
RETRY_TIERS = ("picky.retry.50ms", "picky.retry.100ms")


def running_picky(container_factory, config):
    with scratch_database("grassroots_test_picky") as name:
        url = database_url(name)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        Base.metadata.create_all(engine)
        engine.dispose()
        PickyService.runs.clear()
        PickyService.seen.clear()
        container = container_factory(PickyService, {**config, "DATABASE_URL": url, "max_workers": 4, **FAST_RETRIES})
        container.start()
        yield container
        container.kill()


@pytest.fixture
def picky(container_factory, rabbit_config):
    yield from running_picky(container_factory, rabbit_config)


@pytest.fixture
def event_wire(rabbit_config, rabbit_manager):
    client = Wire(rabbit_config["AMQP_URI"], rabbit_manager, rabbit_config["vhost"])
    yield client
    client.close()


def envelope_of(event_type, data=None):
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "grassroots/ledger",
        "type": event_type,
        "time": "2026-11-26T08:00:00+00:00",
        "subject": None,
        "data": {"note": MARKER} if data is None else data,
    }


def publish_event(amqp_uri, event_type, headers, data=None):
    envelope = envelope_of(event_type, data)
    event_id = envelope["id"]
    with Connection(amqp_uri) as conn:
        exchange = Exchange("ledger.events", type="topic", durable=True)
        conn.Producer().publish(
            envelope, exchange=exchange, routing_key=event_type, declare=[exchange], serializer="json", headers=headers
        )
    return event_id


ATTEMPT_HEADERS = {
    "missing": (None, 3),
    "first": (1, 3),
    "second": (2, 2),
    "last": (3, 1),
    "not_an_integer": ("two", 1),
    "a_float": (1.5, 1),
    "a_boolean": (True, 1),
    "zero": (0, 1),
    "negative": (-1_000_000, 1),
    "huge": (2**62, 1),
    "a_list": ([1, 2], 1),
    "a_table": ({"n": 1}, 1),
}


def test_retries_are_bounded_whatever_the_attempt_header_says(picky, rabbit_config, rabbit_manager, caplog, capfd):
    queue = "evt-ledger-always_fails--picky.on_always_fails"
    sent = {}
    for case, (value, _) in ATTEMPT_HEADERS.items():
        headers = {} if value is None else {"x-grassroots-attempt": value}
        sent[case] = publish_event(rabbit_config["AMQP_URI"], "always_fails", headers)
    wire = Wire(rabbit_config["AMQP_URI"], rabbit_manager, rabbit_config["vhost"])
    try:
        dead = wire.take_dead(f"{queue}.dead", len(sent), timeout=30)
        # Parked for good: nothing left to run again, neither on the queue nor waiting to retry.
        wire.drained(queue, *RETRY_TIERS)
    finally:
        wire.close()
    assert sorted(json.loads(m.body)["id"] for m in dead) == sorted(sent.values())
    runs = {case: PickyService.runs[event_id] for case, event_id in sent.items()}
    assert runs == {case: expected for case, (_, expected) in ATTEMPT_HEADERS.items()}
    assert picky_alive(picky)
    assert_no_body_logged(caplog, capfd)


def picky_alive(container):
    return not container._died.ready()


def test_an_event_with_a_bad_call_id_stack_is_handled_and_kills_nothing(picky, rabbit_config):
    """nameko extends a deque with ``nameko.call_id_stack`` in the worker: an integer killed it."""
    sent = [
        publish_event(rabbit_config["AMQP_URI"], "fine", {"nameko.call_id_stack": stack})
        for stack in (5, [1, 2], "x" * 1000, {"a": 1}, ["ok.call.1"])
    ]
    wait_until(lambda: all(PickyService.runs[event_id] == 1 for event_id in sent), message="events not handled")
    assert picky_alive(picky)


FINE = "evt-ledger-fine--picky.on_fine"
ALWAYS_FAILS = "evt-ledger-always_fails--picky.on_always_fails"


def test_events_refused_unread_are_parked_without_their_body(picky, event_wire):
    """The event path decodes with the same guard as RPC: a compressed body, a codec named as
    content encoding or a body over MAX_MESSAGE_BYTES is dead-lettered unread, without its body."""
    padded = json.dumps(envelope_of("fine")).encode() + b" " * 10_000_000
    bodies: dict[str, tuple[dict[str, Any], bytes]] = {
        "gzip": ({**JSON_UTF8, "headers": {"compression": "application/x-gzip"}}, zlib.compress(padded, 9)),
        "zlib_encoding": ({"content_encoding": "zlib"}, zlib.compress(padded, 9)),
        "too_long": (JSON_UTF8, json.dumps(envelope_of("fine", {"note": "x" * (1024 * 1024)})).encode()),
    }
    for properties, body in bodies.values():
        properties = dict(properties)
        headers = properties.pop("headers", {})
        event_wire.send_raw("fine", body, exchange="ledger.events", answer=False, headers=headers, **properties)
    dead = event_wire.take_dead(f"{FINE}.dead", len(bodies))
    assert all(m.headers["x-grassroots-dead-reason"].startswith("refused: ") for m in dead)
    assert all(not m.body for m in dead), "a refused body was parked"
    assert sorted(m.headers["x-grassroots-body-bytes"] for m in dead) == sorted(len(b) for _, b in bodies.values())
    assert all("compression" not in m.headers and "nameko.auth_token" not in m.headers for m in dead)
    event_wire.drained(FINE)
    assert not PickyService.runs, "a refused event was decoded and handled"
    assert picky_alive(picky)


def test_event_bodies_decode_as_plain_json(picky, rabbit_config):
    """kombu's JSON decoder would hand the handler a Decimal and a datetime here."""
    data = {
        "amount": {"__type__": "decimal", "__value__": "1.5"},
        "when": {"__type__": "datetime", "__value__": "2026-01-01T00:00:00"},
    }
    event_id = publish_event(rabbit_config["AMQP_URI"], "fine", {}, data=data)
    wait_until(lambda: event_id in PickyService.seen, message="the event was not handled")
    assert PickyService.seen[event_id] == data


def test_a_retry_that_would_not_fit_a_frame_does_not_loop(picky, event_wire, caplog):
    """An event whose headers fill a frame (frame_max) all but a few bytes: the retry copied every
    header and added one, the broker closed the connection on the oversized frame (FRAME_ERROR), the
    publish failed, the event was requeued — a hot loop. Retries carry only the headers we read."""
    channel = event_wire.connection.default_channel
    frame_max = event_wire.connection.connection.frame_max
    body = json.dumps(envelope_of("always_fails")).encode()
    properties = {**JSON_UTF8, "delivery_mode": 2}

    def header_payload(padding):
        headers = {"x-padding": "p" * padding}
        return 12 + len(amqp.Message(body, application_headers=headers, **properties)._serialize_properties())

    padding = frame_max - 8 - 4 - header_payload(0)  # the broker's limit: frame_max - 8, minus 4 bytes
    assert header_payload(padding) == frame_max - 12
    event_id = json.loads(body)["id"]
    message = amqp.Message(body, application_headers={"x-padding": "p" * padding}, **properties)
    channel.basic_publish(message, exchange="ledger.events", routing_key="always_fails")
    (dead,) = event_wire.take_dead(f"{ALWAYS_FAILS}.dead", 1, timeout=30)
    assert "x-padding" not in dead.headers and json.loads(dead.body)["id"] == event_id
    event_wire.drained(ALWAYS_FAILS, *RETRY_TIERS)
    assert PickyService.runs[event_id] == 3
    assert picky_alive(picky)


@pytest.fixture
def picky_that_cannot_park(container_factory, rabbit_config, rabbit_manager):
    """The picky service as a broker user that may not publish to the default exchange: every retry
    and every dead letter it publishes fails, the same way every time."""
    vhost = rabbit_config["vhost"]
    user, password = f"picky-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbit_manager._put("users", user, json={"password": password, "tags": ""})
    try:
        rabbit_manager.set_vhost_permissions(vhost, user, ".*", ".*", "^(?!amq\\.default$).*")
        host = rabbit_config["AMQP_URI"].split("@", 1)[1].rsplit("/", 1)[0]
        uri = f"amqp://{user}:{password}@{host}/{quote(vhost, safe='')}"
        yield from running_picky(container_factory, {**rabbit_config, "AMQP_URI": uri})
    finally:
        rabbit_manager._delete("users", user)


def test_a_message_that_cannot_be_parked_is_requeued_once_then_dropped(
    picky_that_cannot_park, rabbit_config, event_wire, caplog
):
    """Parking (a retry, a dead letter) that fails the same way every time requeued the message for
    ever. Now a first delivery is requeued once; the redelivered message is dropped, with a log line."""
    caplog.set_level(logging.INFO)
    failing = publish_event(rabbit_config["AMQP_URI"], "always_fails", {})
    event_wire.send_raw("fine", b"{" + MARKER.encode(), exchange="ledger.events", answer=False, **JSON_UTF8)
    event_wire.drained(ALWAYS_FAILS, FINE)

    def dropped():
        return [r for r in caplog.records if r.getMessage() == "could not park a redelivered event message; dropped it"]

    wait_until(lambda: len(dropped()) == 2, message="the messages were not dropped")
    assert PickyService.runs[failing] == 2  # the first delivery and its redelivery
    assert picky_alive(picky_that_cannot_park)


def deployed_levels():
    """(root level, {logger: level}) of each service's LOGGING config, as deployed."""
    root = Path(__file__).resolve().parents[2]
    levels = []
    for service in SERVICES:
        text = (root / "services" / service / "config.yml").read_text()
        text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::([^}]*))?\}", lambda m: m.group(1) or "", text)  # defaults
        config = yaml.safe_load(text)["LOGGING"]
        loggers = {name: spec["level"] for name, spec in config.get("loggers", {}).items() if "level" in spec}
        levels.append((config["root"]["level"], loggers))
    return levels


def emitted_as_deployed(record, levels):
    """Whether any service, configured as deployed, writes ``record`` out."""
    for root_level, loggers in levels:
        parts = record.name.split(".")
        names = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
        level = next((loggers[name] for name in names if name in loggers), root_level)
        if record.levelno >= logging.getLevelName(level):
            return True
    return False


def test_no_log_line_carries_caller_text_unbounded(picky, rabbit_config, event_wire, caplog):
    """nameko logs a failed handler's exception text ("error handling worker …: <error>"); a
    ValidationError names the fields a sender chose, at any length. As the services log (their
    LOGGING config, shared.logs.JsonFormatter) every line is bounded."""
    caplog.set_level(logging.DEBUG)
    huge = MARKER * 10_000
    publish_event(rabbit_config["AMQP_URI"], "strict", {}, data={"note": "x", huge: 1})
    event_wire.take_dead("evt-ledger-strict--picky.on_strict.dead", 1)
    levels = deployed_levels()
    lines = [JsonFormatter().format(r) for r in caplog.records if emitted_as_deployed(r, levels)]
    assert lines, "nothing logged about the malformed event"
    assert max(len(line) for line in lines) < 8000
    assert not any(MARKER * 100 in line for line in lines)


def test_a_reply_the_broker_refuses_is_logged_and_the_service_survives(
    rabbit_config, rabbit_manager, grid_config, container_factory, caplog
):
    """nameko issue 346: a reply that could not be published raised out of the RPC consumer and
    killed the container. Here grid's broker user may not publish to nameko-rpc (its replies)."""
    from nameko.exceptions import RpcTimeout

    from services.grid.service import GridService

    vhost = rabbit_config["vhost"]
    user, password = f"grid-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbit_manager._put("users", user, json={"password": password, "tags": ""})
    try:
        rabbit_manager.set_vhost_permissions(vhost, user, ".*", ".*", "^(?!nameko-rpc$).*")
        host = rabbit_config["AMQP_URI"].split("@", 1)[1].rsplit("/", 1)[0]
        container = container_factory(
            GridService, {**grid_config, "AMQP_URI": f"amqp://{user}:{password}@{host}/{quote(vhost, safe='')}"}
        )
        container.start()
        with ClusterRpcProxy(grid_config, context_data={"auth_token": ADMIN}, timeout=1) as proxy:

            def refused():
                # The broker refuses an unconfirmed publish asynchronously: the next publish on
                # that channel raises.
                with pytest.raises(RpcTimeout):
                    proxy.grid.list_units()
                return [r for r in caplog.records if r.getMessage().startswith("could not publish an RPC reply")]

            lines = wait_until(refused, timeout=30, message="no reply was refused")
            assert all(r.exc_info is None for r in lines)  # one line each: no stack, no body
            assert not container._died.ready()
            # Allowed again, the same process answers.
            rabbit_manager.set_vhost_permissions(vhost, user, ".*", ".*", ".*")

            def answers():
                try:
                    return proxy.grid.list_units()["items"] == []
                except RpcTimeout:
                    return False

            wait_until(answers, timeout=30, message="grid never answered again")
            assert not container._died.ready()
        container.kill()
    finally:
        rabbit_manager._delete("users", user)
