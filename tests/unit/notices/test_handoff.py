"""Deliveries written already claimed (services.notices.delivery.Handoff, audience.write_recipients):
a fresh delivery due now is inserted ``sending`` under a lease and handed to this process's dispatcher
once its transaction commits — never before, never if it does not — posted and recorded as any claim;
the rate limiter and the handoff's room decide how many; the rest are queued. A claim nobody posted is
claimed again from the table once its lease has run out, with the same delivery id (Idempotency-Key)."""

import datetime as dt

from sqlalchemy import select

from services.notices import audience, delivery
from services.notices.channels import RateLimiter, StubChannel
from services.notices.delivery import Handoff, RetryPolicy
from services.notices.models import Delivery, Notice, Preference, Recipient
from services.notices.service import commit_steps
from shared.db import utcnow
from tests.unit.local import VAULT, unit_of_work
from tests.unit.notices.conftest import SMALL_A, add_notice

LEASE = 60.0


def handoff(rate=None, capacity=10_000):
    adapters = {"sms": StubChannel("sms"), "app_push": StubChannel("app_push")}
    limiter = RateLimiter({"sms": rate} if rate else {})
    return Handoff(adapters, limiter, lease=LEASE, capacity=capacity)


def residents(*ids, phone=None):
    encrypted = VAULT.encrypt(phone, b"phone").hex() if phone else None
    return [(i, 10, "/1/2/3/4/", ["elderly_alone"] if i == 100 else [], encrypted) for i in ids]


def write(db, hand, notice_id, people, commit=True, now=None):
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        plan = audience.DeliveryPlan(notice, "Asia/Shanghai")
        now = now or utcnow()
        audience.write_recipients(uow, notice, plan, people, now, handoff=hand)
        if commit:
            uow.commit()
            hand.committed()
        else:
            hand.discard()
        return now


def deliveries(db):
    with unit_of_work(db) as uow:
        return uow.session.execute(
            select(Delivery.id, Delivery.status, Delivery.attempts, Delivery.next_attempt_at).order_by(Delivery.id)
        ).all()


def dispatch(db, hand, now=None):
    adapters = hand.adapters
    with unit_of_work(db) as uow:
        steps = delivery.dispatch_due(
            uow, adapters, hand.limiter, VAULT, RetryPolicy(), now=now, batch=100, lease=LEASE, handoff=hand
        )
        return commit_steps(uow, steps)


def test_fresh_deliveries_due_now_are_written_claimed_and_posted_once_committed(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms"], status="approved")
    now = write(db, hand, notice_id, residents(100, 101, phone="13800000100"))
    rows = deliveries(db)
    lease_end = now + dt.timedelta(seconds=LEASE)
    assert [(status, attempts, due) for _id, status, attempts, due in rows] == [("sending", 1, lease_end)] * 2
    assert hand.waiting == 2 and len(hand.ready) == 1
    # Nothing claims them from the table meanwhile (their lease is running).
    with unit_of_work(db) as uow:
        assert delivery.claim_rows(uow.session, "sms", 10, utcnow(), lease_end) == []
    assert dispatch(db, hand) == 2
    sms = hand.adapters["sms"]
    assert sorted(m.delivery_id for m in sms.sent) == [row[0] for row in rows]
    assert {m.to for m in sms.sent} == {"13800000100"} and sms.duplicates == 0
    assert {status for _id, status, _a, _d in deliveries(db)} == {"sent"} and hand.waiting == 0


def test_claims_of_a_transaction_that_did_not_commit_are_never_handed_on(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms"], status="approved")
    write(db, hand, notice_id, residents(100, 101), commit=False)
    assert (hand.waiting, list(hand.ready), deliveries(db)) == (0, [], [])
    assert dispatch(db, hand) == 0


def test_a_page_whose_commit_fails_hands_nothing_on(db, grid):
    hand = handoff()
    grid.vault = VAULT
    notice_id = add_notice(db, channels=["sms"], status="approved", audience={"under": [SMALL_A]})
    with unit_of_work(db) as uow:
        steps = audience.resolve_pages(
            uow, grid, VAULT, uow.session.get(Notice, notice_id), "Asia/Shanghai", handoff=hand
        )
        next(steps)  # the page is written, its claims wait for the commit ...
        assert hand.waiting == 2 and not hand.ready
        steps.close()  # ... which failed (commit_steps closes the steps)
    assert (hand.waiting, list(hand.ready)) == (0, [])


def test_only_what_the_rate_and_the_room_allow_is_claimed_the_rest_is_queued(db):
    hand = handoff(rate=1)  # one token a second: one claim
    notice_id = add_notice(db, channels=["sms"], status="approved")
    write(db, hand, notice_id, residents(100, 101, 102))
    assert sorted(status for _id, status, _a, _d in deliveries(db)) == ["queued", "queued", "sending"]
    full = handoff(capacity=2)
    other = add_notice(db, channels=["app_push"], status="approved")
    write(db, full, other, residents(100, 101, 102))
    assert full.waiting == 2


def test_quiet_hours_and_channels_without_an_adapter_stay_queued(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms", "voice_call"], status="approved")
    with unit_of_work(db) as uow:
        quiet = {"quiet_start": dt.time(8, 0), "quiet_end": dt.time(20, 0)}
        uow.session.add(Preference(resident_id=101, channels=["sms"], updated_at=utcnow(), **quiet))
        uow.commit()
    noon = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai: 101's quiet hours
    write(db, hand, notice_id, residents(100, 101), now=noon)
    with unit_of_work(db) as uow:
        found = uow.session.execute(
            select(Recipient.resident_id, Delivery.channel, Delivery.status)
            .join(Recipient, Recipient.id == Delivery.recipient_id)
            .order_by(Recipient.resident_id, Delivery.channel)
        ).all()
    # 100: sms claimed, voice_call has no adapter here; 101 (sms only) waits for the end of its quiet hours.
    assert found == [(100, "sms", "sending"), (100, "voice_call", "queued"), (101, "sms", "queued")]


def test_a_handed_claim_nobody_posted_is_claimed_again_after_its_lease_with_the_same_id(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms"], status="approved")
    write(db, hand, notice_id, residents(100, phone="13800000100"))
    [(delivery_id, _status, _attempts, lease_end)] = deliveries(db)
    # The process died before posting it: its handoff is gone. Another dispatcher, after the lease:
    other = handoff()
    assert dispatch(db, other, now=lease_end - dt.timedelta(seconds=1)) == 0
    assert dispatch(db, other, now=lease_end + dt.timedelta(seconds=1)) == 1
    assert [m.delivery_id for m in other.adapters["sms"].sent] == [delivery_id]
    assert deliveries(db)[0][1:3] == ("sent", 2)


def test_a_fall_back_reads_the_tags_as_a_claim_returns_them_on_postgresql(db):
    notice_id = add_notice(db, channels=["sms"])
    with unit_of_work(db) as uow:
        now = utcnow()
        assert delivery.fall_back(uow.session, 1, "sms", notice_id, "/1/2/3/4/", 1, '["elderly_alone"]', now)
        assert not delivery.fall_back(uow.session, 2, "sms", notice_id, "/1/2/3/4/", 2, "[]", now)
        assert uow.session.scalar(select(Delivery.channel).where(Delivery.fallback_of == 1)) == "voice_call"


def test_a_tick_claims_only_channels_with_something_due(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms", "app_push"], status="approved")
    hand.capacity = 0  # no room: written queued, claimed from the table
    write(db, hand, notice_id, residents(100))
    later = utcnow() + dt.timedelta(seconds=1)
    with unit_of_work(db) as uow:
        assert delivery.due_channels(uow.session, ["sms", "app_push", "voice_call"], later) == {"sms", "app_push"}
        assert delivery.due_channels(uow.session, ["voice_call"], later) == set()
        assert delivery.due_channels(uow.session, [], later) == set()
    assert dispatch(db, hand, now=later) == 2
    with unit_of_work(db) as uow:
        assert delivery.due_channels(uow.session, ["sms", "app_push"], later) == set()


def test_a_batch_whose_notice_was_cancelled_after_its_page_committed_fails_without_a_post(db):
    hand = handoff()
    notice_id = add_notice(db, channels=["sms"], status="approved")
    write(db, hand, notice_id, residents(100, 101, phone="13800000100"))
    with unit_of_work(db) as uow:  # cancelled between the page's commit and the dispatcher's turn
        uow.session.get(Notice, notice_id).status = "cancelled"
        uow.commit()
    dispatch(db, hand)
    assert not hand.adapters["sms"].sent
    with unit_of_work(db) as uow:
        rows = uow.session.execute(select(Delivery.status, Delivery.detail)).all()
    assert rows == [("failed", "cancelled")] * 2 and hand.waiting == 0
