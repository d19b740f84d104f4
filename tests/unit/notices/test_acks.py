"""Acknowledgements, delivery reports and the follow-up of who did not acknowledge
(services.notices.acks) on SQLite: who may acknowledge for whom and what they learn, reports cut to
the caller's subtree, and events that carry ids only."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from services.notices import acks
from services.notices.models import Acknowledgement, Delivery, Notice
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound
from tests.unit.local import caller, events, unit_of_work
from tests.unit.notices.conftest import PATH_A, PATH_B, SMALL_A, SMALL_B, add_delivery, add_notice

ADMIN = caller("admin")
COMMUNITY_A = caller("officer", unit=3)
COMMUNITY_B = caller("officer", unit=5)


def acknowledge(db, grid, who, notice_id, resident_id):
    with unit_of_work(db) as uow:
        ack = acks.acknowledge(uow, who, grid, notice_id, resident_id)
        uow.commit()
        return ack.acknowledged_at


def test_a_resident_acknowledges_once_for_themselves(db, grid):
    notice_id = add_notice(db, requires_ack=True)
    add_delivery(db, notice_id, resident_id=100)
    first = acknowledge(db, grid, caller("resident", sub="100"), notice_id, 100)
    assert acknowledge(db, grid, caller("resident", sub="100"), notice_id, 100) == first
    with unit_of_work(db) as uow:
        assert uow.session.scalar(select(func.count()).select_from(Acknowledgement)) == 1


def test_a_resident_is_refused_for_anyone_else_before_the_notice_is_looked_up(db, grid):
    with pytest.raises(Forbidden):
        acknowledge(db, grid, caller("resident", sub="100"), 999, 101)  # not NotFound: nothing looked up


def test_staff_acknowledge_for_recipients_in_their_subtree_only(db, grid):
    notice_id = add_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    add_delivery(db, notice_id, resident_id=100)
    acknowledge(db, grid, COMMUNITY_A, notice_id, 100)
    with pytest.raises(Forbidden):
        acknowledge(db, grid, COMMUNITY_B, notice_id, 100)


def test_staff_hear_that_someone_is_no_recipient_only_for_a_resident_and_notice_of_theirs(db, grid):
    notice_a = add_notice(db, audience={"under": [SMALL_A]})
    notice_b = add_notice(db, audience={"under": [SMALL_B]})
    with pytest.raises(NotFound, match="not a recipient"):
        acknowledge(db, grid, COMMUNITY_A, notice_a, 101)
    with pytest.raises(Forbidden):  # a notice of community B: who received it stays unsaid
        acknowledge(db, grid, COMMUNITY_A, notice_b, 101)
    with pytest.raises(Forbidden):  # a resident the grid does not know
        acknowledge(db, grid, COMMUNITY_A, notice_a, 555)


def test_a_cancelled_notice_takes_no_new_acknowledgement(db, grid):
    notice_id = add_notice(db, status="cancelled")
    add_delivery(db, notice_id, resident_id=100)
    with pytest.raises(Conflict, match="cancelled"):
        acknowledge(db, grid, caller("resident", sub="100"), notice_id, 100)


# ---- delivery reports -----------------------------------------------------------------------------


@pytest.fixture
def reported(db):
    """A notice to both small grids: resident 100 sent and acknowledged, 101 failed, 102 (in B) queued;
    small grid A's chat group posted."""
    notice_id = add_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    add_delivery(db, notice_id, resident_id=100, status="sent")
    add_delivery(db, notice_id, resident_id=101, status="failed")
    add_delivery(db, notice_id, resident_id=102, path=PATH_B)
    now = utcnow()
    with unit_of_work(db) as uow:
        uow.session.add(Acknowledgement(notice_id=notice_id, resident_id=100, acknowledged_at=now))
        uow.session.add(
            Delivery(
                notice_id=notice_id,
                unit_path=PATH_A,
                channel="chat_group",
                status="sent",
                attempts=1,
                next_attempt_at=now,
                created_at=now,
            )
        )
        uow.commit()
    return notice_id


def report(db, grid, who, notice_id, level=None):
    with unit_of_work(db) as uow:
        return acks.delivery_report(uow.session, who, grid, uow.session.get(Notice, notice_id), level)


def counts(targeted, sent=0, delivered=0, failed=0, acknowledged=0):
    return {"targeted": targeted, "sent": sent, "delivered": delivered, "failed": failed, "acknowledged": acknowledged}


def test_a_report_counts_residents_per_audience_unit_and_chat_groups(db, grid, reported):
    assert report(db, grid, ADMIN, reported) == {
        "notice_id": reported,
        "level": None,
        **counts(3, sent=1, failed=1, acknowledged=1),
        "units": [
            {"unit_id": SMALL_A, **counts(2, sent=1, failed=1, acknowledged=1)},
            {"unit_id": SMALL_B, **counts(1)},
        ],
        "chat_groups": {"queued": 0, "sent": 1, "delivered": 0, "failed": 0},
        # No gateway reported a reply (services.notices.inbound; tests/unit/notices/test_inbound.py).
        "acknowledged_by_sms": 0,
        "acknowledged_by_keypress": 0,
        "inbound_replies": 0,
    }


def test_a_scoped_caller_sees_only_its_subtree(db, grid, reported):
    seen = report(db, grid, COMMUNITY_B, reported)
    assert {k: seen[k] for k in counts(0)} == counts(1)
    assert [u["unit_id"] for u in seen["units"]] == [SMALL_B]
    assert seen["chat_groups"]["sent"] == 0  # small grid A's group is not under community B


def test_a_report_by_level_rolls_up_to_the_units_at_that_level(db, grid):
    notice_id = add_notice(db, audience={"under": [2]})
    add_delivery(db, notice_id, resident_id=100, status="delivered")
    add_delivery(db, notice_id, resident_id=102, path=PATH_B)
    units = report(db, grid, ADMIN, notice_id, level="community")["units"]
    assert units == [{"unit_id": 3, **counts(1, sent=1, delivered=1)}, {"unit_id": 5, **counts(1)}]


# ---- following up who did not acknowledge -----------------------------------------------------------


def test_notices_past_their_ack_deadline_are_checked_once(db):
    past = utcnow() - dt.timedelta(minutes=1)
    due = add_notice(db, requires_ack=True, ack_deadline=past)
    add_notice(db, requires_ack=True, ack_deadline=utcnow() + dt.timedelta(hours=1))
    add_notice(db, requires_ack=True, ack_deadline=past, ack_checked=True)
    add_notice(db, requires_ack=True, ack_deadline=past, status="cancelled")
    with unit_of_work(db) as uow:
        assert [n.id for n in acks.due_ack_checks(uow.session, utcnow())] == [due]


def test_vulnerable_recipients_without_an_acknowledgement_are_reported_by_id_in_chunks(db, monkeypatch):
    monkeypatch.setattr(acks, "EVENT_CHUNK", 1)
    notice_id = add_notice(db, requires_ack=True, audience={"under": [SMALL_A, SMALL_B]})
    add_delivery(db, notice_id, resident_id=100, tags=["elderly_alone"])
    add_delivery(db, notice_id, resident_id=101)  # not vulnerable
    add_delivery(db, notice_id, resident_id=102, tags=["quarantined"], path=PATH_B)
    with unit_of_work(db) as uow:
        notice = uow.session.get(Notice, notice_id)
        assert acks.report_unacknowledged(uow, notice) == 2
        assert notice.ack_checked
        uow.commit()
    reported = events(db, "notice_unacknowledged")
    assert [data for _, _, data in reported] == [
        {
            "notice_id": str(notice_id),
            "chunk": 1,
            "chunks": 2,
            "residents": [{"resident_id": "100", "household_id": "10", "unit_id": str(SMALL_A)}],
        },
        {
            "notice_id": str(notice_id),
            "chunk": 2,
            "chunks": 2,
            "residents": [{"resident_id": "102", "household_id": "11", "unit_id": str(SMALL_B)}],
        },
    ]
