"""Consumers that come back soon after the broker does, and can be stopped while it is away (issue 13).

The gap. nameko's QueueConsumer (every RPC, reply and event consumer of a service shares one per
class) reconnects through kombu's ``ConsumerMixin``, with kombu's default backoff: 2 s, then 4, 6,
… up to 30 s between attempts. After a broker restart of 20–40 s a service took up to 30 s more to
consume again, and after a long outage always about 30 s. While reconnecting it also did not
notice a stop: a stop or kill during an outage waited until the broker came back (the runner's
bound then killed the process). It logged a line with a traceback on every attempt.

``install()`` (once per process; shared.web and shared.runner call it) gives every nameko
QueueConsumer in the process:

- a reconnect backoff of 1 s, then 1 s more per attempt, up to ``BROKER_RECONNECT_MAX_INTERVAL``
  seconds (config key; else the ``GRASSROOTS_BROKER_RECONNECT_MAX_INTERVAL`` variable; default 5):
  a service consumes again within that many seconds of the broker's return. With a list of
  brokers (``amqp://a;amqp://b``, kombu's failover) each attempt tries the next one;
- a stop while disconnected: providers that unregister are let go at once (their consumers died
  with the connection), and a kill ends the reconnect loop, so neither waits for the broker;
- acks and requeues that cannot reach the broker any more are logged, not raised: nameko let an
  OSError (connection reset) out of the worker thread that acked an event, which killed the
  container; the broker delivers such a message again anyway (handlers deduplicate);
- ``consuming``: True while its consumers are set up on a live connection, which /readyz reads
  (shared.web) — a service whose consumers have not reconnected yet is not ready;
- a warning when an attempt fails and then one every ``REMINDER_SECONDS`` while the broker stays
  away, instead of one per attempt, and one when it reconnects (with how long it was away).
"""

import logging
import os
import time
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import AMQPError
from nameko.messaging import QueueConsumer

log = logging.getLogger(__name__)

MAX_INTERVAL_CONFIG_KEY = "BROKER_RECONNECT_MAX_INTERVAL"
MAX_INTERVAL_ENV = "GRASSROOTS_BROKER_RECONNECT_MAX_INTERVAL"
DEFAULT_MAX_INTERVAL = 5.0
INTERVAL_START = 1.0
INTERVAL_STEP = 1.0
REMINDER_SECONDS = 60.0


class StopReconnecting(Exception):
    """Raised in the reconnect loop when the consumer was asked to stop: ends it quietly."""


def max_interval(config):
    """Seconds between reconnect attempts at most (see the module docstring); ValueError if not > 0."""
    value = (config or {}).get(MAX_INTERVAL_CONFIG_KEY)
    if value is None or value == "":
        value = os.environ.get(MAX_INTERVAL_ENV) or DEFAULT_MAX_INTERVAL
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{MAX_INTERVAL_CONFIG_KEY} must be a positive number of seconds, not {value!r}"[:200])
    return seconds


def policy(config):
    """kombu ``ensure_connection`` keyword arguments: the reconnect backoff for ``config``."""
    ceiling = max_interval(config)
    return {
        "interval_start": min(INTERVAL_START, ceiling),
        "interval_step": INTERVAL_STEP,
        "interval_max": ceiling,
    }


# ---- what install() puts on nameko's QueueConsumer --------------------------------------------


@contextmanager
def _establish_connection(self):
    with self.create_connection() as conn:
        conn.ensure_connection(
            self.on_connection_error,
            self.connect_max_retries,
            callback=self._while_disconnected,  # every second of the wait, and before each attempt
            **policy(self.container.config),
        )
        yield conn


def _while_disconnected(self):
    # Providers that unregister now (a graceful stop) are waiting for their consumers to be
    # cancelled in the consume loop, which does not run: the consumers died with the connection.
    pending, self._pending_remove_providers = self._pending_remove_providers, {}
    for provider, removed in pending.items():
        self._consumers.pop(provider, None)
        removed.send()
    if pending and not self._consumers:
        self.should_stop = True
    if self.should_stop:
        raise StopReconnecting()


def _run(self, *args, **kwargs):
    try:
        return _original["run"](self, *args, **kwargs)
    except StopReconnecting:
        log.info("stopped while the broker was away")
    finally:
        self.consuming = False


def _consume(self, *args, **kwargs):
    try:
        yield from _original["consume"](self, *args, **kwargs)
    finally:
        # The connection is gone (kombu logs it) or the consumer stops: not consuming until
        # on_consume_ready says so again.
        if self.consuming:
            self.consuming = False
            self._lost_at = time.monotonic()


def _on_connection_error(self, exc, interval):
    now = time.monotonic()
    if self._lost_at is None:
        self._lost_at = now
    if now - (self._reminded_at or 0.0) >= REMINDER_SECONDS:
        self._reminded_at = now
        log.warning(
            "broker unreachable; retrying every %g s at most",
            policy(self.container.config)["interval_max"],
            extra={"error_type": type(exc).__name__, "duration_ms": int((now - self._lost_at) * 1000)},
        )


def _on_consume_ready(self, connection, channel, consumers, **kwargs):
    if self._lost_at is not None:
        log.warning("reconnected to the broker", extra={"duration_ms": int((time.monotonic() - self._lost_at) * 1000)})
    self._lost_at = self._reminded_at = None
    self.consuming = True
    return _original["on_consume_ready"](self, connection, channel, consumers, **kwargs)


def _settle(action):
    def settle(self, message):
        # nameko catches only amqp's ConnectionError here; a connection the broker dropped raises
        # OSError (ECONNRESET) from the worker thread, and that killed the container.
        try:
            action(self, message)
        except (OSError, AMQPError) as exc:
            log.warning(
                "could not settle a message: the connection is gone, the broker delivers it again",
                extra={"error_type": type(exc).__name__},
            )

    return settle


_original: dict = {}


def install():
    """Give nameko's QueueConsumer the behaviour in the module docstring (idempotent)."""
    if _original:
        return
    _original.update(
        run=QueueConsumer.run,
        consume=QueueConsumer.consume,
        on_consume_ready=QueueConsumer.on_consume_ready,
        ack_message=QueueConsumer.ack_message,
        requeue_message=QueueConsumer.requeue_message,
    )
    cls: Any = QueueConsumer  # nameko ships no types
    cls.consuming = False
    cls._lost_at = None
    cls._reminded_at = None
    cls.establish_connection = _establish_connection
    cls._while_disconnected = _while_disconnected
    cls.run = _run
    cls.consume = _consume
    cls.on_connection_error = _on_connection_error
    cls.on_consume_ready = _on_consume_ready
    cls.ack_message = _settle(_original["ack_message"])
    cls.requeue_message = _settle(_original["requeue_message"])


def consumers_connected(container):
    """True when every queue consumer of ``container`` consumes on a live connection."""
    consumers = [ext for ext in container.extensions if isinstance(ext, QueueConsumer)]
    return all(getattr(consumer, "consuming", True) for consumer in consumers)
