"""Households, residents, tags and audience queries (services/grid/residents.py)."""

import datetime as dt

import pytest
from sqlalchemy import select

from services.grid import residents, units
from services.grid.models import Resident
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.support import id_number
from tests.unit.grid.conftest import (
    ADDRESS,
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    MEDIUM_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    PATH_A,
    SMALL_A,
    SMALL_B,
    STREET,
    WORKER_A,
    resident_args,
)
from tests.unit.local import VAULT, caller, events, unit_of_work


def test_a_household_lives_in_an_open_small_grid_in_reach(district):
    with unit_of_work(district) as uow:
        household = residents.register_household(uow, WORKER_A, SMALL_A, ADDRESS)
        assert (household.unit_id, household.unit_path, household.room) == (SMALL_A, PATH_A, "501")
        with pytest.raises(ValidationError) as err:
            residents.register_household(uow, ADMIN, MEDIUM_A, ADDRESS)
        assert "unit_id" in err.value.fields
        with pytest.raises(Forbidden):
            residents.register_household(uow, WORKER_A, SMALL_B, ADDRESS)
        units.close_unit(uow, ADMIN, SMALL_B)
        with pytest.raises(Conflict, match="closed"):
            residents.register_household(uow, ADMIN, SMALL_B, ADDRESS)


def test_personal_data_is_stored_encrypted_and_shown_masked_unless_pii(district, add_household):
    household = add_household()
    with unit_of_work(district) as uow:
        masked = residents.register_resident(uow, WORKER_A, VAULT, **resident_args(7, household))
        uow.commit()
    assert masked.id_number == "370" + "*" * 11 + id_number(7)[-4:] and masked.phone == "138****0007"
    with unit_of_work(district) as uow:
        row = uow.session.get(Resident, masked.id)
        assert id_number(7).encode() not in row.id_number_enc and b"13800000007" not in row.phone_enc
        assert id_number(7) not in row.id_number_hash
        revealed = residents.get_resident(uow.session, caller("officer", unit=STREET, pii=True), VAULT, masked.id)
        assert (revealed.id_number, revealed.phone) == (id_number(7), "13800000007")
        assert (revealed.unit_id, revealed.unit_path, revealed.tags) == (SMALL_A, PATH_A, [])


def test_an_id_number_registers_once(district, add_household, add_resident):
    household = add_household()
    add_resident(household, 3)
    with unit_of_work(district) as uow, pytest.raises(Conflict, match="id_number"):
        residents.register_resident(uow, ADMIN, VAULT, **resident_args(3, household, name="Someone Else"))


def test_a_resident_reads_only_themselves_and_staff_only_in_reach(district, add_household, add_resident):
    household = add_household()
    me, other = add_resident(household, 41), add_resident(household, 42)
    with unit_of_work(district) as uow:
        session = uow.session
        myself = caller("resident", sub=str(me), unit=SMALL_A)
        assert residents.get_resident(session, myself, VAULT, me).phone == "138****0041"
        with pytest.raises(Forbidden, match="their own"):
            residents.get_resident(session, myself, VAULT, other)
        with pytest.raises(Forbidden):
            residents.get_resident(session, OFFICER_B, VAULT, me)
        with pytest.raises(NotFound):
            residents.get_resident(session, ADMIN, VAULT, 999)


def test_tagging_announces_new_tags_and_updates_old_ones_quietly(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 31)
    until = NOW + dt.timedelta(days=14)
    with unit_of_work(district) as uow:
        first = residents.tag_resident(uow, WORKER_A, resident, "quarantined", until, "close contact")
        again = residents.tag_resident(uow, WORKER_A, resident, "quarantined", None, "extended")
        uow.commit()
    assert (first.created, again.created) == (True, False)
    assert (again.resident_id, again.tag, again.until, again.note) == (resident, "quarantined", None, "extended")
    assert events(district, "resident_tagged") == [
        (
            "resident_tagged",
            f"resident/{resident}",
            {
                "resident_id": str(resident),
                "household_id": "1",
                "unit_id": str(SMALL_A),
                "unit_path": ["1", "2", "3", "4", "5", "6"],
                "tag": "quarantined",
                "until": until.isoformat(),
            },
        )
    ]
    with unit_of_work(district) as uow:
        tags = residents.get_resident(uow.session, ADMIN, VAULT, resident).tags
        assert [(t.tag, t.until, t.note) for t in tags] == [("quarantined", None, "extended")]


def test_a_tag_must_end_in_the_future(district, add_household, add_resident):
    resident = add_resident(add_household(), 32)
    with unit_of_work(district) as uow, pytest.raises(ValidationError) as err:
        residents.tag_resident(uow, ADMIN, resident, "quarantined", NOW, None)
    assert "until" in err.value.fields


def test_untagging_removes_and_announces_and_a_missing_tag_is_not_found(district, add_household, add_resident):
    resident = add_resident(add_household(), 33, "disabled")
    with unit_of_work(district) as uow:
        removed = residents.untag_resident(uow, OFFICER_A, resident, "disabled")
        assert (removed.resident_id, removed.tag) == (resident, "disabled")
        with pytest.raises(NotFound):
            residents.untag_resident(uow, OFFICER_A, resident, "disabled")
        uow.commit()
    (_, _, data) = events(district, "resident_untagged")[0]
    assert (data["tag"], data["reason"]) == ("disabled", "untagged")


def test_housekeeping_drops_only_tags_past_their_end(district, add_household, add_resident, clock):
    household = add_household()
    short, long = add_resident(household, 34), add_resident(household, 35)
    with unit_of_work(district) as uow:
        residents.tag_resident(uow, ADMIN, short, "quarantined", NOW + dt.timedelta(hours=1), None)
        residents.tag_resident(uow, ADMIN, long, "quarantined", NOW + dt.timedelta(days=2), None)
        residents.tag_resident(uow, ADMIN, long, "elderly_alone", None, None)  # no end
        uow.commit()
    with unit_of_work(district) as uow:
        assert residents.expire_tags(uow, NOW + dt.timedelta(minutes=59)) == 0
        assert residents.expire_tags(uow, NOW + dt.timedelta(hours=1)) == 1
        uow.commit()
    with unit_of_work(district) as uow:
        assert [t.tag for t in residents.get_resident(uow.session, ADMIN, VAULT, short).tags] == []
        assert len(residents.get_resident(uow.session, ADMIN, VAULT, long).tags) == 2
    assert [(d["resident_id"], d["reason"]) for _, _, d in events(district, "resident_untagged")] == [
        (str(short), "expired")
    ]


def test_a_moved_household_takes_its_residents_and_their_tags(district, add_household, add_resident):
    household = add_household(SMALL_A)
    resident = add_resident(household, 21, "elderly_alone")
    with unit_of_work(district) as uow:
        moved = residents.move_household(uow, ADMIN, household, SMALL_B)
        uow.commit()
    assert moved.unit_id == SMALL_B
    with unit_of_work(district) as uow:
        session = uow.session
        assert residents.get_resident(session, ADMIN, VAULT, resident).unit_id == SMALL_B
        assert residents.count_residents(session, ADMIN, COMMUNITY_A, ["elderly_alone"], None) == 0
        assert residents.count_residents(session, ADMIN, COMMUNITY_B, ["elderly_alone"], None) == 1
        with pytest.raises(Forbidden):
            residents.move_household(uow, OFFICER_A, household, SMALL_A)  # the household is out of reach now
    assert events(district, "household_moved")[0][2] == {
        "household_id": str(household),
        "unit_id": str(SMALL_B),
        "unit_path": ["1", "2", "7", "8", "9", "10"],
        "old_unit_path": ["1", "2", "3", "4", "5", "6"],
    }


@pytest.fixture
def people(add_household, add_resident):
    """Six residents: four in small grid A, two in B; 0 and 1 elderly_alone, 1 and 4 chronic_illness."""
    tags = {0: ["elderly_alone"], 1: ["elderly_alone", "chronic_illness"], 4: ["chronic_illness"]}
    return [
        add_resident(add_household(SMALL_A if seq < 4 else SMALL_B, room=str(seq)), 100 + seq, *tags.get(seq, []))
        for seq in range(6)
    ]


@pytest.mark.parametrize(
    ("under", "tags_any", "tags_all", "expected"),
    [
        (STREET, None, None, 6),
        (COMMUNITY_A, None, None, 4),
        (STREET, ["elderly_alone", "chronic_illness"], None, 3),
        (STREET, None, ["elderly_alone", "chronic_illness"], 1),
        (COMMUNITY_B, ["chronic_illness"], None, 1),
        (STREET, ["chronic_illness"], ["elderly_alone"], 1),
        (STREET, ["quarantined"], None, 0),
    ],
)
def test_counts_by_subtree_and_tags(district, people, under, tags_any, tags_all, expected):
    with unit_of_work(district) as uow:
        assert residents.count_residents(uow.session, ADMIN, under, tags_any, tags_all) == expected


def test_pages_and_keyset_walks_see_everyone_once_with_no_id_number(district, people):
    with unit_of_work(district) as uow:
        session = uow.session
        first = residents.find_residents(session, ADMIN, VAULT, STREET, ["elderly_alone"], None, 1, 1)
        second = residents.find_residents(session, ADMIN, VAULT, STREET, ["elderly_alone"], None, 2, 1)
        assert ([r.id for r in first["items"]], first["has_more"], first["next_after"]) == (
            [people[0]],
            True,
            people[0],
        )
        assert ([r.id for r in second["items"]], second["has_more"], second["next_after"]) == ([people[1]], False, None)
        assert second["items"][0].tags == ["chronic_illness", "elderly_alone"]
        assert second["items"][0].id_number == "" and second["items"][0].phone.count("*") == 4
        seen, after = [], None
        while True:
            found = residents.find_residents(session, ADMIN, VAULT, STREET, None, None, 1, 4, after=after)
            seen += [r.id for r in found["items"]]
            if found["next_after"] is None:
                break
            after = found["next_after"]
        assert seen == people
        with pytest.raises(Forbidden):
            residents.find_residents(session, OFFICER_A, VAULT, STREET, None, None, 1, 10)


def test_several_residents_at_once_lists_the_missing_and_checks_each(district, people):
    with unit_of_work(district) as uow:
        session = uow.session
        found = residents.get_residents(session, caller("service", pii=True), VAULT, [people[4], people[0], 987654])
        assert [r.id for r in found["items"]] == [people[0], people[4]] and found["missing"] == [987654]
        assert found["items"][0].phone == "13800000100"
        with pytest.raises(Forbidden):
            residents.get_residents(session, OFFICER_A, VAULT, [people[0], people[4]])


def test_a_household_view_lists_its_members(district, add_household, add_resident):
    household = add_household()
    members = [add_resident(household, 51), add_resident(household, 52)]
    with unit_of_work(district) as uow:
        view = residents.household_view(uow.session, WORKER_A, household)
        assert (view.id, view.unit_path, view.resident_ids, view.compound) == (
            household,
            PATH_A,
            members,
            "Sunny Garden",
        )
        with pytest.raises(Forbidden):
            residents.household_view(uow.session, OFFICER_B, household)


def test_no_event_names_a_resident_or_carries_their_numbers(district, add_household, add_resident):
    household = add_household()
    resident = add_resident(household, 61, "quarantined")
    with unit_of_work(district) as uow:
        residents.untag_resident(uow, ADMIN, resident, "quarantined")
        residents.move_household(uow, ADMIN, household, SMALL_B)
        uow.commit()
    recorded = repr(events(district))
    for personal in ("Resident 61", id_number(61), "13800000061", "0061"):
        assert personal not in recorded
    with unit_of_work(district) as uow:
        assert uow.session.scalars(select(Resident.name)).all() == ["Resident 61"]  # the name was there to leak
