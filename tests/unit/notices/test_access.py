"""Who may act for a resident (services.notices.access), whatever mix of roles the token holds: a role's
rule is checked whole and on its own, never pieced together with another's."""

import pytest

from services.notices import access
from shared.auth import Caller
from shared.errors import Forbidden

PATHS = {"7": "/1/2/3/7/", "8": "/1/2/4/8/"}  # resident 7 under unit 3, resident 8 under unit 4


def caller(*roles, sub="u1", unit=None):
    return Caller(sub=sub, roles=frozenset(roles), unit=unit)


def may(c, resident):
    return access.may_act_for(c, resident, lambda: PATHS[resident])


def test_a_resident_acts_only_for_themselves():
    assert may(caller("resident", sub="7", unit="3"), "7")
    assert not may(caller("resident", sub="7", unit="3"), "8")
    assert not may(caller("resident", sub="7", unit="4"), "8")  # a unit claim gives a resident no scope


def test_staff_act_only_within_their_unit():
    assert may(caller("officer", unit="3"), "7")
    assert not may(caller("officer", unit="3"), "8")
    assert not may(caller("officer", sub="8", unit="3"), "8")  # a staff sub is no resident id
    assert not may(caller("grid_worker"), "7")  # no unit claim: no staff scope
    assert may(caller("service"), "8") and may(caller("admin"), "8")  # unit-less admin and service
    assert not may(caller("admin", unit="3"), "8")


@pytest.mark.parametrize("staff", ["officer", "grid_worker", "admin", "service"])
def test_several_roles_allow_what_one_role_alone_allows_and_nothing_more(staff):
    both = caller("resident", staff, sub="8", unit="3")
    assert may(both, "8")  # as the resident (their own record, outside the unit)
    assert may(both, "7")  # as staff (inside the unit)
    outsider = caller("resident", staff, sub="9", unit="3")
    assert not may(outsider, "8")  # neither the resident rule nor the staff scope allows it
    unscoped = caller("resident", staff, sub="9")
    assert may(unscoped, "8") == (staff in ("admin", "service"))  # a resident's token gains no staff scope
    for c, resident in ((both, "8"), (both, "7"), (outsider, "8"), (unscoped, "8")):
        alone = [caller(role, sub=c.sub, unit=c.unit) for role in c.roles]
        assert may(c, resident) == any(may(one, resident) for one in alone)


def test_the_grid_is_asked_for_a_path_only_when_the_staff_rule_needs_it():
    def unknown():
        raise AssertionError("not needed")

    assert access.may_act_for(caller("resident", sub="7"), "7", unknown)
    assert not access.may_act_for(caller("resident", sub="7"), "8", unknown)
    assert access.may_act_for(caller("service"), "8", unknown)
    assert not access.may_act_for(caller("officer", unit="3"), "8", lambda: None)  # unknown resident


def test_a_caller_no_role_of_which_could_act_is_refused_before_anything_is_looked_up():
    with pytest.raises(Forbidden):
        access.require_some_rule(caller("resident", sub="7"), "8", "acknowledge")
    access.require_some_rule(caller("resident", sub="7"), "7", "acknowledge")
    access.require_some_rule(caller("officer", unit="4"), "7", "acknowledge")  # the staff rule decides later
    with pytest.raises(Forbidden, match="preferences"):
        access.require_act_for(caller("officer", unit="4"), "7", lambda: PATHS["7"], "preferences")
