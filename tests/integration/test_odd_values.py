"""Odd values in every argument of every RPC method: a ValidationError naming the argument, and
nothing changes (issue 12).

The cases come from the endpoint contracts (the walk behind docs/asyncapi.yaml), so a new method or
argument is covered without touching this file: a NUL, a lone surrogate or an ESC in every string
(also inside lists, objects and nested schemas), a NUL in every id, date and timestamp, timestamps
and dates far outside the window every store reads back (with offsets that push them over a year
boundary), and 1.5, "2" and true for every integer — page and page_size included. Before, these
were InternalErrors, values that broke every later read, OverflowErrors, or 1.5 quietly taken as 1.
One suite serves the whole module; every case changes nothing, so they share it.
"""

import datetime as dt
import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from marshmallow import fields
from nameko.standalone.rpc import ClusterRpcProxy

from shared import validation
from shared.auth import ROLES
from shared.errors import ValidationError
from tests.integration import module_suite
from tests.support import add_household, add_resident, build_district, table_counts, token
from tools import asyncapi

# Every role and no unit: any method's authorisation passes, so each call reaches validation.
ANYONE = token(*sorted(ROLES), sub="odd-values")
ADMIN = token("admin", sub="root")

ODD_TEXT = {"NUL": "a\x00b", "lone surrogate": "a\ud800b", "ESC": "a\x1bb"}
TEXT_MESSAGES = ("U+0000", "U+D800", "U+001B")
FAR_TIMES = (
    "9999-12-31T23:00:00-12:00",  # year 10000 in UTC: stored, it broke every read after
    "2199-12-31T23:00:00-12:00",  # 2200 in UTC: just outside
    "0001-01-01T00:00:00+14:00",  # year 0 in UTC
    "1969-12-31T23:59:59+00:00",
)
FAR_DATES = ("9999-12-31", "2200-01-01", "0001-01-01", "1899-12-31")
ODD_INTEGERS = (1.5, "2", True)


@pytest.fixture(scope="module")
def module_rabbit(request, vhost_pipeline):
    yield from module_suite.module_vhost(request, vhost_pipeline)


@pytest.fixture(scope="module")
def suite(request, module_rabbit):
    yield from module_suite.running_suite(request, module_rabbit)


@pytest.fixture(scope="module")
def proxy(suite):
    with ClusterRpcProxy(suite.configs["grid"], context_data={"auth_token": ANYONE}, timeout=30) as rpc:
        yield rpc


# ---- the cases, from the contracts -----------------------------------------------------------


def plant(field, leaf):
    """A value shaped like ``field`` holding ``leaf(f)`` at its first leaf ``f`` where that is not
    None (inside lists, dict values and nested schemas too); None when no leaf takes one."""
    if isinstance(field, fields.Nested):
        for name, inner in field.schema.fields.items():
            value = plant(inner, leaf)
            if value is not None:
                return [{name: value}] if field.many else {name: value}
        return None
    if isinstance(field, fields.List):
        value = plant(field.inner, leaf)
        return None if value is None else [value]
    if isinstance(field, fields.Dict):
        value = None if field.value_field is None else plant(field.value_field, leaf)
        return None if value is None else {"k": value}
    return leaf(field)


def _text(odd):
    return lambda f: odd if isinstance(f, validation.Text) else None


def _nul_in_other_strings(f):
    if isinstance(f, (validation.Id, fields.Date, fields.DateTime, fields.Time)):
        return "1\x00"
    return None


def _kind(cls, value):
    return lambda f: value if isinstance(f, cls) else None


def method_cases(schema):
    """[(argument, value, what, text message expected or None)] for one method's input schema."""
    instance = schema() if isinstance(schema, type) else schema
    cases = []
    for name, field in instance.fields.items():
        if field.dump_only:
            continue
        argument = field.data_key or name
        leaves: list[tuple[str, Callable[[fields.Field], Any], str | None]] = [
            (f"{label} in text", _text(odd), message)
            for (label, odd), message in zip(ODD_TEXT.items(), TEXT_MESSAGES, strict=True)
        ]
        leaves.append(("NUL in an id/date/time", _nul_in_other_strings, None))
        leaves += [(f"timestamp {when}", _kind(fields.DateTime, when), None) for when in FAR_TIMES]
        leaves += [(f"date {day}", _kind(fields.Date, day), None) for day in FAR_DATES]
        leaves += [(f"integer {value!r}", _kind(fields.Integer, value), None) for value in ODD_INTEGERS]
        for what, leaf, message in leaves:
            value = plant(field, leaf)
            if value is not None:
                cases.append((argument, value, what, message))
    return cases


def all_cases():
    found = []
    for service, cls in asyncapi.service_classes().items():
        rpcs, _, _ = asyncapi.entrypoints(cls)
        for method, contract in rpcs:
            if contract["schema"] is not None:
                cases = method_cases(contract["schema"])
                if cases:
                    found.append(pytest.param(service, method, cases, id=f"{service}.{method}"))
    return found


CASES = all_cases()


def test_the_cases_cover_every_kind_of_odd_value():
    kinds = {what.split(" ")[0] for case in CASES for (_, _, what, _) in case.values[2]}
    assert {"NUL", "lone", "ESC", "timestamp", "date", "integer"} <= kinds
    methods = {case.id for case in CASES}
    assert {"grid.list_units", "notices.create_notice", "legal.add_time_off", "volunteer.create_request"} <= methods
    assert len(CASES) >= 75  # every service's methods with arguments, not a handful


def messages_of(details):
    """Every message string in marshmallow's nested error structure."""
    if isinstance(details, dict):
        return [m for value in details.values() for m in messages_of(value)]
    if isinstance(details, list):
        return [m for value in details for m in messages_of(value)]
    return [str(details)]


def snapshot(suite, service):
    models = importlib.import_module(f"services.{service}.models")
    return table_counts(suite.databases[service], models.Base.metadata)


@pytest.mark.parametrize("service,method,cases", CASES)
def test_an_odd_value_in_any_argument_is_a_validation_error_naming_it(service, method, cases, suite, proxy):
    call = getattr(getattr(proxy, service), method)
    before = snapshot(suite, service)
    problems = []
    for argument, value, what, message in cases:
        try:
            call(**{argument: value})
        except ValidationError as exc:
            if argument not in exc.fields:
                problems.append(f"{argument} ({what}): not named in {exc.fields}")
            elif message and not any(message in m for m in messages_of(exc.fields[argument])):
                problems.append(f"{argument} ({what}): {exc.fields[argument]} does not say {message}")
        except Exception as exc:
            problems.append(f"{argument} ({what}): {type(exc).__name__} {getattr(exc, 'value', exc)}")
        else:
            problems.append(f"{argument} ({what}): accepted")
    assert problems == []
    assert snapshot(suite, service) == before
    assert suite.alive(service)


# ---- values at the edge of the window store and read back ------------------------------------

LATEST = "2199-12-31T12:00:00+00:00"
HOSTILE = "9999-12-31T23:00:00-12:00"


@pytest.fixture(scope="module")
def admin(suite):
    with ClusterRpcProxy(suite.configs["grid"], context_data={"auth_token": ADMIN}, timeout=30) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def district(admin):
    ids = build_district(admin.grid)
    ids["household"] = add_household(admin.grid, ids["small_a"])
    ids["resident"] = add_resident(admin.grid, ids["household"], 1)["id"]
    return ids


def refused(method, field, **kwargs):
    with pytest.raises(ValidationError) as err:
        method(**kwargs)
    assert field in err.value.fields, err.value.fields


def test_grid_tag_until_the_end_of_the_window_reads_back(admin, district):
    refused(admin.grid.tag_resident, "until", resident_id=district["resident"], tag="disabled", until=HOSTILE)
    admin.grid.tag_resident(resident_id=district["resident"], tag="disabled", until=LATEST)
    tags = {t["tag"]: t for t in admin.grid.get_resident(resident_id=district["resident"])["tags"]}
    assert dt.datetime.fromisoformat(tags["disabled"]["until"]) == dt.datetime.fromisoformat(LATEST)


def test_notices_expiring_at_the_end_of_the_window_read_back(admin, district):
    notice = {
        "title": "T",
        "body": "B",
        "category": "policy",
        "severity": "minor",
        "urgency": "future",
        "audience": {"under": [district["small_a"]]},
        "channels": ["sms"],
    }
    refused(admin.notices.create_notice, "expires_at", **notice, expires_at=HOSTILE)
    created = admin.notices.create_notice(**notice, expires_at=LATEST)
    assert admin.notices.get_notice(notice_id=created["id"])["expires_at"].startswith("2199-12-31")
    assert any(n["id"] == created["id"] for n in admin.notices.list_notices(under=district["street"])["items"])


def test_legal_time_off_at_the_end_of_the_window_leaves_slots_readable(admin, district):
    station = admin.legal.create_station(unit_id=district["community_a"], name="S", address="A")["id"]
    lawyer = admin.legal.register_lawyer(
        name="N", firm="F", license_no="LIC-123456", specialties=["family"], station_ids=[station]
    )["id"]
    admin.legal.set_schedule(
        lawyer_id=lawyer,
        station_id=station,
        weekly=[{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(7)],
    )
    refused(admin.legal.add_time_off, "ends_at", lawyer_id=lawyer, starts_at=LATEST, ends_at=HOSTILE)
    admin.legal.add_time_off(lawyer_id=lawyer, starts_at="2199-12-30T00:00:00+00:00", ends_at=LATEST)
    refused(admin.legal.find_slots, "date_to", specialty="family", date_from="2199-12-30", date_to="9999-12-31")
    # find_slots reads the lawyer's time off overlapping the range: a year-10000 row failed here.
    slots = admin.legal.find_slots(specialty="family", date_from="2199-12-30", date_to="2199-12-31")
    assert slots == []  # beyond the booking horizon, and on time off


def test_volunteer_shift_and_request_at_the_end_of_the_window_read_back(admin, district):
    post = admin.volunteer.create_post(unit_id=district["community_a"], name="P", location="L")["id"]
    refused(admin.volunteer.add_shift, "ends_at", post_id=post, starts_at=LATEST, ends_at=HOSTILE, needed=1)
    admin.volunteer.add_shift(post_id=post, starts_at="2199-12-31T10:00:00+00:00", ends_at=LATEST, needed=1)
    coverage = admin.volunteer.coverage(under=district["street"], date="2199-12-31")
    assert json.dumps(coverage)
    request = {"unit_id": district["small_a"], "kind": "masks", "details": "D", "urgency": "low"}
    # Matching works out the local day of needed_by: at 9999-12-31T23:59Z that was an OverflowError.
    refused(admin.volunteer.create_request, "needed_by", **request, needed_by="9999-12-31T23:59:59+00:00")
    created = admin.volunteer.create_request(**request, needed_by=LATEST)
    assert admin.volunteer.get_request(request_id=created["id"])["needed_by"].startswith("2199-12-31")
