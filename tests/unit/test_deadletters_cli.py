"""``grassroots deadletters``'s pure parts: queue names, what a dead letter shows (never the event's
data), the headers a replay keeps, the management API's address, argument parsing and the text."""

import datetime as dt
import io
import json
from collections import Counter
from dataclasses import asdict

import pytest
from rich.console import Console

from shared import handlers, rpc
from tools.cli import deadletters
from tools.cli.__main__ import build_parser, main
from tools.cli.deadletters import (
    DeadQueue,
    Outcome,
    QueueListing,
    dead_queue,
    describe,
    listing_json,
    management_url,
    outcome_line,
    outcomes_json,
    render_listing,
    replay_headers,
    selected,
    virtual_host,
)

MARKER = "private-data-5d1f03"
EVENT_QUEUE = dead_queue("evt-grid-resident_tagged--notices.on_resident_tagged")
RPC_QUEUE = dead_queue("rpc-grid.dead")
STACK = ["grid.tag_resident.1", "notices.on_resident_tagged.2"]


def body(**fields):
    envelope = {
        "specversion": "1.0",
        "id": "0b6c8f0e-2d0a-4f7e-9d55-0c1b2a3d4e5f",
        "source": "grassroots/grid",
        "type": "resident_tagged",
        "time": "2026-11-26T08:00:00+00:00",
        "subject": "resident/42",
        "data": {"resident_id": "42", "note": MARKER},
        **fields,
    }
    return json.dumps(envelope).encode()


def text_of(lines):
    console = Console(record=True, width=200, file=io.StringIO())
    for line in lines:
        console.print(line, soft_wrap=True)
    return console.export_text()


def parse(*argv):
    return build_parser().parse_args(["deadletters", *argv])


# ---- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "evt-grid-resident_tagged--notices.on_resident_tagged",
            ("evt-grid-resident_tagged--notices.on_resident_tagged.dead", "event", "notices", "on_resident_tagged"),
        ),
        (
            "evt-grid-resident_tagged--notices.on_resident_tagged.dead",
            ("evt-grid-resident_tagged--notices.on_resident_tagged.dead", "event", "notices", "on_resident_tagged"),
        ),
        ("cmd-notices-send_direct.dead", ("cmd-notices-send_direct.dead", "command", "notices", "send_direct")),
        ("rpc-grid.dead", ("rpc-grid.dead", "rpc", "grid", None)),
        ("rpc-grid", ("rpc-grid.dead", "rpc", "grid", None)),
        ("somebody-elses.dead", ("somebody-elses.dead", "other", None, None)),
    ],
)
def test_a_dead_queues_name_says_what_it_belongs_to(name, expected):
    queue = dead_queue(name)
    assert (queue.name, queue.kind, queue.service, queue.handler) == expected
    assert queue.target == queue.name.removesuffix(".dead")
    assert queue.replayable == (queue.kind != "rpc")


def test_queues_are_picked_by_name_or_by_service():
    queues = [dead_queue(n) for n in ("rpc-grid", "evt-a-b--grid.on_b", "evt-a-b--legal.on_b", "cmd-notices-x")]
    assert [q.name for q in selected(queues)] == sorted(q.name for q in queues)
    assert [q.name for q in selected(queues, services=["grid"])] == ["evt-a-b--grid.on_b.dead", "rpc-grid.dead"]
    assert [q.name for q in selected(queues, names=["cmd-notices-x", "evt-a-b--legal.on_b.dead"])] == [
        "cmd-notices-x.dead",
        "evt-a-b--legal.on_b.dead",
    ]


def test_the_header_names_are_those_the_services_write():
    assert deadletters.REASON_HEADER == handlers.REASON_HEADER == rpc.REASON_HEADER
    assert deadletters.ATTEMPT_HEADER == handlers.ATTEMPT_HEADER
    assert deadletters.BODY_BYTES_HEADER == handlers.BODY_BYTES_HEADER == rpc.BODY_BYTES_HEADER
    assert deadletters.CALL_ID_STACK_HEADER == handlers.CALL_ID_STACK_HEADER
    assert deadletters.DEAD_AT_HEADER == rpc.DEAD_AT_HEADER
    assert deadletters.METHOD_HEADER == rpc.METHOD_HEADER


# ---- what a dead letter shows ----------------------------------------------------------------------


def test_an_event_shows_its_id_type_and_subject_never_its_data():
    headers = {
        "x-grassroots-dead-reason": "failed 5 times: ServiceUnavailable",
        "x-grassroots-attempt": 5,
        "nameko.call_id_stack": STACK,
    }
    letter = describe(EVENT_QUEUE, headers, body(), position=3)
    assert (letter.position, letter.type, letter.subject) == (3, "resident_tagged", "resident/42")
    assert letter.id == "0b6c8f0e-2d0a-4f7e-9d55-0c1b2a3d4e5f"
    assert letter.reason == "failed 5 times: ServiceUnavailable" and letter.attempts == 5
    assert letter.replayable and letter.not_replayable_because is None
    shown = json.dumps(asdict(letter)) + text_of(render_listing([QueueListing(EVENT_QUEUE, 1, [letter])], 20))
    assert MARKER not in shown and "resident_id" not in shown and "nameko" not in shown


def test_what_has_no_body_cannot_be_replayed():
    refused = describe(
        EVENT_QUEUE, {"x-grassroots-body-bytes": 2_000_000, "x-grassroots-dead-reason": "refused: …"}, b""
    )
    assert not refused.replayable and "refused unread" in refused.not_replayable_because
    assert describe(EVENT_QUEUE, {}, b"").replayable is False
    request = describe(
        RPC_QUEUE,
        {"x-grassroots-method": "grid.report_incident", "x-grassroots-dead-at": "2026-11-26T08:00:05+00:00"},
        b"",
    )
    assert not request.replayable and "RPC request" in request.not_replayable_because
    assert request.method == "grid.report_incident" and request.dead_at == "2026-11-26T08:00:05+00:00"


def test_a_body_that_is_no_envelope_is_still_shown_and_replayable():
    for raw in (b"{" * 100_000, b"\xff\xfe not utf-8", b"[1, 2]"):
        letter = describe(EVENT_QUEUE, {"x-grassroots-dead-reason": "undecodable: ValueError"}, raw)
        assert (letter.id, letter.type, letter.body_bytes, letter.replayable) == (None, None, len(raw), True)
    assert "no event envelope, 6 bytes" in text_of(render_listing([QueueListing(EVENT_QUEUE, 1, [letter])], 20))


def test_header_text_from_the_wire_is_one_bounded_printable_line():
    hostile = {
        "x-grassroots-dead-reason": "\x1b[2J\x00line\nbreak" + "x" * 10_000,
        "x-grassroots-attempt": True,  # not an integer count
        "x-grassroots-dead-at": "\ud800\x07",
    }
    letter = describe(EVENT_QUEUE, hostile, body(type="[bold]t\r", subject="s" * 1000))
    assert letter.reason.startswith("\\x1b[2J\\x00line\\x0abreak") and len(letter.reason) == 500
    assert letter.attempts is None
    assert letter.dead_at == "\\ud800\\x07"
    assert letter.type == "[bold]t\\x0d" and len(letter.subject) == 300
    assert "[bold]t" in text_of(render_listing([QueueListing(EVENT_QUEUE, 1, [letter])], 20))  # not markup


def test_the_dead_at_time_comes_from_the_header_else_the_timestamp_property():
    moment = dt.datetime(2026, 11, 26, 16, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert describe(EVENT_QUEUE, {}, body(), {"timestamp": moment}).dead_at == "2026-11-26T08:00:05+00:00"
    assert describe(EVENT_QUEUE, {}, body(), {"timestamp": moment.timestamp()}).dead_at == "2026-11-26T08:00:05+00:00"
    header = {"x-grassroots-dead-at": "2026-11-26T08:00:00+00:00"}
    assert describe(EVENT_QUEUE, header, body(), {"timestamp": moment}).dead_at == "2026-11-26T08:00:00+00:00"
    assert describe(EVENT_QUEUE, {}, body()).dead_at is None


def test_a_quorum_queues_delivery_count_is_shown():
    letter = describe(EVENT_QUEUE, {"x-delivery-count": 7}, body())
    assert letter.read_before == 7
    assert "read 7 times before" in text_of(render_listing([QueueListing(EVENT_QUEUE, 1, [letter])], 20))


# ---- what a replay carries ---------------------------------------------------------------------------


def test_a_replayed_message_keeps_only_the_call_id_stack():
    headers = {
        "nameko.call_id_stack": STACK,
        "x-grassroots-attempt": 5,
        "x-grassroots-dead-reason": "failed 5 times: RuntimeError",
        "x-grassroots-first-failure-at": "2026-11-26T08:00:00+00:00",
        "x-grassroots-anything-new": 1,
        "x-death": [{"count": 1}],
        "x-delivery-count": 3,
        "nameko.auth_token": "a-token",
    }
    assert replay_headers(headers) == {"nameko.call_id_stack": STACK}
    assert replay_headers({"nameko.call_id_stack": 5}) == {}  # one nameko cannot extend stays behind
    assert replay_headers(None) == {}


# ---- the management API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "explicit, environ, amqp, expected",
    [
        (None, {}, "amqp://guest:guest@localhost:5672/", "http://guest:guest@localhost:15672"),
        (None, {}, "amqp://ops:s%40cret@rabbit.internal:5672/grassroots", "http://ops:s%40cret@rabbit.internal:15672"),
        (None, {}, "amqps://ops:pw@rabbit:5671/", "https://ops:pw@rabbit:15671"),
        (None, {}, "amqp://rabbit/", "http://rabbit:15672"),
        (
            None,
            {"GRASSROOTS_MANAGEMENT_URL": "http://mgmt:8080/rabbit/"},
            "amqp://u:p@h/",
            "http://u:p@mgmt:8080/rabbit",
        ),
        (
            "http://admin:x@mgmt:15672",
            {"GRASSROOTS_MANAGEMENT_URL": "http://other"},
            "amqp://u:p@h/",
            "http://admin:x@mgmt:15672",
        ),
    ],
)
def test_the_management_api_address(explicit, environ, amqp, expected):
    assert management_url(explicit, amqp, environ=environ) == expected


@pytest.mark.parametrize(
    "uri, vhost",
    [
        ("amqp://guest:guest@localhost:5672/", "/"),
        ("amqp://localhost", "/"),
        ("amqp://h/grassroots", "grassroots"),
        ("amqp://h/%2f", "/"),
        ("amqp://h/nameko_test_abc", "nameko_test_abc"),
    ],
)
def test_the_vhost_of_a_broker_uri(uri, vhost):
    assert virtual_host(uri) == vhost


# ---- the command line --------------------------------------------------------------------------------


def test_list_options():
    args = parse("list")
    assert (args.service, args.queues, args.limit, args.json, args.management_url) == (None, None, 20, False, None)
    args = parse("list", "--service", "grid", "--service", "legal", "--queue", "rpc-grid", "--limit", "0", "--json")
    assert (args.service, args.queues, args.limit, args.json) == (["grid", "legal"], ["rpc-grid"], 0, True)


def test_replay_options():
    args = parse("replay", "--queue", "q", "--limit", "5", "--event-id", "e-1", "--dry-run")
    assert (args.queues, args.limit, args.event_id, args.dry_run, args.all) == (["q"], 5, "e-1", True, False)
    args = parse("replay", "--service", "grid", "--all")
    assert (args.service, args.all, args.limit, args.event_id) == (["grid"], True, None, None)


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["deadletters"], "ACTION"),
        (["deadletters", "replay"], "either --queue QUEUE or --all"),
        (["deadletters", "replay", "--service", "grid"], "either --queue QUEUE or --all"),
        (["deadletters", "replay", "--queue", "q", "--all"], "either --queue QUEUE or --all"),
        (["deadletters", "replay", "--queue", "q", "--limit", "0"], "--limit must be 1 or more"),
        (["deadletters", "list", "--limit", "-1"], "must be 0 or more"),
        (["deadletters", "list", "--limit", "many"], "not a whole number"),
    ],
)
def test_usage_errors_exit_2_before_touching_the_broker(capsys, argv, complaint):
    assert main([*argv, "--amqp-uri", "amqp://nobody:nothing@127.0.0.1:1/"] if len(argv) > 1 else argv) == 2
    assert complaint in capsys.readouterr().err


# ---- the text ----------------------------------------------------------------------------------------


def test_the_listing_text():
    letters = [describe(EVENT_QUEUE, {"x-grassroots-dead-reason": "failed"}, body(), position=1)]
    listings = [QueueListing(EVENT_QUEUE, 12, letters), QueueListing(RPC_QUEUE, 1, [])]
    text = text_of(render_listing(listings, 1))
    assert f"{EVENT_QUEUE.name}  12 messages  event handler notices.on_resident_tagged; replays to" in text
    assert "rpc-grid.dead  1 message  RPC requests to grid (list only" in text
    assert "… 11 more (--limit)" in text and "13 dead letters in 2 queues" in text
    assert text_of(render_listing([], 20)).strip() == "no dead letters"
    assert text_of(render_listing([QueueListing(dead_queue("gone"), None, [])], 20)).startswith(
        "gone.dead  (no such queue)"
    )
    data = listing_json(listings, "/")
    assert data["vhost"] == "/" and data["queues"][0]["letters"][0]["type"] == "resident_tagged"
    assert MARKER not in json.dumps(data)


def test_the_replay_text():
    outcome = Outcome(EVENT_QUEUE, moved=3, skipped=Counter({"refused unread, kept without its body": 2}))
    outcome.unmatched = 1
    line = text_of([outcome_line(outcome, dry_run=False)])
    assert line.startswith(f"{EVENT_QUEUE.name} → {EVENT_QUEUE.target}: moved 3, skipped 2 (2 refused unread")
    assert "1 not the event asked for" in line
    assert "would move 3" in text_of([outcome_line(outcome, dry_run=True)])
    failed = Outcome(DeadQueue("x.dead", "x", "other"), error="no queue x (start its service first)")
    assert "stopped: no queue x" in text_of([outcome_line(failed, dry_run=False)])
    data = outcomes_json([outcome, failed], dry_run=False)
    assert (data["moved"], data["skipped"], data["queues"][1]["error"]) == (3, 2, failed.error)


def test_an_unreachable_broker_exits_3(capsys):
    assert main(["deadletters", "list", "--queue", "q", "--amqp-uri", "amqp://guest:guest@127.0.0.1:1/"]) == 3
    assert "cannot reach the broker at amqp://guest:***@127.0.0.1:1/" in capsys.readouterr().err
