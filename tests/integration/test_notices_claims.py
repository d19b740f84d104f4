"""Deliveries are claimed before they are posted (issue 13, point 3), on a real PostgreSQL database
and a real local HTTP gateway (tests.support.Receiver, which treats a repeated Idempotency-Key as a
gateway must and counts it): a dispatcher killed mid-batch leaves only its unrecorded claims, posted
again with the same key once their lease has run out; acknowledged deliveries are never posted
again; concurrent dispatchers never post the same delivery."""

import datetime as dt
import ipaddress
from collections import Counter
from types import SimpleNamespace

import eventlet
import eventlet.event
import pytest
from sqlalchemy import func, insert, select, update

from services.notices.channels import HttpGateway, Outcome, RateLimiter
from services.notices.delivery import Recorder, RetryPolicy, claim, dispatch_due
from services.notices.models import Base, Delivery, Notice, Recipient
from services.notices.outbound import OutboundPolicy
from services.notices.service import commit_steps
from shared.db import Database, UnitOfWork, utcnow
from tests.support import add_household, add_resident, token, wait_until

LEASE = 60.0
POLICY = OutboundPolicy(allow_http=True, networks=(ipaddress.ip_network("127.0.0.1/32"),))


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the dispatcher catches it, nothing after it is recorded."""


@pytest.fixture
def database(notices_db):
    """The notices Database provider on this test's (migrated) PostgreSQL database."""
    db = Database(Base)
    db.container = SimpleNamespace(config={"DATABASE_URL": notices_db, "DB_POOL_SIZE": 4}, service_name="notices")
    db.setup()
    yield db
    db.stop()


def seed(db, count, channel="app_push"):
    """A published notice and ``count`` due deliveries of it on ``channel``; their ids."""
    now = utcnow()
    with db.session_scope() as session:
        notice_id = session.scalar(
            insert(Notice)
            .values(
                kind="notice",
                title="Water off",
                body="Water is off 9-12.",
                category="public_service",
                severity="moderate",
                urgency="expected",
                msg_type="alert",
                audience={"under": []},
                channels=[channel],
                status="published",
                author="tester",
                created_at=now,
                recipient_count=count,
            )
            .returning(Notice.id)
        )
        recipients = session.scalars(
            insert(Recipient).returning(Recipient.id),
            [
                {
                    "notice_id": notice_id,
                    "resident_id": 1000 + i,
                    "household_id": 1,
                    "unit_path": "/1/2/",
                    "vulnerable_tags": [],
                    "vulnerable": False,
                }
                for i in range(count)
            ],
        ).all()
        return session.scalars(
            insert(Delivery).returning(Delivery.id),
            [
                {
                    "notice_id": notice_id,
                    "recipient_id": rid,
                    "unit_path": "/1/2/",
                    "channel": channel,
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": now - dt.timedelta(seconds=1),
                    "created_at": now,
                }
                for rid in recipients
            ],
        ).all()


def statuses(db):
    with db.session_scope() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).all())


def dispatch(db, adapter, **kwargs):
    """One dispatcher tick in a worker's unit of work, committed step by step as the timer does and
    finished as the Database provider does."""
    uow = UnitOfWork(db, "notices")
    try:
        attempted = commit_steps(
            uow,
            dispatch_due(uow, {adapter.channel: adapter}, RateLimiter({}), None, RetryPolicy(), lease=LEASE, **kwargs),
        )
        uow.commit()
        return attempted
    except BaseException:
        uow.rollback()
        raise
    finally:
        uow.close()


class HaltingGateway(HttpGateway):
    """Posts its first ``after`` messages for real; the posts after them hang, and once ``after``
    outcomes have come back the dispatcher is killed (with posts out, others not started)."""

    def __init__(self, url, after):
        super().__init__("app_push", url, policy=POLICY)
        self.concurrency = 8
        self.after = after
        self.started = 0
        self.hang = eventlet.event.Event()  # never sent

    def send_one(self, message):
        self.started += 1
        if self.started > self.after:
            self.hang.wait()
        return super().send_one(message)

    def send_each(self, messages, tick=0.2, start_by=None):
        seen = 0
        for chunk in super().send_each(messages, tick=tick, start_by=start_by):
            yield chunk
            seen += len(chunk)
            if seen >= self.after:
                raise Killed


def posted_keys(receiver):
    return [key for path, key, _status in receiver.keys if path == "/push"]


def test_a_dispatcher_killed_mid_batch_posts_only_its_unrecorded_claims_again_after_the_lease(database, receiver):
    ids = seed(database, 300)
    with pytest.raises(Killed):
        dispatch(database, HaltingGateway(receiver.url("/push"), after=100), record_every=20, record_seconds=0.05)
    at_kill = statuses(database)
    recorded = {i for i, status in at_kill.items() if status == "sent"}
    in_flight = {i for i, status in at_kill.items() if status == "sending"}
    assert recorded and in_flight and recorded | in_flight == set(ids)  # the whole batch was claimed first
    first_posts = posted_keys(receiver)
    assert {str(i) for i in recorded} <= set(first_posts)
    assert len(first_posts) == 100  # the hanging posts were stopped with the dispatcher

    # Before the lease runs out nobody takes the claims up again (nothing else is due).
    gateway = HttpGateway("app_push", receiver.url("/push"), policy=POLICY)
    assert dispatch(database, gateway, now=utcnow() + dt.timedelta(seconds=LEASE - 5)) == 0
    # After it, the unrecorded claims, and only they, are claimed and posted again.
    assert dispatch(database, gateway, now=utcnow() + dt.timedelta(seconds=LEASE + 1)) == len(in_flight)
    assert set(statuses(database).values()) == {"sent"}
    posts = Counter(posted_keys(receiver))
    assert all(posts[str(i)] == 1 for i in recorded)  # acknowledged: never posted again
    assert all(posts[str(i)] in (1, 2) for i in in_flight)  # at most once more, with the same key
    # The gateway saw a key twice only where the first post had got through before the kill, and took
    # every delivery's message once.
    twice = sum(1 for i in in_flight if posts[str(i)] == 2)
    assert receiver.duplicates == twice
    assert sorted(body["delivery_id"] for body in receiver.accepted("/push")) == sorted(str(i) for i in ids)
    receiver.expected_duplicates = twice  # the receiver fixture fails a test on unexpected ones


def test_a_claim_abandoned_before_its_post_is_taken_up_after_the_lease_with_the_same_key(database, receiver):
    ids = seed(database, 5)
    now = utcnow()
    uow = UnitOfWork(database, "notices")
    claims, _messages = claim(uow, "app_push", 100, now, LEASE, None)
    uow.commit()  # as the dispatcher commits its claims; then the process "dies"
    uow.close()
    assert sorted(claims) == sorted(ids)
    gateway = HttpGateway("app_push", receiver.url("/push"), policy=POLICY)
    assert dispatch(database, gateway, now=now + dt.timedelta(seconds=LEASE - 1)) == 0
    assert dispatch(database, gateway, now=now + dt.timedelta(seconds=LEASE + 1)) == 5
    assert sorted(key for key in posted_keys(receiver)) == sorted(str(i) for i in ids)
    with database.session_scope() as session:
        # The abandoned claim counts as an attempt (a delivery that kills its dispatcher stops somewhere).
        assert set(session.scalars(select(Delivery.attempts))) == {2}
        assert session.scalar(select(func.count()).where(Delivery.status == "sent")) == 5


def test_concurrent_dispatchers_never_post_the_same_delivery(database, receiver):
    ids = seed(database, 1500)
    claimed = {"a": 0, "b": 0, "c": 0}

    def run(name):
        gateway = HttpGateway("app_push", receiver.url("/push"), policy=POLICY)
        while True:
            attempted = dispatch(database, gateway, batch=100)
            if not attempted:
                return
            claimed[name] += attempted

    with eventlet.Timeout(120):
        threads = [eventlet.spawn(run, name) for name in claimed]
        for thread in threads:
            thread.wait()
    assert all(claimed.values()), claimed  # all three took part
    assert sum(claimed.values()) == len(ids)
    keys = posted_keys(receiver)
    assert len(keys) == len(set(keys)) == len(ids) and receiver.duplicates == 0
    assert set(statuses(database).values()) == {"sent"}


def test_a_gateway_report_that_beats_the_dispatcher_stands(database, receiver):
    """The gateway may report delivery before the dispatcher records the post as sent."""
    (delivery_id,) = seed(database, 1)
    uow = UnitOfWork(database, "notices")
    claims, messages = claim(uow, "app_push", 10, utcnow(), LEASE, None)
    uow.commit()
    with database.session_scope() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(status="delivered"))
    recorder = Recorder(uow, RetryPolicy(), "app_push", claims, None, 200, 0.2)
    recorder.add([(messages[0], Outcome(True))])
    recorder.record()
    uow.commit()
    uow.close()
    assert statuses(database) == {delivery_id: "delivered"}


def test_every_sms_of_a_running_service_carries_its_delivery_id_as_idempotency_key(
    notices, admin, district, call_as, receiver
):
    home = add_household(admin, district["small_a"], room="301")
    residents = [add_resident(admin, home, seq)["id"] for seq in (31, 32, 33)]
    sender = call_as(token("service", sub="service:legal")).notices
    sender.send_direct(resident_ids=residents, template="check_in", params={"when": "tomorrow 10:00"})
    wait_until(lambda: len(receiver.accepted("/sms")) == 3, message="sms not sent")
    sms = [(key, status) for path, key, status in receiver.keys if path == "/sms"]
    assert sorted(key for key, _ in sms) == sorted(body["delivery_id"] for body in receiver.accepted("/sms"))
    assert receiver.duplicates == 0


def test_a_dispatcher_overtaken_after_its_lease_records_nothing_over_the_claim_that_took_over(database, receiver):
    """A paused dispatcher wakes after another took its claim over: its late outcome (here: a release)
    must not hand the delivery back while the other is posting it."""
    (delivery_id,) = seed(database, 1)
    slow = UnitOfWork(database, "notices")
    first_lease_end = utcnow()  # already over: the claim is up for taking
    claims, messages = claim(slow, "app_push", 10, utcnow(), LEASE, None, lease_end=first_lease_end)
    slow.commit()
    fast = UnitOfWork(database, "notices")
    taken, _ = claim(fast, "app_push", 10, utcnow(), LEASE, None)
    fast.commit()
    assert list(taken) == [delivery_id]
    late = Recorder(slow, RetryPolicy(), "app_push", claims, None, 200, 0.2, lease_end=first_lease_end)
    late.add([(messages[0], Outcome(False, retryable=True, detail="gateway timeout"))])
    late.record()
    slow.commit()
    slow.close()
    fast.close()
    assert statuses(database) == {delivery_id: "sending"}  # still the second dispatcher's
