"""Publishing (services.notices.publishing) on SQLite with a fake grid: the timer's steps (each
audience page and each notice committed by the timer, resumable from the cursor), cancels, direct
messages once per origin, and quarantine instructions once per household and day."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from services.notices import audience, publishing
from services.notices.models import Delivery, Notice, NoticeTarget, Recipient
from services.notices.service import commit_steps
from shared.db import utcnow
from shared.errors import Forbidden, ValidationError
from tests.unit.local import VAULT, caller, events, unit_of_work
from tests.unit.notices.conftest import PATH_B, PHONES, SMALL_A, SMALL_B, add_delivery, add_notice

ZONE = "Asia/Shanghai"


def publish(db, grid, **limits):
    with unit_of_work(db) as uow:
        return commit_steps(uow, publishing.publish_due(uow, grid, VAULT, ZONE, **limits))


def recipients(db, notice_id):
    """(resident id, encrypted number) of the notice's recipients."""
    with unit_of_work(db) as uow:
        return uow.session.execute(
            select(Recipient.resident_id, Recipient.address_enc)
            .where(Recipient.notice_id == notice_id)
            .order_by(Recipient.resident_id)
        ).all()


def due_notice(db, **fields):
    return add_notice(
        db, **{"status": "approved", "published_at": None, "audience": {"under": [SMALL_A, SMALL_B]}, **fields}
    )


def test_a_due_notice_is_published_to_its_audience_and_announced_without_its_text(db, grid):
    notice_id = due_notice(db, channels=["sms", "app_push"])
    assert publish(db, grid) == 1
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        assert (notice.status, notice.recipient_count) == ("published", 3)
        channels = sorted(uow.session.scalars(select(Delivery.channel).where(Delivery.notice_id == notice_id)))
    assert channels == ["app_push"] * 3 + ["sms"] * 3
    assert [r for r, _ in recipients(db, notice_id)] == [100, 101, 102]
    assert events(db, "notice_published") == [
        (
            "notice_published",
            f"notice/{notice_id}",
            {
                "notice_id": str(notice_id),
                "msg_type": "alert",
                "category": "policy",
                "severity": "moderate",
                "urgency": "expected",
                "references": None,
                "audience_unit_ids": [str(SMALL_A), str(SMALL_B)],
                "recipient_count": 3,
                "requires_ack": False,
            },
        )
    ]


def test_each_audience_page_is_a_step_the_timer_commits_with_its_cursor(db, grid, monkeypatch):
    monkeypatch.setattr(audience, "PAGE_SIZE", 1)
    notice_id = due_notice(db)
    committed = []
    with unit_of_work(db) as uow:
        steps = publishing.publish_due(uow, grid, VAULT, ZONE, max_pages=2, max_rounds=1)
        for _ in steps:
            uow.commit()
            committed.append(uow.session.get(Notice, notice_id).resolve_cursor)
    # Two pages (a step each), then the round: not yet complete, so not published.
    assert committed == [{"unit": 0, "after": 100}, {"unit": 1, "after": None}, {"unit": 1, "after": None}]
    assert [r for r, _ in recipients(db, notice_id)] == [100, 101]
    # The next tick resumes at the cursor: nobody twice, nobody left out.
    publish(db, grid)
    assert [r for r, _ in recipients(db, notice_id)] == [100, 101, 102]
    with unit_of_work(db) as uow:
        assert uow.session.get(Notice, notice_id).status == "published"


def test_a_crash_between_pages_keeps_the_pages_committed_before_it(db, grid, monkeypatch):
    monkeypatch.setattr(audience, "PAGE_SIZE", 1)
    notice_id = due_notice(db)
    with unit_of_work(db) as uow:
        steps = publishing.publish_due(uow, grid, VAULT, ZONE)
        next(steps)
        uow.commit()  # the first page
        next(steps)  # the second page is stored, then the process dies before the timer commits it
    assert [r for r, _ in recipients(db, notice_id)] == [100]
    publish(db, grid)
    assert [r for r, _ in recipients(db, notice_id)] == [100, 101, 102]


def test_a_published_cancel_reaches_only_those_the_original_reached(db, grid):
    original = add_notice(db, audience={"under": [SMALL_A]}, channels=["sms"])
    add_delivery(db, original, resident_id=100, status="sent", address_enc=VAULT.encrypt(PHONES["100"], b"phone"))
    add_delivery(db, original, resident_id=101, status="queued")
    cancel = due_notice(db, msg_type="cancel", references=original, audience={"under": [SMALL_A]}, channels=["sms"])
    assert publish(db, grid) == 1
    with unit_of_work(db) as uow:
        assert uow.session.get(Notice, original).status == "cancelled"
        assert uow.session.get(Notice, cancel).status == "published"
    assert [(r, VAULT.decrypt(phone, b"phone")) for r, phone in recipients(db, cancel)] == [(100, PHONES["100"])]
    assert [e[0] for e in events(db)] == ["notice_cancelled", "notice_published"]


# ---- direct messages -----------------------------------------------------------------------------


def send(db, grid, who=None, **args):
    args = {"resident_ids": [100, 102], "template": "check_in", "params": {"when": "today"}, "channels": None, **args}
    with unit_of_work(db) as uow:
        message = publishing.send_direct(uow, who or caller("service", sub="service:legal"), grid, VAULT, ZONE, **args)
        uow.commit()
        return message


def test_a_direct_message_is_rendered_and_queued_by_sms_with_the_numbers_encrypted(db, grid):
    message = send(db, grid)
    assert (message.kind, message.status, message.recipient_count) == ("direct", "published", 2)
    assert "today" in message.body and message.audience == {"under": [], "template": "check_in"}
    numbers = [phone for _, phone in recipients(db, message.id)]
    assert [VAULT.decrypt(phone, b"phone") for phone in numbers] == [PHONES["100"], PHONES["102"]]
    assert not any(PHONES["100"].encode() in phone or PHONES["102"].encode() in phone for phone in numbers)
    with unit_of_work(db) as uow:
        assert set(uow.session.scalars(select(Delivery.channel).where(Delivery.notice_id == message.id))) == {"sms"}


def test_a_direct_message_is_sent_once_per_origin(db, grid):
    first = send(db, grid, origin="volunteer:offer/7")
    assert send(db, grid, origin="volunteer:offer/7", params={"when": "tomorrow"}).id == first.id
    with unit_of_work(db) as uow:
        assert uow.session.scalar(select(func.count()).select_from(Notice)) == 1


def test_a_scoped_sender_messages_only_residents_under_its_unit(db, grid):
    with pytest.raises(Forbidden):
        send(db, grid, who=caller("service", unit=3))  # resident 102 lives under community 5
    assert send(db, grid, who=caller("service", unit=3), resident_ids=[100]).recipient_count == 1


def test_unknown_residents_and_template_params_are_named_by_field(db, grid):
    with pytest.raises(ValidationError) as unknown:
        send(db, grid, resident_ids=[100, 555])
    assert unknown.value.fields == {"resident_ids": ["Unknown residents: 555."]}
    with pytest.raises(ValidationError) as params:
        send(db, grid, params={})
    assert params.value.fields == {"params": ["Missing: when."]}


# ---- quarantine instructions ---------------------------------------------------------------------


def instruct(db, grid, household_id=11, until=None):
    with unit_of_work(db) as uow:
        result = publishing.quarantine_instructions(uow, "system:notices", grid, VAULT, ZONE, household_id, until)
        uow.commit()
        return result


def test_quarantine_instructions_go_to_the_household_once_a_day_listed_under_its_grid(db, grid):
    until = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)  # 04:00 on the 2nd in Shanghai
    message, why_not = instruct(db, grid, until=until)
    assert why_not is None and "2026-12-02" in message.body
    assert message.channels == ["app_push", "sms"] and message.audience["household_id"] == "11"
    today = utcnow().astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    assert message.origin == f"quarantine:household/11:{today}"
    with unit_of_work(db) as uow:
        assert uow.session.scalars(select(NoticeTarget.unit_path)).all() == [PATH_B]
    assert instruct(db, grid) == (None, "already sent today")


def test_no_instructions_once_nobody_in_the_household_is_quarantined(db, grid):
    grid.residents_by_id["102"]["tags"] = []
    assert instruct(db, grid) == (None, "no longer quarantined")
    assert instruct(db, grid, household_id=10) == (None, "no longer quarantined")
