"""Audience resolution (services.notices.audience): quiet hours and channel choice per resident, the
recipients and deliveries a page of residents becomes, chat groups, a cancel's copied recipients, and
a resolution another replica took over."""

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, strategies as st
from sqlalchemy import select, update

from services.notices import audience
from services.notices.audience import DeliveryPlan, quiet_hours_end
from services.notices.models import ChatGroup, Delivery, Notice, Preference, Recipient
from tests.unit.local import VAULT, unit_of_work
from tests.unit.notices.conftest import PATH_A, PATH_B, SMALL_A, SMALL_B, add_notice

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(hour, minute=0):
    return dt.datetime(2026, 11, 26, hour, minute, tzinfo=SHANGHAI).astimezone(dt.UTC)


# ---- quiet hours and channels --------------------------------------------------------------------


def test_quiet_hours_same_day_and_overnight():
    start, end = dt.time(12, 0), dt.time(14, 0)
    assert quiet_hours_end(at(13), start, end, SHANGHAI) == at(14)
    assert quiet_hours_end(at(11, 59), start, end, SHANGHAI) is None
    night, morning = dt.time(22, 0), dt.time(7, 0)
    assert quiet_hours_end(at(23), night, morning, SHANGHAI) == at(7) + dt.timedelta(days=1)
    assert quiet_hours_end(at(6, 30), night, morning, SHANGHAI) == at(7)
    assert quiet_hours_end(at(7), night, morning, SHANGHAI) is None


clock = st.builds(dt.time, st.integers(0, 23), st.integers(0, 59))
instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC))


@given(now=instants, start=clock, end=clock)
def test_a_held_message_goes_when_the_quiet_window_ends_and_not_before(now, start, end):
    due = quiet_hours_end(now, start, end, SHANGHAI)
    if start == end or due is None:
        return
    assert now < due <= now + dt.timedelta(days=1)
    assert due.astimezone(SHANGHAI).time() == end
    assert quiet_hours_end(due - dt.timedelta(microseconds=1), start, end, SHANGHAI) == due  # still quiet
    assert quiet_hours_end(due, start, end, SHANGHAI) is None  # the window's end is outside it


def plan(severity="moderate", channels=("sms", "app_push", "chat_group")):
    return DeliveryPlan(Notice(severity=severity, channels=list(channels)), "Asia/Shanghai")


def preference(channels, quiet=None, resident_id=1):
    start, end = quiet or (None, None)
    return Preference(resident_id=resident_id, channels=channels, quiet_start=start, quiet_end=end, updated_at=at(8))


def test_preferences_narrow_the_channels_but_never_to_none():
    assert plan().for_resident(None, at(9)) == (["sms", "app_push"], at(9))  # chat groups are not personal
    assert plan().for_resident(preference(["app_push"]), at(9)) == (["app_push"], at(9))
    assert plan().for_resident(preference(["voice_call"]), at(9)) == (["sms", "app_push"], at(9))


def test_quiet_hours_hold_ordinary_notices_and_let_urgent_ones_through():
    night = preference(["sms"], (dt.time(22, 0), dt.time(7, 0)))
    assert plan().for_resident(night, at(23)) == (["sms"], at(7) + dt.timedelta(days=1))
    assert plan(severity="extreme").for_resident(night, at(23)) == (["sms"], at(23))
    assert plan().for_resident(night, at(12)) == (["sms"], at(12))


# ---- recipients and deliveries ---------------------------------------------------------------------


def resident(resident_id, phone=None, tags=(), path=("1", "2", "3", "4")):
    return {"id": str(resident_id), "household_id": "10", "unit_path": list(path), "tags": list(tags), "phone": phone}


def test_a_page_of_residents_becomes_recipients_and_queued_deliveries(db):
    notice_id = add_notice(db, channels=["sms", "app_push"])
    page = [
        resident(100, "13800000100", tags=["elderly_alone", "party_member"]),
        resident(101, "138****0101"),  # masked: the grid gave no number to use
        resident(102),
    ]
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        uow.session.add(preference(["app_push"], resident_id=102))
        added = audience.add_recipients(uow, VAULT, notice, plan(channels=notice.channels), page, at(9))
        assert (added, notice.recipient_count) == (3, 3)
        rows = uow.session.scalars(select(Recipient).order_by(Recipient.resident_id)).all()
        assert [(r.unit_path, r.vulnerable_tags, r.vulnerable) for r in rows] == [
            (PATH_A, ["elderly_alone"], True),
            (PATH_A, [], False),
            (PATH_A, [], False),
        ]
        assert VAULT.decrypt(rows[0].address_enc, b"phone") == "13800000100"
        assert rows[1].address_enc is None and rows[2].address_enc is None
        deliveries = uow.session.execute(
            select(Recipient.resident_id, Delivery.channel, Delivery.status, Delivery.next_attempt_at).join(
                Recipient, Recipient.id == Delivery.recipient_id
            )
        ).all()
    expected = [(r, c, "queued", at(9)) for r in (100, 101) for c in ("sms", "app_push")] + [
        (102, "app_push", "queued", at(9))
    ]
    assert sorted(deliveries) == sorted(expected)


def add_groups(db, *units):
    paths = {SMALL_A: PATH_A, SMALL_B: PATH_B, 7: "/1/8/7/"}
    with unit_of_work(db) as uow:
        for unit_id in units:
            uow.session.add(
                ChatGroup(
                    unit_id=unit_id, unit_path=paths[unit_id], name="g", webhook_url="https://x", updated_at=at(9)
                )
            )
        uow.commit()


def chat_deliveries(db, notice_id):
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        added = audience.add_chat_groups(uow.session, notice, at(9))
        paths = uow.session.scalars(select(Delivery.unit_path).where(Delivery.channel == "chat_group")).all()
        return added, sorted(paths)


def test_each_chat_group_under_the_audience_gets_one_post_unless_tags_filter_the_audience(db):
    add_groups(db, SMALL_A, SMALL_B, 7)
    assert chat_deliveries(db, add_notice(db, channels=["chat_group"], audience={"under": [SMALL_A]})) == (1, [PATH_A])
    filtered = add_notice(db, channels=["chat_group"], audience={"under": [SMALL_A], "tags_any": ["disabled"]})
    assert chat_deliveries(db, filtered) == (0, [])
    assert chat_deliveries(db, add_notice(db, channels=["sms"], audience={"under": [SMALL_A]})) == (0, [])


def test_a_cancel_copies_the_recipients_the_original_reached_with_their_numbers(db):
    original = add_notice(db)
    cancel = add_notice(db, msg_type="cancel", references=original, status="approved")
    number = VAULT.encrypt("13800000100", b"phone")
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, original)
        audience.add_recipients(uow, VAULT, notice, plan(), [resident(100, "13800000100"), resident(101)], at(9))
        uow.session.execute(update(Delivery).where(Delivery.id == 1).values(status="delivered"))
        copied = audience.copy_reached_recipients(uow, uow.session.get(Notice, cancel), original, "Asia/Shanghai")
        rows = uow.session.scalars(select(Recipient).where(Recipient.notice_id == cancel)).all()
        assert copied == 1 and [r.resident_id for r in rows] == [100]
        assert VAULT.decrypt(rows[0].address_enc, b"phone") == VAULT.decrypt(number, b"phone")


def test_a_resolution_another_replica_took_over_stops_after_the_committed_page(db, grid, monkeypatch):
    monkeypatch.setattr(audience, "PAGE_SIZE", 1)
    notice_id = add_notice(db, status="approved", audience={"under": [SMALL_A, SMALL_B]})
    with unit_of_work(db) as uow:
        steps = audience.resolve_pages(uow, grid, VAULT, uow.session.get(Notice, notice_id), "Asia/Shanghai")
        next(steps)
        uow.commit()
        # Meanwhile another replica, its lock taken after this commit, moved the cursor on.
        uow.session.execute(update(Notice).values(resolve_cursor={"unit": 1, "after": None}))
        uow.commit()
        try:
            next(steps)
            raise AssertionError("kept resolving a notice another replica has")
        except StopIteration as finished:
            assert finished.value is False
        assert uow.session.scalars(select(Recipient.resident_id)).all() == [100]
    assert grid.calls.count("find_resident_columns") == 2  # the second page was asked ahead, never stored


def test_resolution_is_complete_once_every_audience_unit_is_done(db, grid):
    notice_id = add_notice(db, status="approved", audience={"under": [SMALL_A, SMALL_B]})
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        steps = audience.resolve_pages(uow, grid, VAULT, notice, "Asia/Shanghai")
        pages = 0
        try:
            while True:
                next(steps)
                uow.commit()
                pages += 1
        except StopIteration as finished:
            assert finished.value is True
        assert pages == 2 and notice.recipient_count == 3 and notice.resolve_cursor == {"unit": 2, "after": None}
