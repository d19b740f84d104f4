"""Which type of queue the services declare: classic or quorum, said explicitly (issue 13).

A queue declared without ``x-queue-type`` gets whatever its vhost's default is, so the suite's
queues were quorum queues in production (``default_queue_type = quorum``) and classic ones
everywhere they were tested. ``GRASSROOTS_QUEUE_TYPE`` (the config key ``QUEUE_TYPE``, read from
that variable by services/*/config.yml; ``classic`` by default) names the type of every durable
queue the services declare — event handler and command queues, the retry tier queues, the
``.dead`` queues, ``rpc-<service>`` and ``rpc-<service>.dead`` — and a service with any other value
refuses to start. Reply queues stay classic whatever this says (shared.rpc.ClassicReplyListener).

In classic mode no ``x-queue-type`` is sent at all: queues declared before this setting existed are
redeclared with the same arguments. Quorum queues must be durable and neither exclusive nor
auto-delete; ``apply`` leaves any other queue as it is. RabbitMQ 3.10 and later support every
argument the suite uses on them: ``x-message-ttl``, per-message expiration, ``x-max-length``,
``x-max-length-bytes`` and ``x-overflow`` ``drop-head`` or ``reject-publish``.
"""

import os

QUEUE_TYPE_CONFIG_KEY = "QUEUE_TYPE"
QUEUE_TYPE_ENV = "GRASSROOTS_QUEUE_TYPE"
CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)


class QueueTypeError(ValueError):
    """The queue type setting names no queue type the suite declares."""


def queue_type(config):
    """``classic`` or ``quorum``: the config key ``QUEUE_TYPE`` when set, else the environment's
    ``GRASSROOTS_QUEUE_TYPE``, else classic. Raises QueueTypeError for any other value."""
    value = config.get(QUEUE_TYPE_CONFIG_KEY)
    if value is None or value == "":
        value = os.environ.get(QUEUE_TYPE_ENV) or CLASSIC
    if not isinstance(value, str) or value.strip().lower() not in QUEUE_TYPES:
        shown = repr(value)[:40]
        raise QueueTypeError(
            f"{QUEUE_TYPE_ENV} (config key {QUEUE_TYPE_CONFIG_KEY}) must be 'classic' or 'quorum', not {shown}"
        )
    return value.strip().lower()


def durable_arguments(config, extra=None):
    """The arguments to declare a durable queue with: ``extra`` and, in quorum mode, ``x-queue-type``."""
    arguments = dict(extra or {})
    if queue_type(config) == QUORUM:
        arguments["x-queue-type"] = QUORUM
    return arguments


def at_least_once_dead_lettering(config):
    """Arguments that make a queue's dead-lettering at least once.

    A quorum queue dead-letters at most once unless told otherwise (a message expiring while its
    target is unavailable is dropped); ``at-least-once`` needs ``x-overflow: reject-publish``
    (RabbitMQ 3.10+, feature flag ``stream_queue``). A classic queue has no such strategy."""
    if queue_type(config) == QUORUM:
        return {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return {}


def apply(queue, config):
    """``queue`` (a kombu Queue), its arguments set for the configured type when it may be one
    (durable, not exclusive, not auto-delete); returned for chaining."""
    if queue.durable and not queue.exclusive and not queue.auto_delete:
        queue.queue_arguments = durable_arguments(config, queue.queue_arguments)
    return queue
