"""An event handler entrypoint that never loses a message, through outages of an hour and more.

nameko 2.14 acks a message whose handler raised, losing it. Here a failure is republished (with
publisher confirms, before the original is acked) to a retry tier and comes back after a delay
that grows exponentially, with jitter, until the failures have spanned ``EVENT_RETRY_HORIZON_SECONDS``
(an hour by default); then — or at once for a malformed message — it goes to the handler's
``.dead`` queue and ``grassroots_dead_letters_total`` counts it. A callee down for minutes costs a
few retries, not the message (with a 0.5 s base and 5 attempts, 19 events were dead-lettered after
57 s of a 75 s outage).

The schedule (``RetrySchedule``): after failed attempt n the delay is d_n = min(cap, base·2^(n-1))
(``EVENT_RETRY_BASE_SECONDS``, 1; ``EVENT_RETRY_MAX_DELAY_SECONDS``, 300), jittered uniformly into
[d_n/2, d_n] so that the messages of one outage do not all come back at once. ``max_attempts`` is
derived: the fewest attempts whose shortest possible delays add up to the horizon.

Retry tiers. RabbitMQ expires messages only at the head of a queue, so one retry queue holding
delays of 1 s and 300 s would hold the 1 s message behind the 300 s one. Each distinct d_n has its
own tier per service: the topic exchange ``<service>.retry.<d>`` bound with ``#`` to the queue of the
same name, whose ``x-message-ttl`` is d and whose dead-letter exchange is the default one with no
dead-letter routing key. A retry is published there with the handler's queue name as routing key
and the jittered delay as its expiration (never above the tier's TTL); it expires into the default
exchange under that routing key, i.e. back onto the handler's queue. Within a tier a message waits
at most d: one ahead of it entered earlier and leaves by its own entry time + d. The tiers are the
same for every handler of a service (and for shared.commands), so a service has about ten of them
(1 s, 2 s, … 256 s, 300 s), not ten per handler. With quorum queues (shared.queues) their
dead-lettering is at least once.

Retries are bounded whatever a message's headers say: the attempt header is only trusted as an
integer from 1 to ``max_attempts``; a missing one is the first attempt, any other value (not an
integer, negative, huge, a list) counts as the last, so a failure dead-letters it. Only this module
writes the header.

``<queue>.dead`` is bounded (``DEAD_QUEUE_ARGUMENTS``: 100,000 messages or 100 MiB) but never drops
anything: it refuses what does not fit (``reject-publish``: the broker nacks the publish), and a
message it refuses waits in the longest retry tier and tries again, logged as
``dead_letter_full`` — never dropped, never looping faster than the longest delay. (A message
refused unread or undecodable has nothing to try again: it is given back, as below.)

A retry or dead letter carries the body and only the headers this suite reads — a valid
``nameko.call_id_stack`` (bounded by shared.logs) and ours — never whatever else the sender
put there: headers just under the broker's frame size plus one more made the republish too
large (the broker closed the connection), and the message was requeued for ever. A message
refused unread at the wire (compressed, too long: shared.amqp_wire) is parked without its body.
If parking fails, the message is requeued once; a redelivered one is dropped (logged), so no
publish that fails the same way every time can make it loop.

Subclasses may consume another queue than nameko's ``evt-…`` one by overriding ``make_queue``
(shared.commands does); everything else — tiers, ``.dead``, queue type — follows its name.
"""

import datetime as dt
import logging
import math
import random
import re
from dataclasses import dataclass, field

import amqp.exceptions
from amqp.exceptions import MessageNacked
from kombu import Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, LOGIN_METHOD_CONFIG_KEY
from nameko.events import EventHandler
from nameko.messaging import QueueConsumer

from shared import amqp_wire, queues
from shared.errors import ValidationError
from shared.logs import call_id_stack_problem

log = logging.getLogger(__name__)
amqp_wire.install()  # bytes that are not UTF-8 in a routing key or a property killed the consumer

ATTEMPT_HEADER = "x-grassroots-attempt"
REASON_HEADER = "x-grassroots-dead-reason"
DEAD_AT_HEADER = "x-grassroots-dead-at"
BODY_BYTES_HEADER = "x-grassroots-body-bytes"
CALL_ID_STACK_HEADER = "nameko.call_id_stack"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")

RETRY_BASE_CONFIG_KEY = "EVENT_RETRY_BASE_SECONDS"
RETRY_MAX_DELAY_CONFIG_KEY = "EVENT_RETRY_MAX_DELAY_SECONDS"
RETRY_HORIZON_CONFIG_KEY = "EVENT_RETRY_HORIZON_SECONDS"
DEFAULT_RETRY_BASE = 1
DEFAULT_RETRY_MAX_DELAY = 300
DEFAULT_RETRY_HORIZON = 3600
# A schedule needing more attempts is refused at startup (a cap far below the horizon): each attempt
# is a handler run, and the attempt header must stay a small number.
MAX_ATTEMPTS_LIMIT = 1000
# RabbitMQ's largest x-message-ttl / expiration (milliseconds, an unsigned 32-bit integer).
MAX_DELAY_LIMIT_MS = 2**32 - 1
# <queue>.dead: bounded, but it refuses rather than drops (see the module docstring). Every
# declaration of the queue must use exactly these (the broker refuses a redeclaration with others).
DEAD_QUEUE_ARGUMENTS = {
    "x-max-length": 100_000,
    "x-max-length-bytes": 100 * 1024 * 1024,
    "x-overflow": "reject-publish",
}


def printable(value, limit):
    """``value`` (text off the wire: maybe lone surrogates for bytes that were not UTF-8, control
    characters, any length) as text any publish can carry, at most ``limit`` characters; None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)[:limit]


def kept_headers(message):
    """The headers a retry or dead letter carries over: a valid call id stack and an integer attempt
    count (ours; a retry sets the next), nothing else."""
    headers = message.headers or {}
    kept = {}
    stack = headers.get(CALL_ID_STACK_HEADER)
    if stack is not None and not call_id_stack_problem(stack):
        kept[CALL_ID_STACK_HEADER] = stack
    if type(headers.get(ATTEMPT_HEADER)) is int:
        kept[ATTEMPT_HEADER] = headers[ATTEMPT_HEADER]
    return kept


def give_back(queue_consumer, message):
    """After parking ``message`` failed: requeue it if this was its first delivery; drop a
    redelivered one (logged), so that a publish failing the same way every time cannot loop it."""
    if not (message.delivery_info or {}).get("redelivered"):
        log.error("could not park an event message; requeued it once", extra={"outcome": "requeued"})
        queue_consumer.requeue_message(message)
        return
    log.error("could not park a redelivered event message; dropped it", extra={"outcome": "dropped"})
    try:
        if message.channel.connection:
            message.reject(requeue=False)
    except Exception as exc:  # a closed channel: the broker redelivers it, once more
        log.error("could not drop an event message", extra={"error_type": type(exc).__name__})


class RetryScheduleError(ValueError):
    """The EVENT_RETRY_* settings make no usable schedule."""


def _milliseconds(config, key, default):
    value = config.get(key, default)
    if isinstance(value, str):  # from config.yml's ${VAR:default}, as the environment gave it
        try:
            value = float(value)
        except ValueError:
            raise RetryScheduleError(f"{key} must be a number of seconds, not {value[:40]!r}") from None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise RetryScheduleError(f"{key} must be a number of seconds, not {repr(value)[:40]}")
    return round(value * 1000)


@dataclass(frozen=True)
class RetrySchedule:
    """When a failed event is tried again (see the module docstring), in milliseconds.

    ``delay_ms(n)`` follows failed attempt n; the message comes back after ``jittered_ms(n)``, from
    ``shortest_ms(n)`` (half, rounded up) to ``delay_ms(n)``. ``max_attempts`` is the fewest
    attempts whose shortest delays add up to ``horizon_ms`` (1: no retry, for a zero horizon);
    ``tiers`` the distinct delays a message can wait (one retry queue each)."""

    base_ms: int
    max_delay_ms: int
    horizon_ms: int
    max_attempts: int = field(init=False)
    tiers: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        if self.base_ms < 1:
            raise RetryScheduleError(f"{RETRY_BASE_CONFIG_KEY} must be at least 0.001 s")
        if not self.base_ms <= self.max_delay_ms <= MAX_DELAY_LIMIT_MS:
            raise RetryScheduleError(
                f"{RETRY_MAX_DELAY_CONFIG_KEY} must be from {RETRY_BASE_CONFIG_KEY} to {MAX_DELAY_LIMIT_MS // 1000} s"
            )
        covered, retries, tiers = 0, 0, set()
        while covered < self.horizon_ms:
            retries += 1
            if retries >= MAX_ATTEMPTS_LIMIT:
                raise RetryScheduleError(
                    f"{RETRY_HORIZON_CONFIG_KEY} needs more than {MAX_ATTEMPTS_LIMIT} attempts with these delays: "
                    f"raise {RETRY_MAX_DELAY_CONFIG_KEY} or lower the horizon"
                )
            covered += self.shortest_ms(retries)
            tiers.add(self.delay_ms(retries))
        object.__setattr__(self, "max_attempts", retries + 1)
        object.__setattr__(self, "tiers", tuple(sorted(tiers)))

    @classmethod
    def from_config(cls, config):
        return cls(
            base_ms=_milliseconds(config, RETRY_BASE_CONFIG_KEY, DEFAULT_RETRY_BASE),
            max_delay_ms=_milliseconds(config, RETRY_MAX_DELAY_CONFIG_KEY, DEFAULT_RETRY_MAX_DELAY),
            horizon_ms=_milliseconds(config, RETRY_HORIZON_CONFIG_KEY, DEFAULT_RETRY_HORIZON),
        )

    def delay_ms(self, attempt):
        """d_n = min(cap, base·2^(n-1)) for failed attempt n ≥ 1 (the shift is bounded: 2^64·base > any cap)."""
        return min(self.max_delay_ms, self.base_ms << min(attempt - 1, 64))

    def shortest_ms(self, attempt):
        return (self.delay_ms(attempt) + 1) // 2

    def jittered_ms(self, attempt, rng=random):
        """The delay after failed attempt n, uniform from ``shortest_ms(n)`` to ``delay_ms(n)``."""
        return rng.randint(self.shortest_ms(attempt), self.delay_ms(attempt))


def tier_name(service, delay_ms):
    """``<service>.retry.<d>``: the exchange and queue of one retry tier, e.g. ``grid.retry.300s``
    (``…ms`` for a delay that is not whole seconds)."""
    seconds, rest = divmod(delay_ms, 1000)
    return f"{service}.retry.{seconds}s" if not rest else f"{service}.retry.{delay_ms}ms"


def tier_queue(service, delay_ms, config):
    """The queue of a retry tier, bound to its exchange: messages wait ``delay_ms`` at most, then go
    back through the default exchange under their own routing key (the handler's queue name)."""
    name = tier_name(service, delay_ms)
    arguments = {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        **queues.at_least_once_dead_lettering(config),
    }
    return Queue(
        name,
        exchange=Exchange(name, type="topic", durable=True),
        routing_key="#",
        durable=True,
        queue_arguments=queues.durable_arguments(config, arguments),
    )


def attempt_of(headers, max_attempts):
    """Which attempt this delivery is, from 1 to ``max_attempts`` (see the module docstring)."""
    value = (headers or {}).get(ATTEMPT_HEADER, 1)
    if type(value) is not int or not 1 <= value <= max_attempts:  # bool is an int: refused too
        return max_attempts
    return value


class SafeQueueConsumer(amqp_wire.GuardedQueueConsumer, QueueConsumer):
    """A queue consumer, guarded at the wire (shared.amqp_wire), that dead-letters a message it
    cannot decode instead of dying on it."""

    def _undecodable(self, provider, message, exc):
        try:
            if isinstance(exc, amqp_wire.Refused):
                provider.dead_letter(message, reason=f"refused: {exc.problem}", keep_body=False)
            else:
                provider.dead_letter(message, reason=f"undecodable: {type(exc).__name__}")
            self.ack_message(message)
        except Exception as error:
            log.error("could not dead-letter an undecodable message", extra={"error_type": type(error).__name__})
            give_back(self, message)


class ReliableEventHandler(EventHandler):
    queue_consumer = SafeQueueConsumer()
    queue: Queue  # nameko's, set in setup

    def setup(self):
        super().setup()
        config = self.container.config
        # Before anything follows from the queue's name: a subclass may consume another queue.
        self.queue = self.make_queue(self.queue)
        queues.apply(self.queue, config)
        self.max_body_bytes = amqp_wire.max_body_bytes(config)
        self.schedule = RetrySchedule.from_config(config)
        self.max_attempts = self.schedule.max_attempts
        service = self.container.service_name
        self.tiers = {delay: tier_queue(service, delay, config) for delay in self.schedule.tiers}
        self.dead_queue = Queue(
            f"{self.queue.name}.dead",
            durable=True,
            queue_arguments=queues.durable_arguments(config, DEAD_QUEUE_ARGUMENTS),
        )
        self.dead_queue_as_is = False  # set when an older `.dead` refuses our arguments (_publish)
        self.publisher = Publisher(
            config[AMQP_URI_CONFIG_KEY],
            use_confirms=True,
            # Unroutable (a tier's binding deleted under us) must fail the publish, not vanish.
            mandatory=True,
            declare=[*self.tiers.values(), self.dead_queue],
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

    def _publish(self, body, **kwargs):
        try:
            self.publisher.publish(body, **kwargs)
        except amqp.exceptions.PreconditionFailed:
            if self.dead_queue_as_is:
                raise
            # `<queue>.dead` was declared by an older version, without the bound: redeclaring it with
            # other arguments is refused (406), which would fail every retry and dead letter. Use it
            # as it is (unbounded) and say so; docs/running.md says how to re-create it.
            log.warning(
                "dead-letter queue exists with other arguments; used as it is, without the bound",
                extra={"queue": self.dead_queue.name},
            )
            self.dead_queue_as_is = True
            self.publisher.declare = [*self.tiers.values()]
            self.publisher.publish(body, **kwargs)

    def make_queue(self, queue):
        """The queue this handler consumes, from the one nameko built (``evt-<source>-<type>--<service>.<method>``)."""
        return queue

    def unpack_message_headers(self, message):
        """The context data, without header names that are not text and without a call id stack
        nameko cannot extend (an integer there killed the container): the event is still handled,
        as the start of a new call chain."""
        headers = {k: v for k, v in (message.headers or {}).items() if isinstance(k, str)}
        if CALL_ID_STACK_HEADER in headers and call_id_stack_problem(headers[CALL_ID_STACK_HEADER]):
            del headers[CALL_ID_STACK_HEADER]
        return {self._strip_header_name(k): v for k, v in headers.items()}

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return result, exc_info
        attempt = attempt_of(message.headers, self.max_attempts)
        try:
            if issubclass(exc_info[0], ValidationError):
                self.park(message, reason=f"malformed: {exc_info[1]}"[:500])
            elif attempt >= self.max_attempts:
                trusted = (message.headers or {}).get(ATTEMPT_HEADER, 1) == attempt
                times = f"{attempt} times" if trusted else "with an invalid attempt header"
                self.park(message, reason=f"failed {times}: {exc_info[0].__name__}")
            else:
                self.retry(message, attempt)
        except Exception as error:
            # Could not park the message anywhere: give it back to the broker (once).
            log.error("retry/dead-letter publish failed", extra={"error_type": type(error).__name__})
            give_back(self.queue_consumer, message)
            return result, exc_info
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def retry(self, message, attempt):
        """Send ``message`` back after failed ``attempt``, through the tier of its delay."""
        self._publish_retry(message, self.schedule.delay_ms(attempt), self.schedule.jittered_ms(attempt), attempt + 1)
        log.warning(
            "event handler failed; retry scheduled",
            extra={"method": self.method_name, "attempt": attempt, "event_type": self.event_type},
        )

    def park(self, message, reason):
        """Dead-letter ``message``; when ``.dead`` is full (the broker nacks), keep it in the longest
        tier instead, to try again: never dropped (see the module docstring)."""
        try:
            self.dead_letter(message, reason)
        except Exception as exc:
            # kombu re-raises the broker's nack as an OperationalError caused by it
            nacked = isinstance(exc, MessageNacked) or isinstance(exc.__cause__, MessageNacked)
            if not nacked or not self.tiers:  # a zero horizon: no tier to wait in
                raise
            longest = max(self.tiers)
            self._publish_retry(message, longest, longest, self.max_attempts)
            log.error(
                "dead-letter queue full; the message waits in the longest retry tier",
                extra={"method": self.method_name, "event_type": self.event_type, "outcome": "dead_letter_full"},
            )

    def _publish_retry(self, message, delay_ms, expiration_ms, next_attempt):
        headers = {**kept_headers(message), ATTEMPT_HEADER: next_attempt}
        self._publish(
            message.body,
            exchange=self.tiers[delay_ms].exchange,
            routing_key=self.queue.name,
            headers=headers,
            # kombu sends int(seconds * 1000): the half millisecond keeps float error from cutting one off
            expiration=(expiration_ms + 0.5) / 1000,
            serializer=None,
            content_type=printable(message.content_type, 255),
            content_encoding=printable(message.content_encoding, 255),
        )

    def dead_letter(self, message, reason, keep_body=True):
        """Park ``message`` in the handler's ``.dead`` queue: its body (unless ``keep_body`` is
        false: refused unread), the kept headers and why."""
        body = message.body if message.body is not None else b""
        headers = {
            **kept_headers(message),
            REASON_HEADER: printable(reason, 500),
            # When: `grassroots deadletters list` shows it (as for RPC dead letters).
            DEAD_AT_HEADER: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if not keep_body:
            headers[BODY_BYTES_HEADER] = len(body)
        self._publish(
            body if keep_body else b"",
            exchange="",
            routing_key=self.dead_queue.name,
            headers=headers,
            serializer=None,
            content_type=printable(message.content_type, 255) if keep_body else None,
            content_encoding=printable(message.content_encoding, 255) if keep_body else None,
        )
        log.error(
            "event message dead-lettered",
            extra={"method": self.method_name, "event_type": self.event_type, "outcome": "dead_letter"},
        )
        telemetry = next((d for d in self.container.dependencies if hasattr(d, "count_dead_letter")), None)
        if telemetry is not None:
            telemetry.count_dead_letter(self.method_name)
