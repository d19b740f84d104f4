"""The notices service on a real broker and PostgreSQL, with a real local HTTP receiver
standing in for the SMS and voice gateways, the push endpoint and chat-group robots."""

import datetime as dt

import pytest
from nameko.exceptions import RemoteError

from shared.errors import Conflict, Forbidden, ValidationError
from tests.support import add_household, add_resident, token, wait_until

NOW = dt.datetime.now(dt.UTC)


def iso(delta_seconds):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_seconds)).isoformat()


@pytest.fixture
def town(admin, district, notices, call_as, receiver):
    """Five residents: three in small grid a, two in b, with tags."""
    people = {}
    home_a = add_household(admin, district["small_a"], room="101")
    home_a2 = add_household(admin, district["small_a"], room="102")
    home_b = add_household(admin, district["small_b"], room="201")
    for name, home, seq, tags in (
        ("r1", home_a, 1, ["elderly_alone"]),
        ("r2", home_a, 2, []),
        ("r3", home_a2, 3, ["chronic_illness", "elderly_alone"]),
        ("r4", home_b, 4, ["elderly_alone"]),
        ("r5", home_b, 5, ["quarantined"]),
    ):
        people[name] = add_resident(admin, home, seq)["id"]
        for tag in tags:
            admin.tag_resident(resident_id=people[name], tag=tag)
    settle_quarantine_instructions(call_as, district, receiver)
    return {
        **district,
        **people,
        "phones": {name: f"138{seq:08d}" for name, seq in (("r1", 1), ("r2", 2), ("r3", 3), ("r4", 4), ("r5", 5))},
    }


def settle_quarantine_instructions(call_as, district, receiver):
    """Tagging r5 quarantined sends their household instructions (a cross-service flow); let that
    message go out, then start each test with an empty receiver."""
    reader = call_as(token("admin", sub="fixture")).notices
    message = wait_until(
        lambda: (reader.list_notices(under=district["small_b"], kind="direct")["items"] or [None])[0],
        message="no quarantine instructions",
    )
    wait_until(
        lambda: (lambda r: r["sent"] + r["failed"] == r["targeted"] > 0)(
            reader.delivery_report(notice_id=message["id"])
        ),
        message="quarantine instructions not sent",
    )
    # The report counts a resident sent once any channel was (push first, say): wait for every post —
    # an instruction SMS arriving after the reset would be counted as one of the test's own.
    instructions = message["title"]
    wait_until(
        lambda: (
            [len([b for b in receiver.accepted(path) if b["title"] == instructions]) for path in ("/sms", "/push")]
            == [2, 2]
        ),
        message="quarantine instructions not posted on both channels",
    )
    receiver.reset()


@pytest.fixture
def officers(notices, call_as, town):
    return (
        call_as(token("officer", sub="officer-1", unit=town["street"])).notices,
        call_as(token("officer", sub="officer-2", unit=town["street"])).notices,
    )


def notice_args(town, **overrides):
    args = {
        "title": "Mask rule",
        "body": "Wear masks in shared spaces.",
        "category": "epidemic_prevention",
        "severity": "moderate",
        "urgency": "expected",
        "audience": {"under": [town["street"]]},
        "channels": ["sms"],
    }
    args.update(overrides)
    return args


def published(service, notice_id):
    return wait_until(
        lambda: service.get_notice(notice_id=notice_id)["status"] == "published", message="notice was not published"
    )


def test_audience_is_exactly_the_tagged_residents_under_the_units(officers, town, receiver):
    author, _approver = officers
    draft = author.create_notice(
        **notice_args(town, audience={"under": [town["community_a"]], "tags_any": ["elderly_alone"]})
    )
    assert draft["status"] == "draft"
    author.approve_notice(notice_id=draft["id"])
    published(author, draft["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 2, message="sms not sent")
    assert sorted(body["to"] for body in receiver.accepted("/sms")) == [town["phones"]["r1"], town["phones"]["r3"]]
    report = author.delivery_report(notice_id=draft["id"])
    assert (report["targeted"], report["sent"], report["failed"]) == (2, 2, 0)
    assert author.get_notice(notice_id=draft["id"])["recipient_count"] == 2


def test_overlapping_audience_units_reach_each_resident_once(officers, town, receiver):
    author, _ = officers
    notice = author.create_notice(
        **notice_args(town, audience={"under": [town["street"], town["community_a"], town["small_b"]]})
    )
    author.approve_notice(notice_id=notice["id"])
    published(author, notice["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 5)
    assert len({body["to"] for body in receiver.accepted("/sms")}) == 5


def test_severe_notices_need_a_second_person(officers, town):
    author, approver = officers
    severe = author.create_notice(**notice_args(town, severity="severe", urgency="immediate"))
    with pytest.raises(Forbidden):
        author.approve_notice(notice_id=severe["id"])
    assert approver.approve_notice(notice_id=severe["id"])["approved_by"] == "officer-2"
    with pytest.raises(Conflict):
        approver.approve_notice(notice_id=severe["id"])


def test_publish_at_holds_a_notice_until_its_time(officers, town, receiver):
    author, _ = officers
    notice = author.create_notice(**notice_args(town, publish_at=iso(1.5)))
    assert author.approve_notice(notice_id=notice["id"])["status"] == "approved"
    assert author.get_notice(notice_id=notice["id"])["status"] == "approved"
    published(author, notice["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 5)


def test_cancel_stops_pending_deliveries_and_reaches_those_already_reached(officers, town, receiver, call_as):
    author, _ = officers
    # r2 is in quiet hours all day: its moderate SMS waits, so it is still pending when the cancel comes.
    now_local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    start = (now_local - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now_local + dt.timedelta(hours=2)).strftime("%H:%M")
    author.set_preferences(resident_id=town["r2"], channels=["sms"], quiet_hours={"start": start, "end": end})
    original = author.create_notice(**notice_args(town))
    author.approve_notice(notice_id=original["id"])
    published(author, original["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 4)
    cancel = author.create_notice(
        **notice_args(
            town, title="Cancelled: mask rule", body="Rule withdrawn.", msg_type="cancel", references=original["id"]
        )
    )
    author.approve_notice(notice_id=cancel["id"])
    published(author, cancel["id"])
    assert author.get_notice(notice_id=original["id"])["status"] == "cancelled"
    wait_until(lambda: len(receiver.accepted("/sms")) == 8)
    cancel_bodies = [b for b in receiver.accepted("/sms") if b["title"].startswith("Cancelled")]
    assert sorted(b["to"] for b in cancel_bodies) == sorted(town["phones"][r] for r in ("r1", "r3", "r4", "r5"))
    report = author.delivery_report(notice_id=original["id"])
    assert (report["targeted"], report["sent"], report["failed"]) == (5, 4, 1)


def test_update_references_an_earlier_notice(officers, town, receiver):
    author, _ = officers
    original = author.create_notice(**notice_args(town))
    author.approve_notice(notice_id=original["id"])
    published(author, original["id"])
    update = author.create_notice(
        **notice_args(
            town, title="Update", msg_type="update", references=original["id"], audience={"under": [town["small_b"]]}
        )
    )
    assert update["references"] == original["id"]
    author.approve_notice(notice_id=update["id"])
    published(author, update["id"])
    wait_until(lambda: len([b for b in receiver.accepted("/sms") if b["title"] == "Update"]) == 2)
    with pytest.raises(ValidationError) as err:
        author.create_notice(**notice_args(town, msg_type="update"))
    assert "references" in err.value.fields


def test_retries_while_the_gateway_fails_then_falls_back_to_a_voice_call(officers, town, receiver):
    author, _ = officers
    receiver.fail("/sms", 503, times=2, when=lambda body: body["to"] == town["phones"]["r2"])
    receiver.fail("/sms", 400, when=lambda body: body["to"] == town["phones"]["r1"])  # r1 lives alone
    receiver.fail("/sms", 400, when=lambda body: body["to"] == town["phones"]["r5"])  # r5 does not
    notice = author.create_notice(**notice_args(town))
    author.approve_notice(notice_id=notice["id"])
    published(author, notice["id"])
    wait_until(lambda: len(receiver.accepted("/voice")) == 1, message="no voice fallback")
    assert receiver.accepted("/voice")[0]["to"] == town["phones"]["r1"]
    wait_until(lambda: town["phones"]["r2"] in [b["to"] for b in receiver.accepted("/sms")], message="no retry")
    r2_tries = [
        status for path, body, status in receiver.requests if path == "/sms" and body["to"] == town["phones"]["r2"]
    ]
    assert r2_tries == [503, 503, 200]
    report = wait_until(lambda: (r := author.delivery_report(notice_id=notice["id"]))["sent"] == 4 and r)
    assert (report["targeted"], report["sent"], report["failed"]) == (5, 4, 1)  # r5: failed, no fallback


def test_quiet_hours_hold_moderate_notices_and_not_severe_ones(officers, town, receiver):
    author, approver = officers
    now_local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    quiet = {
        "start": (now_local - dt.timedelta(minutes=30)).strftime("%H:%M"),
        "end": (now_local + dt.timedelta(hours=1)).strftime("%H:%M"),
    }
    author.set_preferences(resident_id=town["r4"], channels=["sms"], quiet_hours=quiet)
    moderate = author.create_notice(**notice_args(town, audience={"under": [town["small_b"]]}))
    author.approve_notice(notice_id=moderate["id"])
    published(author, moderate["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 1)
    assert receiver.accepted("/sms")[0]["to"] == town["phones"]["r5"]
    severe = author.create_notice(
        **notice_args(
            town, title="Evacuate", severity="extreme", urgency="immediate", audience={"under": [town["small_b"]]}
        )
    )
    approver.approve_notice(notice_id=severe["id"])
    wait_until(lambda: len([b for b in receiver.accepted("/sms") if b["title"] == "Evacuate"]) == 2)
    assert len([b for b in receiver.accepted("/sms") if b["title"] == "Mask rule"]) == 1


def test_preferences_choose_the_channels(officers, town, receiver, call_as):
    author, _ = officers
    me = call_as(token("resident", sub=town["r5"], unit=town["small_b"])).notices
    me.set_preferences(resident_id=town["r5"], channels=["app_push"])
    with pytest.raises(Forbidden):
        me.set_preferences(resident_id=town["r4"], channels=["app_push"])
    notice = author.create_notice(
        **notice_args(town, audience={"under": [town["small_b"]]}, channels=["sms", "app_push"])
    )
    author.approve_notice(notice_id=notice["id"])
    # r5 chose app push only; r4 chose nothing, so gets every channel of the notice
    wait_until(lambda: len(receiver.accepted("/push")) == 2 and len(receiver.accepted("/sms")) >= 1)
    assert sorted(b["to"] for b in receiver.accepted("/push")) == sorted([town["r4"], town["r5"]])
    assert [b["to"] for b in receiver.accepted("/sms")] == [town["phones"]["r4"]]


def test_acknowledgements_report_and_unacknowledged_vulnerable_residents(officers, town, call_as, notices_events):
    author, _ = officers
    notice = author.create_notice(**notice_args(town, requires_ack=True, ack_deadline=iso(3)))
    author.approve_notice(notice_id=notice["id"])
    published(author, notice["id"])
    assert notices_events.next("notice_published")["data"]["recipient_count"] == 5
    resident = call_as(token("resident", sub=town["r1"], unit=town["small_a"])).notices
    resident.acknowledge(notice_id=notice["id"], resident_id=town["r1"])
    resident.acknowledge(notice_id=notice["id"], resident_id=town["r1"])  # idempotent
    author.acknowledge(notice_id=notice["id"], resident_id=town["r2"])
    with pytest.raises(Forbidden):
        resident.acknowledge(notice_id=notice["id"], resident_id=town["r3"])
    report = author.delivery_report(notice_id=notice["id"], level="community")
    by_unit = {row["unit_id"]: row for row in report["units"]}
    assert by_unit[town["community_a"]]["targeted"] == 3 and by_unit[town["community_a"]]["acknowledged"] == 2
    assert by_unit[town["community_b"]]["acknowledged"] == 0 and report["acknowledged"] == 2
    event = notices_events.next("notice_unacknowledged")
    listed = {r["resident_id"] for r in event["data"]["residents"]}
    assert listed == {town["r3"], town["r4"], town["r5"]}  # vulnerable and silent; r2 is not vulnerable
    assert set(event["data"]["residents"][0]) == {"resident_id", "household_id", "unit_id"}  # ids only


def test_chat_group_robots_get_one_message_per_small_grid(officers, town, receiver):
    author, approver = officers
    author.register_chat_group(unit_id=town["small_a"], name="Grid A group", webhook_url=receiver.url("/robot/a"))
    author.register_chat_group(unit_id=town["small_b"], name="Grid B group", webhook_url=receiver.url("/robot/b"))
    with pytest.raises(ValidationError):
        author.register_chat_group(unit_id=town["community_a"], name="x", webhook_url=receiver.url("/robot/x"))
    moderate = author.create_notice(**notice_args(town, channels=["chat_group"]))
    author.approve_notice(notice_id=moderate["id"])
    wait_until(lambda: receiver.accepted("/robot/a") and receiver.accepted("/robot/b"))
    assert receiver.accepted("/robot/a")[0]["msgtype"] == "markdown"
    severe = author.create_notice(
        **notice_args(
            town, title="Storm", severity="severe", channels=["chat_group"], audience={"under": [town["small_b"]]}
        )
    )
    approver.approve_notice(notice_id=severe["id"])
    wait_until(lambda: len(receiver.accepted("/robot/b")) == 2)
    text = receiver.accepted("/robot/b")[1]
    assert text["msgtype"] == "text" and text["text"]["mentioned_list"] == ["@all"]
    assert len(receiver.accepted("/robot/a")) == 1
    assert author.delivery_report(notice_id=severe["id"])["chat_groups"]["sent"] == 1


def test_gateway_reports_delivery_and_failure(officers, town, receiver, call_as):
    author, _ = officers
    gateway = call_as(token("service", sub="service:sms-gateway")).notices
    notice = author.create_notice(**notice_args(town, audience={"under": [town["small_a"]]}))
    author.approve_notice(notice_id=notice["id"])
    wait_until(lambda: len(receiver.accepted("/sms")) == 3)
    by_phone = {b["to"]: b["delivery_id"] for b in receiver.accepted("/sms")}
    assert (
        gateway.record_delivery_status(delivery_id=by_phone[town["phones"]["r2"]], status="delivered")["status"]
        == "delivered"
    )
    gateway.record_delivery_status(delivery_id=by_phone[town["phones"]["r1"]], status="failed", detail="unreachable")
    wait_until(lambda: len(receiver.accepted("/voice")) == 1)  # r1 lives alone: voice fallback
    with pytest.raises(Conflict):
        gateway.record_delivery_status(delivery_id=by_phone[town["phones"]["r2"]], status="sent")
    with pytest.raises(Forbidden):
        author.record_delivery_status(delivery_id=by_phone[town["phones"]["r3"]], status="delivered")
    report = author.delivery_report(notice_id=notice["id"])
    assert report["delivered"] == 1


def test_send_direct_tracks_its_deliveries(notices, call_as, town, receiver):
    legal = call_as(token("service", sub="service:legal")).notices
    sent = legal.send_direct(
        resident_ids=[town["r1"], town["r4"]],
        template="consultation_reminder",
        params={"station": "Sunny Station", "starts_at": "2026-12-01 09:00"},
    )
    assert sent["recipients"] == 2
    wait_until(lambda: len(receiver.accepted("/sms")) == 2)
    assert "Sunny Station" in receiver.accepted("/sms")[0]["text"]
    report = legal.delivery_report(notice_id=sent["message_id"])
    assert report["sent"] == 2
    with pytest.raises(ValidationError) as err:
        legal.send_direct(resident_ids=[town["r1"]], template="consultation_reminder", params={"station": "x"})
    assert "params" in err.value.fields
    with pytest.raises(ValidationError) as err:
        legal.send_direct(resident_ids=["99999999"], template="check_in", params={"when": "today"})
    assert "resident_ids" in err.value.fields
    officer = call_as(token("officer", unit=town["street"])).notices
    with pytest.raises(Forbidden):
        officer.send_direct(resident_ids=[town["r1"]], template="check_in", params={"when": "today"})


def test_expired_notice_stops_delivering(officers, town, receiver):
    author, _ = officers
    # Everyone is in quiet hours, so the moderate notice waits — and expires first.
    now_local = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    quiet = {
        "start": (now_local - dt.timedelta(minutes=5)).strftime("%H:%M"),
        "end": (now_local + dt.timedelta(hours=1)).strftime("%H:%M"),
    }
    for resident in ("r1", "r2", "r3", "r4", "r5"):
        author.set_preferences(resident_id=town[resident], channels=["sms"], quiet_hours=quiet)
    notice = author.create_notice(**notice_args(town, expires_at=iso(2)))
    author.approve_notice(notice_id=notice["id"])
    wait_until(lambda: author.get_notice(notice_id=notice["id"])["status"] == "expired", timeout=20)
    report = author.delivery_report(notice_id=notice["id"])
    assert report["failed"] == 5 and report["sent"] == 0
    assert receiver.accepted("/sms") == []


def test_officer_may_target_only_inside_their_subtree(notices, call_as, town):
    officer_a = call_as(token("officer", sub="oa", unit=town["community_a"])).notices
    with pytest.raises(Forbidden):
        officer_a.create_notice(**notice_args(town, audience={"under": [town["community_b"]]}))
    with pytest.raises(Forbidden):
        officer_a.create_notice(**notice_args(town, audience={"under": [town["small_a"], town["street"]]}))
    mine = officer_a.create_notice(**notice_args(town, audience={"under": [town["small_a"]]}))
    officer_b = call_as(token("officer", sub="ob", unit=town["community_b"])).notices
    with pytest.raises(Forbidden):
        officer_b.approve_notice(notice_id=mine["id"])
    with pytest.raises(Forbidden):
        officer_b.get_notice(notice_id=mine["id"])
    assert [n["id"] for n in officer_a.list_notices()["items"]] == [mine["id"]]
    assert officer_b.list_notices()["items"] == []
    with pytest.raises(RemoteError) as err:
        officer_a.create_notice(**notice_args(town, audience={"under": ["99999999"]}))
    assert err.value.exc_type == "ValidationError"
