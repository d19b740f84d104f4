"""Bad input on every legal method: a typed ValidationError naming the field, and nothing changes."""

import pytest

from services.legal.models import Base
from tests.support import assert_bad_input_refused, table_counts, token

DAY = "2030-01-07"
WHEN = "2030-01-07T01:00:00+00:00"


def valid_calls(d):
    """One well-formed call per method: (kwargs, a string field, a field to give a wrong type)."""
    week = [{"weekday": 0, "start": "09:00", "end": "12:00"}]
    return {
        "create_station": ({"unit_id": d["community_a"], "name": "S", "address": "A"}, "address", "unit_id"),
        "list_stations": ({"under": d["community_a"]}, "under", "under"),
        "register_lawyer": (
            {
                "name": "N",
                "firm": "F",
                "license_no": "LIC-123456",
                "specialties": ["family"],
                "station_ids": [d["station"]],
            },
            "license_no",
            "specialties",
        ),
        "set_schedule": ({"lawyer_id": d["lawyer"], "station_id": d["station"], "weekly": week}, "lawyer_id", "weekly"),
        "add_time_off": (
            {"lawyer_id": d["lawyer"], "starts_at": WHEN, "ends_at": "2030-01-07T02:00:00+00:00"},
            "reason",
            "ends_at",
        ),
        "find_slots": ({"specialty": "family", "date_from": DAY, "date_to": DAY}, "specialty", "date_to"),
        "book": (
            {"lawyer_id": d["lawyer"], "station_id": d["station"], "starts_at": WHEN, "resident_id": "1", "topic": "T"},
            "topic",
            "mode",
        ),
        "cancel": ({"consultation_id": "1", "reason": "R"}, "reason", "consultation_id"),
        "reschedule": ({"consultation_id": "1", "starts_at": WHEN}, "consultation_id", "starts_at"),
        "mark_no_show": ({"consultation_id": "1"}, "consultation_id", "consultation_id"),
        "complete": ({"consultation_id": "1", "summary": "S", "outcome": "referred"}, "summary", "outcome"),
        "get_consultation": ({"consultation_id": "1"}, "consultation_id", "consultation_id"),
        "list_consultations": ({"status": "booked"}, "status", "page"),
        "open_mediation": (
            {"unit_id": d["community_a"], "category": "other", "party_resident_ids": ["1", "2"], "description": "D"},
            "description",
            "party_resident_ids",
        ),
        "assign_mediator": ({"case_id": "1", "mediator_id": "1", "kind": "social"}, "kind", "case_id"),
        "record_session": ({"case_id": "1", "held_at": WHEN, "attendees": ["a"], "notes": "N"}, "notes", "attendees"),
        "close_mediation": ({"case_id": "1", "outcome": "withdrawn"}, "agreement", "outcome"),
        "get_case": ({"case_id": "1"}, "case_id", "case_id"),
        "list_cases": ({"status": "open"}, "status", "under"),
        "set_legal_hold": ({"record": "case", "record_id": "1", "reason": "Appeal"}, "reason", "record"),
        "release_legal_hold": ({"record": "case", "record_id": "1", "reason": "Done"}, "reason", "record_id"),
    }


WRONG_TYPES = {
    "unit_id": [1],
    "specialties": "family",
    "weekly": [{"weekday": 9, "start": "9", "end": "8"}],
    "ends_at": "2020-01-01T00:00:00+00:00",
    "date_to": "2029-01-01",
    "mode": "telepathy",
    "consultation_id": {"id": 1},
    "starts_at": "tomorrow",
    "outcome": "won",
    "page": 0,
    "party_resident_ids": ["1"],
    "case_id": -1,
    "attendees": "everyone",
    "under": "all",
    "record": "station",
    "record_id": "case/1",
}


@pytest.fixture
def ids(legal, call_as, district):
    officer = call_as(token("officer", sub="o", unit=district["community_a"])).legal
    station = officer.create_station(unit_id=district["community_a"], name="S", address="A")["id"]
    lawyer = officer.register_lawyer(
        name="L", firm="F", license_no="LIC-000001", specialties=["family"], station_ids=[station]
    )["id"]
    return {**district, "station": station, "lawyer": lawyer}


@pytest.mark.parametrize("name", sorted(valid_calls({"community_a": "1", "station": "1", "lawyer": "1"})))
def test_bad_input_is_refused_and_changes_nothing(name, call_as, ids, legal_db):
    # complete() is the lawyer's alone; everything else an admin may call
    caller = call_as(token("lawyer", sub=ids["lawyer"]) if name == "complete" else token("admin", sub="root")).legal
    kwargs, string_field, typed_field = valid_calls(ids)[name]
    assert_bad_input_refused(
        getattr(caller, name),
        kwargs,
        string_field,
        typed_field,
        WRONG_TYPES[typed_field],
        lambda: table_counts(legal_db, Base.metadata),
    )
