"""Bad input on every volunteer method: a typed ValidationError naming the field, and nothing changes."""

import pytest

from services.volunteer.models import Base
from tests.support import assert_bad_input_refused, table_counts, token

WHEN = "2030-01-07T01:00:00+00:00"
WEEK = [{"weekday": 0, "start": "09:00", "end": "12:00"}]


def valid_calls(d):
    """One well-formed call per method: (kwargs, a string field, a field to give a wrong type)."""
    return {
        "register_volunteer": (
            {
                "name": "N",
                "phone": "13912345678",
                "home_unit_id": d["small_a"],
                "skills": ["delivery"],
                "availability": WEEK,
            },
            "name",
            "phone",
        ),
        "update_volunteer": ({"volunteer_id": d["volunteer"], "name": "M"}, "name", "skills"),
        "get_volunteer": ({"volunteer_id": d["volunteer"]}, "volunteer_id", "volunteer_id"),
        "list_volunteers": ({"under": d["street"]}, "under", "skill"),
        "set_active": ({"volunteer_id": d["volunteer"], "active": False}, "volunteer_id", "active"),
        "make_pledge": ({"volunteer_id": d["volunteer"], "text": "T", "due_on": "2030-01-01"}, "text", "due_on"),
        "fulfil_pledge": ({"pledge_id": "1", "note": "N"}, "note", "pledge_id"),
        "list_pledges": ({"under": d["street"]}, "under", "status"),
        "hours": ({"volunteer_id": d["volunteer"]}, "volunteer_id", "since"),
        "create_post": ({"unit_id": d["community_a"], "name": "P", "location": "L"}, "location", "unit_id"),
        "add_shift": (
            {"post_id": "1", "starts_at": WHEN, "ends_at": "2030-01-07T03:00:00+00:00", "needed": 2},
            "post_id",
            "needed",
        ),
        "sign_up": ({"shift_id": "1", "volunteer_id": d["volunteer"]}, "shift_id", "volunteer_id"),
        "withdraw": ({"shift_id": "1", "volunteer_id": d["volunteer"]}, "shift_id", "volunteer_id"),
        "check_in": ({"shift_id": "1", "volunteer_id": d["volunteer"]}, "shift_id", "volunteer_id"),
        "check_out": ({"shift_id": "1", "volunteer_id": d["volunteer"]}, "shift_id", "volunteer_id"),
        "coverage": ({"under": d["street"], "date": "2030-01-07"}, "under", "date"),
        "create_request": (
            {"unit_id": d["small_a"], "kind": "masks", "details": "D", "urgency": "low", "needed_by": WHEN},
            "details",
            "kind",
        ),
        "respond_offer": ({"offer_id": "1", "accept": True}, "offer_id", "accept"),
        "complete_request": ({"request_id": "1", "note": "N"}, "note", "request_id"),
        "confirm_request": ({"request_id": "1", "rating": 5}, "request_id", "rating"),
        "get_request": ({"request_id": "1"}, "request_id", "request_id"),
        "list_requests": ({"under": d["street"]}, "under", "status"),
        "my_tasks": ({"volunteer_id": d["volunteer"]}, "volunteer_id", "volunteer_id"),
    }


WRONG_TYPES = {
    "phone": "12345",
    "skills": ["juggling"],
    "volunteer_id": [1],
    "skill": "juggling",
    "active": "maybe",
    "due_on": "soon",
    "pledge_id": {"id": 1},
    "status": "done",
    "since": "yesterday",
    "unit_id": -1,
    "needed": 0,
    "date": "2030-13-01",
    "kind": "pizza",
    "accept": "perhaps",
    "request_id": 1.5,
    "rating": 6,
}


@pytest.fixture
def ids(volunteer, call_as, district):
    officer = call_as(token("officer", sub="o", unit=district["street"])).volunteer
    volunteer_id = officer.register_volunteer(
        name="V", phone="13912345678", home_unit_id=district["small_a"], skills=["delivery"], availability=WEEK
    )["id"]
    return {**district, "volunteer": volunteer_id}


@pytest.mark.parametrize(
    "name", sorted(valid_calls({"small_a": "1", "street": "1", "community_a": "1", "volunteer": "1"}))
)
def test_bad_input_is_refused_and_changes_nothing(name, call_as, ids, volunteer_db):
    caller = call_as(
        token("volunteer", sub=ids["volunteer"]) if name == "respond_offer" else token("admin", sub="root")
    ).volunteer
    kwargs, string_field, typed_field = valid_calls(ids)[name]
    assert_bad_input_refused(
        getattr(caller, name),
        kwargs,
        string_field,
        typed_field,
        WRONG_TYPES[typed_field],
        lambda: table_counts(volunteer_db, Base.metadata),
    )
