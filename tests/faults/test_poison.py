"""Poison messages mixed into a flow: malformed and hostile events, commands and RPC requests arrive
in three waves while a batch of quarantine tags flows through grid, notices and volunteer.

Each poison message must be dead-lettered (in its queue's ``.dead`` queue) and counted
(``grassroots_dead_letters_total``), or answered with a typed error when it can be; none may run;
nothing of the real flow may be lost or duplicated, and no service may die.
"""

import json
import re
import time
import uuid
from collections import Counter

import eventlet
from kombu import Connection, Exchange, Queue

from services import registry
from shared.rpc import TOKEN_HEADER
from tests.faults import effects, population, scenario
from tests.faults.effects import Databases
from tests.faults.report import Tally, report
from tests.faults.suite import Suite, admin_token
from tools import asyncapi

SERVICES = registry.NAMES
RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)
# A handler's (or command's) own queue: not its retry or dead queues.
HANDLER_QUEUE = re.compile(r"^(evt-[^.]+--[a-z_]+\.[a-z_]+|cmd-[a-z_]+-[a-z_]+)$")
WAVES = 3
MAX_MESSAGE_BYTES = 65536  # GRASSROOTS_MAX_MESSAGE_BYTES here: a longer body is refused unread
MARKER = "poison-7d2f"  # in every poison body; an incident carrying it means a poison request ran


def envelope(event_type, data):
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "grassroots/grid",
        "type": event_type,
        "time": "2024-01-01T00:00:00+00:00",
        "subject": MARKER,
        "datacontenttype": "application/json",
        "data": data,
    }


def poison_events():
    """(body bytes, content type, content encoding) of messages no handler may act on."""
    return [
        (b"\x00\xff not json " + MARKER.encode(), "application/json", "utf-8"),
        (json.dumps({"hello": MARKER}).encode(), "application/json", "utf-8"),
        (json.dumps(envelope("resident_tagged", {"tag": "quarantined"})).encode(), "application/json", "utf-8"),
        (
            json.dumps(envelope("resident_tagged", {"resident_id": "x", "household_id": [], "tag": 7})).encode(),
            "application/json",
            "utf-8",
        ),
        (json.dumps([MARKER] * 3).encode(), "application/json", "utf-8"),
        (b"\x80\x04\x95" + MARKER.encode(), "application/x-python-serialize", "binary"),
        (json.dumps({"m": MARKER}).encode(), "application/json", "gzip"),
        (json.dumps({"m": MARKER, "pad": "x" * (MAX_MESSAGE_BYTES + 1)}).encode(), "application/json", "utf-8"),
    ]


class Poisoner:
    """Publishes poison on the suite's vhost and collects replies to the poisoned RPC requests."""

    def __init__(self, amqp_uri):
        self.connection = Connection(amqp_uri)
        self.producer = self.connection.Producer()
        self.reply_key = f"tap-poison-replies-{uuid.uuid4().hex}"
        self.replies = self.connection.SimpleQueue(
            Queue(self.reply_key, exchange=RPC_EXCHANGE, routing_key=self.reply_key, auto_delete=True)
        )
        self.expect_replies: set = set()

    def publish(self, body, content_type, content_encoding, **kwargs):
        self.producer.publish(
            body, content_type=content_type, content_encoding=content_encoding, serializer=None, **kwargs
        )

    def to_queue(self, queue, body, content_type, content_encoding):
        self.publish(body, content_type, content_encoding, exchange="", routing_key=queue)

    def grid_event(self, body, content_type, content_encoding):
        """As if grid had published it: through its event exchange, to every handler bound."""
        exchange = Exchange("grid.events", type="topic", durable=True)
        self.publish(body, content_type, content_encoding, exchange=exchange, routing_key="resident_tagged")

    def rpc(self, service, method, body, content_type="application/json", encoding="utf-8", answer=True):
        correlation_id = str(uuid.uuid4())
        extra = {"reply_to": self.reply_key, "correlation_id": correlation_id} if answer else {}
        self.publish(
            body,
            content_type,
            encoding,
            exchange=RPC_EXCHANGE,
            routing_key=f"{service}.{method}",
            headers={TOKEN_HEADER: admin_token()},
            **extra,
        )
        return correlation_id

    def rpc_wave(self, service):
        """Three requests no service may run (dead-lettered) and two it answers with a typed error."""
        write = json.dumps({"args": [], "kwargs": {"description": MARKER}}).encode()
        self.rpc(service, writing_method(service), write, answer=False)
        self.rpc(service, "get_unit", b"{not json " + MARKER.encode())
        self.rpc(service, "get_unit", b"\x80\x04\x95" + MARKER.encode(), "application/x-python-serialize", "binary")
        self.expect_replies.add(self.rpc(service, "get_unit", json.dumps({"args": 1, "kwargs": MARKER}).encode()))
        self.expect_replies.add(self.rpc(service, f"no_such_method_{uuid.uuid4().hex[:6]}", b'{"args":[],"kwargs":{}}'))
        return 3

    def typed_replies(self):
        """Counter of correlation ids answered with a typed error (exc_type one of ours)."""
        answered: Counter = Counter()
        while True:
            try:
                message = self.replies.get(timeout=0.5)
            except self.replies.Empty:
                return answered
            message.ack()
            error = (message.payload or {}).get("error") or {}
            correlation_id = message.properties.get("correlation_id")
            if error.get("exc_type") and correlation_id in self.expect_replies:
                answered[correlation_id] += 1

    def close(self):
        self.replies.close()
        self.connection.release()


def writing_method(service):
    """A method of ``service`` that changes data (so that running it would be a fault)."""
    rpcs, _, _ = asyncapi.entrypoints(asyncapi.service_classes()[service])
    return next(name for name, contract in rpcs if not contract["read_only"])


def dead_letter_metric(suite, service):
    total = 0.0
    for line in suite.metrics(service).splitlines():
        if line.startswith("grassroots_dead_letters_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def test_poison_messages_mixed_into_a_flow(amqp_uri, vhost, templates, gateway, tmp_path):
    env = {**scenario.FAST_TIMERS, **gateway.env(), "GRASSROOTS_MAX_MESSAGE_BYTES": MAX_MESSAGE_BYTES}
    with Suite(amqp_uri, services=SERVICES, env=env, templates=templates, log_dir=str(tmp_path)) as suite:
        db = Databases(suite.database_urls)
        poisoner = Poisoner(amqp_uri)
        try:
            handler_queues = sorted(q for q in vhost.queues() if HANDLER_QUEUE.match(q))
            tagged_queues = [q for q in handler_queues if q.startswith("evt-grid-resident_tagged--")]
            assert handler_queues and tagged_queues, f"no handler queues found in {sorted(vhost.queues())}"
            expected_dead: Counter = Counter()
            with suite.rpc() as rpc:
                people = population.build(rpc, scenario.households(80))
                tagging = eventlet.spawn(scenario.tag_all, rpc, people.residents)
                poison_sent = 0
                for wave in range(WAVES):
                    scenario.wait_for_progress(lambda: scenario.quarantine_progress(db, people), (wave + 1) / 4)
                    for body in poison_events():
                        for queue in handler_queues:
                            poisoner.to_queue(queue, *body)
                            expected_dead[f"{queue}.dead"] += 1
                            poison_sent += 1
                        poisoner.grid_event(*body)
                        poison_sent += 1
                        for queue in tagged_queues:
                            expected_dead[f"{queue}.dead"] += 1
                    for service in SERVICES:
                        expected_dead[f"rpc-{service}.dead"] += poisoner.rpc_wave(service)
                        poison_sent += 5
                fault_ended = time.monotonic()
                sent = tagging.wait()

            def measure():
                dead = Counter({q: ready for q, (ready, _, _) in vhost.queues().items() if q.endswith(".dead")})
                return [
                    *effects.quarantine_tallies(db, gateway, people.households),
                    Tally.of("dead_letters", expected_dead, dead),
                    Tally.of("poison_requests_run", [], effects.incidents_by_description(db, MARKER)),
                ]

            tallies, last_change, settled = effects.settle(
                measure,
                lambda tallies: not any(t.lost for t in tallies),
                timeout=scenario.SETTLE_SECONDS,
                quiet=scenario.QUIET_SECONDS,
                idle=lambda: effects.pending_work(db, vhost),
            )
            replies = poisoner.typed_replies()
            tallies.append(Tally.of("typed_error_replies", poisoner.expect_replies, replies))
            counted = {service: dead_letter_metric(suite, service) for service in SERVICES}
            by_service = _dead_by_service(expected_dead)
            tallies.append(Tally.of("dead_letters_counted", by_service, Counter(counted)))
            problems = scenario.service_problems(suite, gateway)
            for service in SERVICES:
                try:
                    suite.wait_answering(service, timeout=30)
                except AssertionError as silent:
                    problems.append(f"{service} no longer answers: {str(silent)[:200]}")
            if not settled:
                problems.append(scenario.unsettled(db, vhost))
            info = [
                f"{poison_sent} poison messages in {WAVES} waves: {len(poison_events())} kinds of event to "
                f"{len(handler_queues)} handler queues and through grid.events; 5 RPC requests per service",
            ]
            info += [scenario.gateway_info(gateway, db), f"service logs: {suite.log_dir}"]
            report("poison_messages", sent + poison_sent, tallies, max(0.0, last_change - fault_ended), problems, info)
        finally:
            poisoner.close()
            db.close()


def _dead_by_service(expected_dead):
    """Dead letters each service should have counted: a handler queue ``evt-…--<service>.<method>``
    or ``cmd-<service>-…`` or ``rpc-<service>``."""
    by_service: Counter = Counter()
    for queue, n in expected_dead.items():
        name = queue.removesuffix(".dead")
        by_service[name.split("--", 1)[1].split(".", 1)[0] if name.startswith("evt-") else name.split("-", 2)[1]] += n
    return by_service
