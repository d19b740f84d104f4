"""Delivery channels (services.notices.channels): the Idempotency-Key on every post, the gateways'
and robots' judgement of replies, the stub twin, the stream of outcomes (green threads, no network),
rate limits, and the adapters a config builds."""

import io
import time

import eventlet
from hypothesis import given, strategies as st

from services.notices.channels import (
    NOT_STARTED,
    RESPONSE_CAP,
    ChatRobot,
    HttpGateway,
    Outbound,
    Outcome,
    RateLimiter,
    Reply,
    StubChannel,
    build_channels,
    post_each,
    read_capped,
    robot_errcode,
)


def message(delivery_id, to="13800000001", channel="sms"):
    return Outbound(delivery_id, 7, channel, to, "Title", "Body", "moderate")


def test_every_post_carries_the_delivery_id_as_its_idempotency_key():
    assert HttpGateway("sms", "https://sms.example.org").headers(message(42))["Idempotency-Key"] == "42"
    assert ChatRobot().headers(message(43, "https://robot.example.org", "chat_group"))["Idempotency-Key"] == "43"


def test_a_gateway_still_busy_with_the_same_key_is_asked_again_later():
    gateway = HttpGateway("sms", "https://sms.example.org")
    assert [gateway.judge(Reply(status, b"")).retryable for status in (409, 425, 429, 503)] == [True] * 4
    assert not gateway.judge(Reply(422, b"")).retryable  # same key, another body: final


def test_the_stub_counts_a_repeated_key_as_a_duplicate_and_accepts_it():
    stub = StubChannel("sms")
    outcomes = stub.send_many([message(1), message(2), message(1)])
    assert all(outcome.ok for outcome in outcomes)
    assert (stub.count, stub.duplicates, [m.delivery_id for m in stub.sent]) == (2, 1, [1, 2])


def test_the_stub_remembers_a_bounded_number_of_keys():
    stub = StubChannel("sms", keep_keys=2)
    stub.send_many([message(1), message(2), message(3), message(3)])
    assert stub.duplicates == 1 and len(stub.keys) == 2
    stub.send(message(1))  # forgotten: as a gateway past its key retention, taken as new
    assert (stub.count, stub.duplicates) == (4, 1)


def test_the_stub_takes_batches_of_new_keys_at_once_and_still_counts_a_repeat_across_batches():
    stub = StubChannel("sms", keep_keys=3)
    assert all(outcome.ok for outcome in stub.send_many([message(1), message(2)]))
    assert all(outcome.ok for outcome in stub.send_many([message(3), message(4)]))  # 1 forgotten
    assert (stub.count, stub.duplicates, sorted(stub.keys)) == (4, 0, ["2", "3", "4"])
    stub.send_many([message(5), message(4)])  # a repeat in the batch: one by one
    assert (stub.count, stub.duplicates, [m.delivery_id for m in stub.sent]) == (5, 1, [1, 2, 3, 4, 5])


def test_a_phone_is_revealed_only_when_read_and_never_shown_in_a_repr():
    revealed = []

    def reveal(stored):
        revealed.append(stored)
        return "13800000001"

    outbound = Outbound(1, 7, "sms", b"ciphertext", "Title", "Body", "moderate", reveal=reveal)
    assert outbound.addressed and revealed == [] and "1380" not in repr(outbound)
    assert (outbound.to, outbound.to, revealed) == ("13800000001", "13800000001", [b"ciphertext"])
    assert not Outbound(2, 7, "sms", None, "Title", "Body", "moderate").addressed


def test_the_stub_answers_a_whole_batch_as_one_chunk():
    chunks = list(StubChannel("sms").send_each([message(1), message(2)]))
    assert [[(m.delivery_id, o.ok) for m, o in chunk] for chunk in chunks] == [[(1, True), (2, True)]]


def test_outcomes_stream_back_as_posts_finish_not_when_the_batch_is_done():
    delays = {1: 0.0, 2: 0.4, 3: 0.0}

    def send(msg):
        eventlet.sleep(delays[msg.delivery_id])
        return Outcome(True)

    with eventlet.Timeout(5):
        chunks = list(post_each(send, [message(i) for i in (1, 2, 3)], concurrency=3, tick=0.1))
    ids = [[m.delivery_id for m, _ in chunk] for chunk in chunks]
    assert sorted(ids[0]) == [1, 3]  # the quick two, before the slow one finished
    assert [] in ids  # ticks while the slow one was out: the caller may record what it has
    assert ids[-1] == [2]
    assert sum(len(chunk) for chunk in ids) == 3


def test_no_post_starts_after_its_claims_start_window():
    started = []

    def send(msg):
        started.append(msg.delivery_id)
        eventlet.sleep(0.2)
        return Outcome(True)

    now = time.monotonic()
    clock = iter([now, now, now + 100.0, now + 100.0]).__next__  # the window closes after two starts
    with eventlet.Timeout(5):
        results = [
            pair for chunk in post_each(send, [message(i) for i in range(4)], 1, 0.1, now + 1, clock) for pair in chunk
        ]
    assert started == [0, 1]
    outcomes = {m.delivery_id: o for m, o in results}
    assert [outcomes[i].ok for i in (0, 1)] == [True, True]
    assert outcomes[2] is NOT_STARTED and outcomes[3] is NOT_STARTED


def test_closing_the_stream_stops_the_posts_still_out():
    finished = []

    def send(msg):
        eventlet.sleep(0 if msg.delivery_id == 1 else 0.3)
        finished.append(msg.delivery_id)
        return Outcome(True)

    stream = post_each(send, [message(1), message(2), message(3)], concurrency=3, tick=0.05)
    first = next(stream)
    assert [m.delivery_id for m, _ in first] == [1]
    stream.close()  # what the dispatcher does when it is killed (or recording fails) mid-batch
    eventlet.sleep(0.5)
    assert finished == [1]


def test_a_stream_of_nothing_ends_at_once():
    assert list(post_each(lambda m: Outcome(True), [], concurrency=2)) == []


def test_a_send_that_raises_answers_for_its_message_and_the_stream_ends():
    def send(msg):
        if msg.delivery_id == 2:
            raise RuntimeError("adapter bug")
        return Outcome(True)

    with eventlet.Timeout(5):
        results = [pair for chunk in post_each(send, [message(1), message(2)], concurrency=2) for pair in chunk]
    outcomes = {m.delivery_id: (o.ok, o.retryable, o.detail) for m, o in results}
    assert outcomes == {1: (True, False, None), 2: (False, True, "adapter error: RuntimeError")}


def test_rate_limiter_grants_a_second_of_tokens_then_refills():
    now = [0.0]
    limiter = RateLimiter({"sms": 10}, clock=lambda: now[0])
    assert limiter.take("sms", 100) == 10
    assert limiter.take("sms", 5) == 0
    now[0] = 0.5
    assert limiter.take("sms", 100) == 5
    limiter.give_back("sms", 3)
    assert limiter.take("sms", 100) == 3
    assert limiter.take("app_push", 7) == 7  # no limit configured


def test_robot_payloads_mention_everyone_only_when_severe():
    message = Outbound(1, 2, "chat_group", "http://robot", "Storm", "Stay in", "severe", mention_all=True)
    assert ChatRobot().payload(message) == {
        "msgtype": "text",
        "text": {"content": "【Storm】\nStay in", "mentioned_list": ["@all"]},
    }
    message.mention_all = False
    assert ChatRobot().payload(message)["msgtype"] == "markdown"


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_no_robot_reply_body_raises_and_only_an_integer_errcode_counts(body):
    code = robot_errcode(body)
    assert isinstance(code, int) and not isinstance(code, bool)


class BusyRobot(ChatRobot):
    """A robot whose every post is answered 200 with the "too many messages" errcode."""

    def post(self, url, message):
        return Reply(200, b'{"errcode": 45009}')


def test_a_robots_errcode_fails_its_post_and_its_rate_limit_code_retries():
    assert [robot_errcode(b) for b in (b'{"errcode": 93000}', b'{"errcode": true}', b"[1]", b"")] == [93000, 0, 0, 0]
    outcome = BusyRobot().send(message(1, "https://robot.example.org", "chat_group"))
    assert (outcome.ok, outcome.retryable, outcome.detail) == (False, True, "robot errcode 45009")


class Raw:
    """urllib3's raw response as read_capped reads it."""

    def __init__(self, body):
        self.stream = io.BytesIO(body)

    def read(self, size, decode_content=False):
        return self.stream.read(size)


def test_a_reply_body_is_read_up_to_the_cap_and_no_further():
    assert read_capped(Raw(b"x" * RESPONSE_CAP)) == b"x" * RESPONSE_CAP
    assert read_capped(Raw(b"x" * (RESPONSE_CAP + 1))) is None


def test_a_config_builds_stub_twins_robots_and_gateways():
    adapters = build_channels(
        {
            "sms": {"url": "https://sms.example.org/send", "timeout": 2, "deadline": 3},
            "app_push": {"url": "stub"},
            "chat_group": {"url": "robot"},
        }
    )
    assert isinstance(adapters["app_push"], StubChannel) and isinstance(adapters["chat_group"], ChatRobot)
    sms = adapters["sms"]
    assert (type(sms), sms.url, sms.timeout, sms.deadline) == (HttpGateway, "https://sms.example.org/send", 2.0, 3.0)
    assert HttpGateway("sms", "https://sms.example.org", timeout=4).deadline == 8.0  # twice the timeout by default


def test_a_gateway_payload_carries_the_delivery_not_the_notice_id():
    payload = HttpGateway("sms", "https://sms.example.org").payload(message(42))
    assert payload == {
        "delivery_id": "42",
        "to": "13800000001",
        "title": "Title",
        "text": "Body",
        "severity": "moderate",
    }
