"""Acknowledgement without a smartphone, on a real broker and PostgreSQL: the stub SMS and voice
gateways answer each post with a message id; residents answer by keypress (the signed HTTP webhook) and
by SMS reply (``notices.record_inbound``); the report counts them, and once the ack deadline passes
``notice_unacknowledged`` names only the silent one. Replays record once; unmatched, unsigned and
malformed reports are refused and change nothing."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from sqlalchemy import create_engine, text

from services.notices.models import Base
from services.notices.webhook import signed_request
from shared.errors import NotFound
from tests.support import add_household, add_resident, expect_invalid, table_counts, token, wait_until

SECRETS = {"sms": "test-sms-inbound-secret-0123456789", "voice": "test-voice-inbound-secret-0123456789"}
ACK_SECONDS = 12  # the notice's ack deadline from its creation: every report below comes before it
STUB = {"url": "stub", "rate_per_second": 1000}


@pytest.fixture
def notices_config(notices_config):
    """The stub twins for SMS and voice (they answer message ids), and both gateways' inbound secrets."""
    channels = {**notices_config["CHANNELS"], "sms": STUB, "voice_call": STUB}
    return {**notices_config, "CHANNELS": channels, "INBOUND_SECRETS": SECRETS}


@pytest.fixture
def people(notices, admin, district):
    """Three elderly residents living alone in small grid a, each in a household of their own."""
    found = {}
    for who, seq in (("presses", 21), ("replies", 22), ("silent", 23)):
        home = add_household(admin, district["small_a"], room=str(300 + seq))
        found[who] = {"id": add_resident(admin, home, seq)["id"], "phone": f"138{seq:08d}"}
        admin.tag_resident(resident_id=found[who]["id"], tag="elderly_alone")
    return found


@pytest.fixture
def officer(call_as, district):
    return call_as(token("officer", sub="officer", unit=district["street"])).notices


@pytest.fixture
def bridge(call_as):
    """The gateway bridge's token: role ``service``, no unit."""
    return call_as(token("service", sub="gateway-bridge")).notices


def post(config, gateway, fields, secret=None, stamp=None, raw=None):
    """POST a report to the webhook, signed as docs/gateways.md says; (status, JSON answer)."""
    body = json.dumps(fields).encode() if raw is None else raw
    secret = SECRETS.get(gateway, "x" * 16) if secret is None else secret
    url = f"http://{config['WEB_SERVER_ADDRESS']}/gateways/{gateway}/inbound"
    request = signed_request(url, secret, body, stamp)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def sql(url, query, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            return conn.execute(text(query), params).all()
    finally:
        engine.dispose()


def message_ids(url, notice_id):
    """{(resident id, channel): the gateway's message id} of the notice's deliveries."""
    rows = sql(
        url,
        "SELECT r.resident_id, d.channel, d.gateway_message_id FROM deliveries d JOIN recipients r"
        " ON r.id = d.recipient_id WHERE d.notice_id = :n",
        n=int(notice_id),
    )
    return {(str(resident), channel): name for resident, channel, name in rows}


def snapshot(url):
    return table_counts(
        url,
        Base.metadata,
        {
            "acks": "SELECT string_agg(notice_id || ':' || resident_id, ',' ORDER BY notice_id, resident_id)"
            " FROM acknowledgements",
            "inbound": "SELECT string_agg(gateway || ':' || gateway_event_id, ',' ORDER BY id) FROM inbound_messages",
        },
    )


def metric(config, outcome, gateway="voice", kind="keypress"):
    with urllib.request.urlopen(f"http://{config['WEB_SERVER_ADDRESS']}/metrics", timeout=15) as response:
        lines = response.read().decode().splitlines()
    wanted = f'grassroots_notices_inbound_total{{gateway="{gateway}",kind="{kind}",outcome="{outcome}"}}'
    return next((float(line.split()[-1]) for line in lines if line.startswith(wanted)), 0.0)


def publish(officer, district, people=None):
    notice = officer.create_notice(
        title="Water cut",
        body="No water on Friday 9-12. Reply 1 or press 1 if you got this.",
        category="community_activity",
        severity="moderate",
        urgency="expected",
        audience={"under": [district["small_a"]], "tags_any": ["elderly_alone"]},
        channels=["sms", "voice_call"],
        requires_ack=True,
        ack_deadline=(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ACK_SECONDS)).isoformat(),
    )
    officer.approve_notice(notice_id=notice["id"])
    return notice


def test_replies_and_keypresses_acknowledge_and_only_the_silent_one_is_followed_up(
    people, officer, bridge, district, notices_config, notices_db, notices_events
):
    notice = publish(officer, district)
    expected = {(people[w]["id"], c) for w in people for c in ("sms", "voice_call")}
    named = wait_until(
        lambda: (lambda ids: ids if set(ids) == expected and all(ids.values()) else None)(
            message_ids(notices_db, notice["id"])
        ),
        message="the stub gateways' message ids were not stored",
    )
    replies, presses, silent = (people[w] for w in ("replies", "presses", "silent"))
    assert named[(replies["id"], "sms")].startswith("stub-sms-")

    # a keypress through the signed webhook, the caller id as the gateway shows it
    keypress = {"kind": "keypress", "gateway_event_id": f"call-{uuid.uuid4().hex}", "digits": "1"}
    status, pressed = post(notices_config, "voice", {**keypress, "from_phone": f"+86 {presses['phone']}"})
    assert status == 200, pressed
    assert (pressed["outcome"], pressed["matched_by"], pressed["resident_id"]) == (
        "acknowledged",
        "phone",
        presses["id"],
    )
    assert presses["phone"] not in json.dumps(pressed)
    # an SMS reply of a full-width 1 through the RPC, naming the message it answers
    sms = {"gateway": "sms", "kind": "sms_reply", "gateway_event_id": f"sms-{uuid.uuid4().hex}", "text": " \uff11 "}
    replied = bridge.record_inbound(**sms, in_reply_to=named[(replies["id"], "sms")])
    assert (replied["outcome"], replied["matched_by"], replied["resident_id"]) == (
        "acknowledged",
        "gateway_message_id",
        replies["id"],
    )
    # the silent one answers something else: recorded and counted, not an acknowledgement (the gateway
    # names our delivery id, the one it was posted with)
    silent_sms = named[(silent["id"], "sms")].removeprefix("stub-sms-")
    thanks = bridge.record_inbound(
        gateway="sms",
        kind="sms_reply",
        gateway_event_id=f"sms-{uuid.uuid4().hex}",
        delivery_id=silent_sms,
        text="谢谢",
    )
    assert (thanks["outcome"], thanks["matched_by"], thanks["delivery_id"], thanks["resident_id"]) == (
        "not_an_ack",
        "delivery_id",
        silent_sms,
        silent["id"],
    )

    # replays — the webhook's and the RPC's — record nothing more and answer the same (the RPC's request
    # is remembered under its own id, as every write's is: shared.idempotency)
    before = snapshot(notices_db)
    assert post(notices_config, "voice", {**keypress, "from_phone": presses["phone"]}) == (200, pressed)
    assert bridge.record_inbound(**sms, in_reply_to=named[(replies["id"], "sms")]) == replied
    after = snapshot(notices_db)
    assert after.pop("idempotent_requests") == before.pop("idempotent_requests") + 1
    assert after == before

    report = officer.delivery_report(notice_id=notice["id"])
    assert {
        k: report[k]
        for k in ("targeted", "acknowledged", "acknowledged_by_sms", "acknowledged_by_keypress", "inbound_replies")
    } == {
        "targeted": 3,
        "acknowledged": 2,
        "acknowledged_by_sms": 1,
        "acknowledged_by_keypress": 1,
        "inbound_replies": 3,
    }
    assert metric(notices_config, "acknowledged") == 1.0
    assert metric(notices_config, "duplicate") == 1.0
    assert metric(notices_config, "not_an_ack", gateway="sms", kind="sms_reply") == 1.0

    followed_up = notices_events.next(
        "notice_unacknowledged", timeout=ACK_SECONDS + 30, where=lambda e: e["data"]["notice_id"] == notice["id"]
    )
    assert [r["resident_id"] for r in followed_up["data"]["residents"]] == [silent["id"]]
    assert "phone" not in json.dumps(followed_up)


def test_unmatched_unsigned_and_malformed_reports_change_nothing(
    people, officer, bridge, district, notices_config, notices_db
):
    notice = publish(officer, district)
    wait_until(lambda: all(message_ids(notices_db, notice["id"]).values()) and message_ids(notices_db, notice["id"]))
    before = snapshot(notices_db)
    event = {"kind": "sms_reply", "gateway_event_id": f"sms-{uuid.uuid4().hex}", "text": "1"}
    # unmatched: a number nobody was sent to, a message id no gateway gave
    with pytest.raises(NotFound):
        bridge.record_inbound(gateway="sms", **event, from_phone="13912345678")
    with pytest.raises(NotFound):
        bridge.record_inbound(gateway="sms", **event, in_reply_to="stub-sms-999999")
    # a message id that is one of our delivery ids (a gateway numbering its messages) is no delivery id
    delivery_id = message_ids(notices_db, notice["id"])[(people["replies"]["id"], "sms")].removeprefix("stub-sms-")
    with pytest.raises(NotFound):
        bridge.record_inbound(gateway="sms", **event, in_reply_to=delivery_id)
    status, answer = post(notices_config, "sms", {**event, "from_phone": "13912345678"})
    assert (status, answer["error"]) == (404, "notfound") and "13912345678" not in json.dumps(answer)
    # unsigned, badly signed, stale, unknown gateway, too large, not JSON, a bad field
    phone = people["replies"]["phone"]
    good = {**event, "from_phone": phone}
    assert post(notices_config, "sms", good, secret="another-secret-0123456789")[0] == 401
    assert post(notices_config, "sms", good, stamp=str(int(time.time()) - 600))[0] == 401
    assert post(notices_config, "fax", good)[0] == 404
    assert post(notices_config, "sms", good, raw=b'{"text": "' + b"1" * 17000 + b'"}')[0] == 413
    assert post(notices_config, "sms", good, raw=b"\x00{not json")[0] == 400
    status, answer = post(notices_config, "sms", {**good, "digits": "1"})
    assert (status, list(answer["fields"])) == (400, ["digits"])
    status, answer = post(notices_config, "sms", {**good, "from_phone": "+1 415 555 0100"})
    assert (status, list(answer["fields"])) == (400, ["from_phone"]) and "415" not in json.dumps(answer)
    assert snapshot(notices_db) == before
    assert metric(notices_config, "unmatched", gateway="sms", kind="sms_reply") == 4.0
    assert metric(notices_config, "unsigned", gateway="sms", kind="unknown") == 2.0


def test_record_inbound_checks_its_fields_together(people, bridge, notices_db):
    before = snapshot(notices_db)
    report = {
        "gateway": "sms",
        "kind": "sms_reply",
        "gateway_event_id": "e-1",
        "from_phone": "13800000021",
        "text": "1",
    }
    expect_invalid(bridge.record_inbound, "kind", **{**report, "kind": "keypress", "digits": "1", "text": None})
    expect_invalid(bridge.record_inbound, "text", **{**report, "text": None})
    expect_invalid(bridge.record_inbound, "from_phone", **{**report, "from_phone": None})
    expect_invalid(bridge.record_inbound, "from_phone", **{**report, "from_phone": "12345"})
    expect_invalid(bridge.record_inbound, "delivery_id", **{**report, "delivery_id": "stub-sms-1"})
    expect_invalid(
        bridge.record_inbound,
        "digits",
        **{**report, "gateway": "voice", "kind": "keypress", "text": None, "digits": "1x"},
    )
    expect_invalid(bridge.record_inbound, "gateway_event_id", **{**report, "gateway_event_id": "x" * 101})
    expect_invalid(bridge.record_inbound, "received_at", **{**report, "received_at": "2199-01-01T00:00:00Z"})
    assert snapshot(notices_db) == before
