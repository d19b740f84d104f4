"""Scope on every notices method that takes an id: community A's staff never reach community B's
notices, residents or deliveries, whatever id they pass and whatever roles their token holds.
Real broker and PostgreSQL; a real local HTTP receiver stands in for the gateways."""

import pytest
from sqlalchemy import create_engine, text

from services.notices.models import Base
from shared.errors import Forbidden, NotFound, ValidationError
from tests.support import add_household, add_resident, table_counts, token, wait_until


def phone(seq):
    return f"138{seq:08d}"


@pytest.fixture
def world(admin, district, notices, call_as):
    """Resident a1 in small grid a (community a); b1 and b2 in small grid b (community b)."""
    home_a = add_household(admin, district["small_a"], room="101")
    home_b = add_household(admin, district["small_b"], room="201")
    people = {
        "a1": add_resident(admin, home_a, 1)["id"],
        "b1": add_resident(admin, home_b, 2)["id"],
        "b2": add_resident(admin, home_b, 3)["id"],
    }
    return {
        **district,
        **people,
        "home_a": home_a,
        "home_b": home_b,
        "street_officer": call_as(token("officer", sub="street-officer", unit=district["street"])).notices,
        "officer_a": call_as(token("officer", sub="officer-a", unit=district["community_a"])).notices,
        "officer_b": call_as(token("officer", sub="officer-b", unit=district["community_b"])).notices,
    }


def notice_args(under, **overrides):
    return {
        "title": "Water cut",
        "body": "No water from 9 to 12.",
        "category": "policy",
        "severity": "minor",
        "urgency": "expected",
        "audience": {"under": list(under)},
        "channels": ["sms"],
        **overrides,
    }


def publish(author, receiver, under, sends, **overrides):
    """A notice created and approved by ``author``, published, and its ``sends`` SMS accepted."""
    notice = author.create_notice(**notice_args(under, **overrides))
    author.approve_notice(notice_id=notice["id"])
    wait_until(lambda: author.get_notice(notice_id=notice["id"])["status"] == "published", message="not published")
    title = notice["title"]
    wait_until(lambda: len([b for b in receiver.accepted("/sms") if b["title"] == title]) == sends, message="not sent")
    wait_until(lambda: author.delivery_report(notice_id=notice["id"])["sent"] == sends, message="sends not recorded")
    return notice


def snapshot(url):
    return table_counts(
        url,
        Base.metadata,
        {
            "notices": "SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM notices",
            "deliveries": "SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM deliveries",
        },
    )


def sql(url, statement, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


# ---- create_notice(references=...) and approve_notice ------------------------------------------


def test_a_cancel_or_update_of_another_communitys_notice_is_forbidden_and_changes_nothing(world, receiver, notices_db):
    b_notice = publish(world["officer_b"], receiver, [world["community_b"]], sends=2, title="B's notice")
    b_draft = world["officer_b"].create_notice(**notice_args([world["community_b"]], title="B's draft"))
    before = snapshot(notices_db)
    officer_a = world["officer_a"]
    for msg_type in ("cancel", "update"):
        for referenced in (b_notice["id"], b_draft["id"]):  # a draft: Forbidden, not a Conflict revealing its status
            with pytest.raises(Forbidden) as err:
                officer_a.create_notice(**notice_args([world["community_a"]], msg_type=msg_type, references=referenced))
            assert "referenced notice" in str(err.value)
        with pytest.raises(NotFound):
            officer_a.create_notice(**notice_args([world["community_a"]], msg_type=msg_type, references="99999999"))
    assert snapshot(notices_db) == before
    assert world["officer_b"].get_notice(notice_id=b_notice["id"])["status"] == "published"
    assert [b["to"] for b in receiver.accepted("/sms")].count(phone(2)) == 1  # b1 got B's notice and nothing else


def test_a_cancel_needs_every_audience_unit_of_its_notice_and_the_same_audience(world, receiver):
    street, officer_a = world["street_officer"], world["officer_a"]
    both = publish(street, receiver, [world["small_a"], world["small_b"]], sends=3)
    # Community a's officer reaches small grid a, not b: cancelling would message b's residents.
    for under in ([world["community_a"]], [world["small_a"]]):
        with pytest.raises(Forbidden):
            officer_a.create_notice(**notice_args(under, msg_type="cancel", references=both["id"]))
    # Someone who reaches both: a cancel goes to the whole audience, an update within it.
    with pytest.raises(ValidationError) as err:
        street.create_notice(**notice_args([world["small_a"]], msg_type="cancel", references=both["id"]))
    assert "audience" in err.value.fields
    with pytest.raises(ValidationError) as err:
        street.create_notice(**notice_args([world["community_a"]], msg_type="update", references=both["id"]))
    assert "audience" in err.value.fields
    update = street.create_notice(**notice_args([world["small_a"]], msg_type="update", references=both["id"]))
    cancel = street.create_notice(
        **notice_args([world["small_b"], world["small_a"]], msg_type="cancel", references=both["id"])
    )
    assert (update["references"], cancel["references"]) == (both["id"], both["id"])


def test_approving_a_cancel_checks_the_notice_it_cancels(world, receiver, notices_db):
    """A cancel draft pointing at another community's notice (as one created before the check
    could): its approval is refused and the other notice is left alone."""
    officer_a = world["officer_a"]
    b_notice = publish(world["officer_b"], receiver, [world["community_b"]], sends=2, title="B's notice")
    a_notice = publish(officer_a, receiver, [world["community_a"]], sends=1, title="A's notice")
    cancel = officer_a.create_notice(
        **notice_args([world["community_a"]], title="Cancelled", msg_type="cancel", references=a_notice["id"])
    )
    sql(notices_db, 'UPDATE notices SET "references" = :b WHERE id = :c', b=int(b_notice["id"]), c=int(cancel["id"]))
    with pytest.raises(Forbidden):
        officer_a.approve_notice(notice_id=cancel["id"])
    assert officer_a.get_notice(notice_id=cancel["id"])["status"] == "draft"
    assert world["officer_b"].get_notice(notice_id=b_notice["id"])["status"] == "published"


# ---- acknowledge and set_preferences: several roles --------------------------------------------


def test_acknowledging_with_several_roles_is_no_wider_than_one_role_alone(world, receiver, call_as, admin):
    street = world["street_officer"]
    notice = publish(street, receiver, [world["street"]], sends=3)
    nid = notice["id"]
    # A resident of b who is also an officer of community a.
    both = call_as(token("resident", "officer", sub=world["b1"], unit=world["community_a"])).notices
    both.acknowledge(notice_id=nid, resident_id=world["b1"])  # as the resident: themselves
    both.acknowledge(notice_id=nid, resident_id=world["a1"])  # as the officer: community a
    with pytest.raises(Forbidden):
        both.acknowledge(notice_id=nid, resident_id=world["b2"])  # neither role alone may
    unscoped = call_as(token("resident", "grid_worker", sub=world["a1"])).notices  # no unit claim
    with pytest.raises(Forbidden):
        unscoped.acknowledge(notice_id=nid, resident_id=world["b2"])
    resident = call_as(token("resident", sub=world["a1"], unit=world["small_a"])).notices
    with pytest.raises(Forbidden):
        resident.acknowledge(notice_id=nid, resident_id=world["b2"])
    # Out of scope, staff learn nothing — not even whether the resident got the notice.
    late_b = add_resident(admin, world["home_b"], 4)["id"]
    late_a = add_resident(admin, world["home_a"], 5)["id"]
    for resident_id in (world["b2"], late_b):
        with pytest.raises(Forbidden):
            world["officer_a"].acknowledge(notice_id=nid, resident_id=resident_id)
    with pytest.raises(NotFound):
        world["officer_a"].acknowledge(notice_id=nid, resident_id=late_a)  # in scope: not a recipient
    # Another community's notice stays out of reach whichever resident comes with it.
    b_notice = publish(world["officer_b"], receiver, [world["community_b"]], sends=3, title="B's notice")
    for resident_id in (world["a1"], late_a, world["b1"]):
        with pytest.raises(Forbidden):
            world["officer_a"].acknowledge(notice_id=b_notice["id"], resident_id=resident_id)
    assert street.delivery_report(notice_id=nid)["acknowledged"] == 2


def test_preferences_with_several_roles_are_no_wider_than_one_role_alone(world, call_as):
    both = call_as(token("resident", "officer", sub=world["b1"], unit=world["community_a"])).notices
    assert both.set_preferences(resident_id=world["b1"], channels=["app_push"])["channels"] == ["app_push"]
    assert both.set_preferences(resident_id=world["a1"], channels=["sms"])["channels"] == ["sms"]
    with pytest.raises(Forbidden):
        both.set_preferences(resident_id=world["b2"], channels=["sms"])
    with pytest.raises(Forbidden):
        world["officer_a"].set_preferences(resident_id=world["b1"], channels=["sms"])


# ---- record_delivery_status, send_direct: service and admin tokens scoped to a unit ------------


def test_a_scoped_service_token_reports_on_and_sends_to_its_unit_only(world, receiver, call_as, notices_db):
    street = world["street_officer"]
    notice = publish(street, receiver, [world["street"]], sends=3)
    delivery = {b["to"]: b["delivery_id"] for b in receiver.accepted("/sms")}
    for roles in (("service",), ("admin",)):
        scoped = call_as(token(*roles, sub=f"{roles[0]}-a", unit=world["community_a"])).notices
        before = snapshot(notices_db)
        with pytest.raises(Forbidden):
            scoped.record_delivery_status(delivery_id=delivery[phone(2)], status="delivered")
        with pytest.raises(Forbidden):  # b1's delivery is already sent: no Conflict either
            scoped.record_delivery_status(delivery_id=delivery[phone(2)], status="sent")
        if roles == ("service",):
            for resident_ids in ([world["b1"]], [world["a1"], world["b1"]]):
                with pytest.raises(Forbidden):
                    scoped.send_direct(resident_ids=resident_ids, template="check_in", params={"when": "today"})
        assert snapshot(notices_db) == before
    gateway = call_as(token("service", sub="gateway-a", unit=world["community_a"])).notices
    assert gateway.record_delivery_status(delivery_id=delivery[phone(1)], status="delivered")["status"] == "delivered"
    sent = gateway.send_direct(resident_ids=[world["a1"]], template="check_in", params={"when": "today"})
    assert sent["recipients"] == 1
    report = street.delivery_report(notice_id=notice["id"])
    assert (report["sent"], report["delivered"]) == (3, 1)


# ---- list_notices, register_chat_group, delivery_report ----------------------------------------


def test_a_staff_role_without_a_unit_claim_reaches_nothing(world, receiver, call_as):
    notice = publish(world["street_officer"], receiver, [world["small_a"]], sends=1)
    unscoped = call_as(token("officer", "resident", sub=world["a1"])).notices
    with pytest.raises(Forbidden):
        unscoped.list_notices()  # was an internal error
    with pytest.raises(Forbidden):
        unscoped.list_notices(under=world["small_a"])
    with pytest.raises(Forbidden):
        unscoped.get_notice(notice_id=notice["id"])


def test_register_chat_group_says_nothing_about_units_outside_scope(world, notices_db):
    officer_a = world["officer_a"]
    before = snapshot(notices_db)
    for unit in (world["community_b"], world["small_b"]):  # a community was a ValidationError naming its level
        with pytest.raises(Forbidden):
            officer_a.register_chat_group(unit_id=unit, name="B group", webhook_url="http://127.0.0.1:9/b")
    with pytest.raises(ValidationError) as err:
        officer_a.register_chat_group(unit_id=world["community_a"], name="A", webhook_url="http://127.0.0.1:9/a")
    assert "unit_id" in err.value.fields
    assert snapshot(notices_db) == before


def test_delivery_report_shows_a_scoped_caller_only_what_lies_under_its_unit(world, receiver):
    street, officer_a = world["street_officer"], world["officer_a"]
    street.register_chat_group(unit_id=world["small_a"], name="A group", webhook_url=receiver.url("/robot/a"))
    street.register_chat_group(unit_id=world["small_b"], name="B group", webhook_url=receiver.url("/robot/b"))
    notice = publish(street, receiver, [world["small_a"], world["small_b"]], sends=3, channels=["sms", "chat_group"])
    wait_until(lambda: receiver.accepted("/robot/a") and receiver.accepted("/robot/b"), message="robots not posted")
    wait_until(lambda: street.delivery_report(notice_id=notice["id"])["chat_groups"]["sent"] == 2)
    whole = street.delivery_report(notice_id=notice["id"])
    assert whole["targeted"] == 3 and [u["unit_id"] for u in whole["units"]] == sorted(
        [world["small_a"], world["small_b"]], key=int
    )
    mine = officer_a.delivery_report(notice_id=notice["id"])
    assert [u["unit_id"] for u in mine["units"]] == [world["small_a"]]
    assert (mine["targeted"], mine["sent"], mine["chat_groups"]["sent"]) == (1, 1, 1)
    by_level = officer_a.delivery_report(notice_id=notice["id"], level="community")
    assert by_level["units"] == [] and by_level["targeted"] == 1  # community b is not a's; a is above the audience
    with pytest.raises(Forbidden):
        world["officer_b"].delivery_report(
            notice_id=publish(officer_a, receiver, [world["small_a"]], sends=1, title="A only")["id"]
        )
