"""The RPC entrypoint every service uses: nameko's, with cheaper replies, that no message can kill.

Cheaper replies. nameko 2.14 publishes each reply persistent and with publisher
confirms: a broker round trip and a disk write per call, which bought nothing — a
reply that is lost leaves its caller timing out either way, confirmed or not.
Replies here are transient and unconfirmed; requests keep the caller's own settings.

No message on ``rpc-<service>`` can hurt the service (issue 12). In nameko 2.14 a
request without ``reply_to`` killed the process after running the method (and, left
on the queue, again after each restart); kombu acked an undecodable request silently
— the caller waited out its timeout — and logged its raw body; a body that was not
``{"args": [...], "kwargs": {...}}`` or an unknown method got nameko's own errors; a
reply the broker refused killed the container (nameko issue 346). Here:

- a request that can be answered always gets a typed reply: ``ValidationError`` for
  a body that is not a JSON object with ``args`` (an array) and ``kwargs`` (an
  object), or a malformed ``nameko.call_id_stack`` header; ``NotFound`` for an
  unknown method;
- a request that cannot be answered — no ``reply_to`` (or one with control characters
  or bytes that are not UTF-8: no queue has that name), properties py-amqp cannot read
  (shared.amqp_wire), or a body that is not decoded (not JSON, not UTF-8, nested too
  deep, a content type other than JSON such as pickle; compressed, a content encoding
  other than utf-8, longer than ``MAX_MESSAGE_BYTES``: refused unread, shared.amqp_wire)
  — is not run: it is dead-lettered to ``rpc-<service>.dead`` and counted in
  ``grassroots_dead_letters_total{handler="rpc"}``; an undecodable one that names a
  usable ``reply_to`` and a ``correlation_id`` is also answered with a ``ValidationError``;
- a dead letter keeps no body and none of the sender's headers (a request's body is
  personal data, and nobody waits for it): headers say why (``x-grassroots-dead-reason``),
  which method, how long the body was, its content type and encoding, and when; the
  ``correlation_id`` stays. ``rpc-<service>.dead`` is bounded (``DEAD_QUEUE_ARGUMENTS``:
  the newest 10,000, each for 7 days), so a flood cannot fill the broker's disk;
- ``rpc-<service>`` and its ``.dead`` are quorum queues when ``GRASSROOTS_QUEUE_TYPE`` says so
  (shared.queues); reply queues always stay classic (``ClassicReplyListener``);
- a reply or dead letter the broker refuses is logged on one line and the process
  carries on;
- no message body is ever logged (kombu's decode-error handler logged its repr).
"""

import datetime as dt
import logging
import re
import sys
from functools import partial

import amqp.exceptions
import kombu.exceptions
import kombu.serialization
from kombu import Connection, Queue
from kombu.pools import producers
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    DEFAULT_TRANSPORT_OPTIONS,
    HEADER_PREFIX,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import (
    ContainerBeingKilled,
    IncorrectSignature,
    MethodNotFound,
    UnserializableValueError,
    serialize,
)
from nameko.messaging import QueueConsumer
from nameko.rpc import ReplyListener, Responder, Rpc, RpcConsumer, get_rpc_exchange

from shared import amqp_wire, queues
from shared.errors import NotFound, ValidationError
from shared.handlers import DEAD_AT_HEADER, REASON_HEADER, printable
from shared.idempotency import REQUEST_ID_CONTEXT_KEY
from shared.logs import call_id_stack_problem

log = logging.getLogger(__name__)
amqp_wire.install()  # bytes that are not UTF-8 in a routing key or a property killed the consumer

DEAD_LETTER_HANDLER = "rpc"  # the handler label of grassroots_dead_letters_total for RPC requests
TOKEN_HEADER = f"{HEADER_PREFIX}.auth_token"
CALL_ID_STACK_HEADER = f"{HEADER_PREFIX}.call_id_stack"
_METHOD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
BODY_SHAPE = "Must be a JSON object with args (an array) and kwargs (an object)."
# What an RPC dead letter carries instead of the request (shared.amqp_wire.Refused or not).
METHOD_HEADER = "x-grassroots-method"
BODY_BYTES_HEADER = "x-grassroots-body-bytes"
CONTENT_TYPE_HEADER = "x-grassroots-content-type"
CONTENT_ENCODING_HEADER = "x-grassroots-content-encoding"

# rpc-<service>.dead: the newest 10,000 dead letters, each kept 7 days. Every declaration of the
# queue must use exactly these (the broker refuses a redeclaration with other arguments).
DEAD_QUEUE_ARGUMENTS = {
    "x-max-length": 10_000,
    "x-overflow": "drop-head",
    "x-message-ttl": 7 * 24 * 3600 * 1000,
}
# Seconds a dead letter's publish may wait for the broker (a disk or memory alarm blocks publishers):
# the consumer thread publishes it, and must not stall for good.
DEAD_LETTER_TIMEOUT = 5
# A reply_to no queue can be named: control characters, or bytes that were not UTF-8 (shared.amqp_wire
# reads them as lone surrogates; a reply published there goes nowhere).
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def reply_address_problem(properties):
    """None when a reply can be sent to the request's ``reply_to``, else why not."""
    reply_to = properties.get("reply_to")
    if not reply_to:
        return "no reply_to"
    if not isinstance(reply_to, str) or _BAD_ADDRESS.search(reply_to):
        return "bad reply_to"
    return None


def dead_queue(rpc_queue_name, config):
    return Queue(
        f"{rpc_queue_name}.dead",
        durable=True,
        queue_arguments=queues.durable_arguments(config, DEAD_QUEUE_ARGUMENTS),
    )


class ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = NON_PERSISTENT


# One kombu Connection per broker address: the key of the producer pool replies are published from
# (nameko parsed a new one for every reply). Same transport options as ReplyPublisher's, so both
# paths share one pool.
_reply_connections: dict = {}


def reply_connection(amqp_uri, ssl, login_method):
    key = (amqp_uri, repr(ssl), login_method)
    found = _reply_connections.get(key)
    if found is None:
        options = {**DEFAULT_TRANSPORT_OPTIONS, "confirm_publish": False}
        found = _reply_connections[key] = Connection(
            amqp_uri, transport_options=options, ssl=ssl, login_method=login_method
        )
    return found


class ReplyResponder(Responder):
    """nameko's Responder with cheap replies; ``reply_serializer`` overrides the request's own
    encoding (for requests that could not be decoded, e.g. pickle: never answered in kind).

    A reply is encoded once (nameko encoded the result to check it, then the reply again) and
    handed straight to a pooled channel (~0.2 ms less per call than nameko's Publisher and kombu's
    Producer.publish on a 2-core machine: bench.grid_rpc). If that fails — a pooled connection the
    broker dropped — it is published again through nameko's Publisher, whose retry reconnects; one
    the broker refused (a channel error it cannot recover from) is not."""

    publisher_cls = ReplyPublisher

    def __init__(self, *args, reply_serializer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reply_serializer = reply_serializer

    def send_response(self, result, exc_info):
        error = None if exc_info is None else serialize(exc_info[1])
        content_type = self.message.properties.get("content_type")
        serializer = self.reply_serializer or kombu.serialization.registry.type_to_name.get(
            content_type, self.serializer
        )
        # nameko's own check: an unserialisable result becomes an error rather than a failed publish
        try:
            encoded = kombu.serialization.dumps({"result": result, "error": error}, serializer)
        except Exception:
            exc_info = sys.exc_info()
            error = serialize(UnserializableValueError(result))
            result = None
            encoded = kombu.serialization.dumps({"result": result, "error": error}, serializer)
        routing_key = self.message.properties["reply_to"]
        correlation_id = self.message.properties.get("correlation_id")
        try:
            self._publish(encoded, routing_key, correlation_id)
        except amqp.exceptions.IrrecoverableChannelError:
            raise  # the broker refused it (e.g. no permission): publishing again would not help
        except Exception:
            publisher = self.publisher_cls(self.amqp_uri, ssl=self.ssl, login_method=self.login_method)
            publisher.publish(
                {"result": result, "error": error},
                serializer=serializer,
                exchange=self.exchange,
                routing_key=routing_key,
                correlation_id=correlation_id,
            )
        return result, exc_info

    def _publish(self, encoded, routing_key, correlation_id):
        content_type, content_encoding, body = encoded
        with producers[reply_connection(self.amqp_uri, self.ssl, self.login_method)].acquire(block=True) as producer:
            channel = producer.channel
            message = channel.prepare_message(
                body,
                content_type=content_type,
                content_encoding=content_encoding,
                headers={},
                properties={"correlation_id": correlation_id, "delivery_mode": NON_PERSISTENT},
            )
            channel.basic_publish(message, exchange=self.exchange.name, routing_key=routing_key)


class RpcQueueConsumer(amqp_wire.GuardedQueueConsumer, QueueConsumer):
    """nameko's queue consumer, guarded at the wire (shared.amqp_wire), without kombu's decode-error
    handler, which logs the raw body (and acks the message, answering nobody): a message that is
    not decoded goes to its provider's ``undecodable(message, exc)`` when it has one (the RPC
    consumer), else it is dropped with a one-line log (a reply queue: only this process's own calls
    are waiting on it)."""

    def on_decode_error(self, message, exc):
        self._undecodable(None, message, exc)

    def _undecodable(self, provider, message, exc):
        try:
            handler = getattr(provider, "undecodable", None)
            if handler is not None:
                handler(message, exc)
                return
            log.error("undecodable message dropped", extra={"error_type": type(exc).__name__})
        except Exception as error:  # never out of the consumer thread: that would kill the container
            log.error("undecodable message not handled", extra={"error_type": type(error).__name__})
        _ack(self, message)


def _ack(queue_consumer, message):
    try:
        queue_consumer.ack_message(message)
    except Exception as exc:  # a closed channel: the broker redelivers it
        log.error("could not ack an RPC message", extra={"error_type": type(exc).__name__})


def decode_problem(exc):
    """What was wrong with a body kombu could not decode, in words the caller can act on."""
    if isinstance(exc, amqp_wire.Refused):
        return exc.problem
    if isinstance(exc, kombu.exceptions.ContentDisallowed):
        return "The content type is not accepted; send application/json."
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__context__
    if isinstance(cause, UnicodeError):
        return "The body is not valid UTF-8."
    if isinstance(cause, RecursionError):
        return "The body is nested too deeply."
    if isinstance(cause, ValueError):
        return "The body is not valid JSON."
    return "The body could not be decoded."


class ReplyingRpcConsumer(RpcConsumer):
    queue_consumer = RpcQueueConsumer()
    _routes: dict | None = None
    _routes_made_for = -1  # how many providers the routes were made from

    def get_provider_for_method(self, routing_key):
        # nameko formats the key of every method for every request; here a dict, made again when
        # the providers change (they register at setup and leave at stop).
        if self._routes_made_for != len(self._providers):
            service = self.container.service_name
            self._routes = {f"{service}.{provider.method_name}": provider for provider in self._providers}
            self._routes_made_for = len(self._providers)
        provider = self._routes.get(routing_key)  # type: ignore[union-attr]  # made just above
        if provider is None:
            raise MethodNotFound(routing_key.split(".")[-1])
        return provider

    def setup(self):
        super().setup()
        config = self.container.config
        queues.apply(self.queue, config)  # rpc-<service>: quorum when the suite says so (shared.queues)
        self.max_body_bytes = amqp_wire.max_body_bytes(config)
        self.dead_queue = dead_queue(self.queue.name, config)
        self.dead_publisher = Publisher(
            config[AMQP_URI_CONFIG_KEY],
            use_confirms=True,
            declare=[self.dead_queue],
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

    def handle_message(self, body, message):
        try:
            if amqp_wire.UNREADABLE_PROPERTIES_HEADER in (message.headers or {}):
                self.dead_letter(message, "unreadable properties: the request cannot be answered")
                return
            problem = reply_address_problem(message.properties)
            if problem:
                self.dead_letter(message, f"{problem}: the request cannot be answered")
                return
            routing_key = message.delivery_info.get("routing_key") or ""
            try:
                provider = self.get_provider_for_method(routing_key)
            except MethodNotFound:
                method = routing_key.rsplit(".", 1)[-1]
                named = f" {method!r}" if _METHOD_NAME.match(method) else ""
                raise NotFound(f"{self.container.service_name} has no method{named}") from None
            provider.handle_message(body, message)
        except Exception:
            self.handle_result(message, None, sys.exc_info())

    def undecodable(self, message, exc):
        problem = decode_problem(exc)
        properties = message.properties
        if not reply_address_problem(properties) and properties.get("correlation_id"):
            try:
                raise ValidationError({"_body": [problem]})
            except ValidationError:
                self._reply(message, None, sys.exc_info(), reply_serializer=self._serializer())
        refused = isinstance(exc, amqp_wire.Refused)  # not even decoded: compressed, too long, …
        self.dead_letter(message, f"{'refused' if refused else 'undecodable'}: {problem}")

    def handle_result(self, message, result, exc_info):
        result, exc_info = self._reply(message, result, exc_info)
        _ack(self.queue_consumer, message)
        return result, exc_info

    def _serializer(self):
        return self.container.config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER)

    def _reply(self, message, result, exc_info, reply_serializer=None):
        config = self.container.config
        try:
            responder = ReplyResponder(
                config[AMQP_URI_CONFIG_KEY],
                get_rpc_exchange(config),
                self._serializer(),
                message,
                ssl=config.get(AMQP_SSL_CONFIG_KEY),
                login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
                reply_serializer=reply_serializer,
            )
            return responder.send_response(result, exc_info)
        except Exception as exc:
            # nameko let this out of the consumer, which killed the container (nameko issue 346).
            log.error(
                "could not publish an RPC reply; the caller will time out",
                extra={"error_type": type(exc).__name__},
            )
            return result, exc_info

    def dead_letter(self, message, reason):
        """Park what is known of a request nobody can be answered for in ``rpc-<service>.dead``
        (not its body, nor the sender's headers: see the module docstring), count it, ack it.

        If even that fails the request is dropped (logged): requeueing it would spin it through
        this consumer again and again, and it cannot be answered anyway."""
        try:
            body = message.body
            headers = {
                REASON_HEADER: printable(reason, 500),
                METHOD_HEADER: printable(message.delivery_info.get("routing_key"), 255),
                BODY_BYTES_HEADER: len(body) if body is not None else 0,
                CONTENT_TYPE_HEADER: printable(message.content_type, 255),
                CONTENT_ENCODING_HEADER: printable(message.content_encoding, 255),
                DEAD_AT_HEADER: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            self.dead_publisher.publish(
                b"",
                exchange="",
                routing_key=self.dead_queue.name,
                headers={k: v for k, v in headers.items() if v is not None},
                serializer=None,
                correlation_id=printable(message.properties.get("correlation_id"), 255),
                timeout=DEAD_LETTER_TIMEOUT,
                confirm_timeout=DEAD_LETTER_TIMEOUT,
            )
            log.error("RPC request dead-lettered", extra={"outcome": "dead_letter", "reason": reason.split(":")[0]})
            telemetry = next((d for d in self.container.dependencies if hasattr(d, "count_dead_letter")), None)
            if telemetry is not None:
                telemetry.count_dead_letter(DEAD_LETTER_HANDLER)
        except Exception as exc:
            log.error("could not dead-letter an RPC request; dropped it", extra={"error_type": type(exc).__name__})
        _ack(self.queue_consumer, message)


def request_problem(body):
    """None for a well-formed nameko request body, else the ValidationError details."""
    if not isinstance(body, dict):
        return {"_body": [BODY_SHAPE]}
    problems = {}
    if not isinstance(body.get("args"), list):
        problems["args"] = ["Must be an array." if "args" in body else "Missing data for required field."]
    if not isinstance(body.get("kwargs"), dict):
        problems["kwargs"] = ["Must be an object." if "kwargs" in body else "Missing data for required field."]
    return problems or None


class ServiceRpc(Rpc):
    rpc_consumer = ReplyingRpcConsumer()

    def unpack_message_headers(self, message):
        headers = message.headers or {}
        if not all(isinstance(key, str) for key in headers):
            raise ValidationError({"_headers": ["Header names must be UTF-8 text."]})
        stack = headers.get(CALL_ID_STACK_HEADER)
        if stack is not None:
            problem = call_id_stack_problem(stack)
            if problem:
                raise ValidationError({CALL_ID_STACK_HEADER: [problem]})
        return super().unpack_message_headers(message)

    def handle_message(self, body, message):
        problem = request_problem(body)
        if problem:
            raise ValidationError(problem)
        args, kwargs = body["args"], body["kwargs"]
        context_data = self.unpack_message_headers(message)
        # The key a write's reply is remembered under when the caller gives none (shared.idempotency):
        # the same on a redelivery. Ours, whatever a header of that name said.
        context_data[REQUEST_ID_CONTEXT_KEY] = printable(message.properties.get("correlation_id"), 200)
        try:
            self.check_signature(args, kwargs)
        except IncorrectSignature:
            raise ValidationError({"_args": ["The arguments do not match the method."]}) from None
        handle_result = partial(self.handle_result, message)
        try:
            self.container.spawn_worker(self, args, kwargs, context_data=context_data, handle_result=handle_result)
        except ContainerBeingKilled:
            self.rpc_consumer.requeue_message(message)


class ClassicReplyListener(ReplyListener):
    """A reply queue that is always a classic queue.

    nameko declares its reply queue durable, so on a vhost whose default queue type is quorum
    (production) it would become a replicated quorum queue: a Raft write per reply for a queue
    that exists only to carry answers back to one process. It shares the RPC entrypoint's
    queue consumer (one connection), so an undecodable reply is not logged with its body either.

    It is also transient (not durable): a durable classic queue whose cluster node stops cannot be
    declared again from another node ("home node … is down", 404) until that node returns, and the
    shared consumer — the RPC entrypoint's too — retried that for as long as the node was down
    (issue 13, tests/faults/test_cluster.py). A transient one is dropped with its node and made
    afresh on the node the service reconnects to; replies are transient messages anyway.
    """

    queue_consumer = RpcQueueConsumer()

    def setup(self):
        super().setup()
        self.queue.durable = False
        self.queue.queue_arguments = {**(self.queue.queue_arguments or {}), "x-queue-type": "classic"}
