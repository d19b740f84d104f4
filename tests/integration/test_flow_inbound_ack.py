"""Two-way acknowledgement across services, on a real broker and PostgreSQL with grid, notices and
volunteer running: a notice goes by voice call to two elderly residents living alone; one presses 1 and
the voice gateway reports it through the signed HTTP webhook; the other stays silent. When the ack
deadline passes, volunteer raises a door-knock for the silent neighbour's household — exactly once — and
none for hers. ``make demo``'s third scenario plays the same story against ``make run`` (tools/demo.py);
the last test here plays it against this suite."""

import datetime as dt
import json
import urllib.error
import urllib.request
import uuid

import pytest
from nameko.testing.services import entrypoint_waiter

from services.notices.webhook import signed_request
from tests.support import add_household, add_resident, token, wait_until

SECRETS = {"sms": "test-sms-inbound-secret-0123456789", "voice": "test-voice-inbound-secret-0123456789"}
ACK_SECONDS = 10  # the notice's ack deadline, from its creation: the keypress must come before it


@pytest.fixture
def notices_config(notices_config):
    return {**notices_config, "INBOUND_SECRETS": SECRETS}


# Small pools: other test runs share PostgreSQL's 100 connections.
SMALL = {"DB_POOL_SIZE": 3, "max_workers": 6}


@pytest.fixture
def grid_config(grid_config):
    return {**grid_config, **SMALL}


@pytest.fixture
def running(grid, notices, volunteer):
    return {"grid": grid, "notices": notices, "volunteer": volunteer}


@pytest.fixture
def elderly(running, admin, district, call_as):
    """Two elderly residents living alone in small grid a, each in a household of their own."""
    officer = call_as(token("officer", sub="officer", unit=district["street"]))
    homes = {
        who: add_household(admin, district["small_a"], room=room) for who, room in (("her", "301"), ("him", "302"))
    }
    people = {}
    for who, seq in (("her", 12), ("him", 11)):  # ID numbers: seq 12 a woman (even 17th digit), 11 a man
        # tests.support.add_resident registers phone 138 + the sequence (the reply shows it masked)
        people[who] = {"id": add_resident(admin, homes[who], seq)["id"], "phone": f"138{seq:08d}"}
        admin.tag_resident(resident_id=people[who]["id"], tag="elderly_alone")
    return {**district, "officer": officer, "homes": homes, "people": people}


def post_inbound(config, gateway, event, secret=None, stamp=None):
    """POST a gateway's report to the notices webhook, signed as docs/gateways.md says; (status, body)."""
    body = json.dumps(event).encode()
    secret = SECRETS[gateway] if secret is None else secret
    request = signed_request(f"http://{config['WEB_SERVER_ADDRESS']}/gateways/{gateway}/inbound", secret, body, stamp)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def door_knocks(officer, unit, notice_id=None):
    origin = f"unack:notice/{notice_id}:" if notice_id is not None else "unack:notice/"
    return [
        r
        for r in officer.volunteer.list_requests(under=unit, page_size=100)["items"]
        if (r["origin"] or "").startswith(origin)
    ]


def test_a_keypress_keeps_the_door_knock_away_and_the_silent_neighbour_gets_one_once(
    elderly, notices_config, receiver, notices_events, running
):
    officer, small_a = elderly["officer"], elderly["small_a"]
    her, him = elderly["people"]["her"], elderly["people"]["him"]
    notice = officer.notices.create_notice(
        title="Water cut",
        body="No water on Friday 9-12. Press 1 if you heard this.",
        category="community_activity",
        severity="moderate",
        urgency="expected",
        audience={"under": [small_a], "tags_any": ["elderly_alone"]},
        channels=["voice_call"],
        requires_ack=True,
        ack_deadline=(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ACK_SECONDS)).isoformat(),
    )
    officer.notices.approve_notice(notice_id=notice["id"])
    wait_until(lambda: len(receiver.accepted("/voice")) >= 2, message="the voice calls were not placed")

    keypress = {"kind": "keypress", "gateway_event_id": f"call-{uuid.uuid4().hex}", "digits": "1"}
    # a forged report (wrong secret) of his keypress is refused and changes nothing
    forged = {**keypress, "gateway_event_id": f"call-{uuid.uuid4().hex}", "from_phone": him["phone"]}
    status, _ = post_inbound(notices_config, "voice", forged, secret="not-the-gateway-secret-0123456789")
    assert status == 401
    # hers, signed, naming her number as the caller id shows it
    status, answer = post_inbound(notices_config, "voice", {**keypress, "from_phone": f"+86 {her['phone']}"})
    assert status == 200, answer
    assert (answer["outcome"], answer["matched_by"]) == ("acknowledged", "phone")
    assert (answer["notice_id"], answer["resident_id"]) == (notice["id"], her["id"])
    # the gateway retries the same report: the same answer, nothing more recorded
    status, again = post_inbound(notices_config, "voice", {**keypress, "from_phone": her["phone"]})
    assert (status, again["id"]) == (200, answer["id"])
    assert officer.notices.delivery_report(notice_id=notice["id"])["acknowledged"] == 1

    silent = notices_events.next(
        "notice_unacknowledged", timeout=ACK_SECONDS + 30, where=lambda e: e["data"]["notice_id"] == notice["id"]
    )
    assert [r["resident_id"] for r in silent["data"]["residents"]] == [him["id"]]
    knocks = wait_until(lambda: door_knocks(officer, small_a, notice["id"]), message="no door-knock raised")
    assert [(k["kind"], k["household_id"]) for k in knocks] == [("check_in", elderly["homes"]["him"])]
    # the event again (a redelivery, a producer's retry): still one knock
    with entrypoint_waiter(running["volunteer"], "on_notice_unacknowledged") as duplicate:
        notices_events.republish(silent)
    assert duplicate.get() == "duplicate"
    with entrypoint_waiter(running["volunteer"], "on_notice_unacknowledged") as copy:
        notices_events.republish(silent, id=str(uuid.uuid4()))
    assert copy.get() == []
    assert [k["id"] for k in door_knocks(officer, small_a, notice["id"])] == [knocks[0]["id"]]


def test_make_demo_plays_the_keypress_scenario(elderly, notices_config, monkeypatch, capsys):
    """tools/demo.py's scenario 3 against this suite: it picks the grid, calls, presses 1 through the
    signed webhook and checks the door-knocks itself (it raises Failed otherwise)."""
    from tools import demo

    monkeypatch.setenv(demo.VOICE_SECRET_ENV, SECRETS["voice"])
    player = demo.Demo(
        notices_config["AMQP_URI"],
        timeout=30,
        notices_url=f"http://{notices_config['WEB_SERVER_ADDRESS']}",
        ack_seconds=ACK_SECONDS,
    )
    try:
        player.keypress({"id": elderly["district"]})
    finally:
        player.close()
    out = capsys.readouterr().out
    assert "signed webhook" in out and "no door-knock for" in out
    knocks = door_knocks(elderly["officer"], elderly["small_a"])
    assert {k["household_id"] for k in knocks} == {elderly["homes"]["him"]}
