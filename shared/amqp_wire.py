"""py-amqp, made to survive bytes it cannot decode (issue 12).

py-amqp decodes a delivery's routing key and exchange and its properties (``reply_to``,
``content_type``, ``correlation_id``, header names and values, …) while it reads frames, in the
thread that consumes for the whole container. The broker does not check that those strings are
UTF-8, so any publisher could send one that is not — and the UnicodeDecodeError raised out of the
connection killed the container; the unacked message, redelivered on restart, killed it again.

``install()`` (called by shared.rpc and shared.handlers, once per process is enough) makes the
reading tolerant without changing anything for well-formed messages:

- a string that is not UTF-8 is decoded with ``surrogateescape``: its bad bytes become lone
  surrogates, which the entrypoints refuse (an unknown method, a content type not accepted, a
  reply address nothing listens on) — so the message is answered or dead-lettered like any other;
- properties that cannot be read at all (a header timestamp past year 9999, a value type py-amqp
  does not know) are replaced by one header, ``x-grassroots-unreadable-properties``: the message
  arrives without ``reply_to`` or content type and is dead-lettered.

kombu then unpacks a delivery in the same thread before any of our code sees it: it decompresses a
body whose ``compression`` header names gzip, bz2 or lzma, and runs ``codecs.decode`` on one without
a JSON content type whose ``content_encoding`` names a codec (``zlib``, ``bz2``, …) — with no limit
on what comes out (9.7 KB became 10 MB; 16 MB, GBs: the pod is OOM-killed, and the redelivered
message kills it again). Its JSON decoder also turns ``{"__type__": "datetime", "__value__": …}``
(date, time, decimal, uuid, bytes) into Python objects. ``GuardedQueueConsumer`` (the queue
consumers of shared.rpc and shared.handlers) consumes with ``GuardedConsumer``, which looks at each
delivery first:

- a ``compression`` header, a ``content_encoding`` other than ``utf-8`` or ``binary``, or a body
  longer than the provider's ``max_body_bytes`` (``MAX_MESSAGE_BYTES``, 1 MiB by default, for RPC
  requests and events; replies are bounded by the broker only) is never decoded: the provider's
  decode-error path gets ``Refused`` naming the problem (RPC: answered when it can be, and
  dead-lettered; events: dead-lettered without the body);
- a JSON body is decoded as plain JSON (``json.loads`` of UTF-8 text): ``__type__`` objects stay
  objects, so the schemas see only what JSON can say.
"""

import json
import types
from functools import partial
from typing import Any

import kombu
import kombu.exceptions
from amqp import abstract_channel, serialization
from kombu.message import Message

UNREADABLE_PROPERTIES_HEADER = "x-grassroots-unreadable-properties"
MAX_BODY_BYTES_CONFIG_KEY = "MAX_MESSAGE_BYTES"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
PLAIN_ENCODINGS = frozenset({"utf-8", "binary"})  # kombu decodes nothing else without a codec
JSON_CONTENT_TYPE = "application/json"

_strict_text = serialization.pstr_t
_strict_loads = serialization.loads
_load_properties = serialization.GenericContent._load_properties


def _text(value):
    """py-amqp's bytes_to_str, falling back to surrogateescape instead of raising."""
    try:
        return _strict_text(value)
    except UnicodeDecodeError:
        return value.decode("utf-8", "surrogateescape")


def _lenient_clone(function):
    """``function`` with its 'surrogatepass' decodes made 'surrogateescape' (loads decodes method
    frame strings inline, with no hook to catch)."""
    code = function.__code__
    consts = tuple("surrogateescape" if c == "surrogatepass" else c for c in code.co_consts)
    return types.FunctionType(
        code.replace(co_consts=consts), function.__globals__, function.__name__, function.__defaults__
    )


_lenient_loads = _lenient_clone(_strict_loads)


def _loads(format, buf, offset):
    try:
        return _strict_loads(format, buf, offset)
    except UnicodeDecodeError:
        return _lenient_loads(format, buf, offset)


def _tolerant_load_properties(self, class_id, buf, offset):
    try:
        return _load_properties(self, class_id, buf, offset)
    except Exception as exc:
        # body_size was read before the properties, so the content frames still line up.
        self.properties = {"application_headers": {UNREADABLE_PROPERTIES_HEADER: type(exc).__name__}}
        return offset


def install():
    serialization.pstr_t = _text
    serialization.loads = _loads
    abstract_channel.loads = _loads  # dispatch_method imported its own reference
    serialization.GenericContent._load_properties = _tolerant_load_properties


# ---- the body: looked at before kombu unpacks it -------------------------------------------------


class Refused(kombu.exceptions.DecodeError):
    """A delivery refused unread; ``problem`` says why, in words its sender can act on."""

    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem


def max_body_bytes(config):
    """The ``MAX_MESSAGE_BYTES`` setting: the longest body an RPC request or an event may have."""
    value = config.get(MAX_BODY_BYTES_CONFIG_KEY, DEFAULT_MAX_BODY_BYTES)
    if type(value) is not int or value < 1:
        raise ValueError(f"{MAX_BODY_BYTES_CONFIG_KEY} must be a positive integer (bytes), not {value!r}")
    return value


def body_problem(raw, limit):
    """None for a delivery (py-amqp's message) kombu may unpack, else why not."""
    properties = raw.properties or {}
    if "compression" in (properties.get("application_headers") or {}):
        return "Compressed bodies are not accepted; send the JSON uncompressed."
    encoding = properties.get("content_encoding")
    if encoding and not (isinstance(encoding, str) and encoding.lower() in PLAIN_ENCODINGS):
        return "The content encoding is not accepted; send utf-8."
    if limit is not None and len(raw.body or b"") > limit:
        return f"The body is longer than {limit} bytes."
    return None


def unpacked(raw, channel):
    """kombu's message for ``raw`` without anything kombu would do to its body (no decompression)."""
    properties = raw.properties or {}
    headers = properties.get("application_headers") or {}
    return Message(
        body=raw.body,
        channel=channel,
        delivery_tag=raw.delivery_tag,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        delivery_info=raw.delivery_info,
        properties=properties,
        headers={k: v for k, v in headers.items() if k != "compression"},
    )


def plain_json(body):
    """A JSON body decoded as plain JSON, raising kombu's DecodeError (with the cause) as kombu does."""
    try:
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body).decode("utf-8")
        return json.loads(body)
    except Exception as exc:
        raise kombu.exceptions.DecodeError(exc) from exc


class GuardedConsumer(kombu.Consumer):
    """kombu's Consumer, checking each delivery before kombu unpacks it (see the module docstring)."""

    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES

    def _receive_callback(self, raw):
        problem = body_problem(raw, self.max_body_bytes)
        if problem is not None:
            return self._undecodable(unpacked(raw, self.channel), Refused(problem))
        channel: Any = self.channel
        message = channel.message_to_python(raw)  # nothing left to decompress
        if self.accept is not None:
            message.accept = self.accept
        if self.on_message:
            return self.on_message(message)
        try:
            if message.errors:
                message._reraise_error()
            if message.content_type == JSON_CONTENT_TYPE and (self.accept is None or JSON_CONTENT_TYPE in self.accept):
                body = plain_json(message.body)
            else:
                body = message.decode()  # refuses a content type not accepted; utf-8 text or bytes
        except Exception as exc:
            return self._undecodable(message, exc)
        return self.receive(body, message)

    def _undecodable(self, message, exc):
        if not self.on_decode_error:
            raise exc
        self.on_decode_error(message, exc)


class GuardedQueueConsumer:
    """A mixin for nameko's QueueConsumer: consumes with GuardedConsumer, each provider's body limit
    its ``max_body_bytes`` (None: the broker's), and hands what cannot be decoded to
    ``self._undecodable(provider, message, exc)`` rather than to kombu's handler (which logs the body)."""

    def get_consumers(self, consumer_cls, channel):
        queue_consumer: Any = self  # a nameko QueueConsumer: _consumers, on_decode_error, _undecodable
        guarded = partial(GuardedConsumer, channel, on_decode_error=queue_consumer.on_decode_error)
        consumers = super().get_consumers(guarded, channel)  # type: ignore[misc]
        for provider, consumer in queue_consumer._consumers.items():
            consumer.on_decode_error = partial(queue_consumer._undecodable, provider)
            consumer.max_body_bytes = getattr(provider, "max_body_bytes", None)
        return consumers
