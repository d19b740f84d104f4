"""A compact page of residents (services.grid.residents.resident_columns, grid.find_resident_columns):
the same residents as find_residents, as columns; phones only for pii callers who ask, as the stored
ciphertext; scope checked; the reply dumped as it was built."""

import pytest

from services.grid import residents, schemas
from shared.errors import Forbidden
from tests.unit.grid.conftest import ADMIN, COMMUNITY_A, OFFICER_A, SMALL_A, SMALL_B, STREET
from tests.unit.grid.test_residents import people  # noqa: F401  (a fixture)
from tests.unit.local import VAULT, caller, unit_of_work

SERVICE = caller("service", sub="service:notices", pii=True)


def walk(session, who, under, page_size, **filters):
    pages, after = [], None
    while True:
        page = residents.resident_columns(session, who, under, page_size=page_size, after=after, **filters)
        pages.append(page)
        if page["next_after"] is None:
            return pages
        after = page["next_after"]


def test_a_keyset_walk_sees_the_same_residents_as_find_residents_as_columns(district, people):  # noqa: F811
    with unit_of_work(district) as uow:
        pages = walk(uow.session, ADMIN, STREET, 4, tags_any=None, tags_all=None)
        assert [len(p["ids"]) for p in pages] == [4, 2] and pages[0]["has_more"] and not pages[1]["has_more"]
        assert [i for p in pages for i in p["ids"]] == people
        rows = {i: (p["unit_ids"][n], p["tags"][n]) for p in pages for n, i in enumerate(p["ids"])}
        assert rows[people[1]] == (SMALL_A, ["chronic_illness", "elderly_alone"])
        assert rows[people[5]] == (SMALL_B, [])
        assert pages[0]["paths"] == {str(SMALL_A): ["1", "2", "3", "4", "5", "6"]}
        assert pages[1]["paths"] == {str(SMALL_B): ["1", "2", "7", "8", "9", "10"]}
        assert pages[0]["phones_enc"] is None  # not asked for
        tagged = walk(uow.session, ADMIN, STREET, 10, tags_any=["chronic_illness"], tags_all=None)
        assert tagged[0]["ids"] == [people[1], people[4]]
        assert tagged[0]["tags"] == [["chronic_illness", "elderly_alone"], ["chronic_illness"]]


def test_phones_go_only_to_pii_callers_who_ask_and_stay_encrypted(district, people):  # noqa: F811
    with unit_of_work(district) as uow:
        session = uow.session
        page = residents.resident_columns(session, SERVICE, COMMUNITY_A, None, None, 10, phones=True)
        assert [VAULT.decrypt(bytes.fromhex(p), b"phone") for p in page["phones_enc"]] == [
            f"138000001{n:02d}" for n in range(4)
        ]
        # Ciphertext, never the number (a whole number: three digits turn up in random hex by chance).
        assert not any(f"138000001{n:02d}" in p for p in page["phones_enc"] for n in range(4))
        no_pii = caller("service", sub="service:legal")
        assert (
            residents.resident_columns(session, no_pii, COMMUNITY_A, None, None, 10, phones=True)["phones_enc"] is None
        )


def test_the_unit_must_be_in_the_callers_reach(district, people):  # noqa: F811
    with unit_of_work(district) as uow:
        with pytest.raises(Forbidden):
            residents.resident_columns(uow.session, OFFICER_A, STREET, None, None, 10)
        assert len(residents.resident_columns(uow.session, OFFICER_A, COMMUNITY_A, None, None, 10)["ids"]) == 4


def test_the_reply_schema_keeps_the_columns_as_built():
    page = {
        "ids": [7, 8],
        "household_ids": [3, 3],
        "unit_ids": [6, 6],
        "paths": {"6": ["1", "2", "6"]},
        "tags": [["elderly_alone"], []],
        "phones_enc": None,
        "has_more": False,
        "next_after": None,
    }
    assert schemas.ResidentColumnsOut().dump(page) == page
    assert schemas.FindResidentColumns().load({"under": "2"})["page_size"] == 5000
