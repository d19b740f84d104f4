"""The notice workflow (services.notices.notices) on SQLite: drafts and their audience, updates and
cancels of an earlier notice, two-person approval, scope on every read, cancelling and expiring."""

import datetime as dt

import pytest
from sqlalchemy import select

from services.notices import notices
from services.notices.models import Delivery, Notice, NoticeTarget
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.unit.local import caller, events, unit_of_work
from tests.unit.notices.conftest import PATH_A, PATH_B, SMALL_A, SMALL_B, add_delivery, add_notice

STREET = caller("officer", unit=2, sub="officer-1")
COLLEAGUE = caller("officer", unit=2, sub="officer-2")
COMMUNITY_A = caller("officer", unit=3, sub="officer-a")


def draft(**fields):
    return {
        "title": "Water off",
        "body": "Water is off 9-12.",
        "category": "policy",
        "severity": "moderate",
        "urgency": "expected",
        "channels": ["sms"],
        "publish_at": None,
        "expires_at": None,
        "requires_ack": False,
        "ack_deadline": None,
        "msg_type": "alert",
        "references": None,
        **fields,
    }


def create(db, grid, who=STREET, under=(SMALL_A,), **fields):
    with unit_of_work(db) as uow:
        notice = notices.create_notice(uow, who, grid, {"under": list(under)}, **draft(**fields))
        uow.commit()
        return notice


def approve(db, who, notice_id):
    with unit_of_work(db) as uow:
        notice = notices.approve_notice(uow, who, notice_id)
        uow.commit()
        return notice


def targets(db, notice_id):
    with unit_of_work(db) as uow:
        rows = uow.session.scalars(select(NoticeTarget).where(NoticeTarget.notice_id == notice_id))
        return {row.unit_id: row.unit_path for row in rows}


# ---- drafts -------------------------------------------------------------------------------------


def test_a_draft_keeps_its_outermost_audience_units_with_their_paths(db, grid):
    notice = create(db, grid, under=(SMALL_A, 3, SMALL_B))
    assert (notice.status, notice.author, notice.recipient_count) == ("draft", "officer-1", 0)
    assert notice.audience["under"] == [3, SMALL_B]  # small grid A lies under community 3
    assert targets(db, notice.id) == {3: "/1/2/3/", SMALL_B: PATH_B}


def test_an_audience_unit_outside_the_callers_unit_is_forbidden_and_nothing_is_stored(db, grid):
    with pytest.raises(Forbidden), unit_of_work(db) as uow:
        notices.create_notice(uow, COMMUNITY_A, grid, {"under": [SMALL_A, SMALL_B]}, **draft())
    with unit_of_work(db) as uow:
        assert uow.session.scalars(select(Notice)).all() == []


def test_an_unknown_audience_unit_is_a_validation_error_on_audience(db, grid):
    with pytest.raises(ValidationError) as raised, unit_of_work(db) as uow:
        notices.create_notice(uow, STREET, grid, {"under": [999]}, **draft())
    assert raised.value.fields == {"audience": ["Unknown unit 999."]}


# ---- updates and cancels ------------------------------------------------------------------------


def published(db, under=(SMALL_A, SMALL_B)):
    return add_notice(db, audience={"under": list(under)})


def test_a_cancel_goes_to_exactly_the_audience_of_the_notice_it_cancels(db, grid):
    original = published(db)
    with pytest.raises(ValidationError) as raised:
        create(db, grid, under=(SMALL_A,), msg_type="cancel", references=original)
    assert list(raised.value.fields) == ["audience"]
    cancel = create(db, grid, under=(SMALL_A, SMALL_B), msg_type="cancel", references=original)
    assert cancel.references == original


def test_an_update_lies_within_the_notice_it_updates(db, grid):
    original = published(db, under=(SMALL_A,))
    with pytest.raises(ValidationError) as raised:
        create(db, grid, under=(3,), msg_type="update", references=original)  # wider than the original
    assert list(raised.value.fields) == ["audience"]
    assert create(db, grid, under=(SMALL_A,), msg_type="update", references=original).references == original


def test_referencing_a_notice_needs_reach_over_all_of_its_units_before_its_status_is_revealed(db, grid):
    original = add_notice(db, audience={"under": [SMALL_A, SMALL_B]}, status="draft")
    with pytest.raises(Forbidden):  # not Conflict: the draft status stays hidden from community A
        create(db, grid, who=COMMUNITY_A, under=(SMALL_A,), msg_type="update", references=original)
    with pytest.raises(Conflict, match="draft"):
        create(db, grid, under=(SMALL_A, SMALL_B), msg_type="cancel", references=original)


def test_a_direct_message_cannot_be_updated_or_cancelled(db, grid):
    message = add_notice(db, kind="direct", audience={"under": [SMALL_A]})
    with pytest.raises(Conflict, match="direct message"):
        create(db, grid, under=(SMALL_A,), msg_type="update", references=message)


# ---- approval ----------------------------------------------------------------------------------


def test_approval_moves_a_draft_on_and_publishes_it_now_unless_scheduled(db, grid):
    notice = create(db, grid)
    approved = approve(db, COLLEAGUE, notice.id)
    assert (approved.status, approved.approved_by) == ("approved", "officer-2")
    assert approved.publish_at == approved.approved_at
    with pytest.raises(Conflict, match="not a draft"):
        approve(db, COLLEAGUE, notice.id)


def test_a_severe_notice_needs_a_second_person(db, grid):
    notice = create(db, grid, severity="severe")
    with pytest.raises(Forbidden, match="other than its author"):
        approve(db, STREET, notice.id)
    assert approve(db, COLLEAGUE, notice.id).status == "approved"
    assert approve(db, STREET, create(db, grid, severity="minor").id).status == "approved"


def test_the_approver_must_reach_every_audience_unit(db, grid):
    notice = create(db, grid, under=(SMALL_A, SMALL_B))
    with pytest.raises(Forbidden):
        approve(db, COMMUNITY_A, notice.id)  # reaches small grid A only


def test_a_notice_that_expired_as_a_draft_cannot_be_approved(db, grid):
    notice_id = add_notice(db, status="draft", expires_at=utcnow() - dt.timedelta(minutes=1))
    with pytest.raises(Conflict, match="expired"):
        approve(db, STREET, notice_id)


# ---- reading -----------------------------------------------------------------------------------


def test_a_notice_is_read_by_callers_reaching_one_of_its_units(db):
    notice_id = add_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    only_a = add_notice(db, audience={"under": [SMALL_A]})
    with unit_of_work(db) as uow:
        assert notices.reachable_notice(uow.session, COMMUNITY_A, notice_id).id == notice_id
        with pytest.raises(Forbidden):
            notices.reachable_notice(uow.session, caller("officer", unit=5), only_a)
        with pytest.raises(NotFound):
            notices.reachable_notice(uow.session, STREET, 999)


def test_a_message_to_no_unit_is_only_for_unscoped_callers(db):
    message_id = add_notice(db, kind="direct", audience={"under": []})
    with unit_of_work(db) as uow:
        with pytest.raises(Forbidden):
            notices.reachable_notice(uow.session, STREET, message_id)
        assert notices.reachable_notice(uow.session, caller("service"), message_id).id == message_id


def listed(db, grid, who, **filters):
    args = {"under": None, "status": None, "kind": "notice", "page": 1, "page_size": 10, **filters}
    with unit_of_work(db) as uow:
        rows, more = notices.list_notices(uow.session, who, grid, **args)
        return [row.id for row in rows], more


def test_lists_default_to_the_callers_unit_and_filter_by_subtree_status_and_kind(db, grid):
    in_a = add_notice(db, audience={"under": [SMALL_A]})
    in_b = add_notice(db, audience={"under": [SMALL_B]}, status="expired")
    message = add_notice(db, kind="direct", audience={"under": [SMALL_B]})
    assert listed(db, grid, STREET) == ([in_b, in_a], False)  # newest first
    assert listed(db, grid, COMMUNITY_A) == ([in_a], False)
    assert listed(db, grid, STREET, under=5, status="expired") == ([in_b], False)
    assert listed(db, grid, STREET, kind="direct") == ([message], False)
    assert listed(db, grid, STREET, page_size=1) == ([in_b], True)
    with pytest.raises(Forbidden):
        listed(db, grid, COMMUNITY_A, under=SMALL_B)
    with pytest.raises(Forbidden, match="no unit scope"):
        listed(db, grid, caller("officer", "resident"))


# ---- cancelling and expiring -------------------------------------------------------------------


def test_a_published_cancel_stops_the_originals_queued_deliveries_and_says_so_once(db):
    original = add_notice(db)
    queued = add_delivery(db, original, resident_id=100)
    sent = add_delivery(db, original, resident_id=101, status="sent")
    cancel = add_notice(db, msg_type="cancel", references=original, status="approved")
    now = utcnow()
    for _ in range(2):
        with unit_of_work(db) as uow:
            notices.cancel_original(uow, uow.session.get(Notice, cancel), now)
            uow.commit()
    with unit_of_work(db) as uow:
        assert uow.session.get(Notice, original).status == "cancelled"
        detail = {d.id: (d.status, d.detail) for d in uow.session.scalars(select(Delivery))}
    assert detail == {queued: ("failed", "cancelled"), sent: ("sent", None)}
    assert events(db, "notice_cancelled") == [
        ("notice_cancelled", f"notice/{original}", {"notice_id": str(original), "cancelled_by": str(cancel)})
    ]


def test_notices_past_their_expiry_stop_delivering(db):
    now = utcnow()
    past = add_notice(db, expires_at=now - dt.timedelta(seconds=1))
    current = add_notice(db, expires_at=now + dt.timedelta(hours=1))
    queued = add_delivery(db, past)
    with unit_of_work(db) as uow:
        assert notices.expire_notices(uow, now) == 1
        uow.commit()
    with unit_of_work(db) as uow:
        assert [uow.session.get(Notice, n).status for n in (past, current)] == ["expired", "published"]
        delivery = uow.session.get(Delivery, queued)
        assert (delivery.status, delivery.detail) == ("failed", "expired")


def test_approved_notices_are_due_once_their_time_has_come_oldest_first(db):
    now = utcnow()
    later = add_notice(db, status="approved", publish_at=now - dt.timedelta(seconds=1))
    earlier = add_notice(db, status="approved", publish_at=now - dt.timedelta(minutes=1))
    add_notice(db, status="approved", publish_at=now + dt.timedelta(minutes=1))
    add_notice(db, status="draft", publish_at=now - dt.timedelta(minutes=1))
    with unit_of_work(db) as uow:
        assert [n.id for n in notices.due_for_publishing(uow.session, now)] == [earlier, later]


def test_target_paths_are_the_audience_units_paths(db):
    notice_id = add_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    with unit_of_work(db) as uow:
        assert sorted(notices.target_paths(uow.session, uow.session.get(Notice, notice_id))) == [PATH_A, PATH_B]
