"""Scope on every id a volunteer-service caller passes: staff of community a reaching into community b
get Forbidden and nothing changes; the same call inside the caller's scope succeeds. Several roles on
one token never see or do more than each role alone."""

import datetime as dt
import re
from contextlib import contextmanager

import pytest

from services.volunteer.models import Base
from shared.errors import Conflict, Forbidden, ValidationError
from tests.support import add_household, add_resident, table_counts, token

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]


def later(hours):
    """A time ``hours`` from now: shifts a day away stay clear of the understaffed-shift timer."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).isoformat()


@pytest.fixture
def world(volunteer, call_as, admin, district):
    """Households and residents in small grids a and b; a volunteer living in each (registered by
    their community's officer); officers of a, b and the street; a grid worker of small grid a."""
    home_a1 = add_household(admin, district["small_a"], room="1")
    home_a2 = add_household(admin, district["small_a"], room="2")
    home_b = add_household(admin, district["small_b"], room="3")
    people = {
        "ra1": add_resident(admin, home_a1, 1)["id"],
        "ra2": add_resident(admin, home_a2, 2)["id"],
        "rb1": add_resident(admin, home_b, 3)["id"],
        "rb2": add_resident(admin, home_b, 4)["id"],
    }
    proxies = {
        name: call_as(token("officer", sub=name, unit=district[unit])).volunteer
        for name, unit in (("officer_a", "community_a"), ("officer_b", "community_b"), ("street_officer", "street"))
    }
    proxies["worker_a"] = call_as(token("grid_worker", sub="worker_a", unit=district["small_a"])).volunteer

    def register(officer, resident, unit, name):
        return proxies[officer].register_volunteer(
            name=name,
            phone="13912345678",
            home_unit_id=district[unit],
            skills=["delivery"],
            availability=ALWAYS,
            resident_id=people[resident],
        )["id"]

    vb = register("officer_b", "rb2", "small_b", "lives in b")
    va = register("officer_a", "ra2", "small_a", "lives in a")
    return {
        **district,
        **people,
        **proxies,
        "home_a1": home_a1,
        "home_a2": home_a2,
        "home_b": home_b,
        "va": va,
        "vb": vb,
    }


@pytest.fixture
def unchanged(volunteer_db):
    """``with unchanged(): ...``: the volunteer tables' row counts are the same after the block."""

    @contextmanager
    def check():
        before = table_counts(volunteer_db, Base.metadata)
        yield
        assert table_counts(volunteer_db, Base.metadata) == before

    return check


def need(w, unit, **ids):
    args = {"unit_id": w[unit], "kind": "groceries", "details": "Rice", "urgency": "normal", "needed_by": later(3)}
    return {**args, **{field: w[name] for field, name in ids.items()}}


def test_create_request_checks_the_household_and_resident_behind_it(world, call_as, unchanged):
    w = world
    resident_a = call_as(token("resident", sub=w["ra1"])).volunteer
    with unchanged():
        for staff in (w["officer_a"], w["worker_a"]):
            with pytest.raises(Forbidden, match="household"):
                staff.create_request(**need(w, "small_a", household_id="home_b"))
            with pytest.raises(Forbidden, match="resident"):
                staff.create_request(**need(w, "small_a", resident_id="rb1"))
        # in the street officer's scope, but not inside the request's unit
        for ids, field in (({"household_id": "home_b"}, "household_id"), ({"resident_id": "rb1"}, "resident_id")):
            with pytest.raises(ValidationError) as outside:
                w["street_officer"].create_request(**need(w, "small_a", **ids))
            assert field in outside.value.fields
        with pytest.raises(ValidationError) as mismatch:
            w["officer_a"].create_request(**need(w, "small_a", resident_id="ra1", household_id="home_a2"))
        assert "resident_id" in mismatch.value.fields
        # a resident asks for themselves and their own household only, at a unit they live in
        for other in ("home_b", "home_a2"):
            with pytest.raises(Forbidden, match="household"):
                resident_a.create_request(**need(w, "small_a", resident_id="ra1", household_id=other))
        with pytest.raises(ValidationError):
            resident_a.create_request(**need(w, "small_b", resident_id="ra1"))
    made = w["officer_a"].create_request(**need(w, "small_a", household_id="home_a1"))
    assert made["household_id"] == w["home_a1"] and made["address"]["room"] == "1"
    assert w["worker_a"].create_request(**need(w, "small_a", resident_id="ra1"))["household_id"] == w["home_a1"]
    own = resident_a.create_request(**need(w, "community_a", resident_id="ra1", household_id="home_a1"))
    assert own["address"]["room"] == "1" and "household_id" not in own
    assert w["street_officer"].create_request(**need(w, "small_b", resident_id="rb1"))["household_id"] == w["home_b"]


def test_register_volunteer_checks_the_linked_resident(world, unchanged):
    w = world
    volunteer = {"name": "N", "phone": "13912345678", "skills": ["delivery"], "availability": ALWAYS}
    with unchanged():
        with pytest.raises(Forbidden, match="resident"):
            w["officer_a"].register_volunteer(**volunteer, home_unit_id=w["small_a"], resident_id=w["rb1"])
        # rb2 already volunteers: out of scope, that is not said (Forbidden, not Conflict)
        with pytest.raises(Forbidden):
            w["officer_a"].register_volunteer(**volunteer, home_unit_id=w["small_a"], resident_id=w["rb2"])
        # in scope, but the volunteer's home must be where the resident lives
        with pytest.raises(ValidationError) as elsewhere:
            w["street_officer"].register_volunteer(**volunteer, home_unit_id=w["small_a"], resident_id=w["rb1"])
        assert "home_unit_id" in elsewhere.value.fields
        with pytest.raises(ValidationError):
            w["street_officer"].update_volunteer(volunteer_id=w["va"], home_unit_id=w["small_b"])
    made = w["officer_a"].register_volunteer(**volunteer, home_unit_id=w["community_a"], resident_id=w["ra1"])
    assert made["resident_id"] == w["ra1"] and made["home_unit_id"] == w["community_a"]
    assert w["street_officer"].update_volunteer(volunteer_id=made["id"], home_unit_id=w["small_a"])["home_unit_id"]


def test_volunteers_sign_up_anywhere_staff_only_for_shifts_in_their_scope(world, call_as, unchanged):
    w = world
    post_a = w["officer_a"].create_post(unit_id=w["community_a"], name="Gate A", location="North gate")["id"]
    post_b = w["officer_b"].create_post(unit_id=w["community_b"], name="Gate B", location="South gate")["id"]
    shift_a = w["officer_a"].add_shift(post_id=post_a, starts_at=later(24), ends_at=later(26), needed=2)["id"]
    shift_b = w["officer_b"].add_shift(post_id=post_b, starts_at=later(30), ends_at=later(32), needed=2)["id"]
    me = call_as(token("volunteer", sub=w["va"])).volunteer
    with unchanged():
        with pytest.raises(Forbidden, match="shift"):  # a's officer reaches the volunteer, not b's post
            w["officer_a"].sign_up(shift_id=shift_b, volunteer_id=w["va"])
        with pytest.raises(Forbidden, match="volunteer"):  # b's officer reaches the post, not a's volunteer
            w["officer_b"].sign_up(shift_id=shift_b, volunteer_id=w["va"])
    assert w["officer_a"].sign_up(shift_id=shift_a, volunteer_id=w["va"])["status"] == "signed"
    assert me.sign_up(shift_id=shift_b, volunteer_id=w["va"])["status"] == "signed"  # for themselves: anywhere
    with unchanged():
        with pytest.raises(Forbidden, match="shift"):
            w["officer_a"].withdraw(shift_id=shift_b, volunteer_id=w["va"])
        with pytest.raises(Forbidden, match="shift"):
            w["officer_a"].check_in(shift_id=shift_b, volunteer_id=w["va"])
    assert me.withdraw(shift_id=shift_b, volunteer_id=w["va"])["status"] == "withdrawn"
    assert w["street_officer"].sign_up(shift_id=shift_b, volunteer_id=w["va"])["status"] == "signed"


def offers_to(call_as, volunteer_id):
    me = call_as(token("volunteer", sub=volunteer_id)).volunteer
    return me.my_tasks(volunteer_id=volunteer_id)["offers"]


def test_staff_see_a_volunteers_tasks_only_in_their_scope_and_roles_do_not_add_up(world, call_as, unchanged):
    w = world
    # rb1's household is vb's, so b's request goes to a's volunteer, the nearest one left
    request = w["officer_b"].create_request(**need(w, "small_b", resident_id="rb1"))
    offers = offers_to(call_as, w["va"])
    assert [o["request_id"] for o in offers] == [request["id"]]
    assert w["officer_a"].my_tasks(volunteer_id=w["va"]) == {"tasks": [], "offers": []}
    assert [o["id"] for o in w["street_officer"].my_tasks(volunteer_id=w["va"])["offers"]] == [offers[0]["id"]]
    admin_a = call_as(token("admin", sub="admin-a", unit=w["community_a"])).volunteer
    with unchanged(), pytest.raises(Forbidden, match="request"):  # an admin naming a unit answers only there
        admin_a.respond_offer(offer_id=offers[0]["id"], accept=False)
    # the offered volunteer who is also a's officer: the volunteer's view of b's request, never staff's
    both = call_as(token("volunteer", "officer", sub=w["va"], unit=w["community_a"])).volunteer
    seen = both.get_request(request_id=request["id"])
    assert seen["details"] == "Rice" and "household_id" not in seen and "resident_id" not in seen
    answer = both.respond_offer(offer_id=offers[0]["id"], accept=True)
    assert answer["request"]["status"] == "matched" and "household_id" not in answer["request"]
    tasks = both.my_tasks(volunteer_id=w["va"])["tasks"]
    assert [t["id"] for t in tasks] == [request["id"]] and "resident_id" not in tasks[0]
    assert w["officer_a"].my_tasks(volunteer_id=w["va"])["tasks"] == []
    street_tasks = w["street_officer"].my_tasks(volunteer_id=w["va"])["tasks"]
    assert [t["household_id"] for t in street_tasks] == [w["home_b"]]
    assert "household_id" not in both.complete_request(request_id=request["id"], note="Delivered")
    # the assigned volunteer holding a resident role too is not the requester
    assert w["va"] != w["rb1"]
    with unchanged(), pytest.raises(Forbidden):
        call_as(token("volunteer", "resident", sub=w["va"])).volunteer.confirm_request(
            request_id=request["id"], rating=5
        )
    requester = call_as(token("resident", sub=w["rb1"])).volunteer
    assert requester.confirm_request(request_id=request["id"], rating=5)["status"] == "confirmed"


@pytest.fixture
def two_at_a_time(volunteer_config):
    volunteer_config.update({"OFFER_FANOUT": 2})


def test_an_offered_volunteer_with_a_staff_role_elsewhere_does_not_complete_the_request(
    two_at_a_time, world, call_as, unchanged
):
    w = world
    other = w["officer_a"].register_volunteer(
        name="unlinked", phone="13912345679", home_unit_id=w["small_a"], skills=["delivery"], availability=ALWAYS
    )["id"]
    request = w["officer_b"].create_request(**need(w, "small_b", resident_id="rb1"))
    offered = {o["request_id"] for v in (w["va"], other) for o in offers_to(call_as, v)}
    assert offered == {request["id"]}
    offer = offers_to(call_as, other)[0]
    call_as(token("volunteer", sub=other)).volunteer.respond_offer(offer_id=offer["id"], accept=True)
    offered_too = call_as(token("volunteer", "officer", sub=w["va"], unit=w["community_a"])).volunteer
    with unchanged(), pytest.raises(Forbidden, match="assigned"):
        offered_too.complete_request(request_id=request["id"], note="Not mine")
    assert w["officer_b"].get_request(request_id=request["id"])["status"] == "matched"
    done = call_as(token("volunteer", sub=other)).volunteer.complete_request(request_id=request["id"], note="Done")
    assert done["status"] == "completed"


def test_a_unit_on_a_self_role_token_reaches_nothing_but_its_own_records(world, call_as, unchanged):
    """Issue 12, review: a resident's or volunteer's token naming a unit read every request there,
    addresses included, and every volunteer living there; they reach their own records only."""
    w = world
    request = w["officer_a"].create_request(**need(w, "small_a", resident_id="ra1"))
    offered = {o["request_id"] for o in offers_to(call_as, w["va"])}
    assert request["id"] in offered  # a's volunteer, who is not vb
    # one sub for two self roles names a resident and a volunteer alike: one naming neither of the request's
    nobody = next(w[r] for r in ("rb1", "rb2", "ra2") if w[r] not in (w["va"], w["vb"], w["ra1"]))
    outsiders = [
        call_as(token("resident", sub=w["ra2"], unit=w["small_a"])).volunteer,
        call_as(token("volunteer", sub=w["vb"], unit=w["community_a"])).volunteer,
        call_as(token("volunteer", "resident", sub=nobody, unit=w["small_a"])).volunteer,
    ]
    with unchanged():
        for outsider in outsiders:
            with pytest.raises(Forbidden):
                outsider.get_request(request_id=request["id"])
        for outsider in outsiders[1:]:
            for read in (outsider.get_volunteer, outsider.hours, outsider.my_tasks):
                with pytest.raises(Forbidden):
                    read(volunteer_id=w["va"])
            with pytest.raises(Forbidden):
                outsider.set_active(volunteer_id=w["va"], active=False)
    # their own records they still reach, unit or not
    requester = call_as(token("resident", sub=w["ra1"], unit=w["small_a"])).volunteer
    assert requester.get_request(request_id=request["id"])["address"]["room"] == "1"
    assert outsiders[1].get_volunteer(volunteer_id=w["vb"])["id"] == w["vb"]
    offered_one = call_as(token("volunteer", sub=w["va"], unit=w["community_b"])).volunteer
    assert offered_one.get_request(request_id=request["id"])["id"] == request["id"]


def test_a_sign_up_overlap_does_not_name_the_other_shift(world, call_as):
    """Issue 12, review: the overlap Conflict named the shift the volunteer holds, which may lie outside
    the caller's scope."""
    w = world
    post_a = w["officer_a"].create_post(unit_id=w["community_a"], name="Gate A", location="North gate")["id"]
    post_b = w["officer_b"].create_post(unit_id=w["community_b"], name="Gate B", location="South gate")["id"]
    shift_a = w["officer_a"].add_shift(post_id=post_a, starts_at=later(24), ends_at=later(26), needed=2)["id"]
    shift_b = w["officer_b"].add_shift(post_id=post_b, starts_at=later(25), ends_at=later(27), needed=2)["id"]
    call_as(token("volunteer", sub=w["va"])).volunteer.sign_up(shift_id=shift_b, volunteer_id=w["va"])
    with pytest.raises(Conflict) as overlap:
        w["officer_a"].sign_up(shift_id=shift_a, volunteer_id=w["va"])
    assert "overlaps" in str(overlap.value) and not re.search(r"\d", str(overlap.value))  # no shift id
