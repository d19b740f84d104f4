"""An erased resident's data leaves the remembered replies of idempotent writes at once, and a retry of
such a write is refused instead of run again (shared.idempotency.forget_replies)."""

import json

import pytest

from shared.errors import Conflict
from shared.idempotency import ERASED_REPLY, REPLY_CONTEXT, Remembered, forget_replies
from tests.unit.local import VAULT, local_database, unit_of_work


@pytest.fixture
def db():
    return local_database("volunteer")


def remember(uow, method, key, params, reply):
    remembered = Remembered(uow, VAULT, "officer-1", method, key, params)
    remembered.replay()
    remembered.remember(reply)
    return remembered


def stored(db):
    with unit_of_work(db) as uow:
        model = uow.idempotency_model
        return {row.method: json.loads(VAULT.decrypt(row.reply, REPLY_CONTEXT)) for row in uow.session.query(model)}


def test_replies_naming_the_resident_are_blanked_and_others_kept(db):
    with unit_of_work(db) as uow:
        remember(uow, "register_resident", "k1", {"name": "x"}, {"id": "17", "name": "王秀英", "phone": "138****5678"})
        remember(uow, "create_request", "k2", {"a": 1}, {"id": "4", "resident_id": 17, "details": "rice"})
        remember(uow, "record_session", "k3", {"b": 2}, {"id": "9", "party_resident_ids": ["3", "17"]})
        remember(uow, "register_household", "k4", {"c": 3}, {"id": "5", "address": {"room": "1201"}})
        remember(uow, "create_unit", "k5", {"d": 4}, {"id": "8", "name": "Grid 17", "resident_id": "170"})
        uow.commit()
    with unit_of_work(db) as uow:
        count = forget_replies(
            uow.session, uow.idempotency_model, VAULT, resident_ids=["17"], needles=["王秀英", "x", ""], batch=2
        )
        uow.commit()
    assert count == 3
    replies = stored(db)
    assert replies["register_resident"] == ERASED_REPLY  # by the name (a needle)
    assert replies["create_request"] == ERASED_REPLY  # by resident_id
    assert replies["record_session"] == ERASED_REPLY  # by party_resident_ids
    # "Grid 17" is text, not a resident field; 170 is another resident; "x" is too short to be a needle.
    assert replies["create_unit"] == {"id": "8", "name": "Grid 17", "resident_id": "170"}
    assert replies["register_household"] == {"id": "5", "address": {"room": "1201"}}
    with unit_of_work(db) as uow:
        again = forget_replies(uow.session, uow.idempotency_model, VAULT, resident_ids=["17"], needles=["王秀英"])
    assert again == 0


def test_needles_match_case_insensitively_inside_nested_text(db):
    with unit_of_work(db) as uow:
        remember(uow, "create_request", "k1", {}, {"id": "1", "contact": {"lines": ["Call Wang XIUYING at 5678"]}})
        uow.commit()
    with unit_of_work(db) as uow:
        assert forget_replies(uow.session, uow.idempotency_model, VAULT, needles=["wang xiuying"]) == 1
        uow.commit()


def test_a_retry_of_a_forgotten_request_is_refused_not_run_again(db):
    with unit_of_work(db) as uow:
        remember(uow, "register_resident", "k1", {"name": "x"}, {"id": "17"})
        uow.commit()
    with unit_of_work(db) as uow:
        forget_replies(uow.session, uow.idempotency_model, VAULT, resident_ids=[], needles=["never-there"])
        assert Remembered(uow, VAULT, "officer-1", "register_resident", "k1", {"name": "x"}).replay() == {"id": "17"}
        forget_replies(uow.session, uow.idempotency_model, VAULT, needles=["17"])
        uow.commit()
    with unit_of_work(db) as uow, pytest.raises(Conflict, match="erasure"):
        Remembered(uow, VAULT, "officer-1", "register_resident", "k1", {"name": "x"}).replay()


def test_a_household_and_a_method_s_own_record_are_found_by_id(db):
    with unit_of_work(db) as uow:
        remember(uow, "register_household", "k1", {}, {"id": "5", "address": {"room": "1201"}})
        remember(uow, "register_household", "k2", {}, {"id": "6", "address": {"room": "1202"}})
        remember(uow, "move_household", "k3", {}, {"household_id": 5, "unit_id": "9"})
        remember(uow, "register_resident", "k4", {}, {"id": "17", "household_id": "6"})
        uow.commit()
    with unit_of_work(db) as uow:
        count = forget_replies(
            uow.session,
            uow.idempotency_model,
            VAULT,
            fields={"household_id": ["5"]},
            records={"register_household": {"5"}, "register_resident": {"17"}},
        )
        uow.commit()
    assert count == 3
    with unit_of_work(db) as uow:
        rows = uow.session.query(uow.idempotency_model).all()
        replies = sorted(json.dumps(json.loads(VAULT.decrypt(r.reply, REPLY_CONTEXT)), sort_keys=True) for r in rows)
    kept = json.dumps({"address": {"room": "1202"}, "id": "6"}, sort_keys=True)  # another household
    assert replies == sorted([kept] + [json.dumps(ERASED_REPLY, sort_keys=True)] * 3)
