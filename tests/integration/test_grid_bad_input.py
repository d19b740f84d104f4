"""Bad input on every grid method: a typed ValidationError naming the field, and nothing changes."""

import datetime as dt

import pytest

from services.grid.models import Base
from tests.support import (
    add_household,
    add_resident,
    assert_bad_input_refused,
    build_district,
    expect_invalid,
    id_number,
    table_counts,
)

TODAY = dt.date.today().isoformat()


def valid_calls(d):
    """One well-formed call per method: (kwargs, a string field, a field to give a wrong type)."""
    return {
        "create_unit": ({"parent_id": d["street"], "level": "community", "name": "N"}, "name", "level"),
        "get_unit": ({"unit_id": d["street"]}, "unit_id", "unit_id"),
        "list_units": ({"under": d["street"]}, "under", "page"),
        "ancestors": ({"unit_id": d["small_a"]}, "unit_id", "unit_id"),
        "move_unit": ({"unit_id": d["large_a"], "new_parent_id": d["community_b"]}, "new_parent_id", "unit_id"),
        "close_unit": ({"unit_id": d["small_b"]}, "unit_id", "unit_id"),
        "set_party_org": ({"unit_id": d["community_a"], "name": "Branch"}, "name", "unit_id"),
        "assign_staff": (
            {"unit_id": d["small_a"], "user_id": "u1", "role": "grid_worker", "name": "N"},
            "user_id",
            "role",
        ),
        "list_staff": ({"unit_id": d["small_a"]}, "unit_id", "unit_id"),
        "register_household": (
            {"unit_id": d["small_a"], "address": {"compound": "C", "building": "1", "entrance": "1", "room": "1"}},
            "unit_id",
            "address",
        ),
        "move_household": ({"household_id": d["household"], "unit_id": d["small_b"]}, "household_id", "unit_id"),
        "register_resident": (
            {
                "household_id": d["household"],
                "name": "N",
                "id_number": id_number(900),
                "phone": "13900000900",
                "birth_date": _birth(id_number(900)),
            },
            "name",
            "birth_date",
        ),
        "get_resident": ({"resident_id": d["resident"]}, "resident_id", "resident_id"),
        "get_residents": ({"resident_ids": [d["resident"]]}, "resident_ids", "resident_ids"),
        "tag_resident": ({"resident_id": d["resident"], "tag": "disabled"}, "note", "until"),
        "untag_resident": ({"resident_id": d["resident"], "tag": "elderly_alone"}, "tag", "resident_id"),
        "find_residents": ({"under": d["street"]}, "under", "tags_any"),
        "find_resident_columns": ({"under": d["street"]}, "under", "phones"),
        "count_residents": ({"under": d["street"]}, "under", "tags_all"),
        "start_screening": (
            {"under": d["community_a"], "title": "T", "starts_on": TODAY, "ends_on": TODAY},
            "title",
            "starts_on",
        ),
        "record_visit": (
            {"campaign_id": d["campaign"], "household_id": d["household"], "outcome": "seen_ok"},
            "note",
            "outcome",
        ),
        "screening_progress": ({"campaign_id": d["campaign"]}, "campaign_id", "level"),
        "report_incident": (
            {"unit_id": d["small_a"], "category": "other", "description": "D"},
            "description",
            "party_resident_ids",
        ),
        "escalate_incident": ({"incident_id": d["incident"], "reason": "R"}, "reason", "incident_id"),
        "resolve_incident": ({"incident_id": d["incident"], "resolution": "R"}, "resolution", "incident_id"),
        "get_incident": ({"incident_id": d["incident"]}, "incident_id", "incident_id"),
        "list_incidents": ({"under": d["street"]}, "under", "status"),
        "add_public_note": ({"incident_id": d["incident"], "note": "N"}, "note", "incident_id"),
        "merge_reports": ({"primary_id": d["incident"], "duplicate_id": d["incident2"]}, "primary_id", "duplicate_id"),
        "public_reports": ({"unit_id": d["street"]}, "unit_id", "status"),
        "erase_resident": ({"resident_id": d["resident"], "reason": "R"}, "reason", "resident_id"),
        "cancel_erasure": ({"erasure_id": d["erasure"]}, "erasure_id", "erasure_id"),
        "list_erasures": ({"under": d["street"]}, "under", "page"),
        "access_log": ({"resident_id": d["resident"]}, "resident_id", "page"),
    }


WRONG_TYPES = {
    "level": 7,
    "unit_id": [1],
    "page": "first",
    "address": "Sunny Garden 3-2-501",
    "role": {"r": 1},
    "birth_date": "yesterday",
    "until": "soon",
    "tags_any": "quarantined",
    "tags_all": [5],
    "starts_on": 20240101,
    "outcome": True,
    "level_": None,
    "incident_id": -4,
    "party_resident_ids": ["abc"],
    "status": "pending",
    "resident_id": 1.5,
    "resident_ids": "12",
    "phones": "maybe",
    "duplicate_id": {"id": 1},
    "erasure_id": "first",
}


def _birth(number):
    return f"{number[6:10]}-{number[10:12]}-{number[12:14]}"


@pytest.fixture
def ids(admin):
    d = build_district(admin)
    d["household"] = add_household(admin, d["small_a"])
    d["resident"] = add_resident(admin, d["household"], 1)["id"]
    admin.tag_resident(resident_id=d["resident"], tag="elderly_alone")
    d["campaign"] = admin.start_screening(under=d["community_a"], title="Spring", starts_on=TODAY, ends_on=TODAY)["id"]
    d["incident"] = admin.report_incident(unit_id=d["small_a"], category="other", description="x")["id"]
    d["incident2"] = admin.report_incident(unit_id=d["small_a"], category="other", description="y")["id"]
    d["erasure"] = admin.erase_resident(resident_id=d["resident"], reason="asked")["erasure_id"]  # pending
    return d


def snapshot(url):
    return table_counts(
        url,
        Base.metadata,
        {
            "units.closed": "SELECT count(*) FROM units WHERE closed",
            "units.paths": "SELECT string_agg(path, ',' ORDER BY id) FROM units",
            "party": "SELECT count(party_org_name) FROM units",
        },
    )


METHODS = sorted(
    valid_calls(
        {
            k: "1"
            for k in (
                "street",
                "small_a",
                "small_b",
                "large_a",
                "community_a",
                "community_b",
                "household",
                "resident",
                "campaign",
                "incident",
                "incident2",
                "erasure",
            )
        }
    )
)


@pytest.mark.parametrize("name", METHODS)
def test_bad_input_is_refused_and_changes_nothing(name, admin, ids, grid_db):
    kwargs, string_field, typed_field = valid_calls(ids)[name]
    method = getattr(admin, name)
    assert_bad_input_refused(
        method, kwargs, string_field, typed_field, WRONG_TYPES[typed_field], lambda: snapshot(grid_db)
    )
    required = [k for k in kwargs if k not in ("under", "level", "note")]
    if required:
        before = snapshot(grid_db)
        missing = dict(kwargs)
        missing.pop(required[0])
        expect_invalid(method, required[0], **missing)
        assert snapshot(grid_db) == before


def test_id_number_check_digit_and_birth_date(admin, ids):
    good = id_number(901)
    bad_check = good[:17] + ("0" if good[17] != "0" else "1")
    base = {"household_id": ids["household"], "name": "N", "phone": "13900000901", "birth_date": _birth(good)}
    error = expect_invalid(admin.register_resident, "id_number", **base, id_number=bad_check)
    assert "Check digit" in error.fields["id_number"][0]
    expect_invalid(admin.register_resident, "id_number", **base, id_number="12345")
    expect_invalid(admin.register_resident, "birth_date", **{**base, "birth_date": "1999-01-01"}, id_number=good)
    expect_invalid(admin.register_resident, "phone", **{**base, "phone": "12345"}, id_number=good)
    created = admin.register_resident(**base, id_number=good)
    assert created["id_number"].endswith(good[-4:])
