"""The unit tree, staff and Party organisations, through real RPC."""

import pytest
from nameko.exceptions import RemoteError

from tests.support import token


def test_unit_is_returned_with_its_path(admin, district):
    unit = admin.get_unit(unit_id=district["small_a"])
    assert unit["level"] == "grid_small"
    assert unit["path"] == [
        district[k] for k in ("district", "street", "community_a", "large_a", "medium_a", "small_a")
    ]
    assert unit["parent_id"] == district["medium_a"]
    assert unit["closed"] is False
    assert isinstance(unit["id"], str)


def test_child_must_be_deeper_than_parent(admin, district):
    with pytest.raises(RemoteError) as err:
        admin.create_unit(parent_id=district["community_a"], level="street", name="Wrong")
    assert err.value.exc_type == "ValidationError"
    assert "level" in err.value.value


def test_only_admin_creates_a_district(call_as, grid, district):
    officer = call_as(token("officer", unit=district["district"])).grid
    with pytest.raises(RemoteError) as err:
        officer.create_unit(parent_id=None, level="district", name="Another")
    assert err.value.exc_type == "Forbidden"


def test_list_units_under_a_subtree_by_level_and_page(admin, district):
    smalls = admin.list_units(under=district["street"], level="grid_small")
    assert [u["id"] for u in smalls["items"]] == [district["small_a"], district["small_b"]]
    first = admin.list_units(under=district["street"], page=1, page_size=3)
    second = admin.list_units(under=district["street"], page=2, page_size=3)
    assert first["has_more"] is True and len(first["items"]) == 3
    assert {u["id"] for u in first["items"]}.isdisjoint({u["id"] for u in second["items"]})
    everything = admin.list_units(under=district["street"], page_size=100)
    assert len(everything["items"]) == 8 and everything["has_more"] is False


def test_ancestors_run_from_the_district_down(admin, district):
    chain = admin.ancestors(unit_id=district["small_b"])
    assert [u["level"] for u in chain] == ["district", "street", "community", "grid_large", "grid_medium"]


def test_move_unit_moves_its_subtree_and_its_residents(admin, district):
    household = admin.register_household(
        unit_id=district["small_a"], address={"compound": "C", "building": "1", "entrance": "1", "room": "101"}
    )
    moved = admin.move_unit(unit_id=district["large_a"], new_parent_id=district["community_b"])
    assert moved["path"][:3] == [district["district"], district["street"], district["community_b"]]
    small = admin.get_unit(unit_id=district["small_a"])
    assert small["path"][2] == district["community_b"]
    assert admin.count_residents(under=district["community_b"])["count"] == 0
    assert admin.list_units(under=district["community_a"])["items"] == []
    assert household["unit_id"] == district["small_a"]


def test_move_unit_refuses_a_cycle(admin, district):
    with pytest.raises(RemoteError) as err:
        admin.move_unit(unit_id=district["community_a"], new_parent_id=district["community_a"])
    assert err.value.exc_type == "ValidationError"


def test_closed_unit_takes_no_new_households(admin, district):
    closed = admin.close_unit(unit_id=district["small_a"])
    assert closed["closed"] is True
    with pytest.raises(RemoteError) as err:
        admin.register_household(
            unit_id=district["small_a"], address={"compound": "C", "building": "1", "entrance": "1", "room": "101"}
        )
    assert err.value.exc_type == "Conflict"
    assert district["small_a"] not in [u["id"] for u in admin.list_units(under=district["street"])["items"]]
    assert district["small_a"] in [
        u["id"] for u in admin.list_units(under=district["street"], include_closed=True)["items"]
    ]


def test_staff_and_party_organisation(admin, district):
    staff = admin.assign_staff(unit_id=district["community_a"], user_id="u-17", role="party_secretary", name="Wang Li")
    assert staff["role"] == "party_secretary"
    with pytest.raises(RemoteError) as err:
        admin.assign_staff(unit_id=district["community_a"], user_id="u-17", role="party_secretary", name="Wang Li")
    assert err.value.exc_type == "Conflict"
    assert [s["user_id"] for s in admin.list_staff(unit_id=district["community_a"])] == ["u-17"]
    unit = admin.set_party_org(unit_id=district["community_a"], name="Sunny Community General Branch")
    assert unit["party_org"] == {"name": "Sunny Community General Branch", "type": "general_branch"}
    small = admin.set_party_org(unit_id=district["small_a"], name="Building 3 Party Group")
    assert small["party_org"]["type"] == "group"


def test_unit_codes_are_unique(admin, district):
    admin.create_unit(parent_id=district["street"], level="community", name="X", code="C-001")
    with pytest.raises(RemoteError) as err:
        admin.create_unit(parent_id=district["street"], level="community", name="Y", code="C-001")
    assert err.value.exc_type == "Conflict"
