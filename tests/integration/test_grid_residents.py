"""Households, residents, tags and audience queries, through real RPC."""

import datetime as dt

import pytest
from nameko.exceptions import RemoteError
from sqlalchemy import create_engine, text

from shared.errors import Conflict
from tests.support import add_household, add_resident, id_number, token, wait_until


def test_register_and_read_a_resident_masked_by_default(admin, district, call_as):
    household = add_household(admin, district["small_a"])
    created = add_resident(admin, household, 7)
    assert created["id_number"].startswith("370") and created["id_number"][3:14] == "*" * 11
    assert created["phone"] == "138****0007"
    worker = call_as(token("grid_worker", unit=district["small_a"])).grid
    seen = worker.get_resident(resident_id=created["id"])
    assert seen["id_number"] == created["id_number"]
    assert seen["unit_id"] == district["small_a"]
    revealed = call_as(token("officer", unit=district["street"], pii=True)).grid.get_resident(resident_id=created["id"])
    assert revealed["id_number"] == id_number(7)
    assert revealed["phone"] == "13800000007"


def test_personal_data_is_not_stored_in_plaintext(admin, district, grid_db):
    household = add_household(admin, district["small_a"])
    add_resident(admin, household, 11)
    engine = create_engine(grid_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id_number_enc, phone_enc, id_number_hash FROM residents")).one()
    engine.dispose()
    for blob in row[:2]:
        assert id_number(11).encode() not in bytes(blob) and b"13800000011" not in bytes(blob)
    assert id_number(11) not in row[2]


def test_duplicate_id_number_is_a_conflict(admin, district):
    household = add_household(admin, district["small_a"])
    add_resident(admin, household, 3)
    with pytest.raises(Conflict):
        add_resident(admin, household, 3, name="Someone Else")


def test_household_only_in_an_open_small_grid(admin, district):
    with pytest.raises(RemoteError) as err:
        add_household(admin, district["medium_a"])
    assert err.value.exc_type == "ValidationError" and "unit_id" in err.value.value


def test_move_household_carries_residents_and_tags(admin, district):
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 21)
    admin.tag_resident(resident_id=resident["id"], tag="elderly_alone")
    admin.move_household(household_id=household, unit_id=district["small_b"])
    assert admin.get_resident(resident_id=resident["id"])["unit_id"] == district["small_b"]
    assert admin.count_residents(under=district["community_a"], tags_any=["elderly_alone"])["count"] == 0
    assert admin.count_residents(under=district["community_b"], tags_any=["elderly_alone"])["count"] == 1


def test_tags_filter_counts_and_pages(admin, district):
    people = []
    for seq in range(6):
        household = add_household(admin, district["small_a" if seq < 4 else "small_b"], room=str(100 + seq))
        people.append(add_resident(admin, household, 100 + seq)["id"])
    admin.tag_resident(resident_id=people[0], tag="elderly_alone")
    admin.tag_resident(resident_id=people[1], tag="elderly_alone")
    admin.tag_resident(resident_id=people[1], tag="chronic_illness")
    admin.tag_resident(resident_id=people[4], tag="chronic_illness")
    street = district["street"]
    assert admin.count_residents(under=street)["count"] == 6
    assert admin.count_residents(under=district["community_a"])["count"] == 4
    assert admin.count_residents(under=street, tags_any=["elderly_alone", "chronic_illness"])["count"] == 3
    assert admin.count_residents(under=street, tags_all=["elderly_alone", "chronic_illness"])["count"] == 1
    assert admin.count_residents(under=district["community_b"], tags_any=["chronic_illness"])["count"] == 1
    assert admin.count_residents(under=street, tags_any=["chronic_illness"], tags_all=["elderly_alone"])["count"] == 1
    page = admin.find_residents(under=street, tags_any=["elderly_alone"], page_size=1)
    assert [r["id"] for r in page["items"]] == [people[0]] and page["has_more"] is True
    page2 = admin.find_residents(under=street, tags_any=["elderly_alone"], page=2, page_size=1)
    assert [r["id"] for r in page2["items"]] == [people[1]] and page2["has_more"] is False
    assert page2["items"][0]["tags"] == ["chronic_illness", "elderly_alone"]
    assert "id_number" not in page2["items"][0]
    assert page2["items"][0]["phone"].count("*") == 4


def test_retagging_updates_and_untagging_removes(admin, district):
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 31)["id"]
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=14)).isoformat()
    first = admin.tag_resident(resident_id=resident, tag="quarantined", until=until, note="close contact")
    again = admin.tag_resident(resident_id=resident, tag="quarantined", note="extended")
    assert first["created"] is True and again["created"] is False
    tags = admin.get_resident(resident_id=resident)["tags"]
    assert tags == [{"tag": "quarantined", "until": None, "note": "extended"}]
    admin.untag_resident(resident_id=resident, tag="quarantined")
    assert admin.get_resident(resident_id=resident)["tags"] == []
    with pytest.raises(RemoteError) as err:
        admin.untag_resident(resident_id=resident, tag="quarantined")
    assert err.value.exc_type == "NotFound"


def test_tag_with_a_past_until_is_refused(admin, district):
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 32)["id"]
    with pytest.raises(RemoteError) as err:
        admin.tag_resident(resident_id=resident, tag="quarantined", until="2020-01-01T00:00:00Z")
    assert err.value.exc_type == "ValidationError" and "until" in err.value.value


def test_expired_tag_is_removed_by_housekeeping(admin, district):
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 33)["id"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    admin.tag_resident(resident_id=resident, tag="elderly_alone")  # no end
    admin.tag_resident(resident_id=resident, tag="disabled", until=later)
    # Two seconds: time for the call to arrive before the moment is past, on a loaded machine.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
    admin.tag_resident(resident_id=resident, tag="quarantined", until=soon)

    def after_expiry():
        left = [t["tag"] for t in admin.get_resident(resident_id=resident)["tags"]]
        return None if "quarantined" in left else {"left": left}

    # The pass that drops the expired tag had the other two in its table already: had it dropped a tag
    # with no end, or one that ends later, that tag would be gone when this wait ends.
    assert wait_until(after_expiry, message="tag did not expire") == {"left": ["disabled", "elderly_alone"]}


def test_resident_reads_only_themselves(admin, district, call_as):
    household = add_household(admin, district["small_a"])
    me = add_resident(admin, household, 41)["id"]
    other = add_resident(admin, household, 42)["id"]
    mine = call_as(token("resident", sub=me, unit=district["small_a"])).grid
    assert mine.get_resident(resident_id=me)["id"] == me
    with pytest.raises(RemoteError) as err:
        mine.get_resident(resident_id=other)
    assert err.value.exc_type == "Forbidden"


def test_keyset_paging_walks_everyone_once(admin, district):
    ids = []
    for seq in range(7):
        household = add_household(admin, district["small_a" if seq % 2 else "small_b"], room=str(seq))
        ids.append(add_resident(admin, household, 300 + seq)["id"])
    seen, after = [], None
    while True:
        page = admin.find_residents(under=district["street"], page_size=3, after=after)
        seen += [r["id"] for r in page["items"]]
        if not page["has_more"]:
            assert page["next_after"] is None
            break
        after = page["next_after"]
    assert seen == sorted(ids, key=int)


def test_get_residents_in_one_call(admin, district, call_as):
    household = add_household(admin, district["small_a"])
    first = add_resident(admin, household, 401)["id"]
    second = add_resident(admin, household, 402)["id"]
    admin.tag_resident(resident_id=second, tag="disabled")
    got = admin.get_residents(resident_ids=[second, first, "987654"])
    assert [r["id"] for r in got["items"]] == sorted([first, second], key=int)
    assert got["items"][1]["tags"] == ["disabled"] and got["missing"] == ["987654"]
    service = call_as(token("service", sub="service:notices", pii=True)).grid
    assert service.get_residents(resident_ids=[first])["items"][0]["phone"] == "13800000401"
    officer_b = call_as(token("officer", unit=district["community_b"])).grid
    with pytest.raises(RemoteError) as err:
        officer_b.get_residents(resident_ids=[first])
    assert err.value.exc_type == "Forbidden"
