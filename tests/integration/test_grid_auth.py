"""Authentication and scope: missing, expired, forged and out-of-scope tokens."""

import jwt
import pytest
from nameko.exceptions import RemoteError

from shared.errors import Forbidden, Unauthenticated
from tests.support import add_household, add_resident, token


def test_missing_token_is_unauthenticated(grid, grid_config):
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy(grid_config, timeout=10) as proxy, pytest.raises(RemoteError) as err:
        proxy.grid.list_units()
    assert err.value.exc_type == "Unauthenticated"


def test_expired_token_is_unauthenticated(call_as, grid):
    with pytest.raises(Unauthenticated, match="expired"):
        call_as(token("admin", ttl=-10)).grid.list_units()


def test_forged_token_is_unauthenticated(call_as, grid):
    forged = jwt.encode(
        {"sub": "mallory", "roles": ["admin"], "exp": 9999999999},
        "not-the-secret-but-long-enough-to-sign",
        algorithm="HS256",
    )
    with pytest.raises(Unauthenticated):
        call_as(forged).grid.list_units()
    unsigned = jwt.encode({"sub": "mallory", "roles": ["admin"], "exp": 9999999999}, "", algorithm="none")  # no key
    with pytest.raises(Unauthenticated):
        call_as(unsigned).grid.list_units()


def test_token_with_unknown_role_is_unauthenticated(call_as, grid):
    bad = jwt.encode(
        {"sub": "x", "roles": ["superuser"], "exp": 9999999999}, "test-secret-for-grassroots-tests", algorithm="HS256"
    )
    with pytest.raises(Unauthenticated):
        call_as(bad).grid.list_units()


def test_community_scope_cannot_reach_another_community(admin, district, call_as):
    household_b = add_household(admin, district["small_b"])
    resident_b = add_resident(admin, household_b, 51)["id"]
    officer_a = call_as(token("officer", unit=district["community_a"])).grid
    with pytest.raises(Forbidden):
        officer_a.get_resident(resident_id=resident_b)
    with pytest.raises(Forbidden):
        officer_a.count_residents(under=district["community_b"])
    with pytest.raises(Forbidden):
        officer_a.find_residents(under=district["street"])
    with pytest.raises(Forbidden):
        officer_a.register_household(
            unit_id=district["small_b"], address={"compound": "C", "building": "1", "entrance": "1", "room": "1"}
        )
    with pytest.raises(Forbidden):
        officer_a.move_unit(unit_id=district["large_a"], new_parent_id=district["community_b"])
    with pytest.raises(Forbidden):
        officer_a.report_incident(unit_id=district["small_b"], category="other", description="x")
    # inside its own subtree it works
    assert officer_a.count_residents(under=district["community_a"])["count"] == 0


def test_role_that_may_not_call_a_method_is_forbidden(admin, district, call_as):
    volunteer = call_as(token("volunteer", unit=district["community_a"])).grid
    with pytest.raises(Forbidden):
        volunteer.find_residents(under=district["community_a"])
    worker = call_as(token("grid_worker", unit=district["small_a"])).grid
    with pytest.raises(Forbidden):
        worker.create_unit(parent_id=district["small_a"], level="grid_small", name="x")


def test_scoped_role_without_unit_claim_is_forbidden(call_as, grid):
    with pytest.raises(Forbidden):
        call_as(token("officer")).grid.list_units()


def test_default_list_is_the_callers_subtree(admin, district, call_as):
    officer = call_as(token("officer", unit=district["community_b"])).grid
    listed = officer.list_units()["items"]
    assert {u["id"] for u in listed} == {district["large_b"], district["medium_b"], district["small_b"]}
