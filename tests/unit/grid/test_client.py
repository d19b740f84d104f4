"""The grid as other services see it (services/grid/client.py): the typed reads, the RPC wrapper, the
in-memory twin, and the event schemas of the grid's tree changes. tests/unit/test_clients.py covers
the fake's basics; here the fake is held against the real service's replies."""

from unittest.mock import Mock

import pytest

from services.grid.client import FakeGrid, Grid, HouseholdMoved, UnitMoved
from shared.errors import NotFound, ServiceUnavailable, ValidationError
from shared.validation import load
from tests.unit.grid.conftest import COMMUNITY_A, LARGE_A, MEDIUM_A, SMALL_A, SMALL_B, STREET, call


def fake_of_the_district(household, resident):
    """The test district as a FakeGrid, with the same ids."""
    fake = FakeGrid()
    for unit_id, level, parent in (
        (1, "district", None),
        (STREET, "street", 1),
        (COMMUNITY_A, "community", STREET),
        (LARGE_A, "grid_large", COMMUNITY_A),
        (MEDIUM_A, "grid_medium", LARGE_A),
        (SMALL_A, "grid_small", MEDIUM_A),
    ):
        fake.add_unit(unit_id, level, parent_id=parent)
    fake.add_household(household, SMALL_A)
    fake.add_resident(resident, household, tags=["disabled"])
    return fake


def same_facts(real, pretend):
    """Every field the fake gives, the grid gives too, with the same value (names and addresses are made up)."""
    assert set(pretend) <= set(real)
    facts = set(pretend) - {"name", "address"}
    assert {k: real[k] for k in facts} == {k: pretend[k] for k in facts}


def test_the_fake_says_what_the_grid_says(district, add_household, add_resident):
    household = add_household(SMALL_A)
    resident = add_resident(household, 1, "disabled")
    fake = fake_of_the_district(household, resident)
    same_facts(call(district, "get_unit", unit_id=SMALL_A), fake.get_unit(unit_id=SMALL_A))
    real_household = call(district, "get_household", household_id=household)
    same_facts(real_household, fake.get_household(household_id=household))
    assert set(real_household["address"]) == set(fake.get_household(household_id=household)["address"])
    real_chain, fake_chain = call(district, "ancestors", unit_id=SMALL_A), fake.ancestors(unit_id=SMALL_A)
    assert len(real_chain) == len(fake_chain) == 5
    for real, pretend in zip(real_chain, fake_chain, strict=True):
        same_facts(real, pretend)
    real = call(district, "get_residents", resident_ids=[str(resident), "404"])
    pretend = fake.get_residents(resident_ids=[resident, 404])
    assert real["missing"] == pretend["missing"] == ["404"]
    same_facts(real["items"][0], pretend["items"][0])


def test_reads_turn_unknown_ids_into_the_callers_mistake():
    fake = fake_of_the_district(10, 100)
    assert fake.unit(SMALL_A, "unit_id")["path_string"] == "/1/2/3/4/5/6/"
    assert fake.unit_path(MEDIUM_A, "unit_id") == "/1/2/3/4/5/"
    assert fake.resident(100)["tags"] == ["disabled"]
    with pytest.raises(ValidationError) as err:
        fake.unit_path(99, "under")
    assert err.value.fields == {"under": ["Unknown unit 99."]}
    with pytest.raises(ValidationError) as err:
        fake.resident(555, "mediator_id")
    assert err.value.fields == {"mediator_id": ["Unknown residents: 555."]}


def test_the_fake_lists_pages_and_goes_down_when_told():
    fake = fake_of_the_district(10, 100)
    fake.add_unit(SMALL_B, "grid_small", parent_id=MEDIUM_A, closed=True)
    first = fake.list_units(under=COMMUNITY_A, page=1, page_size=2)
    assert ([u["id"] for u in first["items"]], first["has_more"]) == (["3", "4"], True)
    assert [u["id"] for u in fake.list_units(level="grid_small")["items"]] == [str(SMALL_A)]
    assert [u["id"] for u in fake.list_units(level="grid_small", include_closed=True)["items"]] == ["6", "10"]
    fake.unavailable = True
    with pytest.raises(ServiceUnavailable):
        fake.get_unit(unit_id=1)
    with pytest.raises(ServiceUnavailable):
        fake.get_household_async(household_id=10).result()
    assert fake.calls[-2:] == ["get_unit", "get_household"]


def test_the_fakes_incidents_are_what_get_incident_answers(district):
    fake = fake_of_the_district(10, 100)
    fake.add_incident(7, SMALL_A, party_resident_ids=[100])
    real = call(district, "report_incident", unit_id=SMALL_A, category="dispute", description="d")
    pretend = fake.get_incident(incident_id=7)
    assert set(pretend) <= set(call(district, "get_incident", incident_id=real["id"]))
    assert (pretend["unit_id"], pretend["handling_level"], pretend["party_resident_ids"]) == (
        "6",
        "grid_small",
        ["100"],
    )
    with pytest.raises(NotFound):
        fake.get_incident(incident_id=8)


def test_the_rpc_wrapper_sends_ids_as_strings():
    proxy = Mock()
    grid = Grid(proxy)
    grid.get_unit(unit_id=6)
    grid.get_residents(resident_ids=[1, 2])
    grid.get_household_async(household_id=10)
    grid.list_units(under="3", level="grid_small")
    proxy.get_unit.assert_called_once_with(unit_id="6")
    proxy.get_residents.assert_called_once_with(resident_ids=["1", "2"])
    proxy.get_household.call_async.assert_called_once_with(household_id="10")
    proxy.list_units.assert_called_once_with(under="3", level="grid_small", include_closed=False, page=1, page_size=100)


def test_tree_change_events_load_as_their_consumers_need_them():
    moved = load(UnitMoved(), {"unit_id": "4", "unit_path": ["1", "7", "4"], "old_path": ["1", "3", "4"], "level": "x"})
    assert moved == {"unit_id": 4, "unit_path": [1, 7, 4], "old_path": [1, 3, 4]}  # unknown fields dropped
    with pytest.raises(ValidationError) as err:
        load(HouseholdMoved(), {"household_id": "1", "unit_id": "6", "unit_path": [], "old_unit_path": ["1"]})
    assert "unit_path" in err.value.fields
