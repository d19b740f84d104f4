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
"""

import logging
from functools import partial

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
CALL_ID_STACK_HEADER = "nameko.call_id_stack"


def attempt_of(headers, max_attempts):
    """Which attempt this delivery is, from 1 to ``max_attempts`` (see the module docstring)."""
    value = (headers or {}).get(ATTEMPT_HEADER, 1)
    if type(value) is not int or not 1 <= value <= max_attempts:  # bool is an int: refused too
        return max_attempts
    return value


class SafeQueueConsumer(QueueConsumer):
    """A queue consumer that dead-letters a message it cannot decode instead of dying on it."""

    def get_consumers(self, consumer_cls, channel):
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = partial(self._undecodable, provider)
        return consumers

    def _undecodable(self, provider, message, exc):
        try:
            provider.dead_letter(message, reason=f"undecodable: {type(exc).__name__}", raw=True)
            self.ack_message(message)
        except Exception:
            log.exception("could not dead-letter an undecodable message; requeueing it")
            self.requeue_message(message)


class ReliableEventHandler(EventHandler):
    queue_consumer = SafeQueueConsumer()

    def __init__(self, source_service, event_type, max_attempts=5, retry_delay=0.5, **kwargs):
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        super().__init__(source_service, event_type, **kwargs)

    def setup(self):
        super().setup()
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
        except Exception:
            # Could not park the message anywhere: give it back to the broker.
            log.exception("retry/dead-letter publish failed; requeueing the message")
            self.queue_consumer.requeue_message(message)
            return result, exc_info
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def retry(self, message, attempt):
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt + 1
        self.publisher.publish(
            message.body,
            exchange="",
            routing_key=self.retry_queue.name,
            headers=headers,
            expiration=self.retry_delay * 2 ** (attempt - 1),
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
        )
        log.warning(
            "event handler failed; retry scheduled",
            extra={"method": self.method_name, "attempt": attempt, "event_type": self.event_type},
        )

    def dead_letter(self, message, reason, raw=False):
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason
        self.publisher.publish(
            message.body,
            exchange="",
            routing_key=self.dead_queue.name,
            headers=headers,
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
        )
        log.error(
            "event message dead-lettered",
            extra={"method": self.method_name, "event_type": self.event_type, "outcome": "dead_letter"},
        )
        telemetry = next((d for d in self.container.dependencies if hasattr(d, "count_dead_letter")), None)
        if telemetry is not None:
            telemetry.count_dead_letter(self.method_name)
