"""Claimed deliveries, pure parts: what outcomes do to claims, when outcomes are recorded, how long
a claim may start posts, the Idempotency-Key on every post, the stub twin's duplicate count, and
the stream of outcomes (green threads, no network)."""

import datetime as dt
import time

import eventlet

from services.notices.channels import (
    NOT_STARTED,
    ChatRobot,
    HttpGateway,
    Outbound,
    Outcome,
    Reply,
    StubChannel,
    post_each,
)
from services.notices.delivery import Claim, RetryPolicy, due_to_record, plan_outcomes, start_window

NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


def message(delivery_id, to="13800000001", channel="sms"):
    return Outbound(delivery_id, 7, channel, to, "Title", "Body", "moderate")


def claim_row(delivery_id, attempt=1):
    """A claimed delivery making its ``attempt``-th attempt."""
    return Claim(delivery_id, 7, 70, "/1/2/", attempt, None, 1000, [])


def test_outcomes_make_sent_retried_failed_and_released_claims():
    retry = RetryPolicy(max_attempts=3, base_seconds=2.0)
    plan = plan_outcomes(
        [
            (claim_row(1), Outcome(True)),
            (claim_row(2), Outcome(False, retryable=True, detail="http 503")),
            (claim_row(3, attempt=2), Outcome(False, retryable=True, detail="http 503")),
            (claim_row(4, attempt=3), Outcome(False, retryable=True, detail="http 503")),  # the last one
            (claim_row(5), Outcome(False, retryable=False, detail="http 400")),
            (claim_row(6, attempt=2), NOT_STARTED),
        ],
        retry,
        NOW,
    )
    assert plan.sent == [1]
    # Backoff as before claims existed: counted from the attempt this claim made.
    assert plan.retries == [
        {"d_id": 2, "d_next": NOW + dt.timedelta(seconds=2), "d_detail": "http 503"},
        {"d_id": 3, "d_next": NOW + dt.timedelta(seconds=4), "d_detail": "http 503"},
    ]
    assert [(row.id, detail) for row, detail in plan.failed] == [(4, "http 503"), (5, "http 400")]
    assert plan.released == [6]


def test_a_message_never_started_is_released_not_failed_even_at_the_last_attempt():
    plan = plan_outcomes([(claim_row(9, attempt=4), NOT_STARTED)], RetryPolicy(max_attempts=4), NOW)
    assert (plan.released, plan.failed, plan.retries) == ([9], [], [])


def test_outcomes_are_recorded_every_n_results_or_every_t_seconds():
    assert not due_to_record(0, since=0.0, now=100.0, every=200, seconds=0.2)  # nothing waits
    assert not due_to_record(199, since=10.0, now=10.1, every=200, seconds=0.2)
    assert due_to_record(200, since=10.0, now=10.0, every=200, seconds=0.2)
    assert due_to_record(1, since=10.0, now=10.25, every=200, seconds=0.2)


def test_posts_start_only_while_they_can_end_before_the_lease():
    assert start_window(60, 10) == 48  # the default lease, a gateway's default deadline, the recording margin
    assert start_window(60, None) == 58  # the stub twin has no deadline
    assert start_window(12, 10) == 6  # a lease too short for the deadline: half of it


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
