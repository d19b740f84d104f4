"""The AsyncAPI document (docs/asyncapi.yaml): valid AsyncAPI 3.0, up to date with the code, and
covering every RPC method (a write's ``idempotency_key`` too), every event the code emits and every
command a service accepts. Pure: no broker, no database.

When one of these fails after you added a method or an event: document it (an ``@endpoint``
schema; a schema in ``services/<svc>/events.py`` EVENTS) and run ``make asyncapi``.
"""

import ast
import copy
import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from marshmallow import Schema, ValidationError, fields, validate
from nameko.extensions import DependencyProvider

from services.notices.client import send_direct_command
from shared import errors
from shared.commands import on_command
from shared.endpoints import MAX_KEY_LENGTH, endpoint, on_event, rpc
from shared.idempotency import KEY_ARGUMENT as KEY
from shared.outbox import envelope
from shared.replies import NOTHING
from shared.service import ServiceBase
from shared.validation import Id, ListOf, OneOf, Str, StrictSchema, UtcDateTime
from tools import asyncapi

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "asyncapi.yaml"
SPEC_PATH = ROOT / "docs" / "schemas" / "asyncapi-3.0.0.json"
REGENERATE = "run `make asyncapi` (python -m tools.asyncapi) and commit docs/asyncapi.yaml"


@pytest.fixture(scope="module")
def spec_validator():
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(spec)
    return jsonschema.Draft7Validator(spec)


@pytest.fixture(scope="module")
def committed():
    return yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services():
    return asyncapi.service_classes()


def _errors(validator, document):
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]


# ---- (a) valid AsyncAPI 3.0.0 ---------------------------------------------------------------


def test_committed_document_is_valid_asyncapi_3(spec_validator, committed):
    assert committed["asyncapi"] == "3.0.0"
    assert _errors(spec_validator, committed) == []


def test_the_spec_validator_rejects_broken_documents(spec_validator, committed):
    # The vendored schema really checks: a missing action, a bad reply address, a malformed payload schema.
    broken = copy.deepcopy(committed)
    operation = next(iter(broken["operations"].values()))
    del operation["action"]
    assert _errors(spec_validator, broken)
    broken = copy.deepcopy(committed)
    broken["operations"]["grid.create_unit"]["reply"]["address"]["location"] = "reply_to"
    assert _errors(spec_validator, broken)
    broken = copy.deepcopy(committed)
    broken["components"]["schemas"]["grid.CreateUnit"]["required"] = "level"
    assert _errors(spec_validator, broken)


# ---- (b) up to date -------------------------------------------------------------------------


def test_committed_document_matches_the_code():
    fresh = asyncapi.generate()
    current = DOC_PATH.read_text(encoding="utf-8")
    if current != fresh:
        import difflib

        diff = "".join(
            list(
                difflib.unified_diff(
                    current.splitlines(True), fresh.splitlines(True), "docs/asyncapi.yaml", "generated", n=1
                )
            )[:60]
        )
        pytest.fail(f"docs/asyncapi.yaml is stale: {REGENERATE}\n{diff}")


def test_generation_is_deterministic():
    assert asyncapi.generate() == asyncapi.generate()
    text = asyncapi.generate()
    assert "&id" not in text and "*id" not in text  # no YAML anchors/aliases


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(DOC_PATH.read_text(encoding="utf-8").replace("title: Grassroots", "title: Old"), "utf-8")
    assert asyncapi.main(["--check", "--output", str(stale)]) == 1
    assert "make asyncapi" in capsys.readouterr().err
    fresh = tmp_path / "fresh.yaml"
    assert asyncapi.main(["--output", str(fresh)]) == 0
    assert asyncapi.main(["--check", "--output", str(fresh)]) == 0


# ---- (c) every emitted event has a schema, and every schema is emitted ----------------------


def _emit_sites(service):
    """``[(event type or None, payload keys or None, "file:line")]`` for each ``.emit(...)`` call in
    ``services/<service>/``. The type is None when it is not a string literal; the keys are None
    when the payload cannot be read statically."""
    sites = []
    for path in sorted((ROOT / "services" / service).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        imported = _imported_functions(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
            ):
                first = node.args[0]
                event_type = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
                payload = node.args[2] if len(node.args) >= 3 else None
                keys = _keys(payload, functions, imported) if payload is not None else None
                sites.append((event_type, keys, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return sites


def _imported_functions(tree):
    """``{name: FunctionDef}`` for functions imported from other ``services.*`` modules."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services."):
            path = ROOT / (node.module.replace(".", "/") + ".py")
            if not path.exists():
                continue
            other = {
                n.name: n for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)
            }
            for alias in node.names:
                if alias.name in other:
                    found[alias.asname or alias.name] = other[alias.name]
    return found


def _returned_dict(function):
    returns = [n for n in function.body if isinstance(n, ast.Return)]
    return returns[-1].value if returns and isinstance(returns[-1].value, ast.Dict) else None


def _keys(expr, functions, imported):
    """The set of keys ``expr`` (a dict literal, or a call to a helper returning one) builds, or None."""
    if isinstance(expr, ast.Dict):
        keys = set()
        for key, value in zip(expr.keys, expr.values, strict=True):
            if key is None:  # **spread
                if isinstance(value, ast.Name):
                    continue  # the helper's own **extra: supplied by its callers' keywords
                inner = _keys(value, functions, imported)
                if inner is None:
                    return None
                keys |= inner
            elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                keys.add(key.value)
            else:
                return None
        return keys
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        function = functions.get(expr.func.id) or imported.get(expr.func.id)
        returned = _returned_dict(function) if function is not None else None
        if returned is None or any(kw.arg is None for kw in expr.keywords):
            return None
        inner = _keys(returned, functions, imported)
        return None if inner is None else inner | {kw.arg for kw in expr.keywords}
    return None


def _field_names(schema):
    return {field.data_key or name for name, field in schema.fields.items()}


def _event_problems(service, sites, events):
    problems = []
    emitted = set()
    for event_type, keys, where in sites:
        if event_type is None:
            problems.append(f"{where}: emit() with a non-literal event type cannot be documented")
            continue
        emitted.add(event_type)
        if event_type not in events:
            problems.append(
                f"{where}: {service} emits {event_type!r}, which services/{service}/events.py EVENTS does not document"
            )
        elif keys is not None and keys != _field_names(events[event_type]):
            schema_keys = _field_names(events[event_type])
            problems.append(
                f"{where}: {event_type!r} payload keys differ from its schema: emitted only "
                f"{sorted(keys - schema_keys)}, documented only {sorted(schema_keys - keys)}"
            )
    for event_type in sorted(set(events) - emitted):
        problems.append(f"services/{service}/events.py documents {event_type!r}, which {service} never emits")
    return problems


def test_every_emitted_event_is_documented_and_every_documented_event_is_emitted(services):
    problems = []
    read_payloads = 0
    for service in sorted(services):
        sites = _emit_sites(service)
        read_payloads += sum(1 for _, keys, _ in sites if keys is not None)
        problems += _event_problems(service, sites, asyncapi.service_events(service))
    assert problems == [], "\n".join(problems) + f"\n{REGENERATE} after fixing events.py"
    assert read_payloads >= 20  # the payload-key comparison really ran on most emit calls


class _Happened(Schema):
    """Emitted when a happens."""

    unit_id = Id(required=True)
    name = Str(required=True)


def test_the_event_scan_catches_undocumented_and_stale_events():
    events = {"a_happened": _Happened()}
    sites = [("a_happened", {"unit_id", "name"}, "x.py:1"), ("b_happened", None, "x.py:2"), (None, None, "x.py:3")]
    problems = _event_problems("demo", sites, {**events, "c_happened": _Happened()})
    assert any("'b_happened'" in p and "does not document" in p for p in problems)
    assert any("non-literal" in p for p in problems)
    assert any("'c_happened'" in p and "never emits" in p for p in problems)
    assert not any("payload keys" in p for p in problems)
    problems = _event_problems("demo", [("a_happened", {"unit_id", "other"}, "x.py:1")], events)
    assert len(problems) == 1 and "emitted only ['other'], documented only ['name']" in problems[0]


def test_the_payload_reader_follows_helpers():
    source = (
        "def _event(x, **extra):\n"
        "    return {'x_id': str(x.id), 'status': x.status, **extra}\n"
        "def f(uow, x):\n"
        "    uow.emit('done', 'x/1', _event(x, outcome='ok'))\n"
        "    uow.emit('more', 'x/1', {**_event(x), 'reason': 'r'})\n"
    )
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "emit"]
    assert [_keys(c.args[2], functions, {}) for c in calls] == [
        {"x_id", "status", "outcome"},
        {"x_id", "status", "reason"},
    ]


def test_every_event_schema_says_when_it_is_emitted(services):
    missing = [
        f"{service}.{event_type}"
        for service in sorted(services)
        for event_type, schema in sorted(asyncapi.service_events(service).items())
        if not type(schema).__dict__.get("__doc__")
    ]
    assert missing == [], f"event schemas without a docstring: {missing}"


def test_every_event_is_in_the_document(services, committed):
    for service in sorted(services):
        for event_type in asyncapi.service_events(service):
            channel = committed["channels"].get(f"events.{service}.{event_type}")
            assert channel is not None, f"{service}.{event_type} is not documented: {REGENERATE}"
            assert channel["address"] == event_type
            assert channel["bindings"]["amqp"]["exchange"]["name"] == f"{service}.events"
            assert committed["operations"][f"{service}.emit.{event_type}"]["action"] == "send"


def test_handlers_rely_only_on_fields_their_producer_documents(services):
    """A consumer's payload schema asks only for fields the producer's event carries (required ones always)."""
    problems = []
    for service, cls in sorted(services.items()):
        _, handlers, _ = asyncapi.entrypoints(cls)
        for method, contract in handlers:
            produced = asyncapi.service_events(contract["source"]).get(contract["event_type"])
            where = f"{service}.{method} ({contract['source']}.{contract['event_type']})"
            if produced is None:
                problems.append(f"{where}: the producer does not document this event")
                continue
            if contract["schema"] is None:
                continue
            offered = {f.data_key or n: f for n, f in produced.fields.items()}
            for name, field in contract["schema"].fields.items():
                key = field.data_key or name
                if key not in offered:
                    problems.append(f"{where}: reads {key!r}, which the event does not carry")
                elif field.required and not offered[key].required:
                    problems.append(f"{where}: requires {key!r}, which the event does not always carry")
    assert problems == [], "\n".join(problems)


# ---- (d) every RPC method is documented -----------------------------------------------------


def test_every_rpc_method_has_a_contract_and_is_in_the_document(services, committed):
    assert set(services) >= {"grid", "notices", "legal", "volunteer"}
    problems = []
    for service, cls in sorted(services.items()):
        rpcs, _, undocumented = asyncapi.entrypoints(cls)
        problems += [f"{service}.{name}: @rpc without @endpoint(roles=..., returns=...)" for name in undocumented]
        assert rpcs, f"{service} has no RPC methods?"
        for method, contract in rpcs:
            name = f"{service}.{method}"
            if contract["schema"] is None:
                problems.append(f"{name}: @endpoint has no input schema")
            if not contract["roles"]:
                problems.append(f"{name}: no role may call it")
            operation = committed["operations"].get(name)
            if operation is None:
                problems.append(f"{name}: not in docs/asyncapi.yaml ({REGENERATE})")
                continue
            assert operation["action"] == "receive"
            assert operation["x-roles"] == list(contract["roles"]), name
            assert committed["channels"][f"rpc.{name}"]["address"] == name
            kwargs = committed["components"]["messages"][f"rpc.{name}"]["payload"]["properties"]["kwargs"]
            if contract["schema"] is not None:
                component = kwargs["$ref"].rsplit("/", 1)[1]
                assert component in committed["components"]["schemas"], name
                properties = committed["components"]["schemas"][component]["properties"]
                write = asyncapi.is_write(contract)
                # shared.endpoints: every write takes the optional idempotency_key, no read does
                assert set(properties) == _field_names(contract["schema"]) | ({KEY} if write else set()), name
                if write:
                    assert properties[KEY] == {"$ref": f"#/components/schemas/{asyncapi.IDEMPOTENCY_KEY}"}, name
                    assert KEY not in committed["components"]["schemas"][component].get("required", []), name
                assert operation["x-read-only"] is contract["read_only"], name
    assert problems == [], "\n".join(problems)


def test_the_idempotency_key_is_described_once_with_the_bounds_the_endpoint_enforces(committed):
    key = committed["components"]["schemas"][asyncapi.IDEMPOTENCY_KEY]
    assert (key["type"], key["minLength"], key["maxLength"]) == ("string", 1, MAX_KEY_LENGTH)
    for words in ("first reply", "Conflict", "correlation_id", "IDEMPOTENCY_TTL_HOURS", "waits"):
        assert words in key["description"], words
    assert "idempotency_key" in committed["info"]["description"]


def test_every_error_a_caller_can_get_is_named_in_the_remote_error(committed):
    described = committed["components"]["schemas"]["RemoteError"]["properties"]["exc_type"]["description"]
    typed = {
        name
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.GrassrootsError) and cls is not errors.GrassrootsError
    }
    assert typed >= {"ServiceUnavailable", "Conflict"}
    assert [name for name in sorted(typed) if f"``{name}``" not in described] == []
    assert "``idempotency_key``" in described  # Conflict for a reused key; ServiceUnavailable: retry with it


# ---- (e) every command a service accepts is documented --------------------------------------


def test_every_command_handler_is_in_the_document(services, committed):
    found = 0
    for service, cls in sorted(services.items()):
        for method, contract in asyncapi.command_handlers(cls):
            found += 1
            command = contract["command"]
            channel = committed["channels"][f"commands.{service}.{command}"]
            assert channel["address"] == command
            assert channel["bindings"]["amqp"]["exchange"]["name"] == f"{service}.commands"
            assert f"cmd-{service}-{command}" in channel["description"]
            operation = committed["operations"][f"{service}.handle.{method}"]
            assert operation["action"] == "receive" and operation["x-handler"] == f"{service}.{method}"
            assert operation["channel"] == {"$ref": f"#/channels/commands.{service}.{command}"}
            assert {"name": "command"} in operation["tags"]
            payload = committed["components"]["messages"][f"commands.{service}.{command}"]["payload"]
            data = payload["allOf"][1]["properties"]["data"]["$ref"].rsplit("/", 1)[1]
            assert set(committed["components"]["schemas"][data]["properties"]) == _field_names(contract["schema"])
    assert found >= 1  # notices' send_direct at least
    operation = committed["operations"]["notices.handle.on_send_direct"]
    assert "origin" in operation["description"] and "``volunteer``" in operation["description"]


def test_a_recorded_command_validates_against_its_documented_message(committed):
    # What volunteer's NoticesClient records (shared.db UnitOfWork.command): the origin also in data.
    data = send_direct_command("volunteer:offer/12", [42], "volunteer_offer", {"kind": "groceries"}, ["sms"])
    body = envelope("volunteer", "send_direct", data["origin"], data)
    payload_ref = {**committed, "$ref": "#/components/messages/commands.notices.send_direct/payload"}
    validator = jsonschema.Draft7Validator(payload_ref, format_checker=jsonschema.FormatChecker())
    assert list(validator.iter_errors(body)) == []
    assert list(validator.iter_errors({**body, "type": "send_reminder"}))
    assert list(validator.iter_errors({**body, "data": {k: v for k, v in data.items() if k != "origin"}}))
    assert list(validator.iter_errors({**body, "data": {**data, "template": "spam"}}))


def test_an_rpc_method_without_a_contract_is_refused():
    class Undocumented(ServiceBase):
        name = "demo"

        @rpc
        def bare(self, **kwargs):
            return None

        @rpc
        @endpoint(roles=("admin",), schema=_Example(), returns=NOTHING)
        def documented(self, caller, **args):
            return None

    rpcs, handlers, undocumented = asyncapi.entrypoints(Undocumented)
    assert [name for name, _ in rpcs] == ["documented"] and handlers == []
    assert undocumented == ["bare"]
    with pytest.raises(asyncapi.ContractError, match="bare"):
        asyncapi.build({"demo": Undocumented})


def test_endpoint_and_on_event_attach_their_contracts():
    class Demo(ServiceBase):
        name = "demo"

        @rpc
        @endpoint(roles=["admin", "officer"], schema=_Example(), read_only=True, returns=NOTHING)
        def look(self, caller, **args):
            """Look at something."""

        @on_event("grid", "unit_created", schema=_Example())
        def on_unit_created(self, envelope, data):
            """React to a new unit."""

    contract = Demo.look.__contract__
    assert (contract["kind"], contract["roles"], contract["read_only"], contract["doc"]) == (
        "rpc",
        ("admin", "officer"),
        True,
        "Look at something.",
    )
    assert isinstance(contract["schema"], _Example)
    assert asyncapi.is_rpc(Demo.look)
    assert Demo.on_unit_created.__contract__["kind"] == "event_handler"
    assert (Demo.on_unit_created.__contract__["source"], Demo.on_unit_created.__contract__["event_type"]) == (
        "grid",
        "unit_created",
    )
    document = asyncapi.build({"demo": Demo, "grid": _FakeGrid})
    assert document["operations"]["demo.look"]["x-roles"] == ["admin", "officer"]
    assert document["operations"]["demo.look"]["summary"] == "Look at something."
    assert document["operations"]["demo.handle.on_unit_created"]["channel"] == {
        "$ref": "#/channels/events.grid.unit_created"
    }


class _FakeGrid(ServiceBase):
    name = "grid"


class _Ref(StrictSchema):
    unit_id = Id(required=True)


class _Keyed(StrictSchema):
    unit_id = Id(required=True)
    idempotency_key = Str(load_default=None, allow_none=True, max_length=10)  # the endpoint's own wins


class _Order(StrictSchema):
    """``order`` as a command: one per ``origin``."""

    origin = Str(required=True, max_length=50)
    unit_id = Id(required=True)


class _Writer(ServiceBase):
    name = "demo"

    @rpc
    @endpoint(roles=("admin",), schema=_Ref(), read_only=True, returns=NOTHING)
    def look(self, caller, **args):
        """Look."""

    @rpc
    @endpoint(roles=("admin",), schema=_Ref(), returns=NOTHING)
    def close(self, caller, **args):
        """Close (the same arguments as ``look``)."""

    @rpc
    @endpoint(roles=("admin",), schema=_Keyed(), returns=NOTHING)
    def keyed(self, caller, **args):
        """A schema that names the key itself."""

    @rpc
    @endpoint(roles=("admin",), returns=NOTHING)
    def touch(self, caller):
        """A write without arguments."""

    @on_command("order", schema=_Order())
    def on_order(self, sender, envelope, data):
        """Another service's order."""


class _OrderClient(DependencyProvider):
    pass


_OrderClient.__module__ = "services.demo.client"  # what command_senders looks for


class _Sender(ServiceBase):
    name = "sender"
    demo = _OrderClient()


def test_writes_take_the_key_and_reads_refuse_it_in_the_document(spec_validator):
    document = asyncapi.build({"demo": _Writer})
    schemas = document["components"]["schemas"]

    def problems(method, kwargs):
        ref = {**document, "$ref": f"#/components/messages/rpc.demo.{method}/payload"}
        return list(jsonschema.Draft7Validator(ref).iter_errors({"args": [], "kwargs": kwargs}))

    assert _errors(spec_validator, document) == []
    # close (a write) comes first, yet the read keeps the plain schema's name; the write's variant adds the key
    assert problems("look", {"unit_id": "1"}) == [] and problems("look", {"unit_id": "1", KEY: "k"})
    plain = f"{__name__}._Ref"
    assert set(schemas[plain]["properties"]) == {"unit_id"}
    assert set(schemas[f"{plain}.write"]["properties"]) == {"unit_id", KEY}
    close = document["components"]["messages"]["rpc.demo.close"]["payload"]["properties"]["kwargs"]
    assert close == {"$ref": f"#/components/schemas/{plain}.write"}
    assert problems("close", {"unit_id": "1"}) == [] and problems("close", {"unit_id": "1", KEY: "k"}) == []
    for bad in ("", "k" * (MAX_KEY_LENGTH + 1), 7):
        assert problems("close", {"unit_id": "1", KEY: bad}), bad
    assert problems("keyed", {"unit_id": "1", KEY: "k" * 50}) == []  # 1–200, not the schema's 10
    assert problems("touch", {KEY: "k"}) == [] and problems("touch", {"other": 1})
    assert document["operations"]["demo.close"]["x-read-only"] is False
    assert "idempotency_key" in document["operations"]["demo.close"]["description"]
    assert "redelivery" in document["components"]["messages"]["rpc.demo.close"]["correlationId"]["description"]
    assert "redelivery" not in document["components"]["messages"]["rpc.demo.look"]["correlationId"]["description"]


def test_a_command_handler_gets_a_channel_and_a_receive_operation(spec_validator):
    contract = _Writer.on_order.__contract__
    assert (contract["kind"], contract["command"], contract["doc"]) == (
        "command_handler",
        "order",
        "Another service's order.",
    )
    assert [name for name, _ in asyncapi.command_handlers(_Writer)] == ["on_order"]
    assert asyncapi.entrypoints(_Writer)[1] == []  # not an event handler
    document = asyncapi.build({"demo": _Writer, "sender": _Sender})
    assert _errors(spec_validator, document) == []
    channel = document["channels"]["commands.demo.order"]
    assert channel["address"] == "order"
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": "demo.commands",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    operation = document["operations"]["demo.handle.on_order"]
    assert operation["action"] == "receive" and operation["summary"] == "Another service's order."
    assert "``sender``" in operation["description"] and "cmd-demo-order" in operation["description"]
    body = envelope("sender", "order", "sender:thing/1", {"origin": "sender:thing/1", "unit_id": "3"})
    ref = {**document, "$ref": "#/components/messages/commands.demo.order/payload"}
    assert list(jsonschema.Draft7Validator(ref).iter_errors(body)) == []
    assert list(jsonschema.Draft7Validator(ref).iter_errors({**body, "data": {"unit_id": "3"}}))
    summary = document["components"]["messages"]["commands.demo.order"]["summary"]
    assert summary == "``order`` as a command: one per ``origin``."


# ---- (e) the marshmallow → JSON Schema converter --------------------------------------------


class _Inner(StrictSchema):
    """An inner thing."""

    code = Str(required=True, max_length=5)


class _Example(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=20, min_length=2)
    colour = OneOf(("red", "blue"), load_default=None, allow_none=True)
    count = fields.Integer(load_default=3, validate=validate.Range(min=1, max=9))
    ratio = fields.Float(validate=validate.Range(min=0, max=1, max_inclusive=False))
    flag = fields.Boolean(load_default=False)
    on = fields.Date()
    at = UtcDateTime(allow_none=True)
    tags = ListOf(Str(max_length=10), min_items=1, max_items=4)
    inner = fields.Nested(_Inner, allow_none=True)
    extra = fields.Dict(keys=Str(max_length=8), values=fields.Integer())
    computed = fields.Function(lambda obj: 1)


def test_converter_spot_check():
    converter = asyncapi.SchemaConverter()
    name = converter.component(_Example(), "load")
    schema = converter.components[name]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["name", "unit_id"]
    props = schema["properties"]
    assert props["name"] == {"type": "string", "minLength": 2, "maxLength": 20}
    assert props["colour"] == {"type": ["string", "null"], "enum": ["blue", "red", None], "default": None}
    assert props["count"] == {"type": "integer", "minimum": 1, "maximum": 9, "default": 3}
    assert props["ratio"] == {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    assert props["flag"] == {"type": "boolean", "default": False}
    assert props["on"] == {"type": "string", "format": "date"}
    assert props["at"]["type"] == ["string", "null"] and props["at"]["format"] == "date-time"
    assert props["tags"] == {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 10},
        "minItems": 1,
        "maxItems": 4,
        "uniqueItems": True,
    }
    inner = props["inner"]["oneOf"][0]["$ref"].rsplit("/", 1)[1]
    assert props["inner"]["oneOf"][1] == {"type": "null"}
    assert converter.components[inner] == {
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 1, "maxLength": 5}},
        "required": ["code"],
        "additionalProperties": False,
        "description": "An inner thing.",
    }
    assert props["extra"] == {
        "type": "object",
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": 8},
        "additionalProperties": {"type": "integer"},
    }
    assert "computed" not in props  # dump-only: not an argument
    assert {"type": "integer", "minimum": 1, "maximum": asyncapi.validation.MAX_ID} in props["unit_id"]["oneOf"]

    # Output (event) mode: ids are strings of digits.
    dumped = asyncapi.SchemaConverter()
    out = dumped.components[dumped.component(_Example, "dump")]
    assert out["properties"]["unit_id"] == {"type": "string", "pattern": asyncapi.ID_PATTERN_OUT}
    assert "type" not in out["properties"]["computed"] and out["properties"]["computed"]["description"]

    # The result is a working JSON Schema that agrees with marshmallow on these inputs.
    validator = jsonschema.Draft7Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": converter.components}}
    )
    good = {"unit_id": "12", "name": "Ann", "colour": None, "tags": ["a"], "inner": {"code": "x"}, "extra": {"k": 1}}
    assert list(validator.iter_errors(good)) == []
    _Example().load(good)
    for bad in (
        {"name": "Ann"},
        {**good, "colour": "green"},
        {**good, "name": "A" * 21},
        {**good, "unit_id": 0},
        {**good, "surprise": 1},
        {**good, "tags": []},
        {**good, "inner": {"code": "toolong"}},
        {**good, "count": 10},
    ):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ValidationError):
            _Example().load(bad)


def test_an_emitted_envelope_validates_against_its_documented_message(committed):
    data = {
        "resident_id": "42",
        "household_id": "7",
        "unit_id": "12",
        "unit_path": ["1", "3", "12"],
        "tag": "elderly_alone",
        "until": dt.datetime(2030, 1, 1, tzinfo=dt.UTC).isoformat(),
    }
    body = envelope("grid", "resident_tagged", "resident/42", data)
    payload_ref = {**committed, "$ref": "#/components/messages/events.grid.resident_tagged/payload"}
    validator = jsonschema.Draft7Validator(payload_ref, format_checker=jsonschema.FormatChecker())
    assert list(validator.iter_errors(body)) == []
    assert list(validator.iter_errors({**body, "type": "resident_untagged"}))
    assert list(validator.iter_errors({**body, "data": {**data, "tag": "vip"}}))
    assert list(validator.iter_errors({**body, "data": {**data, "unit_path": [3]}}))
    assert list(validator.iter_errors({k: v for k, v in body.items() if k != "id"}))
