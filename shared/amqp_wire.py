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
"""

import types

from amqp import abstract_channel, serialization

UNREADABLE_PROPERTIES_HEADER = "x-grassroots-unreadable-properties"

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
