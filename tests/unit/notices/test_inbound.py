"""Gateways' inbound reports (services.notices.inbound; schemas.RecordInbound): what text acknowledges
(pure, with generated width/case/space variants), phone numbers' canonical form, then on SQLite —
matching by message id, delivery id and phone in that order, once per gateway event id, refusals that
change nothing and log no phone — and the gateways' message ids stored by the dispatcher, the phones'
blind index stored with recipients of notices that require an acknowledgement."""

import datetime as dt
import logging

import pytest
from hypothesis import given, strategies as st
from sqlalchemy import func, select, update

from services.notices import acks, inbound, publishing
from services.notices.channels import (
    SENT,
    HttpGateway,
    Outcome,
    RateLimiter,
    Reply,
    StubChannel,
    gateway_message_id,
    stub_message_id,
)
from services.notices.delivery import RetryPolicy, dispatch_due
from services.notices.inbound import is_ack_digits, is_ack_text, normalise_reply, phone_hash
from services.notices.models import Acknowledgement, Delivery, InboundMessage, Notice, Recipient
from services.notices.phones import canonical_phone
from services.notices.schemas import RecordInbound
from services.notices.service import commit_steps
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from shared.validation import load
from tests.unit.local import VAULT, caller, events, unit_of_work
from tests.unit.notices.conftest import PATH_B, PHONES, SMALL_A, SMALL_B, add_delivery, add_notice

GATEWAY = caller("service", sub="gateway-bridge")
ACK_WORDS = ("1", "收到", "确认")

# ---- what acknowledges (pure) ----------------------------------------------------------------------

FULL_WIDTH = {"1": "\uff11"}  # FULLWIDTH DIGIT ONE
SPACES = st.sampled_from([" ", "\u3000", "\t", "\n", "\u00a0", "\u200b"])  # ideographic, no-break, zero-width
MARKS = st.sampled_from(["。", "\uff01", "!", ".", "\uff0c", ",", "~", "…", "、", "?", "👍", "❤"])  # full-width ! and ,


@st.composite
def ack_variants(draw):
    """An acknowledging word as phones send it: full-width or not, padded with spaces and punctuation."""
    word = draw(st.sampled_from(ACK_WORDS))
    if draw(st.booleans()):
        word = "".join(FULL_WIDTH.get(ch, ch) for ch in word)
    before = draw(st.lists(st.one_of(SPACES, MARKS), max_size=3))
    after = draw(st.lists(st.one_of(SPACES, MARKS), max_size=3))
    return "".join(before) + word + "".join(after)


@given(ack_variants())
def test_every_width_space_and_punctuation_variant_of_an_ack_word_acknowledges(text):
    assert is_ack_text(text)
    assert inbound.acknowledges("sms_reply", text=text)


@given(st.sampled_from(ACK_WORDS), st.characters(categories=["Lu", "Ll", "Lo", "Nd"]))
def test_an_ack_word_with_anything_more_does_not(word, extra):
    if not normalise_reply(extra):
        return  # a character NFKC makes nothing of adds nothing
    assert not is_ack_text(word + extra)
    assert not is_ack_text(extra + word)


@pytest.mark.parametrize(
    "text", ["OK", "ok", "Yes", "好", "2", "11", "0", "收", "不确认", "1 2", "\uff11\uff11", "", "   "]
)
def test_other_replies_do_not_acknowledge(text):
    assert not is_ack_text(text)


def test_traditional_script_confirmation_and_case_folding():
    assert is_ack_text("確認")
    assert normalise_reply("\uff21\uff22 c") == "abc"  # full-width A, B


@pytest.mark.parametrize(("digits", "acks"), [("1", True), ("2", False), ("11", False), ("#", False), ("1#", False)])
def test_only_a_keypress_of_1_acknowledges(digits, acks):
    assert is_ack_digits(digits) is acks
    assert inbound.acknowledges("keypress", digits=digits) is acks


@pytest.mark.parametrize(
    ("given_phone", "canonical"),
    [
        ("13800000100", "13800000100"),
        ("+86 138-0000-0100", "13800000100"),
        ("008613800000100", "13800000100"),
        ("8613800000100", "13800000100"),
        ("(138) 0000.0100", "13800000100"),
        ("\uff11\uff13\uff18\uff10\uff10\uff10\uff1001\uff10\uff10", "13800000100"),  # full width
        ("12345", None),
        ("23800000100", None),
        ("+1 415 555 0100", None),
        ("1" * 40, None),
    ],
)
def test_a_reported_number_has_one_canonical_form(given_phone, canonical):
    assert canonical_phone(given_phone) == canonical


def test_the_same_number_written_differently_has_one_blind_index():
    assert (
        phone_hash(VAULT, "+86 138 0000 0100") == phone_hash(VAULT, "13800000100") != phone_hash(VAULT, "13800000101")
    )


# ---- the report's fields ---------------------------------------------------------------------------


def fields_of(**overrides):
    return {
        "gateway": "sms",
        "kind": "sms_reply",
        "gateway_event_id": "e-1",
        "from_phone": "13800000100",
        "text": "1",
    } | overrides


def refused(**overrides):
    with pytest.raises(ValidationError) as error:
        load(RecordInbound(), {k: v for k, v in fields_of(**overrides).items() if v is not ...})
    return error.value.fields


def test_a_report_names_its_kind_from_its_gateway_and_text_or_digits_to_match():
    assert set(refused(kind="keypress", digits="1", text=...)) == {"kind"}
    assert set(refused(text=...)) == {"text"}
    assert set(refused(digits="1")) == {"digits"}
    assert set(refused(gateway="voice", kind="keypress", text="1")) == {"digits", "text"}
    assert set(refused(from_phone=...)) == {"from_phone"}
    assert set(refused(delivery_id="abc")) == {"delivery_id"}
    assert load(RecordInbound(), fields_of(from_phone=None, delivery_id="48213"))["delivery_id"] == 48213
    assert set(refused(gateway="email")) == {"gateway"}
    assert set(refused(gateway="voice", kind="keypress", text=..., digits="1a")) == {"digits"}
    assert set(refused(gateway_event_id="x" * 101)) == {"gateway_event_id"}
    assert set(refused(received_at=(utcnow() + dt.timedelta(hours=1)).isoformat())) == {"received_at"}
    loaded = load(RecordInbound(), fields_of(from_phone="+86 138 0000 0100"))
    assert loaded["from_phone"] == "13800000100"


def test_a_refused_phone_is_not_repeated_in_the_error():
    problems = refused(from_phone="+1 415 555 0199")
    assert "415" not in str(problems)


# ---- matching and recording (SQLite) -----------------------------------------------------------------


def sent_to(db, notice_id, resident_id, channel="sms", phone=None, message_id=None, path=None):
    """A sent delivery of ``notice_id`` to ``resident_id`` on ``channel``, its recipient's phone indexed."""
    extra = {"path": path} if path else {}
    delivery_id = add_delivery(
        db, notice_id, resident_id=resident_id, channel=channel, status="sent", gateway_message_id=message_id, **extra
    )
    with unit_of_work(db) as uow:
        recipient_id = uow.session.get(Delivery, delivery_id).recipient_id
        phone = phone or PHONES[str(resident_id)]
        uow.session.execute(
            update(Recipient).where(Recipient.id == recipient_id).values(address_hash=phone_hash(VAULT, phone))
        )
        uow.commit()
    return delivery_id


def ack_notice(db, **overrides):
    deadline = utcnow() + dt.timedelta(hours=1)
    return add_notice(
        db, **{"requires_ack": True, "ack_deadline": deadline, "channels": ["sms", "voice_call"]} | overrides
    )


def report(db, who=GATEWAY, **overrides):
    """Record one report (its fields as loaded by the schema); (the reply's row as a dict, replayed)."""
    args = load(RecordInbound(), fields_of(**overrides))
    with unit_of_work(db) as uow:
        message, replayed = inbound.record_inbound(uow, who, VAULT, **args)
        uow.commit()
        return {
            c: getattr(message, c) for c in ("id", "outcome", "matched_by", "notice_id", "delivery_id", "resident_id")
        }, replayed


def stored(db):
    with unit_of_work(db) as uow:
        return (
            uow.session.scalar(select(func.count()).select_from(InboundMessage)),
            sorted(uow.session.execute(select(Acknowledgement.notice_id, Acknowledgement.resident_id)).all()),
        )


def test_a_reply_by_phone_acknowledges_the_latest_open_notice_requiring_one(db):
    older = ack_notice(db, published_at=utcnow() - dt.timedelta(hours=2))
    latest = ack_notice(db)
    no_ack = add_notice(db, channels=["sms"])  # newer still, but asks no acknowledgement
    cancelled = ack_notice(db, status="cancelled", published_at=utcnow() + dt.timedelta(seconds=1))
    expired = ack_notice(db, status="expired", published_at=utcnow() + dt.timedelta(seconds=1))
    for notice_id in (older, latest, no_ack, cancelled, expired):
        sent_to(db, notice_id, 100)
    reply, replayed = report(db, text="  收到\uff01")
    assert (reply["outcome"], reply["matched_by"], reply["notice_id"], reply["resident_id"]) == (
        "acknowledged",
        "phone",
        latest,
        100,
    )
    assert not replayed
    assert stored(db) == (1, [(latest, 100)])


def test_a_reply_by_phone_answers_the_latest_notice_the_resident_has_not_acknowledged(db):
    older = ack_notice(db, published_at=utcnow() - dt.timedelta(hours=2))
    latest = ack_notice(db)
    for notice_id in (older, latest):
        sent_to(db, notice_id, 100)
    with unit_of_work(db) as uow:  # acknowledged in the app already
        uow.session.add(Acknowledgement(notice_id=latest, resident_id=100, acknowledged_at=utcnow()))
        uow.commit()
    reply, _ = report(db, gateway_event_id="a")
    assert (reply["notice_id"], reply["outcome"]) == (older, "acknowledged")
    # Both acknowledged: the latest, recorded as a reply (nothing more to acknowledge).
    again, _ = report(db, gateway_event_id="b")
    assert (again["notice_id"], again["resident_id"]) == (latest, 100)
    assert stored(db) == (2, [(older, 100), (latest, 100)])


def test_a_shared_phone_stays_ambiguous_on_the_notice_it_would_answer(db):
    older = ack_notice(db, published_at=utcnow() - dt.timedelta(hours=2))
    latest = ack_notice(db)
    sent_to(db, older, 100)
    for resident_id in (100, 101):
        sent_to(db, latest, resident_id, phone=PHONES["100"])  # one household phone
    with unit_of_work(db) as uow:  # one of the two acknowledged: the other one may be who replies
        uow.session.add(Acknowledgement(notice_id=latest, resident_id=100, acknowledged_at=utcnow()))
        uow.commit()
    with pytest.raises(Conflict, match="2 recipients"):
        report(db)
    assert stored(db) == (0, [(latest, 100)])


def test_a_phone_matches_only_deliveries_on_its_gateways_channel(db):
    notice_id = ack_notice(db)
    sent_to(db, notice_id, 100, channel="sms")
    with pytest.raises(NotFound):
        report(db, gateway="voice", kind="keypress", text=None, digits="1")
    assert stored(db) == (0, [])
    voice = sent_to(db, ack_notice(db), 100, channel="voice_call")
    reply, _ = report(db, gateway="voice", kind="keypress", text=None, digits="1")
    assert reply["delivery_id"] == voice


def test_a_message_id_and_a_delivery_id_are_two_id_spaces_never_mixed(db):
    notice_id = ack_notice(db)
    plain = sent_to(db, notice_id, 101)
    # A delivery whose gateway message id happens to be the other one's delivery id: in_reply_to names it.
    named = sent_to(db, notice_id, 100, message_id=str(plain))
    by_message, _ = report(db, gateway_event_id="e-1", in_reply_to=str(plain), from_phone=None)
    assert (by_message["delivery_id"], by_message["matched_by"], by_message["resident_id"]) == (
        named,
        "gateway_message_id",
        100,
    )
    other = sent_to(db, notice_id, 102, path=PATH_B)
    by_id, _ = report(db, gateway_event_id="e-2", delivery_id=str(other), from_phone=None, text="ok")
    assert (by_id["delivery_id"], by_id["matched_by"], by_id["outcome"]) == (other, "delivery_id", "not_an_ack")
    # The reply names the message even when a phone comes with it (and the phone would name another).
    third, _ = report(db, gateway_event_id="e-3", in_reply_to=str(plain), from_phone=PHONES["101"])
    assert third["delivery_id"] == named
    # Both named: our delivery id is the one matched.
    both, _ = report(db, gateway_event_id="e-4", delivery_id=plain, in_reply_to=str(plain), from_phone=None)
    assert (both["delivery_id"], both["matched_by"], both["resident_id"]) == (plain, "delivery_id", 101)
    assert stored(db)[1] == [(notice_id, 100), (notice_id, 101)]


def test_a_numeric_message_id_is_never_taken_for_our_delivery_id(db):
    """A gateway numbering its messages: resident 100's SMS (its id not kept here: the gateway's status
    report came first) has the number of resident 101's delivery. Nothing is matched — acknowledging 101
    would spare them their door-knock."""
    notice_id = ack_notice(db)
    sent_to(db, notice_id, 100)  # gateway_message_id None
    theirs = sent_to(db, notice_id, 101)
    with pytest.raises(NotFound):
        report(db, in_reply_to=str(theirs), from_phone=None)
    with pytest.raises(NotFound):  # in_reply_to names only message ids, even with a phone that would match
        report(db, in_reply_to=str(theirs))
    assert stored(db) == (0, [])


def test_a_delivery_id_of_another_channel_matches_nothing(db):
    voice = sent_to(db, ack_notice(db), 100, channel="voice_call")
    with pytest.raises(NotFound):
        report(db, delivery_id=str(voice), from_phone=None)
    with pytest.raises(NotFound):
        report(db, delivery_id="999999", from_phone=None)
    with pytest.raises(NotFound):
        report(db, in_reply_to="stub-sms-999", from_phone=None)
    assert stored(db) == (0, [])


def test_the_same_gateway_event_is_recorded_once_and_answered_the_same(db):
    notice_id = ack_notice(db)
    sent_to(db, notice_id, 100)
    first, replayed_first = report(db, text="1")
    again, replayed = report(db, text="something else entirely")  # a replay is the first report, whatever it says
    assert again == first and replayed and not replayed_first
    assert stored(db) == (1, [(notice_id, 100)])
    sent_to(db, ack_notice(db), 100, channel="voice_call")
    other_gateway, _ = report(db, gateway="voice", kind="keypress", text=None, digits="2", in_reply_to=None)
    assert other_gateway["id"] != first["id"]  # event ids are the gateway's own: another gateway's is another event


def test_a_non_ack_reply_is_recorded_and_counted_without_acknowledging(db, grid):
    notice_id = ack_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    sent_to(db, notice_id, 100)
    sent_to(db, notice_id, 101, channel="voice_call")
    sent_to(db, notice_id, 102, path=PATH_B)
    assert report(db, gateway_event_id="a", text="谢谢")[0]["outcome"] == "not_an_ack"
    assert report(db, gateway_event_id="b", from_phone=PHONES["102"], text="确认。")[0]["outcome"] == "acknowledged"
    assert (
        report(
            db, gateway="voice", kind="keypress", gateway_event_id="c", from_phone=PHONES["101"], text=None, digits="1"
        )[0]["outcome"]
        == "acknowledged"
    )
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        seen = acks.delivery_report(uow.session, caller("admin"), grid, notice, None)
        scoped = acks.delivery_report(uow.session, caller("officer", unit=5), grid, notice, None)
    assert (
        seen["acknowledged"],
        seen["acknowledged_by_sms"],
        seen["acknowledged_by_keypress"],
        seen["inbound_replies"],
    ) == (
        2,
        1,
        1,
        3,
    )
    assert (scoped["acknowledged_by_sms"], scoped["acknowledged_by_keypress"], scoped["inbound_replies"]) == (1, 0, 1)


def test_no_door_knock_for_whoever_pressed_1_before_the_deadline(db):
    notice_id = ack_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    sent_to(db, notice_id, 100, channel="voice_call")  # elderly_alone in the fixture's grid
    for resident_id, path in ((101, None), (102, PATH_B)):
        sent_to(db, notice_id, resident_id, channel="voice_call", path=path)
    with unit_of_work(db) as uow:
        uow.session.execute(update(Recipient).values(vulnerable=True, vulnerable_tags=["elderly_alone"]))
        uow.commit()
    report(db, gateway="voice", kind="keypress", text=None, digits="1")  # resident 100's phone
    with unit_of_work(db) as uow:
        acks.report_unacknowledged(uow, uow.session.get(Notice, notice_id))
        uow.commit()
    [(_type, _subject, data)] = events(db, "notice_unacknowledged")
    assert [r["resident_id"] for r in data["residents"]] == ["101", "102"]


def test_a_late_acknowledgement_is_still_recorded(db):
    notice_id = ack_notice(db, ack_deadline=utcnow() - dt.timedelta(minutes=1))
    sent_to(db, notice_id, 100)
    assert report(db)[0]["outcome"] == "acknowledged"
    assert stored(db) == (1, [(notice_id, 100)])


def test_a_phone_shared_by_two_recipients_of_the_notice_is_refused_as_ambiguous(db):
    notice_id = ack_notice(db)
    sent_to(db, notice_id, 100)
    sent_to(db, notice_id, 101, phone=PHONES["100"])  # one household phone
    with pytest.raises(Conflict, match="2 recipients") as error:
        report(db)
    assert error.value.reason == "ambiguous"
    assert stored(db) == (0, [])


def test_a_cancelled_notice_named_by_its_message_takes_no_report(db):
    delivery_id = sent_to(db, ack_notice(db, status="cancelled"), 100, message_id="m-1")
    with pytest.raises(Conflict, match="cancelled"):
        report(db, in_reply_to="m-1", from_phone=None)
    assert delivery_id and stored(db) == (0, [])


def test_an_unmatched_report_changes_nothing_and_logs_no_phone(db, caplog):
    sent_to(db, ack_notice(db), 100)
    caplog.set_level(logging.INFO)
    with pytest.raises(NotFound, match="nothing recorded") as error:
        report(db, from_phone="13912345678")
    assert stored(db) == (0, [])
    assert "13912345678" not in str(error.value)
    assert caplog.records and all("13912345678" not in r.getMessage() for r in caplog.records)
    assert all("12345678" not in str(r.__dict__) for r in caplog.records)


def test_a_scoped_token_matches_only_deliveries_under_its_unit(db):
    notice_id = ack_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    sent_to(db, notice_id, 100, message_id="m-a")
    scoped = caller("service", unit=5)  # community B
    with pytest.raises(Forbidden):
        report(db, who=scoped, in_reply_to="m-a", from_phone=None)
    with pytest.raises(NotFound):  # by phone: only recipients under its unit are candidates
        report(db, who=scoped)
    report(db)  # recorded by the unscoped bridge: a scoped replay of it is refused too
    with pytest.raises(Forbidden):
        report(db, who=scoped)
    assert stored(db)[0] == 1


# ---- the gateways' message ids, the phones' blind index ---------------------------------------------


def test_a_gateways_answer_names_its_message_id_only_as_a_bounded_string():
    assert gateway_message_id(b'{"message_id": " gw-42 "}') == "gw-42"
    for body in (b"", b"[]", b"not json", b'{"message_id": 42}', b'{"message_id": ""}', b'{"message_id": "a\\u0000"}'):
        assert gateway_message_id(body) is None
    assert gateway_message_id(('{"message_id": "%s"}' % ("x" * 101)).encode()) is None
    judged = HttpGateway("sms", "https://sms.gateway.test/send").judge(Reply(200, b'{"message_id": "gw-7"}'))
    assert judged == Outcome(True, message_id="gw-7")
    assert HttpGateway("sms", "https://sms.gateway.test/send").judge(Reply(202, b"")) is SENT


def test_the_dispatcher_keeps_each_posts_message_id(db):
    notice_id = ack_notice(db)
    sms = add_delivery(
        db, notice_id, resident_id=100, channel="sms", address_enc=VAULT.encrypt(PHONES["100"], b"phone")
    )
    push = add_delivery(db, notice_id, resident_id=101, channel="app_push")
    adapters = {"sms": StubChannel("sms"), "app_push": StubChannel("app_push")}
    with unit_of_work(db) as uow:
        commit_steps(uow, dispatch_due(uow, adapters, RateLimiter({}), VAULT, RetryPolicy()))
        uow.commit()
    with unit_of_work(db) as uow:
        found = dict(uow.session.execute(select(Delivery.id, Delivery.gateway_message_id)).all())
        statuses = set(uow.session.scalars(select(Delivery.status)))
    assert found == {sms: stub_message_id("sms", sms), push: None}
    assert statuses == {"sent"}


def test_recipients_of_a_notice_requiring_acknowledgement_get_their_phones_blind_index(db, grid):
    deadline = utcnow() + dt.timedelta(hours=1)
    asks = add_notice(
        db, status="approved", published_at=None, requires_ack=True, ack_deadline=deadline, channels=["sms"]
    )
    plain = add_notice(db, status="approved", published_at=None, channels=["sms"], audience={"under": [SMALL_B]})
    with unit_of_work(db) as uow:
        commit_steps(uow, publishing.publish_due(uow, grid, VAULT, "Asia/Shanghai"))
    with unit_of_work(db) as uow:
        rows = uow.session.execute(select(Recipient.notice_id, Recipient.resident_id, Recipient.address_hash)).all()
    assert sorted(rows) == [
        (asks, 100, phone_hash(VAULT, PHONES["100"])),
        (asks, 101, phone_hash(VAULT, PHONES["101"])),
        (plain, 102, None),
    ]
    assert SMALL_A  # the fixture's first audience: small grid A
