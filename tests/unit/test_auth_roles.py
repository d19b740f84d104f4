"""Holding several roles never widens scope: a call acts only in the roles its method allows."""

import pytest

from shared.auth import CallerAccess, TokenCache
from shared.errors import Forbidden
from tests.support import JWT_SECRET, token

MANAGERS = ("admin", "officer")
STAFF_AND_SERVICES = ("admin", "officer", "grid_worker", "service")
READ_SELF = ("admin", "officer", "grid_worker", "service", "resident")


def authorize(roles, *token_roles, **claims):
    return CallerAccess(TokenCache(JWT_SECRET), token(*token_roles, **claims)).authorize(roles)


def test_a_role_the_method_does_not_allow_lends_no_district_wide_reach():
    # service reaches the whole district, but may not call a managers' method: the officer is left, with no unit
    with pytest.raises(Forbidden, match="no unit scope"):
        authorize(MANAGERS, "officer", "service", sub="x")
    with pytest.raises(Forbidden, match="no unit scope"):
        authorize(STAFF_AND_SERVICES, "grid_worker", "volunteer", sub="x")  # a self role the method does not allow
    # where service is allowed, the token reaches what service reaches
    assert authorize(STAFF_AND_SERVICES, "officer", "service", sub="x").unrestricted


def test_the_caller_keeps_only_the_allowed_roles():
    caller = authorize(MANAGERS, "officer", "resident", "volunteer", sub="x", unit="12")
    assert caller.roles == {"officer"} and caller.unit == "12"
    assert not caller.reaches([1, 2, 13]) and caller.reaches([1, 2, 12, 40])
    # a resident who also volunteers reads their own record as a resident: the self-only rule applies
    assert authorize(READ_SELF, "resident", "volunteer", sub="40").roles == {"resident"}
    # both allowed: both kept, each with its own rule (the services check sub for the self role)
    assert authorize(READ_SELF, "officer", "resident", sub="40", unit="12").roles == {"officer", "resident"}


def test_an_admin_naming_a_unit_is_scoped_to_it():
    caller = authorize(MANAGERS, "admin", sub="x", unit="12")
    assert not caller.unrestricted and not caller.reaches([1, 2, 13])


def test_a_unit_claim_grants_reach_only_through_a_staff_or_unscoped_role():
    """A resident, volunteer, lawyer or mediator reaches only their own records: the unit their token
    names lends them nothing (issue 12: a mediator's token with a unit listed every case under it)."""
    from shared.auth import Caller

    path = [1, 2, 12, 40]
    for roles in ({"resident"}, {"volunteer"}, {"lawyer"}, {"mediator"}, {"resident", "lawyer"}):
        caller = Caller(sub="40", roles=frozenset(roles), unit="12")
        assert caller.scope_unit is None and not caller.reaches(path), roles
        with pytest.raises(Forbidden, match="scopes only staff roles"):
            caller.require_reach(path)
    for roles in ({"officer"}, {"grid_worker"}, {"admin"}, {"service"}, {"officer", "resident"}):
        caller = Caller(sub="40", roles=frozenset(roles), unit="12")
        assert caller.scope_unit == "12" and caller.reaches(path) and not caller.reaches([1, 2, 13]), roles
    # through authorize: a self-role token with a unit passes (it may act on its own records), reaching no unit
    caller = authorize(READ_SELF + ("lawyer",), "resident", "lawyer", sub="40", unit="12")
    assert caller.roles == {"resident", "lawyer"} and not caller.reaches(path)
    # a staff role beside it keeps the unit's reach, but only while the method allows the staff role
    assert authorize(READ_SELF, "officer", "resident", sub="40", unit="12").reaches(path)
    assert not authorize(("resident", "lawyer"), "officer", "resident", sub="40", unit="12").reaches(path)
