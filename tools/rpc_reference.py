"""docs/rpc.md: the suite's RPC reference, generated from the endpoint contracts.

    python -m tools.rpc_reference            # (re)write docs/rpc.md  (make docs)
    python -m tools.rpc_reference --check    # exit 1, showing the difference, when it is stale

One walk of the contracts feeds both this reference and docs/asyncapi.yaml: the service classes,
their RPC methods, event handlers and command handlers with the ``__contract__`` that
``shared.endpoints`` and ``shared.commands`` attach (roles, input schema, read-only, docstring), the
events each service publishes (``services/<svc>/events.py``) and the marshmallow → JSON Schema
conversion all come from ``tools.asyncapi``; this module only lays them out as Markdown. A write
method (not read-only) gets the ``idempotency_key`` row ``shared.endpoints`` adds to its arguments.

What the contracts do not carry (what a method does, what it returns, paging, which conflicts it
refuses) comes from each method's docstring and from the hand-written ``docs/rpc-notes.md``:
``## <service>`` sections (an introduction) with ``### <method>`` subsections, merged under the
generated entries. A heading that names no service or RPC method is an error, so notes cannot
outlive their method. The output is deterministic (everything sorted), so a test compares the
committed file with a fresh generation.
"""

import inspect
import json
import re
import sys
from pathlib import Path

from shared import replies, validation
from tools import asyncapi
from tools.asyncapi import ContractError

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "rpc.md"
NOTES = ROOT / "docs" / "rpc-notes.md"
REGENERATE = "run `make docs` and commit docs/rpc.md"

DASH = "\N{EN DASH}"  # ranges: 1–200
MAX_NESTING = 3  # nested schemas are expanded as `parent.child` rows down to this depth

PATTERN_NAMES = {
    asyncapi.CLOCK_PATTERN: "`HH:MM`",
    validation.CLOCK.pattern: "`HH:MM`",
    asyncapi.MOBILE_PATTERN: "11-digit mobile number",
    asyncapi.ID_PATTERN_OUT: "id",
}


def _md(text):
    """Docstring text (reStructuredText literals) as Markdown."""
    return re.sub(r"``(.+?)``", r"`\1`", text) if text else text


def _doc(text):
    return _md(asyncapi._clean_doc(text))


def _first_sentence(text):
    return text.split(". ", 1)[0].rstrip(".") + "." if text else text


# ---- the contracts, in one walk ---------------------------------------------------------------


def collect(services=None):
    """Everything the reference shows, from ``tools.asyncapi``'s walk of the code.

    ``{service: {"doc", "rpcs": [(method, contract)], "handlers": [(method, contract)],
    "commands": [(method, contract)], "senders": [service], "events": {type: schema}}}`` plus the
    converter holding every schema as JSON Schema.
    """
    services = asyncapi.service_classes() if services is None else services
    converter = asyncapi.SchemaConverter()
    walked = {}
    for service, cls in sorted(services.items()):
        rpcs, handlers, undocumented = asyncapi.entrypoints(cls)
        if undocumented:
            raise ContractError(f"{service}: @rpc methods without @endpoint: {', '.join(undocumented)}")
        walked[service] = {
            "doc": _first_sentence(_doc(inspect.getmodule(cls).__doc__)),
            "rpcs": rpcs,
            "handlers": handlers,
            "commands": asyncapi.command_handlers(cls),
            "senders": asyncapi.command_senders(services, service),
            "events": dict(sorted(asyncapi.service_events(service).items())),
        }
    return walked, converter


# ---- hand-written notes -----------------------------------------------------------------------


def read_notes(text, walked):
    """``{service: {"": intro, method: notes}}`` from docs/rpc-notes.md (``##`` service, ``###`` method)."""
    notes: dict[str, dict[str, list[str]]] = {}
    service: str | None = None
    method, problems = "", []
    for number, line in enumerate(text.splitlines(), 1):
        heading = re.match(r"^(#{2,3})\s+`?([\w.]+)`?\s*$", line)
        if heading and heading.group(1) == "##":
            service, method = heading.group(2), ""
            if service not in walked:
                problems.append(f"line {number}: ## {service}: no such service")
            elif service in notes:
                problems.append(f"line {number}: ## {service} appears twice")
            notes.setdefault(service, {"": []})
            continue
        if heading and heading.group(1) == "###":
            method = heading.group(2)
            if service is None:
                problems.append(f"line {number}: ### {method} before any ## <service>")
                continue
            if service in walked and method not in dict(walked[service]["rpcs"]):
                problems.append(f"line {number}: ### {method}: {service} has no RPC method {method!r}")
            elif method in notes[service]:
                problems.append(f"line {number}: ### {method} appears twice under {service}")
            notes[service].setdefault(method, [])
            continue
        if service is not None:
            notes[service][method].append(line)
    if problems:
        raise ContractError("docs/rpc-notes.md: " + "; ".join(problems))
    return {s: {m: "\n".join(lines).strip() for m, lines in methods.items()} for s, methods in notes.items()}


# ---- JSON Schema → table rows -----------------------------------------------------------------


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(value):
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _unwrap(prop):
    """``(schema, nullable, annotations)``: ``allOf``/``oneOf`` wrappers around one schema taken off."""
    prop = dict(prop)
    annotations = {k: prop.pop(k) for k in ("description", "default") if k in prop}
    nullable = False
    if set(prop) == {"allOf"} and len(prop["allOf"]) == 1:
        prop = dict(prop["allOf"][0])
    if set(prop) == {"oneOf"}:
        options = [o for o in prop["oneOf"] if o != {"type": "null"}]
        nullable = len(options) < len(prop["oneOf"])
        prop = dict(options[0]) if len(options) == 1 else {"oneOf": options}
    kind = prop.get("type")
    if isinstance(kind, list) and "null" in kind:
        nullable = True
        rest = [k for k in kind if k != "null"]
        prop["type"] = rest[0] if len(rest) == 1 else rest
        if "enum" in prop:
            prop["enum"] = [e for e in prop["enum"] if e is not None]
    return prop, nullable, annotations


def _is_id(prop):
    return (
        set(prop) == {"oneOf"}
        and len(prop["oneOf"]) == 2
        and {o.get("type") for o in prop["oneOf"]} == {"string", "integer"}
        and any(o.get("pattern") == asyncapi.ID_PATTERN_IN for o in prop["oneOf"])
    )


def _range(prop, low, high, unit=""):
    lo, hi = prop.get(low), prop.get(high)
    if lo is not None and hi is not None:
        return f"{lo}{DASH}{hi}{unit}" if lo != hi else f"exactly {lo}{unit}"
    if hi is not None:
        return f"≤ {hi}{unit}"
    if lo is not None:
        return f"≥ {lo}{unit}"
    return None


def describe(prop):
    """``(type, [constraints], nested component name or None, nested is a list)`` of a JSON Schema."""
    prop, nullable, _ = _unwrap(prop)
    constraints, nested, many = [], None, False
    if _is_id(prop):
        kind = "id"
    elif "$ref" in prop:
        kind, nested = "object", prop["$ref"].rsplit("/", 1)[1]
    elif "enum" in prop:
        kind = "string" if prop.get("type") == "string" else "value"
        constraints.append("one of " + ", ".join(f"`{e}`" for e in prop["enum"]))
    elif "const" in prop:
        kind = "constant"
        constraints.append(f"always {_code(prop['const'])}")
    elif prop.get("type") == "array":
        item_kind, item_constraints, nested, _ = describe(prop.get("items", {}))
        many = True
        kind = f"list of {item_kind}"
        if item_constraints:
            constraints.append("each " + "; ".join(item_constraints))
        bounds = _range(prop, "minItems", "maxItems", " items")
        if bounds:
            constraints.append(bounds)
        if prop.get("uniqueItems"):
            constraints.append("no duplicates")
    elif prop.get("type") == "object":
        keys = describe(prop["propertyNames"])[0] if "propertyNames" in prop else None
        values = (
            describe(prop["additionalProperties"])[0] if isinstance(prop.get("additionalProperties"), dict) else None
        )
        kind = f"object ({keys} → {values})" if keys or values else "object"
        key_constraints = describe(prop["propertyNames"])[1] if "propertyNames" in prop else []
        value_constraints = describe(prop["additionalProperties"])[1] if values else []
        constraints += [f"keys {c}" for c in key_constraints] + [f"values {c}" for c in value_constraints]
    elif prop.get("type") == "string":
        pattern = prop.get("pattern")
        kind = {
            "date": "date",
            "date-time": "date-time",
            "time": "time",
            "uuid": "uuid",
            "uri": "URL",
            "email": "email",
        }.get(prop.get("format"), "string")
        if pattern in PATTERN_NAMES:
            kind = "id" if pattern == asyncapi.ID_PATTERN_OUT else "string"
            if kind == "string":
                constraints.append(PATTERN_NAMES[pattern])
        elif pattern:
            constraints.append(f"matches `{pattern}`")
        length = _range(prop, "minLength", "maxLength", " characters")
        if length:
            constraints.append(length)
    elif prop.get("type") in ("integer", "number", "boolean"):
        kind = prop["type"]
        for key, sign in (("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
            if key in prop:
                constraints.append(f"{sign} {prop[key]}")
        bounds = _range(prop, "minimum", "maximum")
        if bounds:
            constraints.append(bounds)
    elif "oneOf" in prop:
        kind = " or ".join(describe(o)[0] for o in prop["oneOf"])
    else:
        kind = "any"
    if nullable:
        kind += " or null"
    return kind, constraints, nested, many


def field_rows(schema, components, mode, prefix="", depth=0):
    """Rows ``(name, type, required, default, notes)`` for a JSON Schema object, nested ones expanded."""
    rows = []
    required = set(schema.get("required", ()))
    for name in sorted(schema.get("properties", {})):
        prop = schema["properties"][name]
        kind, constraints, nested, many = describe(prop)
        _, _, annotations = _unwrap(prop)
        description = annotations.get("description") or _unwrap(prop)[0].get("description")
        if nested and not description:
            description = components[nested].get("description")
        text = _md(description or "")
        if constraints:
            joined = "; ".join(constraints)
            if text.endswith("."):
                text = f"{text} {joined[0].upper()}{joined[1:]}."
            else:
                text = f"{text}; {joined}" if text else joined
        default = annotations.get("default", ...)
        if mode == "load" and name not in required and default is ...:
            default = "(absent)"
        rows.append(
            (
                f"{prefix}{name}",
                kind,
                name in required,
                _code(default) if default not in (..., "(absent)") else ("—" if mode == "load" else ""),
                text,
            )
        )
        if nested and depth < MAX_NESTING:
            child = components[nested]
            rows += field_rows(child, components, mode, f"{prefix}{name}{'[]' if many else ''}.", depth + 1)
    return rows


def _schema_of(schema, converter, mode):
    name = converter.component(schema, mode)
    return converter.components[name]


# ---- Markdown ---------------------------------------------------------------------------------


def _anchor(*parts):
    return "-".join(parts)


RETRYING = "calling.md#retrying-writes-safely"


def _idempotency_key_row():
    schema = asyncapi.idempotency_key_schema()
    text = (
        f"{schema['minLength']}{DASH}{schema['maxLength']} printable characters; a retry under the same key "
        f"returns the first reply ([how]({RETRYING}))"
    )
    return (asyncapi.KEY_ARGUMENT, describe(schema)[0], False, "—", text)


def _method_section(service, method, contract, converter, notes):
    out = [f'<a id="{_anchor(service, method)}"></a>', f"### `{service}.{method}`", ""]
    doc = _doc(contract.get("doc"))
    if doc:
        out += [doc, ""]
    roles = ", ".join(f"`{r}`" for r in contract["roles"])
    effect = "reads only" if contract.get("read_only") else "changes data (one transaction, committed before the reply)"
    out += [f"**Roles:** {roles} · {effect}", ""]
    schema = contract["schema"]
    rows = field_rows(_schema_of(schema, converter, "load"), converter.components, "load") if schema else []
    if asyncapi.is_write(contract):
        # shared.endpoints takes the key out before the schema sees the arguments: its own row wins.
        rows = [row for row in rows if row[0] != asyncapi.KEY_ARGUMENT] + [_idempotency_key_row()]
    if rows:
        out += ["| argument | type | required | default | constraints, meaning |", "| --- | --- | --- | --- | --- |"]
        out += [f"| `{n}` | {_cell(k)} | {'yes' if r else 'no'} | {_cell(d)} | {_cell(t)} |" for n, k, r, d, t in rows]
    else:
        out.append("No arguments.")
    out.append("")
    out += _reply_lines(contract["returns"], converter)
    if notes:
        out += [notes, ""]
    return out


def _reply_lines(returns, converter):
    """The reply's shape: one table per schema it may take (a ``OneOf`` lists each, with its doc)."""
    shapes = returns.schemas if isinstance(returns, replies.OneOf) else (returns,)
    out = []
    for n, shape in enumerate(shapes):
        instance = shape() if isinstance(shape, type) else shape
        component = _schema_of(instance, converter, "dump")
        if len(shapes) == 1:
            lead = "**Reply:** a list of objects" if instance.many else "**Reply:**"
        else:
            lead = f"**Reply, {'first' if n == 0 else 'or'} shape{' (a list)' if instance.many else ''}:**"
        doc = _md(component.get("description") or "")
        out += [f"{lead} {doc}".rstrip(), ""]
        rows = field_rows(component, converter.components, "dump")
        if rows:
            out += ["| field | type | meaning |", "| --- | --- | --- |"]
            out += [f"| `{name}` | {_cell(kind)} | {_cell(text)} |" for name, kind, _, _, text in rows]
        else:
            out.append("No fields.")
        out.append("")
    return out


def _events_section(service, events, converter):
    out = [f'<a id="{_anchor(service, "events")}"></a>', f"### Events `{service}` publishes", ""]
    if not events:
        return out + ["None.", ""]
    out += [
        f"On the `{service}.events` topic exchange, routing key = type, in the CloudEvents-shaped envelope "
        "(`specversion, id, source, type, time, subject, datacontenttype, data`); the fields below are "
        "`data`. Consumers deduplicate by envelope `id`.",
        "",
    ]
    for event_type, schema in events.items():
        doc = _doc(
            type(schema).__dict__.get("__doc__") if not isinstance(schema, type) else schema.__dict__.get("__doc__")
        )
        out += [f'<a id="{_anchor(service, "event", event_type)}"></a>', f"#### `{event_type}`", ""]
        if doc:
            out += [doc, ""]
        rows = field_rows(_schema_of(schema, converter, "dump"), converter.components, "dump")
        out += ["| field | type | always there | constraints, meaning |", "| --- | --- | --- | --- |"]
        out += [f"| `{n}` | {_cell(k)} | {'yes' if r else 'no'} | {_cell(t)} |" for n, k, r, _, t in rows]
        out.append("")
    return out


def _handlers_section(service, handlers, converter):
    out = [f'<a id="{_anchor(service, "handles")}"></a>', f"### Events `{service}` handles", ""]
    if not handlers:
        return out + ["None.", ""]
    out += [
        f"Each on its own queue `evt-<source>-<type>--{service}.<handler>`: deduplicated by envelope id, "
        "retried with backoff, then parked in the queue's `.dead` twin.",
        "",
    ]
    out += ["| event | handler | what it does | reads from `data` |", "| --- | --- | --- | --- |"]
    for method, contract in sorted(handlers, key=lambda h: (h[1]["source"], h[1]["event_type"], h[0])):
        source, event_type = contract["source"], contract["event_type"]
        doc = _doc(contract.get("doc")) or ""
        reads = ""
        if contract.get("schema") is not None:
            schema = _schema_of(contract["schema"], converter, "load")
            reads = ", ".join(f"`{n}`" for n in sorted(schema.get("properties", {})))
        link = f"[`{source}.{event_type}`](#{_anchor(source, 'event', event_type)})"
        out.append(f"| {link} | `{method}` | {_cell(doc)} | {reads} |")
    out.append("")
    return out


def _commands_section(service, commands, senders, converter):
    out = [f'<a id="{_anchor(service, "commands")}"></a>', f"### Commands `{service}` accepts", ""]
    if not commands:
        return out + ["None.", ""]
    exchange = asyncapi.command_exchange_name(service)
    senders_text = asyncapi.spoken_list(f"`{name}`" for name in senders) or "other services"
    out += [
        f"These come from {senders_text} as messages, not RPC calls: the sender records the command through "
        f"`services/{service}/client.py` in its outbox, in the transaction of the change that causes it, with an "
        "`origin` naming that change (`volunteer:offer/12`); once that commits, the command goes to the "
        f"`{exchange}` topic exchange (routing key = command) in the same envelope as events, `data` holding the "
        f"fields below. Each command has its own queue `{asyncapi.command_queue_name(service, '<command>')}`: "
        "deduplicated by envelope id, applied at most once per `origin`, retried with backoff, then parked in the "
        "queue's `.dead` twin.",
        "",
    ]
    for method, contract in commands:
        command = contract["command"]
        out += [f'<a id="{_anchor(service, "command", command)}"></a>', f"#### `{command}`", ""]
        doc = _doc(contract.get("doc"))
        if doc:
            out += [doc, ""]
        out += [f"Handled by `{method}`.", ""]
        rows = field_rows(_schema_of(contract["schema"], converter, "load"), converter.components, "load")
        out += ["| field | type | required | default | constraints, meaning |", "| --- | --- | --- | --- | --- |"]
        out += [f"| `{n}` | {_cell(k)} | {'yes' if r else 'no'} | {_cell(d)} | {_cell(t)} |" for n, k, r, d, t in rows]
        out.append("")
    return out


HEADER = """\
# RPC reference

<!-- Generated from the code by `make docs` (python -m tools.rpc_reference): the endpoint contracts
     (shared/endpoints.py), services/<name>/schemas.py and events.py, and docs/rpc-notes.md.
     Do not edit; a test fails when this file is stale. -->

Every method is called over nameko RPC on RabbitMQ as `<service>.<method>(**arguments)`: keyword
arguments only, with a token in the call's context data — see [calling.md](calling.md) for tokens,
claims, paging and errors, and [asyncapi.yaml](asyncapi.yaml) for the same contracts as AsyncAPI 3.0.

- **Roles** lists the token roles that may call the method; a target outside the caller's subtree
  (the token's `unit`) is refused as well, except for `admin` and `service`, which reach the whole
  district.
- **Arguments** are validated before anything changes: unknown arguments, wrong types and over-long
  strings are refused with a `ValidationError` naming each bad field. `id` means a positive integer or
  its decimal string; answers carry ids as strings. Date-times are ISO-8601 (without an offset:
  UTC). A `list of …` with "no duplicates" refuses repeated values.
- **Writes** — methods that change data — take an optional `idempotency_key`: a retry under the
  same key gets the first reply instead of acting twice ([Retrying writes
  safely](calling.md#retrying-writes-safely)). Read-only methods refuse it.
- **Errors** every method can answer: `Unauthenticated` (no, expired or forged token), `Forbidden`
  (a role not listed, or out of scope), `ValidationError`; `NotFound` and `Conflict` where the notes
  say so; `ServiceUnavailable` when a service the method depends on does not answer in time
  (nothing changed: retry later, a write with the same `idempotency_key`).
- **Paged lists** (`page`, `page_size` arguments) answer `{"items": [...], "page": n, "page_size": n,
  "has_more": bool}`.
"""


def render(walked, converter, notes):
    out = [HEADER]
    out += [
        "| service | RPC methods | events published | events handled | commands accepted |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for service, info in walked.items():
        counts = (len(info[part]) for part in ("rpcs", "events", "handlers", "commands"))
        out.append(f"| [`{service}`](#{service}) | {' | '.join(map(str, counts))} |")
    out.append("")
    for service, info in walked.items():
        service_notes = notes.get(service, {})
        out += [f'<a id="{service}"></a>', f"## `{service}`", ""]
        if info["doc"]:
            out += [info["doc"], ""]
        if service_notes.get(""):
            out += [service_notes[""], ""]
        links = " · ".join(f"[`{m}`](#{_anchor(service, m)})" for m, _ in info["rpcs"])
        out += [
            f"**Methods:** {links}",
            "",
            f"**Events:** [published](#{_anchor(service, 'events')}) ({len(info['events'])}) · "
            f"[handled](#{_anchor(service, 'handles')}) ({len(info['handlers'])}) · "
            f"**Commands:** [accepted](#{_anchor(service, 'commands')}) ({len(info['commands'])})",
            "",
        ]
        for method, contract in info["rpcs"]:
            out += _method_section(service, method, contract, converter, service_notes.get(method))
        out += _events_section(service, info["events"], converter)
        out += _handlers_section(service, info["handlers"], converter)
        out += _commands_section(service, info["commands"], info["senders"], converter)
    return "\n".join(out).rstrip("\n") + "\n"


def generate(services=None, notes_text=None):
    walked, converter = collect(services)
    if notes_text is None:
        notes_text = NOTES.read_text(encoding="utf-8") if NOTES.exists() else ""
    return render(walked, converter, read_notes(notes_text, walked))


def main(argv=None):
    return asyncapi.generated_document_main(
        argv, "python -m tools.rpc_reference", __doc__.split("\n\n")[0], OUTPUT, generate, REGENERATE
    )


if __name__ == "__main__":
    sys.exit(main())
