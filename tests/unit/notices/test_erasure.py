"""Notices reacting to the grid's ``resident_erased`` and ``tag_purged`` (services/notices/erasure.py):
phones and tag snapshots cleared, deliveries not yet sent failed, preferences deleted, a direct message
to the resident alone emptied; a tombstone keeps them out; replays change nothing more."""

import datetime as dt

from nameko.testing.services import worker_factory
from sqlalchemy import select, update

from services.notices import erasure, publishing
from services.notices.models import FACTS, Delivery, Notice, Preference, Recipient
from services.notices.service import NoticesService, commit_steps
from shared import grid_facts
from shared.db import utcnow
from tests.unit.local import VAULT, unit_of_work
from tests.unit.notices.conftest import PATH_B, SMALL_A, SMALL_B, add_delivery, add_notice

PHONE = VAULT.encrypt("13800000102", b"phone")


def handler(db, grid, method, data, event_id="e1"):
    body = {
        "specversion": "1.0",
        "id": event_id,
        "source": "grid",
        "type": method,
        "time": utcnow().isoformat(),
        "subject": None,
        "data": data,
    }
    with unit_of_work(db) as uow:
        service = worker_factory(NoticesService, db=uow, grid=grid, vault=VAULT, config={})
        return getattr(service, f"on_{method}")(body)


def erased(resident_id=102, household_id=11, emptied=True):
    return {
        "resident_id": str(resident_id),
        "household_id": str(household_id),
        "unit_id": str(SMALL_B),
        "unit_path": ["1", "2", "5", str(SMALL_B)],
        "household_emptied": emptied,
        "erasure_id": "7",
        "erased_at": utcnow().isoformat(),
    }


def purged(tag, released_at, reason="retention", resident_id=102):
    return {
        "resident_id": str(resident_id),
        "household_id": "11",
        "unit_id": str(SMALL_B),
        "unit_path": ["1", "2", "5", str(SMALL_B)],
        "tag": tag,
        "released_at": released_at.isoformat(),
        "reason": reason,
    }


def rows(db, model, *where):
    with unit_of_work(db) as uow:
        return [
            {c.key: getattr(r, c.key) for c in r.__table__.columns}
            for r in uow.session.scalars(select(model).where(*where).order_by(*model.__table__.primary_key.columns))
        ]


def test_an_erasure_clears_phones_fails_unsent_posts_and_deletes_preferences_once(db, grid):
    notice = add_notice(db, audience={"under": [SMALL_B]})
    queued = add_delivery(db, notice, resident_id=102, path=PATH_B, tags=["quarantined"], address_enc=PHONE)
    other = add_notice(db, audience={"under": [SMALL_B]})
    sent = add_delivery(db, other, resident_id=102, path=PATH_B, status="sent", address_enc=PHONE)
    neighbour = add_delivery(db, notice, resident_id=101, path=PATH_B, address_enc=PHONE)
    direct = add_notice(db, kind="direct", title="For 102", body="Dear Wang Wu", audience={"under": [SMALL_B]})
    add_delivery(db, direct, resident_id=102, path=PATH_B)
    with unit_of_work(db) as uow:
        uow.session.add(Preference(resident_id=102, channels=["sms"], updated_at=utcnow()))
        uow.session.execute(update(Recipient).where(Recipient.resident_id == 102).values(address_hash="ab" * 32))
        uow.commit()

    done = handler(db, grid, "resident_erased", erased())
    assert done == {
        "grid_residents": 0,
        "grid_households": 0,
        "recipients": 3,  # every one of theirs held a phone, its index or a tag
        "deliveries": 2,  # the queued one and the direct message's
        "preferences": 1,
        "direct_messages": 1,
        "remembered_replies": 0,
    }
    for recipient in rows(db, Recipient, Recipient.resident_id == 102):
        assert (recipient["address_enc"], recipient["address_hash"], recipient["vulnerable_tags"]) == (None, None, [])
        assert recipient["vulnerable"] is False
    by_id = {d["id"]: d for d in rows(db, Delivery)}
    assert (by_id[queued]["status"], by_id[queued]["detail"]) == ("failed", "recipient erased")
    assert by_id[sent]["status"] == "sent"  # what was sent stays as it was
    assert by_id[neighbour]["status"] == "queued"
    assert rows(db, Preference) == []
    assert [(n["title"], n["body"]) for n in rows(db, Notice, Notice.id == direct)] == [("[erased]", "[erased]")]
    assert rows(db, Recipient, Recipient.resident_id == 101)[0]["address_enc"] == PHONE
    with unit_of_work(db) as uow:
        assert erasure.recipients_holding(uow.session, 102) == 0
        assert grid_facts.erased_among(uow.session, FACTS, [101, 102]) == {102}

    assert handler(db, grid, "resident_erased", erased()) == "duplicate"
    again = handler(db, grid, "resident_erased", erased(), event_id="e2")
    assert set(again.values()) == {0}


def test_a_tag_event_after_the_erasure_sends_nothing(db, grid):
    handler(db, grid, "resident_erased", erased())
    tagged = {"resident_id": "102", "household_id": "11", "unit_id": str(SMALL_B), "tag": "quarantined"}
    assert handler(db, grid, "resident_tagged", tagged, event_id="e2") == "erased"
    assert rows(db, Notice) == []


def test_a_purged_tag_leaves_the_snapshots_taken_before_its_release(db, grid):
    released = utcnow() - dt.timedelta(days=10)
    before = add_notice(db, created_at=released - dt.timedelta(days=5))
    after = add_notice(db, created_at=released + dt.timedelta(days=5))
    add_delivery(db, before, resident_id=102, path=PATH_B, tags=["quarantined", "disabled"])
    add_delivery(db, after, resident_id=102, path=PATH_B, tags=["quarantined"])
    add_delivery(db, before, resident_id=101, tags=["quarantined"])

    assert handler(db, grid, "tag_purged", purged("quarantined", released)) == {"recipients": 1}
    snapshots = {
        r["notice_id"]: (r["vulnerable_tags"], r["vulnerable"])
        for r in rows(db, Recipient, Recipient.resident_id == 102)
    }
    assert snapshots[before] == (["disabled"], True)
    assert snapshots[after] == (["quarantined"], True)  # quarantined again since: kept
    assert rows(db, Recipient, Recipient.resident_id == 101)[0]["vulnerable_tags"] == ["quarantined"]
    assert handler(db, grid, "tag_purged", purged("quarantined", released), event_id="e2") == {"recipients": 0}
    # removed by an erasure: from every snapshot
    erased_tag = purged("disabled", released, reason="erased")
    assert handler(db, grid, "tag_purged", erased_tag, event_id="e3") == {"recipients": 1}
    assert rows(db, Recipient, Recipient.notice_id == before, Recipient.resident_id == 102)[0]["vulnerable"] is False


def test_a_fan_out_page_read_before_the_erasure_does_not_store_the_erased_residents_phone(db, grid):
    handler(db, grid, "resident_erased", erased(emptied=False))
    # The grid's page (the fake grid still has them: read before the erasure) is written after it.
    deadline = utcnow() + dt.timedelta(hours=1)
    notice = add_notice(
        db,
        status="approved",
        published_at=None,
        requires_ack=True,
        ack_deadline=deadline,
        channels=["sms"],
        audience={"under": [SMALL_A, SMALL_B]},
    )
    with unit_of_work(db) as uow:
        commit_steps(uow, publishing.publish_due(uow, grid, VAULT, "Asia/Shanghai"))
    assert sorted(r["resident_id"] for r in rows(db, Recipient, Recipient.notice_id == notice)) == [100, 101]
    assert rows(db, Notice, Notice.id == notice)[0]["recipient_count"] == 2
    with unit_of_work(db) as uow:
        assert erasure.recipients_holding(uow.session, 102) == 0


def housekeeping(db, grid):
    with unit_of_work(db) as uow:
        service = worker_factory(NoticesService, db=uow, grid=grid, vault=VAULT, config={})
        service.housekeeping()
        uow.commit()
        return {
            call.args[1]: call.kwargs["amount"]
            for call in service.telemetry.count.call_args_list
            if call.args[0] == "grassroots_notices_derived_data_purged_total"
        }


def test_housekeeping_erases_again_what_a_page_written_during_the_erasure_stored(db, grid):
    handler(db, grid, "resident_erased", erased())
    # A page committed while the erasure was applied: its rows escaped the handler's UPDATE.
    notice = add_notice(db, audience={"under": [SMALL_B]})
    late = add_delivery(db, notice, resident_id=102, path=PATH_B, tags=["quarantined"], address_enc=PHONE)
    neighbour = add_delivery(db, notice, resident_id=101, path=PATH_B, address_enc=PHONE)
    assert housekeeping(db, grid) == {"recipients": 1, "deliveries": 1, "preferences": 0, "direct_messages": 0}
    with unit_of_work(db) as uow:
        assert erasure.recipients_holding(uow.session, 102) == 0
    by_id = {d["id"]: d for d in rows(db, Delivery)}
    assert (by_id[late]["status"], by_id[late]["detail"]) == ("failed", "recipient erased")
    assert by_id[neighbour]["status"] == "queued"
    assert rows(db, Recipient, Recipient.resident_id == 101)[0]["address_enc"] == PHONE
    assert housekeeping(db, grid) == {}  # nothing holds anything again: nothing done


def test_the_sweep_looks_only_at_erasures_of_the_last_day(db, grid):
    handler(db, grid, "resident_erased", erased())
    with unit_of_work(db) as uow:
        uow.session.execute(update(FACTS.erased).values(applied_at=utcnow() - dt.timedelta(days=2)))
        uow.commit()
    add_delivery(db, add_notice(db, audience={"under": [SMALL_B]}), resident_id=102, path=PATH_B, address_enc=PHONE)
    with unit_of_work(db) as uow:
        assert erasure.sweep_recent(uow.session) == {}
        assert erasure.sweep_recent(uow.session, window=dt.timedelta(days=3)) != {}
