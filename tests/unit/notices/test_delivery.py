"""Sending (services.notices.delivery): what outcomes do to claimed deliveries and when they are
recorded (pure), then on SQLite: claims committed before anything is posted, each record of outcomes
a step of its own, retries, fallbacks, stopped notices, a recorder overtaken after its lease, and the
gateways' reports."""

import datetime as dt

import pytest
from hypothesis import given, strategies as st
from sqlalchemy import select, update

from services.notices import delivery
from services.notices.channels import NOT_STARTED, Outcome, RateLimiter, StubChannel, post_each
from services.notices.delivery import Claim, Recorder, RetryPolicy, due_to_record, plan_outcomes, start_window
from services.notices.models import Delivery
from services.notices.service import commit_steps
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound
from tests.unit.local import VAULT, caller, unit_of_work
from tests.unit.notices.conftest import PHONES, add_delivery, add_notice

NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


# ---- what outcomes do (pure) -----------------------------------------------------------------------


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


def test_backoff_doubles_up_to_a_cap():
    policy = RetryPolicy(max_attempts=5, base_seconds=2, cap_seconds=5)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert [(policy.next_attempt(n, now) - now).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 5, 5]


outcomes = st.sampled_from(
    [
        Outcome(True),
        Outcome(False, retryable=True, detail="http 503"),
        Outcome(False, retryable=False, detail="http 400"),
        NOT_STARTED,
    ]
)


@given(st.lists(st.tuples(st.integers(1, 6), outcomes), max_size=30), st.integers(1, 5))
def test_every_claim_ends_in_exactly_one_place(attempts_and_outcomes, max_attempts):
    results = [(claim_row(i, attempt), outcome) for i, (attempt, outcome) in enumerate(attempts_and_outcomes)]
    plan = plan_outcomes(results, RetryPolicy(max_attempts=max_attempts), NOW)
    placed = plan.sent + [r["d_id"] for r in plan.retries] + [row.id for row, _ in plan.failed] + plan.released
    assert sorted(placed) == list(range(len(results)))
    by_id = dict((row.id, (row, outcome)) for row, outcome in results)
    for retried in plan.retries:
        row, outcome = by_id[retried["d_id"]]
        assert outcome.retryable and row.attempts < max_attempts and retried["d_next"] > NOW
    assert all(not by_id[i][1].started for i in plan.released)


# ---- dispatching on a database ---------------------------------------------------------------------


class Scripted:
    """An adapter answering each delivery as scripted (by delivery id; sent otherwise), keeping what
    it was asked to post; all at once (``send_many``, no ``send_each``)."""

    def __init__(self, outcomes=None, error=None):
        self.outcomes = outcomes or {}
        self.error = error
        self.posted = []

    def send_many(self, messages):
        self.posted += messages
        if self.error:
            raise self.error
        return [self.outcomes.get(m.delivery_id, Outcome(True)) for m in messages]


class Watching(StubChannel):
    """The stub twin, reading each delivery's committed status (in a unit of work of its own) as it posts it."""

    def __init__(self, db, channel):
        super().__init__(channel)
        self.db = db
        self.seen = {}

    def send(self, message):
        with unit_of_work(self.db) as other:
            self.seen[message.delivery_id] = other.session.get(Delivery, message.delivery_id).status
        return super().send(message)


def dispatch(db, adapters, retry=None, **options):
    """One dispatching tick as the timer runs it: each step committed, then the rest."""
    with unit_of_work(db) as uow:
        attempted = commit_steps(
            uow, delivery.dispatch_due(uow, adapters, RateLimiter({}), VAULT, retry or RetryPolicy(), **options)
        )
        uow.commit()
        return attempted


def state(db, delivery_id):
    with unit_of_work(db) as uow:
        row = uow.session.get(Delivery, delivery_id)
        return row.status, row.attempts, row.detail


def sms_to(db, notice_id, resident_id=100, **extra):
    return add_delivery(
        db, notice_id, resident_id, address_enc=VAULT.encrypt(PHONES[str(resident_id)], b"phone"), **extra
    )


def test_deliveries_are_claimed_and_committed_before_any_is_posted(db):
    notice_id = add_notice(db)
    ids = [add_delivery(db, notice_id, resident_id=r, channel="app_push") for r in (100, 101)]
    stub = Watching(db, "app_push")
    with unit_of_work(db) as uow:
        steps = delivery.dispatch_due(uow, {"app_push": stub}, RateLimiter({}), VAULT, RetryPolicy())
        next(steps)  # the claims are made: the timer commits them here
        assert stub.count == 0 and [uow.session.get(Delivery, i).status for i in ids] == ["sending"] * 2
        uow.commit()
        assert commit_steps(uow, steps) == 2
    assert stub.seen == {i: "sending" for i in ids}  # what another process would have found mid-post
    assert [state(db, i) for i in ids] == [("sent", 1, None)] * 2


def test_an_sms_goes_to_the_residents_number_and_a_delivery_without_one_fails(db):
    notice_id = add_notice(db)
    with_number = sms_to(db, notice_id)
    without = add_delivery(db, notice_id, resident_id=101)
    adapter = Scripted()
    assert dispatch(db, {"sms": adapter}) == 2
    assert [(m.delivery_id, m.to, m.title) for m in adapter.posted] == [(with_number, PHONES["100"], "Water off")]
    assert state(db, without) == ("failed", 1, "no address for this channel")


def test_retryable_failures_back_off_until_the_last_attempt_fails_them(db):
    delivery_id = add_delivery(db, add_notice(db), channel="app_push")
    busy = Scripted({delivery_id: Outcome(False, retryable=True, detail="http 503")})
    retry = RetryPolicy(max_attempts=2, base_seconds=30)
    dispatch(db, {"app_push": busy}, retry=retry)
    assert state(db, delivery_id) == ("queued", 1, "http 503")
    assert dispatch(db, {"app_push": busy}, retry=retry) == 0  # backing off: not due yet
    later = utcnow() + dt.timedelta(seconds=31)
    dispatch(db, {"app_push": busy}, retry=retry, now=later)
    assert state(db, delivery_id) == ("failed", 2, "http 503")


def test_a_failed_sms_to_a_resident_living_alone_falls_back_to_one_voice_call(db):
    notice_id = add_notice(db)
    alone = sms_to(db, notice_id, tags=["elderly_alone"])
    refused = Scripted({alone: Outcome(False, retryable=False, detail="http 400")})
    dispatch(db, {"sms": refused})
    with unit_of_work(db) as uow:
        calls = uow.session.execute(select(Delivery.channel, Delivery.status, Delivery.fallback_of)).all()
    assert sorted(calls) == [("sms", "failed", None), ("voice_call", "queued", alone)]


def test_an_adapter_that_raises_leaves_its_batch_to_retry(db):
    delivery_id = add_delivery(db, add_notice(db), channel="app_push")
    dispatch(db, {"app_push": Scripted(error=RuntimeError("adapter bug"))})
    assert state(db, delivery_id) == ("queued", 1, "adapter error: RuntimeError")


def test_a_delivery_of_a_notice_cancelled_meanwhile_is_stopped_unposted(db):
    notice_id = add_notice(db, status="cancelled")
    delivery_id = add_delivery(db, notice_id, channel="app_push", status="sending")  # a claim whose lease ran out
    adapter = Scripted()
    assert dispatch(db, {"app_push": adapter}) == 0
    assert adapter.posted == [] and state(db, delivery_id) == ("failed", 1, "cancelled")


def test_stopped_deliveries_are_committed_at_their_claim_even_if_a_later_channel_fails(db):
    stopped = add_delivery(db, add_notice(db, status="cancelled"), channel="app_push", status="sending")
    # A delivery whose notice is gone makes its claim raise (phones are decrypted only when posted now).
    orphan = add_delivery(db, 999_999, channel="sms", address_enc=VAULT.encrypt(PHONES["100"], b"phone"))
    with unit_of_work(db) as uow:
        steps = delivery.dispatch_due(
            uow, {"app_push": Scripted(), "sms": Scripted()}, RateLimiter({}), VAULT, RetryPolicy()
        )
        with pytest.raises(Exception):  # noqa: B017 - whatever the sms claim raises, app_push's step came first
            commit_steps(uow, steps)
    assert state(db, stopped) == ("failed", 1, "cancelled")
    assert state(db, orphan)[0] == "queued"  # its failed claim was rolled back


class Reading(StubChannel):
    """The stub twin, reading each message's number as a gateway's post does (``post_each``)."""

    def send_each(self, messages, tick=0.2, start_by=None):
        return post_each(lambda message: message.to and super(Reading, self).send(message), messages, 10, tick=tick)


def test_a_phone_that_does_not_decrypt_fails_only_its_own_post(db):
    notice_id = add_notice(db)
    good = sms_to(db, notice_id)
    bad = add_delivery(db, notice_id, resident_id=101, address_enc=b"not a ciphertext")
    adapter = Reading("sms")
    assert dispatch(db, {"sms": adapter}) == 2
    assert [m.delivery_id for m in adapter.sent] == [good] and adapter.sent[0].to == PHONES["100"]
    assert state(db, good)[0] == "sent" and state(db, bad) == ("queued", 1, "adapter error: InvalidTag")


def test_a_dispatcher_overtaken_after_its_lease_records_nothing_over_the_new_claim(db):
    delivery_id = add_delivery(db, add_notice(db), channel="app_push")
    lease_end = utcnow()
    with unit_of_work(db) as uow:
        claims, messages = delivery.claim(uow, "app_push", 10, utcnow(), 60, VAULT, lease_end=lease_end)
        # Another dispatcher reclaimed it once the lease ran out: its own lease end now.
        uow.session.execute(update(Delivery).values(next_attempt_at=lease_end + dt.timedelta(seconds=60)))
        uow.commit()
        late = Recorder(uow, RetryPolicy(), "app_push", claims, None, 200, 0.2, lease_end=lease_end)
        late.add([(messages[0], Outcome(False, retryable=True, detail="gateway timeout"))])
        assert late.record() == 1
        uow.commit()
    assert state(db, delivery_id) == ("sending", 1, None)


class OneByOne(StubChannel):
    """The stub twin answering its posts one at a time, as a gateway's replies come back."""

    def send_each(self, messages, tick=0.2, start_by=None):
        for message in messages:
            yield [(message, self.send(message))]


def test_outcomes_are_recorded_as_they_stream_back_each_record_a_step(db):
    notice_id = add_notice(db)
    ids = [add_delivery(db, notice_id, resident_id=r, channel="app_push") for r in (100, 101, 102)]
    stub = OneByOne("app_push")
    with unit_of_work(db) as uow:
        steps = delivery.dispatch_due(uow, {"app_push": stub}, RateLimiter({}), VAULT, RetryPolicy(), record_every=1)
        boundaries = 0
        for _ in steps:
            uow.commit()
            boundaries += 1
    assert boundaries == 1 + len(ids)  # the claims, then each outcome as it came
    assert [state(db, i)[0] for i in ids] == ["sent"] * 3


# ---- gateways' reports -------------------------------------------------------------------------------


def report(db, delivery_id, status, who=None, detail=None):
    with unit_of_work(db) as uow:
        row = delivery.record_delivery_status(uow, who or caller("service"), delivery_id, status, detail)
        uow.commit()
        return row.status


def test_a_report_moves_a_delivery_forward_only(db):
    delivery_id = add_delivery(db, add_notice(db), status="sending")  # reported before the dispatcher recorded it
    assert report(db, delivery_id, "delivered") == "delivered"
    with pytest.raises(Conflict, match="already delivered"):
        report(db, delivery_id, "failed")
    assert report(db, delivery_id, "delivered") == "delivered"  # the same report again


def test_a_reported_sms_failure_to_a_resident_living_alone_falls_back(db):
    delivery_id = add_delivery(db, add_notice(db), status="sent", tags=["elderly_alone"])
    assert report(db, delivery_id, "failed", detail="unreachable") == "failed"
    with unit_of_work(db) as uow:
        assert uow.session.scalar(select(Delivery.channel).where(Delivery.fallback_of == delivery_id)) == "voice_call"


def test_a_scoped_reporter_reports_only_under_its_unit_before_anything_is_revealed(db):
    delivery_id = add_delivery(db, add_notice(db), status="failed")
    with pytest.raises(Forbidden):
        report(db, delivery_id, "delivered", who=caller("service", unit=5))  # not Conflict: state stays hidden
    with pytest.raises(NotFound):
        report(db, 999, "sent")
    assert state(db, delivery_id) == ("failed", 0, None)


def test_the_gateways_message_id_is_kept_only_for_notices_that_ask_for_an_acknowledgement(db):
    """A reply is matched by message id only to a notice asking for an acknowledgement
    (services/notices/inbound.py): the ids of the others are not written (a column per delivery of
    every notice cost a large fan-out about 15%)."""
    asking = add_notice(db, requires_ack=True, ack_deadline=utcnow() + dt.timedelta(hours=1))
    telling = add_notice(db)
    ids = {notice: sms_to(db, notice, resident_id=100) for notice in (asking, telling)}
    dispatch(db, {"sms": StubChannel("sms")})
    with unit_of_work(db) as uow:
        kept = {notice: uow.session.get(Delivery, i).gateway_message_id for notice, i in ids.items()}
        assert {notice: uow.session.get(Delivery, i).status for notice, i in ids.items()} == {
            asking: "sent",
            telling: "sent",
        }
    assert kept[asking] == f"stub-sms-{ids[asking]}" and kept[telling] is None
