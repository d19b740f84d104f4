"""The RPC reference (docs/rpc.md): up to date with the code, and covering every RPC method (a
write's ``idempotency_key`` too), every event, every event handler and every command a service
accepts. Pure: no broker, no database.

When one of these fails after you changed a method, a schema, an event or docs/rpc-notes.md: run
``make docs`` and commit docs/rpc.md (and docs/asyncapi.yaml, which it regenerates too).
"""

import difflib
import re
from pathlib import Path

import pytest
from marshmallow import fields, validate

from shared.commands import on_command
from shared.endpoints import endpoint, on_event, rpc
from shared.idempotency import KEY_ARGUMENT as KEY
from shared.replies import NOTHING
from shared.service import ServiceBase
from shared.validation import Id, ListOf, OneOf, Str, StrictSchema, UtcDateTime, WeeklyWindow
from tools import asyncapi, rpc_reference

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "rpc.md"
REGENERATE = "run `make docs` and commit docs/rpc.md"


@pytest.fixture(scope="module")
def committed():
    return DOC_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def services():
    return asyncapi.service_classes()


def _section(text, heading):
    """The text under ``heading`` up to the next heading of the same or a higher level (without the
    next heading's anchor)."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    stop = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, start + len(heading) + 1)
    section = text[start : stop.start() if stop else len(text)]
    return re.sub(r'<a id="[^"]*"></a>\n$', "", section)


# ---- (a) up to date -------------------------------------------------------------------------


def test_committed_reference_matches_the_code(committed):
    fresh = rpc_reference.generate()
    if committed != fresh:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(True), fresh.splitlines(True), "docs/rpc.md", "generated", n=1
                )
            )[:60]
        )
        pytest.fail(f"docs/rpc.md is stale: {REGENERATE}\n{diff}")


def test_generation_is_deterministic():
    assert rpc_reference.generate() == rpc_reference.generate()


def test_check_mode_reports_a_stale_file(tmp_path, capsys, committed):
    stale = tmp_path / "rpc.md"
    stale.write_text(committed.replace("# RPC reference", "# Old reference", 1), encoding="utf-8")
    assert rpc_reference.main(["--check", "--output", str(stale)]) == 1
    assert REGENERATE in capsys.readouterr().err
    fresh = tmp_path / "fresh.md"
    assert rpc_reference.main(["--output", str(fresh)]) == 0
    assert rpc_reference.main(["--check", "--output", str(fresh)]) == 0


# ---- (b) everything the code offers is in it ------------------------------------------------


def test_every_rpc_method_is_in_the_reference_with_its_roles_and_arguments(services, committed):
    assert set(services) >= {"grid", "notices", "legal", "volunteer"}
    problems = []
    for service, cls in sorted(services.items()):
        rpcs, _, undocumented = asyncapi.entrypoints(cls)
        problems += [f"{service}.{name}: @rpc without @endpoint" for name in undocumented]
        assert rpcs, f"{service} has no RPC methods?"
        for method, contract in rpcs:
            heading = f"### `{service}.{method}`"
            if heading + "\n" not in committed:
                problems.append(f"{service}.{method}: not in docs/rpc.md")
                continue
            section = _section(committed, heading)
            roles = ", ".join(f"`{r}`" for r in contract["roles"])
            if f"**Roles:** {roles} ·" not in section:
                problems.append(f"{service}.{method}: roles {roles} not stated")
            if contract["schema"] is not None:
                for name, field in contract["schema"].fields.items():
                    if not field.dump_only and f"| `{field.data_key or name}` |" not in section:
                        problems.append(f"{service}.{method}: argument {name!r} missing")
            key_rows = section.count(f"| `{KEY}` |")
            if key_rows != (1 if asyncapi.is_write(contract) else 0):
                problems.append(f"{service}.{method}: {key_rows} `{KEY}` rows (read-only: {contract['read_only']})")
    assert problems == [], "\n".join(problems) + f"\n{REGENERATE}"


def test_the_header_points_writers_to_retrying_safely(committed):
    header = committed.split("\n## ", 1)[0]
    assert f"`{KEY}`" in header and "calling.md#retrying-writes-safely" in header
    assert "`ServiceUnavailable`" in header
    calling = (ROOT / "docs" / "calling.md").read_text(encoding="utf-8")
    assert "\n## Retrying writes safely\n" in calling  # the anchor every key row links to


def test_every_command_is_in_the_reference_with_its_fields(services, committed):
    problems, found = [], 0
    for service, cls in sorted(services.items()):
        accepted = _section(committed, f"### Commands `{service}` accepts")
        for method, contract in asyncapi.command_handlers(cls):
            found += 1
            heading = f"#### `{contract['command']}`"
            if heading + "\n" not in accepted:
                problems.append(f"{service} accepts {contract['command']}: not in docs/rpc.md")
                continue
            command = _section(accepted, heading)
            if f"Handled by `{method}`." not in command:
                problems.append(f"{service}.{method}: handler not named")
            problems += [
                f"{service}.{contract['command']}: field {name!r} missing"
                for name, field in contract["schema"].fields.items()
                if f"| `{field.data_key or name}` |" not in command
            ]
    assert problems == [], "\n".join(problems) + f"\n{REGENERATE}"
    assert found >= 1
    send_direct = _section(committed, "#### `send_direct`")
    assert "one message per origin" in send_direct and "| `origin` | string | yes |" in send_direct
    assert "`legal` and `volunteer`" in _section(committed, "### Commands `notices` accepts")


def test_every_event_and_handler_is_in_the_reference(services, committed):
    problems = []
    for service, cls in sorted(services.items()):
        published = _section(committed, f"### Events `{service}` publishes")
        for event_type, schema in asyncapi.service_events(service).items():
            if f"#### `{event_type}`\n" not in published:
                problems.append(f"{service} publishes {event_type}: not in docs/rpc.md")
                continue
            event = _section(published, f"#### `{event_type}`")
            problems += [
                f"{service}.{event_type}: field {name!r} missing"
                for name, field in schema.fields.items()
                if not field.load_only and f"| `{field.data_key or name}` |" not in event
            ]
        handled = _section(committed, f"### Events `{service}` handles")
        _, handlers, _ = asyncapi.entrypoints(cls)
        for method, contract in handlers:
            row = f"[`{contract['source']}.{contract['event_type']}`]"
            if not any(line.startswith(f"| {row}") and f"| `{method}` |" in line for line in handled.splitlines()):
                problems.append(f"{service}.{method} ({contract['source']}.{contract['event_type']}): not listed")
    assert problems == [], "\n".join(problems) + f"\n{REGENERATE}"


def test_the_readme_example_method_is_documented(committed):
    # The README's example calls grid.count_residents; the reference must describe its answer.
    assert '{"count": n}' in _section(committed, "### `grid.count_residents`")


# ---- (c) the generator on a made-up service -------------------------------------------------


class _Address(StrictSchema):
    """Where it is."""

    street = Str(required=True, max_length=30)


class _Example(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=20, min_length=2)
    colour = OneOf(("red", "blue"), load_default=None, allow_none=True)
    count = fields.Integer(load_default=3, validate=validate.Range(min=1, max=9))
    tags = ListOf(Str(max_length=10), min_items=1, max_items=4)
    at = UtcDateTime(allow_none=True, metadata={"description": "When it happens."})
    address = fields.Nested(_Address, required=True)
    weekly = fields.List(fields.Nested(WeeklyWindow))


class _Looked(StrictSchema):
    """Emitted by ``look``."""

    unit_id = Id(required=True)


class _Keyed(StrictSchema):
    unit_id = Id(required=True)
    idempotency_key = Str(load_default=None, allow_none=True, max_length=10)  # the endpoint's own wins


class _Order(StrictSchema):
    origin = Str(required=True, max_length=50)
    unit_id = Id(required=True)


class _Demo(ServiceBase):
    name = "demo"

    @rpc
    @endpoint(roles=("admin", "officer"), schema=_Example(), read_only=True, returns=NOTHING)
    def look(self, caller, **args):
        """Look at something.

        Then say what you saw."""

    @rpc
    @endpoint(roles=("admin",), returns=NOTHING)
    def ping(self, caller):
        return None

    @rpc
    @endpoint(roles=("admin",), schema=_Keyed(), returns=NOTHING)
    def keep(self, caller, **args):
        """Keep something."""

    @on_event("demo", "looked", schema=_Looked())
    def on_looked(self, envelope, data):
        """Note that someone looked."""

    @on_command("order", schema=_Order())
    def on_order(self, sender, envelope, data):
        """Another service's order: one per origin."""


def test_the_generator_lays_out_a_method_its_arguments_and_events(monkeypatch):
    monkeypatch.setattr(asyncapi, "service_events", lambda service: {"looked": _Looked()} if service == "demo" else {})
    notes = "# notes\n\n## demo\n\nAn introduction.\n\n### look\n\nReturns what it saw.\n"
    text = rpc_reference.generate({"demo": _Demo}, notes_text=notes)
    look = _section(text, "### `demo.look`")
    assert "Look at something.\n\nThen say what you saw." in look
    assert "**Roles:** `admin`, `officer` · reads only" in look
    assert look.rstrip().endswith("Returns what it saw.")
    rows = {line.split(" | ")[0].strip("| `"): line for line in look.splitlines() if line.startswith("| `")}
    assert rows["unit_id"] == "| `unit_id` | id | yes | — |  |"
    assert rows["name"] == "| `name` | string | yes | — | 2–20 characters |"
    assert rows["colour"] == "| `colour` | string or null | no | `null` | one of `blue`, `red` |"
    assert rows["count"] == "| `count` | integer | no | `3` | 1–9 |"
    assert rows["tags"] == ("| `tags` | list of string | no | — | each 1–10 characters; 1–4 items; no duplicates |")
    assert rows["at"].startswith("| `at` | date-time or null | no | — | When it happens.")
    assert rows["address"] == "| `address` | object | yes | — | Where it is. |"
    assert rows["address.street"] == "| `address.street` | string | yes | — | 1–30 characters |"
    assert rows["weekly[].start"] == "| `weekly[].start` | string | yes | — | `HH:MM` |"
    assert "No arguments." not in _section(text, "### `demo.ping`")  # a write: the key is its one argument
    assert KEY not in look
    key_row = (
        f"| `{KEY}` | string | no | — | 1–200 printable characters; a retry under the same key returns the first "
        "reply ([how](calling.md#retrying-writes-safely)) |"
    )
    assert key_row in _section(text, "### `demo.ping`")
    keep = _section(text, "### `demo.keep`")
    assert keep.count(f"| `{KEY}` |") == 1 and key_row in keep
    assert "An introduction." in _section(text, "## `demo`")
    assert "| `unit_id` | id | yes |" in _section(text, "#### `looked`")
    assert "Emitted by `look`." in _section(text, "#### `looked`")  # reStructuredText literals become Markdown
    handled = _section(text, "### Events `demo` handles")
    assert "| [`demo.looked`](#demo-event-looked) | `on_looked` | Note that someone looked. | `unit_id` |" in handled
    accepted = _section(text, "### Commands `demo` accepts")
    assert "`demo.commands` topic exchange" in accepted and "`cmd-demo-<command>`" in accepted
    order = _section(accepted, "#### `order`")
    assert "Another service's order: one per origin.\n\nHandled by `on_order`." in order
    assert "| `origin` | string | yes | — | 1–50 characters |" in order
    assert "| [`demo`](#demo) | 3 | 1 | 1 | 1 |" in text


@pytest.mark.parametrize(
    "notes, problem",
    [
        ("## nowhere\n", "no such service"),
        ("## demo\n### vanished\n", "has no RPC method 'vanished'"),
        ("## demo\n### on_looked\n", "has no RPC method 'on_looked'"),  # a handler is not an RPC method
        ("### look\n", "before any ## <service>"),
        ("## demo\n### look\n### look\n", "appears twice"),
    ],
)
def test_notes_that_name_no_method_are_refused(notes, problem):
    with pytest.raises(asyncapi.ContractError, match=re.escape(problem)):
        rpc_reference.generate({"demo": _Demo}, notes_text=notes)
