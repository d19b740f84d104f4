"""Event retries through the per-service retry tiers on a real broker (shared.handlers, issue 13),
and the suite's queues as quorum queues (shared.queues).

A handler whose downstream is down is tried again after delays that double (jittered between half
and all of each), each wait spent in the tier queue of that delay — the message comes back with an
``x-death`` naming it — and applies its effect exactly once when the downstream is back. A message
waiting a short delay is not held behind one waiting a long one (RabbitMQ expires only at a queue's
head: one retry queue with mixed TTLs would). One that keeps failing is dead-lettered once its
failures span the horizon. In quorum mode every durable queue the service declares is a quorum
queue, reply queues stay classic, and the service still handles events (through quorum tiers) and
answers RPC. Every test runs on its own vhost (nameko's rabbit_config).
"""

import itertools
import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import ClassVar

import pytest
from amqp.exceptions import NotFound
from kombu import Connection, Exchange
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy

from shared.clients import ServiceClient
from shared.errors import ValidationError
from shared.handlers import ATTEMPT_HEADER, ReliableEventHandler, RetrySchedule, tier_name
from shared.rpc import ServiceRpc
from tests.support import JWT_SECRET, wait_until

# Delays 100, 200, 400, 800, 1600, 3200 ms (each jittered down to half); their halves add up to
# 3.15 s ≥ the 3 s horizon after six retries: seven attempts, about 3–6.5 s from first to last.
RETRIES = {
    "EVENT_RETRY_BASE_SECONDS": 0.1,
    "EVENT_RETRY_MAX_DELAY_SECONDS": 3.2,
    "EVENT_RETRY_HORIZON_SECONDS": 3,
}
SCHEDULE = RetrySchedule.from_config(RETRIES)
LEDGER = Exchange("ledger.events", type="topic", durable=True)


@dataclass
class Delivery:
    at: float  # time.monotonic() when the handler started
    attempt: object  # the attempt header, as delivered
    came_through: str | None  # the queue it was dead-lettered from (x-death), i.e. its retry tier


class Deliveries(DependencyProvider):
    """Each handler run, per event id: when, which attempt, through which tier."""

    seen: ClassVar[defaultdict[str, list[Delivery]]] = defaultdict(list)

    def get_dependency(self, worker_ctx):
        def record(event_id):
            data = worker_ctx.context_data
            deaths = data.get("x-death") or [{}]
            self.seen[event_id].append(Delivery(time.monotonic(), data.get(ATTEMPT_HEADER), deaths[0].get("queue")))
            return len(self.seen[event_id])

        return record


class TieredService:
    name = "tiered"
    deliveries = Deliveries()
    downstream_up: ClassVar[bool] = False
    effects: ClassVar[Counter] = Counter()

    @ReliableEventHandler.decorator("ledger", "flaky")
    def on_flaky(self, body):
        """Fails while the downstream is down."""
        self.deliveries(body["id"])
        if not type(self).downstream_up:
            raise RuntimeError("downstream unavailable")
        type(self).effects[body["id"]] += 1

    @ReliableEventHandler.decorator("ledger", "once")
    def on_once(self, body):
        """Fails the first run of each message only."""
        if self.deliveries(body["id"]) == 1:
            raise RuntimeError("downstream unavailable")
        type(self).effects[body["id"]] += 1

    @ReliableEventHandler.decorator("ledger", "doomed")
    def on_doomed(self, body):
        self.deliveries(body["id"])
        raise RuntimeError("downstream unavailable for good")

    @ReliableEventHandler.decorator("ledger", "malformed")
    def on_malformed(self, body):
        self.deliveries(body["id"])
        raise ValidationError({"data": ["Missing data for required field."]})


def publish(amqp_uri, event_type, headers=None):
    event_id = str(uuid.uuid4())
    with Connection(amqp_uri) as conn:
        conn.Producer().publish(
            {"id": event_id}, exchange=LEDGER, routing_key=event_type, declare=[LEDGER], headers=headers or {}
        )
    return event_id


def queue_of(event_type, service="tiered"):
    return f"evt-ledger-{event_type}--{service}.on_{event_type}"


def ready(amqp_uri, name):
    """Messages ready in a queue, live (a passive declare); 0 while it is not declared."""
    with Connection(amqp_uri) as conn:
        try:
            return conn.default_channel.queue_declare(name, passive=True).message_count
        except NotFound:
            return 0


def take(amqp_uri, name):
    """The messages of a queue, consumed; none while it is not declared yet (a dead-letter queue is
    declared with the first retry or dead letter)."""
    messages = []
    with Connection(amqp_uri) as conn:
        channel = conn.default_channel
        try:
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                messages.append(message)
        except NotFound:
            pass
    return messages


def drained(amqp_uri, *names):
    return all(ready(amqp_uri, name) == 0 for name in names)


@pytest.fixture
def tiered(container_factory, rabbit_config):
    Deliveries.seen.clear()
    TieredService.effects.clear()
    TieredService.downstream_up = False
    container = container_factory(TieredService, {**rabbit_config, **RETRIES, "max_workers": 10})
    container.start()
    yield container
    container.kill()


TIERS = [tier_name("tiered", d) for d in SCHEDULE.tiers]


def test_the_schedule_under_test():
    assert SCHEDULE.tiers == (100, 200, 400, 800, 1600, 3200) and SCHEDULE.max_attempts == 7


def test_a_handler_is_retried_through_growing_tiers_and_applies_its_effect_once(tiered, rabbit_config):
    uri = rabbit_config["AMQP_URI"]
    event_id = publish(uri, "flaky")
    runs = Deliveries.seen[event_id]
    wait_until(lambda: len(runs) >= 4, timeout=30, message=f"{len(runs)} runs of the failing handler")
    TieredService.downstream_up = True  # the callee is back
    wait_until(lambda: TieredService.effects[event_id] == 1, timeout=30, message="never applied")
    wait_until(lambda: drained(uri, queue_of("flaky"), *TIERS), timeout=30, message="messages left")
    assert TieredService.effects[event_id] == 1
    assert ready(uri, f"{queue_of('flaky')}.dead") == 0
    # Run n+1 came back through the tier of d_n, carrying attempt n+1, no sooner than d_n / 2.
    assert [r.attempt for r in runs] == [None] + list(range(2, len(runs) + 1))
    assert [r.came_through for r in runs] == [None] + TIERS[: len(runs) - 1]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(runs)]
    # The floors double (d_n / 2 = d_(n-1)); the ceilings leave room for a loaded machine (the first
    # retry also declares the tiers).
    for attempt, gap in enumerate(gaps, start=1):
        assert SCHEDULE.shortest_ms(attempt) / 1000 - 0.005 <= gap < SCHEDULE.delay_ms(attempt) / 1000 + 5, gaps


def test_a_short_delay_is_not_held_behind_a_long_one(tiered, rabbit_config):
    uri = rabbit_config["AMQP_URI"]
    # The first, on its sixth attempt, waits 1.6–3.2 s; the second, on its first, 50–100 ms. Both
    # fail once, then succeed.
    slow = publish(uri, "once", headers={ATTEMPT_HEADER: 6})
    wait_until(lambda: len(Deliveries.seen[slow]) == 1, message="the first message was not handled")
    fast = publish(uri, "once")
    wait_until(lambda: TieredService.effects[fast] == 1, timeout=30, message="the short retry never came back")
    wait_until(lambda: TieredService.effects[slow] == 1, timeout=30, message="the long retry never came back")
    slow_runs, fast_runs = Deliveries.seen[slow], Deliveries.seen[fast]
    assert [r.came_through for r in slow_runs] == [None, "tiered.retry.3200ms"]
    assert [r.came_through for r in fast_runs] == [None, "tiered.retry.100ms"]
    assert fast_runs[1].at < slow_runs[1].at, "the short retry waited for the long one"
    assert fast_runs[1].at - fast_runs[0].at < 1.6  # well before the long one could leave its queue


def test_a_handler_that_keeps_failing_is_dead_lettered_after_the_horizon(tiered, rabbit_config):
    uri = rabbit_config["AMQP_URI"]
    event_id = publish(uri, "doomed")
    dead_queue = f"{queue_of('doomed')}.dead"
    dead = []

    def parked():
        dead.extend(take(uri, dead_queue))
        return dead

    runs = Deliveries.seen[event_id]
    wait_until(parked, timeout=40, message=f"not dead-lettered after {len(runs)} runs")
    assert len(dead) == 1 and json.loads(dead[0].body) == {"id": event_id}
    assert dead[0].headers["x-grassroots-dead-reason"] == "failed 7 times: RuntimeError"
    assert dead[0].headers[ATTEMPT_HEADER] == 7
    assert len(runs) == SCHEDULE.max_attempts
    assert runs[-1].at - runs[0].at >= SCHEDULE.horizon_ms / 1000 - 0.05  # its failures spanned the horizon
    assert [r.came_through for r in runs[1:]] == TIERS
    wait_until(lambda: drained(uri, queue_of("doomed"), *TIERS), message="messages left")


def test_a_message_the_full_dead_letter_queue_refuses_waits_and_is_parked_later(
    tiered, rabbit_config, rabbit_manager, caplog
):
    """``.dead`` refuses what does not fit (reject-publish); the refused message is not dropped but
    waits in the longest tier and tries again. A policy on this vhost makes the bound 1 message (a
    quorum queue refuses only once over its bound: one more gets in)."""
    uri, vhost = rabbit_config["AMQP_URI"], rabbit_config["vhost"]
    dead_queue = f"{queue_of('malformed')}.dead"
    policy = {"pattern": r"\.dead$", "apply-to": "queues", "definition": {"max-length": 1}}
    rabbit_manager._put("policies", vhost, "one-dead-letter", json=policy)

    def refusals():
        return [r for r in caplog.records if r.getMessage().startswith("dead-letter queue full")]

    sent: list[str] = []
    while not refusals():
        assert len(sent) < 3, "the full dead-letter queue took every message"
        sent.append(publish(uri, "malformed"))
        wait_until(
            lambda: ready(uri, dead_queue) == len(sent) or refusals(), message="neither dead-lettered nor refused"
        )
    refused = sent[-1]
    parked = take(uri, dead_queue)  # an operator makes room
    assert sorted(json.loads(m.body)["id"] for m in parked) == sorted(sent[:-1])
    later = []

    def parked_later():
        later.extend(take(uri, dead_queue))
        return later

    wait_until(parked_later, timeout=30, message="the refused message was never parked")
    assert [json.loads(m.body) for m in later] == [{"id": refused}]
    assert [r.came_through for r in Deliveries.seen[refused]] == [None, "tiered.retry.3200ms"]
    assert later[0].headers[ATTEMPT_HEADER] == SCHEDULE.max_attempts
    wait_until(lambda: drained(uri, queue_of("malformed"), *TIERS), message="messages left")


# --- quorum queues --------------------------------------------------------------------------------


class QuorateService:
    name = "quorate"
    deliveries = Deliveries()
    me = ServiceClient("quorate")  # a reply queue of its own: must stay classic
    effects: ClassVar[Counter] = Counter()

    @ServiceRpc.decorator
    def ping(self, n):
        return n + 1

    @ServiceRpc.decorator
    def relay(self, n):
        return self.me.ping(n=n)

    @ReliableEventHandler.decorator("ledger", "note")
    def on_note(self, body):
        if body.get("poison"):
            raise ValidationError({"poison": ["Not accepted."]})
        if self.deliveries(body["id"]) == 1:
            raise RuntimeError("downstream unavailable")  # once: through a (quorum) retry tier
        type(self).effects[body["id"]] += 1


def test_quorum_mode_declares_quorum_queues_that_work(container_factory, rabbit_config, rabbit_manager):
    Deliveries.seen.clear()
    QuorateService.effects.clear()
    uri, vhost = rabbit_config["AMQP_URI"], rabbit_config["vhost"]
    config = {**rabbit_config, **RETRIES, "QUEUE_TYPE": "quorum", "GRASSROOTS_JWT_SECRET": JWT_SECRET}
    container = container_factory(QuorateService, config)
    container.start()
    try:
        # An event, retried once through a quorum tier (at-least-once dead-lettering), applied once.
        event_id = publish(uri, "note")
        wait_until(lambda: QuorateService.effects[event_id] == 1, timeout=30, message="the event was not handled")
        assert [r.came_through for r in Deliveries.seen[event_id]] == [None, "quorate.retry.100ms"]
        # A malformed one, dead-lettered; an RPC request nobody can be answered for, too.
        with Connection(uri) as conn:
            conn.Producer().publish({"id": "x", "poison": True}, exchange=LEDGER, routing_key="note")
            conn.Producer().publish(
                {"args": [], "kwargs": {}}, exchange=Exchange("nameko-rpc", type="topic"), routing_key="quorate.ping"
            )
        wait_until(lambda: take(uri, f"{queue_of('note', 'quorate')}.dead"), message="no event dead letter")
        wait_until(lambda: take(uri, "rpc-quorate.dead"), message="no RPC dead letter")
        # RPC answered, from outside and from the service to itself (through its classic reply queue).
        with ClusterRpcProxy(rabbit_config, timeout=30) as proxy:
            assert proxy.quorate.ping(n=1) == 2
            assert proxy.quorate.relay(n=41) == 42
        declared = {q["name"]: q for q in rabbit_manager.get_queues(vhost)}
    finally:
        container.kill()
    durable = {
        "rpc-quorate",
        "rpc-quorate.dead",
        queue_of("note", "quorate"),
        f"{queue_of('note', 'quorate')}.dead",
        *(tier_name("quorate", d) for d in SCHEDULE.tiers),
    }
    assert durable <= set(declared), sorted(durable - set(declared))
    for name in durable:
        assert declared[name]["type"] == "quorum", (name, declared[name]["type"])
        assert declared[name]["arguments"]["x-queue-type"] == "quorum", name
    replies = [name for name in declared if name.startswith("rpc.reply-quorate-")]
    assert replies and all(declared[name]["type"] == "classic" for name in replies)
    # Nothing else the service declared: every queue is one of those, or a reply queue (ours, the proxy's).
    assert set(declared) - durable == {name for name in declared if name.startswith("rpc.reply-")}
    tier = declared["quorate.retry.100ms"]["arguments"]
    assert tier["x-dead-letter-strategy"] == "at-least-once" and tier["x-message-ttl"] == 100


def test_a_dead_letter_queue_left_by_an_older_version_is_used_as_it_is(container_factory, rabbit_config):
    """A `.dead` queue declared before it had a bound (no arguments) refuses our redeclaration (406):
    the handler must still park its dead letters there, not fail and drop them."""
    uri = rabbit_config["AMQP_URI"]
    dead_queue = f"{queue_of('malformed')}.dead"
    with Connection(uri) as conn:
        conn.default_channel.queue_declare(dead_queue, durable=True, auto_delete=False)
    Deliveries.seen.clear()
    container = container_factory(TieredService, {**rabbit_config, **RETRIES, "max_workers": 10})
    container.start()
    first, second = publish(uri, "malformed"), publish(uri, "malformed")
    dead = []

    def parked():
        dead.extend(take(uri, dead_queue))
        return len(dead) == 2

    wait_until(parked, timeout=30, message="dead letters were not parked in the older queue")
    assert sorted(json.loads(m.body)["id"] for m in dead) == sorted([first, second])
    assert not container._died.ready()
