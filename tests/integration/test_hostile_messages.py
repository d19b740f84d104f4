"""Raw AMQP messages nobody's client would send, straight onto every service's RPC queue (issue 12).

Each service must keep running and answer a normal call afterwards; a request that can be answered
gets the suite's typed error; one that cannot (no reply_to, or a body that cannot be decoded) is
not run, lands in ``rpc-<service>.dead`` and is counted on /metrics; no message body — the
distinctive MARKER below — ever reaches a log line. Bytes that are not UTF-8 in a routing key or a
property, and a reply the broker refuses, kill nothing either. Event handlers get the same treatment
for their headers: a bad attempt header cannot make an event loop, a bad call id stack cannot kill.
One suite serves the RPC cases of the module (they change nothing); the others start their own.
"""

import json
import logging
import pickle
import re
import uuid
from collections import Counter
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from kombu import Connection, Exchange, Queue
from nameko.dependency_providers import Config
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

from shared import asyncapi
from shared.db import Database
from shared.endpoints import on_event
from shared.errors import ValidationError
from shared.outbox import outbox_models
from shared.telemetry import Telemetry
from tests.integration import module_suite
from tests.integration.module_suite import SERVICES
from tests.support import database_url, scratch_database, token, wait_until

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
    """A raw AMQP client on the suite's vhost: publishes anything, collects replies on its own queue."""

    def __init__(self, amqp_uri):
        self.connection = Connection(amqp_uri)
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
        channel = self.connection.channel()
        try:
            return channel.queue_declare(queue_name, passive=True).message_count
        finally:
            channel.close()

    def close(self):
        self.replies.close()
        self.connection.release()


@pytest.fixture
def wire(suite):
    client = Wire(suite.configs["grid"]["AMQP_URI"])
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
    "bad_compression": ({"headers": {"compression": "application/x-bogus"}}, MARKER.encode()),
}


@pytest.mark.parametrize("service", SERVICES)
def test_unanswerable_requests_are_dead_lettered_not_run_and_nobody_dies(service, suite, wire, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    method = writing_method(service)
    dead_before = dead_letter_count(suite, service)
    calls_before = calls_of(suite, service, method)
    # A well-formed request with a valid token but nowhere to reply: nameko ran the method, then
    # died on the reply (KeyError: 'reply_to'), again after every restart.
    wire.send(f"{service}.{method}", {"args": [], "kwargs": {"name": MARKER}}, answer=False)
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
    wait_until(lambda: dead_letter_count(suite, service) == dead_before + len(dead), message="dead letters not counted")
    assert wire.queued(f"rpc-{service}") == 0, "a message went back to the RPC queue (a crash loop)"
    assert calls_of(suite, service, method) == calls_before, "an unanswerable request was run"
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
    assert wire.queued(f"rpc-{service}") == 0
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


@pytest.mark.parametrize("service", SERVICES)
def test_bytes_that_are_not_utf8_in_a_routing_key_or_a_property_kill_nothing(service, suite, wire, caplog, capfd):
    """py-amqp decodes these while reading frames: a UnicodeDecodeError there killed the container
    (and the redelivered message killed it again). The broker does not check them."""
    method = writing_method(service)
    dead_before = dead_letter_count(suite, service)
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
    publish(f"{service}.{method}", reply_to=b"\xff\xfe")  # runs (kwargs refused), replies to nowhere
    error = error_of(wire.reply(unknown))
    assert error["exc_type"] == "NotFound" and MARKER not in error["value"]
    error = error_of(wire.reply(undecodable))
    assert error["exc_type"] == "ValidationError" and "_body" in json.loads(error["value"])
    dead = wire.take_dead(f"rpc-{service}.dead", 1)
    assert dead[0].headers["x-grassroots-dead-reason"].startswith("undecodable")
    wait_until(lambda: dead_letter_count(suite, service) == dead_before + 1, message="dead letter not counted")
    channel.close()
    assert wire.queued(f"rpc-{service}") == 0
    assert_answers_normally(suite, service)
    assert_no_body_logged(caplog, capfd)


# ---- event handlers: headers cannot make a message loop or kill the service ----------------


class Base(DeclarativeBase):
    pass


Outbox, Processed = outbox_models(Base)


class PickyService:
    """A handler that always fails (downstream down), and one that always succeeds."""

    name = "picky"
    config = Config()
    db = Database(Base, outbox_model=Outbox, processed_model=Processed)
    telemetry = Telemetry()
    runs: ClassVar[Counter] = Counter()

    @on_event("ledger", "always_fails", max_attempts=3, retry_delay=0.05)
    def on_always_fails(self, envelope, data):
        type(self).runs[envelope["id"]] += 1
        raise RuntimeError("downstream unavailable")

    @on_event("ledger", "fine")
    def on_fine(self, envelope, data):
        type(self).runs[envelope["id"]] += 1
        return "handled"


@pytest.fixture
def picky(container_factory, rabbit_config):
    with scratch_database("grassroots_test_picky") as name:
        url = database_url(name)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        Base.metadata.create_all(engine)
        engine.dispose()
        PickyService.runs.clear()
        container = container_factory(PickyService, {**rabbit_config, "DATABASE_URL": url, "max_workers": 4})
        container.start()
        yield container
        container.kill()


def publish_event(amqp_uri, event_type, headers):
    event_id = str(uuid.uuid4())
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "grassroots/ledger",
        "type": event_type,
        "time": "2026-11-26T08:00:00+00:00",
        "subject": None,
        "data": {"note": MARKER},
    }
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


def test_retries_are_bounded_whatever_the_attempt_header_says(picky, rabbit_config, caplog, capfd):
    queue = "evt-ledger-always_fails--picky.on_always_fails"
    sent = {}
    for case, (value, _) in ATTEMPT_HEADERS.items():
        headers = {} if value is None else {"x-grassroots-attempt": value}
        sent[case] = publish_event(rabbit_config["AMQP_URI"], "always_fails", headers)
    wire = Wire(rabbit_config["AMQP_URI"])
    try:
        dead = wire.take_dead(f"{queue}.dead", len(sent), timeout=30)
        # Parked for good: nothing left to run again, neither on the queue nor waiting to retry.
        assert wire.queued(queue) == 0 and wire.queued(f"{queue}.retry") == 0
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
