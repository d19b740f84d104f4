"""An event handler entrypoint that never loses a message.

nameko 2.14 acks a message whose handler raised, losing it. Here a failure is
republished (with publisher confirms, before the original is acked) to a retry
queue whose TTL dead-letters it back to the handler's queue; after
``max_attempts`` — or at once for a malformed message — it goes to the
handler's ``.dead`` queue and ``grassroots_dead_letters_total`` counts it.

Retries are bounded whatever a message's headers say: the attempt header is only
trusted as an integer from 1 to ``max_attempts``; a missing one is the first
attempt, any other value (not an integer, negative, huge, a list) counts as the
last, so a failure dead-letters it. Only this module writes the header.

A retry or dead letter carries the body and only the headers this suite reads — a valid
``nameko.call_id_stack`` (bounded by shared.logs) and ours — never whatever else the sender
put there: headers just under the broker's frame size plus one more made the republish too
large (the broker closed the connection), and the message was requeued for ever. A message
refused unread at the wire (compressed, too long: shared.amqp_wire) is parked without its body.
If parking fails, the message is requeued once; a redelivered one is dropped (logged), so no
publish that fails the same way every time can make it loop.
"""

import logging
import re

from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler
from nameko.messaging import QueueConsumer

from shared import amqp_wire
from shared.errors import ValidationError
from shared.logs import call_id_stack_problem

log = logging.getLogger(__name__)
amqp_wire.install()  # bytes that are not UTF-8 in a routing key or a property killed the consumer

ATTEMPT_HEADER = "x-grassroots-attempt"
REASON_HEADER = "x-grassroots-dead-reason"
BODY_BYTES_HEADER = "x-grassroots-body-bytes"
CALL_ID_STACK_HEADER = "nameko.call_id_stack"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


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

    def __init__(self, source_service, event_type, max_attempts=5, retry_delay=0.5, **kwargs):
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        super().__init__(source_service, event_type, **kwargs)

    def setup(self):
        super().setup()
        self.max_body_bytes = amqp_wire.max_body_bytes(self.container.config)
        name = self.queue.name
        self.retry_queue = Queue(
            f"{name}.retry",
            durable=True,
            queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
        )
        self.dead_queue = Queue(f"{name}.dead", durable=True)
        self.publisher = Publisher(
            self.container.config[AMQP_URI_CONFIG_KEY],
            use_confirms=True,
            declare=[self.retry_queue, self.dead_queue],
        )

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
                self.dead_letter(message, reason=f"malformed: {exc_info[1]}"[:500])
            elif attempt >= self.max_attempts:
                trusted = (message.headers or {}).get(ATTEMPT_HEADER, 1) == attempt
                times = f"{attempt} times" if trusted else "with an invalid attempt header"
                self.dead_letter(message, reason=f"failed {times}: {exc_info[0].__name__}")
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
        headers = {**kept_headers(message), ATTEMPT_HEADER: attempt + 1}
        self.publisher.publish(
            message.body,
            exchange="",
            routing_key=self.retry_queue.name,
            headers=headers,
            expiration=self.retry_delay * 2 ** (attempt - 1),
            serializer=None,
            content_type=printable(message.content_type, 255),
            content_encoding=printable(message.content_encoding, 255),
        )
        log.warning(
            "event handler failed; retry scheduled",
            extra={"method": self.method_name, "attempt": attempt, "event_type": self.event_type},
        )

    def dead_letter(self, message, reason, keep_body=True):
        """Park ``message`` in the handler's ``.dead`` queue: its body (unless ``keep_body`` is
        false: refused unread), the kept headers and why."""
        body = message.body if message.body is not None else b""
        headers = {**kept_headers(message), REASON_HEADER: printable(reason, 500)}
        if not keep_body:
            headers[BODY_BYTES_HEADER] = len(body)
        self.publisher.publish(
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
