"""The suite's AsyncAPI 3.0 document, generated from the code.

    python -m tools.asyncapi            # (re)write docs/asyncapi.yaml  (make asyncapi)
    python -m tools.asyncapi --check    # exit 1, showing the difference, when it is stale

What it reads:

- every service class in ``services/<svc>/service.py`` (a ``shared.service.ServiceBase`` with a
  ``name``), and on its methods the ``__contract__`` that ``shared.endpoints.endpoint`` (RPC: roles,
  input schema, read-only), ``shared.endpoints.on_event`` (event handlers) and
  ``shared.commands.on_command`` (command handlers) attach;
- ``services/<svc>/events.py``: ``EVENTS = {"<type>": <marshmallow schema of the data>}``, one per
  event type the service emits.

What it writes: one channel per RPC method (exchange ``nameko-rpc``, routing key
``<service>.<method>``, request/reply), one per event type (exchange ``<service>.events``, routing
key = the type), one per command a service accepts (exchange ``<service>.commands``, routing key =
the command), a ``receive`` operation per RPC method, event handler and command handler, a ``send``
operation per event type, and the marshmallow schemas as JSON Schema under
``components/schemas``. A write method's arguments (not ``read_only``) also hold the optional
``idempotency_key`` that ``shared.endpoints`` takes out before validating the rest; it is described
once, as the ``IdempotencyKey`` component. The YAML is deterministic (sorted keys, no anchors), so a test can
compare the committed file with a fresh generation.
"""

import argparse
import difflib
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import yaml
from marshmallow import EXCLUDE, INCLUDE, fields, missing, validate

from shared import replies, validation
from shared.commands import command_exchange_name, command_queue_name
from shared.endpoints import MAX_KEY_LENGTH
from shared.idempotency import DEFAULT_TTL_HOURS, KEY_ARGUMENT
from shared.outbox import SPEC_VERSION

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "asyncapi.yaml"

ASYNCAPI_VERSION = "3.0.0"
API_VERSION = "1.0.0"
RPC_EXCHANGE = "nameko-rpc"
AMQP_BINDING_VERSION = "0.3.0"
REPLY_CHANNEL = "rpc.reply"
ENVELOPE = "CloudEventEnvelope"
RPC_HEADERS = "NamekoRpcHeaders"
EVENT_HEADERS = "NamekoEventHeaders"
REMOTE_ERROR = "RemoteError"
IDEMPOTENCY_KEY = "IdempotencyKey"

ID_PATTERN_IN = r"^[0-9]{1,19}$"
ID_PATTERN_OUT = r"^[1-9][0-9]{0,18}$"
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
MOBILE_PATTERN = r"^1[3-9][0-9]{9}$"


class ContractError(Exception):
    """The code's contract cannot be documented as it stands (the message says what to fix)."""


# ---- marshmallow → JSON Schema --------------------------------------------------------------


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _clean_doc(text):
    """A docstring as paragraphs, each on one line (so the YAML stays readable)."""
    if not text or not text.strip():
        return None
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _is_json(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _json_value(value):
    """``value`` if it is plain JSON, else None."""
    return value if _is_json(value) else None


class SchemaConverter:
    """Turns marshmallow schemas into JSON Schema (draft-07) objects.

    ``mode="load"`` describes what a schema accepts (RPC arguments): an ``Id`` is a positive
    integer or its decimal string, only ``required`` fields are required. ``mode="dump"``
    describes what a service writes (event payloads): an ``Id`` is a string of digits.

    Nested schemas become named entries of ``self.components`` (``$ref``'d); a schema class is
    named after its module and class: ``services.grid.schemas.Address`` → ``grid.Address``,
    ``services.notices.events.X`` → ``notices.events.X``.
    """

    def __init__(self):
        self.components = {}
        self._names = {}  # (class, mode, only, exclude, write) → component name

    # -- schemas --

    def component(self, schema, mode, write=False):
        """The component name for ``schema`` (class or instance), converting it on first use.

        ``write``: the arguments of a write method, which also take ``idempotency_key``; named like
        the plain schema, or ``<name>.write`` when a read method took that name for the plain one."""
        instance = schema() if isinstance(schema, type) else schema
        cls = type(instance)
        key = (cls, mode, _frozen(instance.only), _frozen(instance.exclude), write)
        if key in self._names:
            return self._names[key]
        base = _component_name(cls)
        if mode == "dump" and not cls.__module__.endswith(".events"):
            base += ".out"
        if write and base in self.components:
            base += ".write"
        name, n = base, 1
        while name in self.components:  # another class (or variant) took the name: suffix it
            n += 1
            name = f"{base}-{n}"
        self._names[key] = name
        self.components[name] = None  # reserve (recursive schemas)
        self.components[name] = self.schema_object(instance, mode, write)
        return name

    def arguments(self, schema, write):
        """The JSON Schema of an RPC method's keyword arguments (``schema`` None: none), with the
        optional ``idempotency_key`` when the method writes."""
        if schema is not None:
            return _ref(self.component(schema, "load", write))
        if not write:
            return {"type": "object", "additionalProperties": False, "properties": {}, "description": "No arguments."}
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {KEY_ARGUMENT: _ref(IDEMPOTENCY_KEY)},
            "description": f"No arguments but the optional ``{KEY_ARGUMENT}``.",
        }

    def reply(self, returns, mode="dump"):
        """The JSON Schema of what ``returns`` (a schema, ``many`` or not, or a ``replies.OneOf``) dumps."""
        if isinstance(returns, replies.OneOf):
            return {"oneOf": [self.reply(schema, mode) for schema in returns.schemas]}
        instance = returns() if isinstance(returns, type) else returns
        ref = _ref(self.component(instance, mode))
        return {"type": "array", "items": ref} if instance.many else ref

    def schema_object(self, schema, mode, write=False):
        instance = schema() if isinstance(schema, type) else schema
        properties, required = {}, []
        for name, field in instance.fields.items():
            if (mode == "load" and field.dump_only) or (mode == "dump" and field.load_only):
                continue
            key = field.data_key or name
            properties[key] = self.field(field, mode)
            if field.required:
                required.append(key)
        if write:
            # shared.endpoints takes the key out before the schema loads the rest: a schema field of
            # the same name never sees it.
            properties[KEY_ARGUMENT] = _ref(IDEMPOTENCY_KEY)
            required = [name for name in required if name != KEY_ARGUMENT]
        result: dict[str, object] = {"type": "object", "properties": properties}
        if required:
            result["required"] = sorted(required)
        unknown = instance.unknown
        if unknown not in (EXCLUDE, INCLUDE):
            result["additionalProperties"] = False
        doc = _clean_doc(type(instance).__dict__.get("__doc__"))
        if doc:
            result["description"] = doc
        return result

    # -- fields --

    def field(self, field, mode):
        result = self._field_type(field, mode)
        for validator in field.validators:
            self._apply_validator(result, validator)
        if field.allow_none:
            result = _nullable(result)
        annotations = {}
        description = (field.metadata or {}).get("description")
        if description:
            annotations["description"] = description
        if mode == "load" and not field.required:
            default = field.load_default
            if default is list:
                annotations["default"] = []
            elif default is dict:
                annotations["default"] = {}
            elif default is not missing and not callable(default) and _is_json(default):
                annotations["default"] = default
        if annotations and "$ref" in result:  # siblings of $ref are ignored in draft-07
            return {"allOf": [result], **annotations}
        return {**result, **annotations}

    def _field_type(self, field, mode):
        if isinstance(field, validation.Id):
            if mode == "dump":
                return {"type": "string", "pattern": ID_PATTERN_OUT}
            return {
                "oneOf": [
                    {"type": "string", "pattern": ID_PATTERN_IN},
                    {"type": "integer", "minimum": 1, "maximum": validation.MAX_ID},
                ]
            }
        if isinstance(field, replies.Choice):
            return self.reply(field.one_of, mode)
        if isinstance(field, (fields.Function, fields.Method)):
            return {"description": "Computed by the service."}
        if isinstance(field, fields.Nested):
            ref = _ref(self.component(field.schema, mode))
            if field.many:
                return {"type": "array", "items": ref}
            return ref
        if isinstance(field, fields.Pluck):  # pragma: no cover - not used by the suite
            return {}
        if isinstance(field, fields.List):
            result = {"type": "array", "items": self.field(field.inner, mode)}
            if any(v is validation._unique for v in field.validators):
                result["uniqueItems"] = True
            return result
        if isinstance(field, fields.Tuple):
            return {
                "type": "array",
                "items": [self.field(f, mode) for f in field.tuple_fields],
                "minItems": len(field.tuple_fields),
                "maxItems": len(field.tuple_fields),
            }
        if isinstance(field, fields.Dict):
            result = {"type": "object"}
            if field.key_field is not None:
                result["propertyNames"] = self.field(field.key_field, mode)
            if field.value_field is not None:
                result["additionalProperties"] = self.field(field.value_field, mode)
            return result
        if isinstance(field, fields.Boolean):
            return {"type": "boolean"}
        if isinstance(field, fields.Integer):
            return {"type": "integer"}
        if isinstance(field, fields.Number):  # Float, Decimal
            return {"type": "number"}
        if isinstance(field, fields.Date):
            result = {"type": "string", "format": "date"}
            if isinstance(field, validation.Date) and mode == "load":
                result["description"] = f"From {field.earliest.isoformat()} to {field.latest.isoformat()}."
            return result
        if isinstance(field, fields.Time):
            if field.format == "%H:%M":
                return {"type": "string", "pattern": CLOCK_PATTERN}
            return {"type": "string", "format": "time"}
        if isinstance(field, fields.DateTime):  # DateTime, AwareDateTime, the suite's UtcDateTime
            result = {"type": "string", "format": "date-time"}
            if isinstance(field, validation.UtcDateTime) and mode == "load":
                result["description"] = (
                    "ISO-8601; without an offset it is taken as UTC. From "
                    f"{field.earliest:%Y-%m-%d} (UTC) up to, not including, {field.latest:%Y-%m-%d}."
                )
            return result
        if isinstance(field, fields.UUID):
            return {"type": "string", "format": "uuid"}
        if isinstance(field, fields.Url):
            return {"type": "string", "format": "uri"}
        if isinstance(field, fields.Email):
            return {"type": "string", "format": "email"}
        if isinstance(field, validation.Phone):
            return {"type": "string", "pattern": MOBILE_PATTERN}
        if isinstance(field, fields.String):
            return {"type": "string"}
        if isinstance(field, fields.Enum):
            if field.by_value:
                return {"enum": sorted((m.value for m in field.enum), key=repr)}
            return {"type": "string", "enum": sorted(m.name for m in field.enum)}
        if isinstance(field, fields.Constant):
            return {"const": _json_value(field.constant)}
        return {"description": f"Any JSON value ({type(field).__name__})."}

    def _apply_validator(self, result, validator):
        kind = result.get("type")
        if isinstance(validator, validate.OneOf):
            result["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Length):
            low, high = validator.min, validator.max
            if validator.equal is not None:
                low = high = validator.equal
            names = {
                "string": ("minLength", "maxLength"),
                "array": ("minItems", "maxItems"),
                "object": ("minProperties", "maxProperties"),
            }.get(kind)
            if names:
                if low:
                    result[names[0]] = low
                if high is not None:
                    result[names[1]] = high
        elif isinstance(validator, validate.Range):
            if validator.min is not None:
                result["minimum" if validator.min_inclusive else "exclusiveMinimum"] = validator.min
            if validator.max is not None:
                result["maximum" if validator.max_inclusive else "exclusiveMaximum"] = validator.max
        elif isinstance(validator, validate.Regexp):
            result["pattern"] = validator.regex.pattern
        elif isinstance(validator, validate.Equal):
            result["const"] = _json_value(validator.comparable)


def _frozen(value):
    return None if value is None else tuple(sorted(value))


def _component_name(cls):
    parts = cls.__module__.split(".")
    if parts[0] == "services":
        parts = parts[1:]
    if parts and parts[-1] == "schemas":
        parts = parts[:-1]
    return re.sub(r"[^\w.\-]", "_", ".".join(parts + [cls.__qualname__.replace("<locals>.", "")]))


def _nullable(result):
    if "type" in result and "$ref" not in result and "oneOf" not in result and "allOf" not in result:
        kind = result["type"]
        result["type"] = [kind, "null"] if isinstance(kind, str) else sorted(set(kind) | {"null"})
        if "enum" in result and None not in result["enum"]:
            result["enum"] = result["enum"] + [None]
        return result
    if set(result) == {"oneOf"}:
        return {"oneOf": result["oneOf"] + [{"type": "null"}]}
    if set(result) <= {"description"}:  # anything goes already
        return result
    return {"oneOf": [result, {"type": "null"}]}


# ---- reading the code -----------------------------------------------------------------------


def service_classes():
    """``{service name: class}`` for every service in the registry (services/registry.py)."""
    from services import registry

    found = {}
    for entry in registry.SERVICES:
        cls = entry.service_class()
        if cls.name != entry.name:
            raise ContractError(f"{entry.spec} is named {cls.name!r}, the registry says {entry.name!r}")
        found[entry.name] = cls
    return found


def service_events(service):
    """``{event type: schema}`` from ``services/<service>/events.py`` (empty when it has none)."""
    try:
        module = importlib.import_module(f"services.{service}.events")
    except ModuleNotFoundError as exc:
        if exc.name in (f"services.{service}", f"services.{service}.events"):
            return {}
        raise
    return dict(getattr(module, "EVENTS", {}))


def is_rpc(method):
    from nameko.rpc import Rpc

    return any(isinstance(entrypoint, Rpc) for entrypoint in getattr(method, "nameko_entrypoints", ()))


def entrypoints(cls):
    """``(rpc, handlers, undocumented)``: (name, contract) pairs sorted by name, and the names of
    ``@rpc`` methods that carry no contract."""
    rpcs, handlers, undocumented = [], [], []
    for name in sorted(dir(cls)):
        if name.startswith("__"):
            continue
        method = inspect.getattr_static(cls, name, None)
        if not callable(method):
            continue
        contract = getattr(method, "__contract__", None)
        if contract is None:
            if is_rpc(method):
                undocumented.append(name)
            continue
        if contract["kind"] == "rpc":
            if is_rpc(method):
                rpcs.append((name, contract))
        elif contract["kind"] == "event_handler":
            handlers.append((name, contract))
    return rpcs, handlers, undocumented


def command_handlers(cls):
    """``[(method name, contract)]`` of the ``@on_command`` handlers on ``cls``, sorted by command."""
    found = []
    for name in sorted(dir(cls)):
        method = inspect.getattr_static(cls, name, None) if not name.startswith("__") else None
        contract = getattr(method, "__contract__", None) if callable(method) else None
        if contract is not None and contract["kind"] == "command_handler":
            found.append((name, contract))
    return sorted(found, key=lambda item: (item[1]["command"], item[0]))


def command_senders(services, target):
    """The services holding ``target``'s client (a dependency from ``services/<target>/client.py``):
    those that send ``target`` its commands."""
    module = f"services.{target}.client"
    return sorted(
        name
        for name, cls in services.items()
        if name != target
        and any(
            type(inspect.getattr_static(cls, attr)).__module__ == module
            for attr in dir(cls)
            if not attr.startswith("__")
        )
    )


def spoken_list(items):
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def is_write(contract):
    """An RPC method that changes data and remembers its reply: it takes ``idempotency_key``
    (shared.endpoints; not an audited read such as ``legal.get_consultation``)."""
    return contract["kind"] == "rpc" and contract.get("idempotent", not contract.get("read_only"))


def idempotency_key_schema():
    """The ``idempotency_key`` argument of every write method, described once."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "description": (
            "Optional on every method that changes data (never on a read-only one): printable text, e.g. "
            "a UUID per logical operation, sent again on every retry of that operation. Under one key "
            "(per caller — the token's ``sub`` — and method) the first request acts; a repeat with the "
            "same arguments gets the first reply and changes nothing, one with other arguments is a "
            "``Conflict``, one that arrives while the first still runs waits for it. A call that failed "
            "is not remembered: its retry runs afresh. Without a key, the request's AMQP "
            "``correlation_id`` is the key, so a request the broker delivers again acts once. Keys are "
            f"kept ``IDEMPOTENCY_TTL_HOURS`` ({DEFAULT_TTL_HOURS}) hours."
        ),
    }


# ---- the document ---------------------------------------------------------------------------


def _amqp_channel(exchange, exchange_type="topic"):
    return {
        "amqp": {
            "is": "routingKey",
            "bindingVersion": AMQP_BINDING_VERSION,
            "exchange": {"name": exchange, "type": exchange_type, "durable": True, "autoDelete": False, "vhost": "/"},
        }
    }


def _summary(doc):
    return doc.strip().split("\n\n")[0] if doc else None


def _fixed_components():
    return {
        ENVELOPE: {
            "type": "object",
            "description": "The CloudEvents-shaped envelope every event and command travels in "
            "(``shared.outbox.envelope``); ``data`` is the event's payload or the command. Consumers "
            "deduplicate by ``id``: delivery is at least once (transactional outbox, publisher confirms).",
            "required": ["data", "datacontenttype", "id", "source", "specversion", "subject", "time", "type"],
            "properties": {
                "specversion": {"type": "string", "const": SPEC_VERSION},
                "id": {"type": "string", "format": "uuid", "description": "Unique per event; the dedup key."},
                "source": {
                    "type": "string",
                    "pattern": "^grassroots/[a-z_]+$",
                    "description": "``grassroots/<service>``.",
                },
                "type": {"type": "string", "description": "The event type, also the AMQP routing key."},
                "time": {"type": "string", "format": "date-time", "description": "When the change happened (UTC)."},
                "subject": {
                    "type": ["string", "null"],
                    "maxLength": 300,
                    "description": "What changed, e.g. ``resident/42``.",
                },
                "datacontenttype": {"type": "string", "const": "application/json"},
                "data": {"type": "object"},
            },
        },
        RPC_HEADERS: {
            "type": "object",
            "description": "nameko context data, carried as AMQP headers prefixed ``nameko.``.",
            "required": ["nameko.auth_token"],
            "properties": {
                "nameko.auth_token": {"type": "string", "description": "The caller's JWT (HS256); see README."},
                "nameko.call_id_stack": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The chain of call ids across services and events.",
                },
            },
        },
        EVENT_HEADERS: {
            "type": "object",
            "properties": {
                "nameko.call_id_stack": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The call ids of the call that emitted the event.",
                },
            },
        },
        REMOTE_ERROR: {
            "type": "object",
            "description": "A serialised exception; callers see a nameko ``RemoteError`` (``shared.errors`` "
            "gives typed subclasses).",
            "required": ["exc_type", "value"],
            "properties": {
                "exc_type": {
                    "type": "string",
                    "description": "``ValidationError`` (``value`` is JSON naming each "
                    "bad field; ``_body``, ``args`` or ``kwargs`` for a request body that is not "
                    '``{"args": [], "kwargs": {...}}``), ``NotFound`` (also an unknown method), '
                    "``Conflict`` (also an ``idempotency_key`` used before for other arguments), "
                    "``Forbidden``, ``Unauthenticated``, ``ServiceUnavailable`` (a service the call "
                    "depends on did not answer in time; nothing was changed: retry later, a write with "
                    "the same ``idempotency_key``), ``RateLimited`` (the caller made too many such "
                    "requests in a period, e.g. a resident's reports; nothing was changed), ``InternalError``.",
                },
                "exc_path": {"type": "string"},
                "exc_args": {"type": "array"},
                "value": {"type": "string"},
            },
        },
        IDEMPOTENCY_KEY: idempotency_key_schema(),
    }


def build(services=None):
    """The AsyncAPI document as a dict (``services``: ``{name: class}``, default: every service)."""
    services = service_classes() if services is None else services
    converter = SchemaConverter()
    channels, operations, messages = {}, {}, {}
    tags = []
    events_of = {name: service_events(name) for name in services}

    # Read methods' argument schemas first: a schema that read and write methods share keeps its
    # name for the plain one, and the write variant (with idempotency_key) is ``<name>.write``.
    for cls in services.values():
        for _method, contract in entrypoints(cls)[0]:
            if not is_write(contract) and contract["schema"] is not None:
                converter.component(contract["schema"], "load")

    channels[REPLY_CHANNEL] = {
        "address": None,
        "title": "RPC replies",
        "description": f"Replies are published to ``{RPC_EXCHANGE}`` with the request's ``reply_to`` property as "
        "routing key (the caller's reply queue) and its ``correlation_id``. A request that cannot be answered "
        "— no usable ``reply_to``, or a body that cannot be decoded (not JSON, not UTF-8, nested too deep, another "
        "content type) or is refused unread (a ``compression`` header, a ``content_encoding`` other than "
        "``utf-8``/``binary``, longer than ``MAX_MESSAGE_BYTES``) — is not run: what is known of it, never its "
        "body, is parked in ``rpc-<service>.dead`` (an undecodable one that names ``reply_to`` and "
        "``correlation_id`` is also answered with a ``ValidationError``). Bodies are read as plain JSON.",
        "messages": {},  # each method's reply message, added below
        "bindings": _amqp_channel(RPC_EXCHANGE),
    }
    for service, cls in sorted(services.items()):
        module_doc = _summary(_clean_doc(inspect.getmodule(cls).__doc__))
        tags.append({"name": service, **({"description": module_doc} if module_doc else {})})
        rpcs, _handlers, undocumented = entrypoints(cls)
        if undocumented:
            raise ContractError(f"{service}: @rpc methods without @endpoint: {', '.join(undocumented)}")
        for method, contract in rpcs:
            key = f"rpc.{service}.{method}"
            roles = list(contract["roles"])
            write = is_write(contract)
            kwargs = converter.arguments(contract["schema"], write)
            doc = _clean_doc(contract.get("doc"))
            channels[key] = {
                "address": f"{service}.{method}",
                "title": f"{service}.{method}",
                "messages": {"request": {"$ref": f"#/components/messages/{key}"}},
                "bindings": _amqp_channel(RPC_EXCHANGE),
            }
            messages[key] = {
                "name": f"{service}.{method}",
                "title": f"{service}.{method} request",
                "contentType": "application/json",
                "headers": _ref(RPC_HEADERS),
                "correlationId": {
                    "location": "$message.header#/correlation_id",
                    "description": "The AMQP ``correlation_id`` property; the reply carries it."
                    + (
                        " The same request delivered again under it (a redelivery) gets the first reply "
                        "and changes nothing."
                        if write
                        else ""
                    ),
                },
                "payload": {
                    "type": "object",
                    "required": ["args", "kwargs"],
                    "additionalProperties": False,
                    "properties": {
                        "args": {
                            "type": "array",
                            "maxItems": 0,
                            "description": "Positional arguments are refused; pass arguments by keyword.",
                        },
                        "kwargs": kwargs,
                    },
                },
            }
            reply_name = f"{service}.{method}"
            channels[REPLY_CHANNEL]["messages"][reply_name] = {"$ref": f"#/components/messages/{key}.reply"}
            messages[f"{key}.reply"] = {
                "name": f"{service}.{method} reply",
                "title": f"{service}.{method} reply",
                "contentType": "application/json",
                "payload": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["result", "error"],
                            "properties": {
                                "result": converter.reply(contract["returns"]),
                                "error": {"type": "null"},
                            },
                        },
                        {
                            "type": "object",
                            "required": ["result", "error"],
                            "properties": {"result": {"type": "null"}, "error": _ref(REMOTE_ERROR)},
                        },
                    ]
                },
                "correlationId": {
                    "location": "$message.header#/correlation_id",
                    "description": "The AMQP ``correlation_id`` property of the request.",
                },
            }
            description = [doc] if doc else []
            description.append(
                f"Roles: {', '.join(roles)}."
                + (f" Changes data; retry it safely with ``{KEY_ARGUMENT}``." if write else " Read-only.")
            )
            operations[f"{service}.{method}"] = {
                "action": "receive",
                "title": f"{service}.{method}",
                **({"summary": _summary(doc)} if doc else {}),
                "description": "\n\n".join(description),
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/request"}],
                "reply": {
                    "address": {
                        "location": "$message.header#/reply_to",
                        "description": "The AMQP ``reply_to`` property of the request.",
                    },
                    "channel": {"$ref": f"#/channels/{REPLY_CHANNEL}"},
                    "messages": [{"$ref": f"#/channels/{REPLY_CHANNEL}/messages/{reply_name}"}],
                },
                "tags": [{"name": service}, {"name": "rpc"}],
                "x-roles": roles,
                "x-read-only": bool(contract.get("read_only")),
            }

        for event_type, schema in sorted(events_of[service].items()):
            key = f"events.{service}.{event_type}"
            data = converter.component(schema, "dump")
            doc = _clean_doc(
                type(schema).__dict__.get("__doc__") if not isinstance(schema, type) else schema.__dict__.get("__doc__")
            )
            channels[key] = {
                "address": event_type,
                "title": f"{service} {event_type}",
                "description": f"Routing key ``{event_type}`` on the ``{service}.events`` topic exchange.",
                "messages": {event_type: {"$ref": f"#/components/messages/{key}"}},
                "bindings": _amqp_channel(f"{service}.events"),
            }
            messages[key] = {
                "name": event_type,
                "title": f"{service} {event_type}",
                **({"summary": _summary(doc), "description": doc} if doc else {}),
                "contentType": "application/json",
                "headers": _ref(EVENT_HEADERS),
                "payload": {
                    "allOf": [
                        _ref(ENVELOPE),
                        {
                            "type": "object",
                            "properties": {
                                "source": {"const": f"grassroots/{service}"},
                                "type": {"const": event_type},
                                "data": _ref(data),
                            },
                        },
                    ]
                },
            }
            operations[f"{service}.emit.{event_type}"] = {
                "action": "send",
                "title": f"{service} emits {event_type}",
                **({"summary": _summary(doc)} if doc else {}),
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{event_type}"}],
                "tags": [{"name": service}, {"name": "event"}],
            }

    for service, cls in sorted(services.items()):
        _rpcs, handlers, _ = entrypoints(cls)
        for method, contract in handlers:
            source, event_type = contract["source"], contract["event_type"]
            key = f"events.{source}.{event_type}"
            if key not in channels:
                raise ContractError(
                    f"{service}.{method} handles {source}.{event_type}, which services/{source}/events.py does not "
                    f"document: add its schema to EVENTS there"
                )
            doc = _clean_doc(contract.get("doc"))
            operation = {
                "action": "receive",
                "title": f"{service} handles {source} {event_type}",
                **({"summary": _summary(doc)} if doc else {}),
                "description": "\n\n".join(
                    filter(
                        None,
                        [
                            doc,
                            f"Queue ``evt-{source}-{event_type}--{service}.{method}``; deduplicated by envelope id, "
                            f"retried with backoff, then parked in the queue's ``.dead`` twin.",
                        ],
                    )
                ),
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{event_type}"}],
                "tags": [{"name": service}, {"name": "event"}],
                "x-handler": f"{service}.{method}",
            }
            if contract.get("schema") is not None:
                operation["x-consumed-data"] = _ref(converter.component(contract["schema"], "load"))
            operations[f"{service}.handle.{method}"] = operation

    for service, cls in sorted(services.items()):
        senders = spoken_list(f"``{name}``" for name in command_senders(services, service)) or "other services"
        for method, contract in command_handlers(cls):
            command = contract["command"]
            key = f"commands.{service}.{command}"
            exchange, queue = command_exchange_name(service), command_queue_name(service, command)
            data = converter.component(contract["schema"], "load")
            schema_doc = converter.components[data].get("description")
            channels[key] = {
                "address": command,
                "title": f"{service} {command} command",
                "description": f"Routing key ``{command}`` on the ``{exchange}`` topic exchange, consumed from the "
                f"durable queue ``{queue}``.",
                "messages": {command: {"$ref": f"#/components/messages/{key}"}},
                "bindings": _amqp_channel(exchange),
            }
            messages[key] = {
                "name": command,
                "title": f"{service} {command} command",
                **({"summary": _summary(schema_doc), "description": schema_doc} if schema_doc else {}),
                "contentType": "application/json",
                "headers": _ref(EVENT_HEADERS),
                "payload": {
                    "allOf": [
                        _ref(ENVELOPE),
                        {
                            "type": "object",
                            "properties": {
                                "source": {"description": "The sending service: ``grassroots/<service>``."},
                                "type": {"const": command},
                                "subject": {"description": "The command's ``origin``."},
                                "data": _ref(data),
                            },
                        },
                    ]
                },
            }
            doc = _clean_doc(contract.get("doc"))
            operations[f"{service}.handle.{method}"] = {
                "action": "receive",
                "title": f"{service} handles command {command}",
                **({"summary": _summary(doc)} if doc else {}),
                "description": "\n\n".join(
                    filter(
                        None,
                        [
                            doc,
                            f"Sent by {senders} through ``services/{service}/client.py``: recorded in the sender's "
                            "outbox in the transaction of the change that causes it, published after that commits. "
                            f"Queue ``{queue}``; deduplicated by envelope id and applied at most once per "
                            "``origin``, retried with backoff, then parked in the queue's ``.dead`` twin.",
                        ],
                    )
                ),
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{command}"}],
                "tags": [{"name": service}, {"name": "command"}],
                "x-handler": f"{service}.{method}",
            }

    schemas = _fixed_components()
    for name, schema in converter.components.items():
        if name in schemas:
            raise ContractError(f"schema component {name!r} clashes with a built-in component")
        schemas[name] = schema

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Grassroots",
            "version": API_VERSION,
            "description": (
                "The Grassroots services (grid, notices, legal, volunteer) over RabbitMQ: nameko RPC "
                "(request/reply on the ``nameko-rpc`` exchange, keyword arguments only, a JWT in the "
                "``nameko.auth_token`` header), events (CloudEvents-shaped envelopes on each service's "
                "``<service>.events`` topic exchange, routing key = event type, published through a "
                "transactional outbox: at least once, deduplicated by envelope id), and commands from one "
                "service to another (the same envelope on the receiver's ``<service>.commands`` topic "
                "exchange, routing key = command, through the sender's outbox; applied at most once per "
                "``origin``).\n\n"
                "Every method that changes data takes an optional ``idempotency_key`` "
                f"(``components/schemas/{IDEMPOTENCY_KEY}``): a retry under the same key gets the first reply "
                "instead of acting twice.\n\n"
                "Every input string refuses NUL, the other C0 control characters (tab, newline and carriage "
                'return excepted) and lone surrogates; integers are strict (``1.5``, ``"2"`` and ``true`` are '
                "refused); timestamps and dates lie in the window each field's description gives.\n\n"
                "Generated from the code by ``python -m tools.asyncapi`` (``make asyncapi``); do not edit."
            ),
            "tags": tags,
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/",
                "description": "RabbitMQ at ``AMQP_URI`` (default ``amqp://guest:guest@localhost:5672/``).",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


# ---- YAML -----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def render(document):
    """Deterministic YAML: sorted keys, no anchors, wide lines."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=100)


def generate():
    return render(build())


def generated_document_main(argv, prog, description, output, generate, regenerate):
    """The command line of a document generated from the code: write it, or ``--check`` that the
    committed one is current (exit 1 with the difference). Shared with tools.rpc_reference."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 and show the difference when the committed file is stale"
    )
    parser.add_argument("--output", type=Path, default=output)
    args = parser.parse_args(argv)
    try:
        text = generate()
    except ContractError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    output = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current == text:
            print(f"{output} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{output} (committed)",
            tofile="generated",
            n=2,
        )
        sys.stdout.writelines(diff)
        print(f"\n{output} is stale: {regenerate}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


def main(argv=None):
    return generated_document_main(
        argv,
        "python -m tools.asyncapi",
        __doc__.split("\n\n")[0],
        OUTPUT,
        generate,
        "run `make asyncapi` and commit it",
    )


if __name__ == "__main__":
    sys.exit(main())
