"""Bad input on every notices method: a typed ValidationError naming the field, and nothing changes."""

import pytest

from services.notices.models import Base
from tests.support import add_household, add_resident, assert_bad_input_refused, expect_invalid, table_counts, token


@pytest.fixture
def officer(notices, call_as, district):
    return call_as(token("officer", sub="o1", unit=district["street"])).notices


@pytest.fixture
def ids(officer, admin, district):
    home = add_household(admin, district["small_a"])
    resident = add_resident(admin, home, 1)["id"]
    notice = officer.create_notice(
        title="T",
        body="B",
        category="policy",
        severity="minor",
        urgency="future",
        audience={"under": [district["small_a"]]},
        channels=["sms"],
    )["id"]
    return {**district, "resident": resident, "notice": notice}


def valid_calls(d):
    """One well-formed call per method: (kwargs, a string field, a field to give a wrong type)."""
    notice = {
        "title": "T",
        "body": "B",
        "category": "policy",
        "severity": "minor",
        "urgency": "future",
        "audience": {"under": [d["small_a"]]},
        "channels": ["sms"],
    }
    return {
        "create_notice": (notice, "body", "audience"),
        "approve_notice": ({"notice_id": d["notice"]}, "notice_id", "notice_id"),
        "get_notice": ({"notice_id": d["notice"]}, "notice_id", "notice_id"),
        "list_notices": ({"under": d["street"]}, "under", "status"),
        "record_delivery_status": ({"delivery_id": "1", "status": "delivered"}, "detail", "status"),
        "set_preferences": ({"resident_id": d["resident"], "channels": ["sms"]}, "resident_id", "quiet_hours"),
        "register_chat_group": (
            {"unit_id": d["small_a"], "name": "G", "webhook_url": "http://127.0.0.1:9/x"},
            "name",
            "webhook_url",
        ),
        "acknowledge": ({"notice_id": d["notice"], "resident_id": d["resident"]}, "resident_id", "notice_id"),
        "delivery_report": ({"notice_id": d["notice"]}, "notice_id", "level"),
        "send_direct": (
            {"resident_ids": [d["resident"]], "template": "check_in", "params": {"when": "today"}},
            "template",
            "params",
        ),
        "record_inbound": (
            {
                "gateway": "sms",
                "kind": "sms_reply",
                "gateway_event_id": "e-1",
                "from_phone": "13800000001",
                "text": "1",
            },
            "text",
            "kind",
        ),
    }


WRONG_TYPES = {
    "audience": {"under": "all"},
    "notice_id": [3],
    "status": "read",
    "quiet_hours": {"start": "25:00", "end": "07:00"},
    "webhook_url": "not a url",
    "level": "floor",
    "params": ["when"],
    "kind": "telegram",
}


def snapshot(url):
    return table_counts(url, Base.metadata, {"statuses": "SELECT string_agg(status, ',' ORDER BY id) FROM notices"})


@pytest.mark.parametrize("name", sorted(valid_calls({k: "1" for k in ("small_a", "street", "notice", "resident")})))
def test_bad_input_is_refused_and_changes_nothing(name, call_as, ids, notices_db):
    # service-only methods are called with a service token, the rest as the officer
    roles = ("service",) if name in ("record_delivery_status", "send_direct", "record_inbound") else ("officer",)
    caller = call_as(token(*roles, sub="o1", unit=None if roles == ("service",) else ids["street"])).notices
    kwargs, string_field, typed_field = valid_calls(ids)[name]
    assert_bad_input_refused(
        getattr(caller, name), kwargs, string_field, typed_field, WRONG_TYPES[typed_field], lambda: snapshot(notices_db)
    )


def test_notice_fields_are_checked_together(officer, ids):
    base = valid_calls(ids)["create_notice"][0]
    expect_invalid(officer.create_notice, "references", **base, msg_type="cancel")
    expect_invalid(officer.create_notice, "ack_deadline", **base, requires_ack=True)
    expect_invalid(officer.create_notice, "expires_at", **base, expires_at="2020-01-01T00:00:00Z")
    expect_invalid(officer.create_notice, "channels", **{**base, "channels": ["fax"]})
    expect_invalid(
        officer.create_notice, "audience", **{**base, "audience": {"under": [ids["small_a"]], "tags_any": ["tall"]}}
    )
    expect_invalid(officer.create_notice, "severity", **{**base, "severity": "apocalyptic"})
