"""Residents' reports (services/grid/reports.py) and the Open311 view (services/grid/open311.py):
validation, the per-resident rate limit, the confirmation window, merging, the public list."""

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from services.grid import erasure, incidents, open311, reports, schemas
from services.grid.models import Incident, ReportFollower
from shared.errors import Conflict, Forbidden, NotFound, RateLimited, ValidationError
from shared.validation import load
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    POLICY,
    SMALL_A,
    SMALL_B,
    WORKER_A,
    call,
    worker,
)
from tests.unit.local import VAULT, caller, events, unit_of_work

RULES = reports.ReportRules(limit=3, period=3600, confirm_window=7 * 24 * 3600, private_codes=frozenset({"dispute"}))


@pytest.fixture(autouse=True)
def report_clock(clock, monkeypatch):
    """The conftest's clock, read by the reports and Open311 modules too."""
    monkeypatch.setattr(reports, "utcnow", clock)
    monkeypatch.setattr(open311, "utcnow", clock)
    return clock


def resident(resident_id):
    return caller("resident", sub=str(resident_id))


@pytest.fixture
def people(add_household, add_resident):
    """Residents 1, 2 in small grid A (one household each), 3 in small grid B."""
    home_a, home_a2, home_b = add_household(SMALL_A, "101"), add_household(SMALL_A, "102"), add_household(SMALL_B)
    return add_resident(home_a, 1), add_resident(home_a2, 2), add_resident(home_b, 3)


def report(db, who, code="infrastructure", description="The stairwell light on floor 3 is broken", rules=RULES, **more):
    with unit_of_work(db) as uow:
        view = reports.report_problem(uow, resident(who), POLICY, rules, code, description, **more)
        uow.commit()
        return view


def run(db, function, *args, **kwargs):
    with unit_of_work(db) as uow:
        result = function(uow, *args, **kwargs)
        uow.commit()
        return result


def mine(db, who, status=None):
    with unit_of_work(db) as uow:
        rows, _ = reports.my_reports(uow.session, resident(who), RULES, status, 1, 50)
        return {row.service_request_id: row for row in rows}


def incident_count(db):
    with unit_of_work(db) as uow:
        return uow.session.scalar(select(func.count()).select_from(Incident))


# ---- reporting ------------------------------------------------------------------------------------


def test_a_report_is_an_incident_at_the_residents_small_grid(district, people):
    r1, _, _ = people
    view = report(district, r1, location_note="east stairwell", photo_ref="https://photos.example/p/1.jpg")
    assert (view.status, view.detailed_status, view.relation, view.agency_responsible) == (
        "open",
        "open",
        "reporter",
        "housing",
    )
    assert view.expected_datetime == NOW + dt.timedelta(hours=24)
    assert [(s.action, s.actor, s.by_you, s.to_level) for s in view.steps] == [
        ("reported", "resident", True, "grid_small")
    ]
    with unit_of_work(district) as uow:
        incident = uow.session.get(Incident, view.service_request_id)
        assert (incident.unit_id, incident.source, incident.reporter_resident_id, incident.public) == (
            SMALL_A,
            "resident",
            r1,
            True,
        )
        assert incident.reported_by == f"resident:{r1}" and incident.handling_level == "grid_small"
        assert uow.session.get(ReportFollower, (incident.id, r1)) is not None
    [(_, subject, data)] = events(district, "incident_reported")
    assert subject == f"incident/{view.service_request_id}"
    assert data["source"] == "resident" and data["party_resident_ids"] == []
    assert set(data) == {
        "incident_id",
        "unit_id",
        "unit_path",
        "category",
        "department",
        "status",
        "handling_level",
        "handling_unit_id",
        "party_resident_ids",
        "source",
    }  # ids and codes only: no description, no location, no photo


def test_staff_reports_and_service_raised_incidents_have_their_source(district):
    with unit_of_work(district) as uow:
        staff = incidents.report_incident(uow, WORKER_A, POLICY, SMALL_A, "other", "x", None)
        raised, _ = incidents.raise_incident(uow, POLICY, "volunteer:request/1", SMALL_A, "other", "y", "system:v")
        uow.commit()
        assert (staff.source, raised.source) == ("staff", "service")
    with unit_of_work(district) as uow:
        only = incidents.list_incidents(uow.session, ADMIN, COMMUNITY_A, None, 1, 10, source="service")[0]
        assert [i.id for i in only] == [raised.id]


def test_a_token_naming_no_resident_is_forbidden(district, people):
    for sub in ("worker-a", "999999", "0", "-1", "\uff11\uff12"):
        with unit_of_work(district) as uow, pytest.raises(Forbidden):
            reports.report_problem(uow, caller("resident", sub=sub), POLICY, RULES, "other", "x")
    assert incident_count(district) == 0
    with unit_of_work(district) as uow:
        assert reports.my_reports(uow.session, caller("resident", sub="nobody"), RULES, None, 1, 10) == ([], False)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"service_code": "fireworks"}, "service_code"),
        ({"service_code": None}, "service_code"),
        ({"description": ""}, "description"),
        ({"description": "x" * 2001}, "description"),
        ({"description": "nul\x00byte"}, "description"),
        ({"location_note": "y" * 201}, "location_note"),
        ({"photo_ref": "has space"}, "photo_ref"),
        ({"photo_ref": "http://insecure.example/p.jpg"}, "photo_ref"),
        ({"photo_ref": "javascript:alert(1)"}, "photo_ref"),
        ({"photo_ref": "https://a.example/\u4e2d"}, "photo_ref"),
        ({"photo_ref": "tok\nen"}, "photo_ref"),
        ({"photo_ref": "a" * 501}, "photo_ref"),
        ({"photo_ref": ".hidden"}, "photo_ref"),
        ({"reporter": "1"}, "reporter"),
    ],
)
def test_report_arguments_are_validated(args, field):
    good = {"service_code": "other", "description": "A problem"}
    with pytest.raises(ValidationError) as refused:
        load(schemas.ReportProblem(), {**good, **args})
    assert field in refused.value.fields


def test_good_photo_references_pass():
    for ref in ("https://photos.example/a/b.jpg?x=1&y=2", "b64url_TOKEN-123", "s3key.v2~x"):
        args = {"service_code": "other", "description": "A problem", "photo_ref": ref}
        assert load(schemas.ReportProblem(), args)["photo_ref"] == ref


# ---- the rate limit ------------------------------------------------------------------------------


def test_the_rate_limit_refuses_and_writes_nothing(district, people, clock):
    r1, r2, _ = people
    for n in range(RULES.limit):
        report(district, r1, description=f"Problem {n}")
        clock.advance(minutes=10)
    before = (incident_count(district), len(events(district)))
    with pytest.raises(RateLimited) as refused:
        report(district, r1, description="One too many")
    assert refused.value.details["limit"] == RULES.limit and refused.value.details["period_seconds"] == 3600
    # the oldest of the three leaves the hour 30 minutes from now
    assert refused.value.details["retry_after_seconds"] == 30 * 60 + 1
    assert (incident_count(district), len(events(district))) == before
    report(district, r2)  # another resident's limit is their own
    clock.advance(minutes=31)
    report(district, r1, description="After the hour")


def test_a_refusal_is_counted(district, people, monkeypatch):
    r1, _, _ = people
    counted = []
    monkeypatch.setattr(reports, "count_refusal", lambda telemetry, reason: counted.append(reason))
    args = {"service_code": "other", "description": "Again"}
    for _ in range(2):
        with unit_of_work(district) as uow:
            worker(uow, resident(r1), REPORT_LIMIT=2).report_problem(**args)
    assert counted == []
    with unit_of_work(district) as uow, pytest.raises(RateLimited):
        worker(uow, resident(r1), REPORT_LIMIT=2).report_problem(**args)
    assert counted == ["rate_limit"]
    # through the endpoint: a reply in Open311's names
    reply = call(district, "my_reports", who=resident(r1))
    assert [item["service_code"] for item in reply["items"]] == ["other", "other"]


def test_rules_from_config():
    rules = reports.ReportRules.from_config(
        {"REPORT_LIMIT": "2", "REPORT_LIMIT_PERIOD": "60", "REPORT_PRIVATE_CODES": "dispute, public_health"}
    )
    assert (rules.limit, rules.period, rules.private_codes) == (2, 60.0, frozenset({"dispute", "public_health"}))
    assert reports.ReportRules.from_config({}) == reports.ReportRules()


# ---- following, confirming, reopening ------------------------------------------------------------


def resolve(db, incident_id, note="Replaced the light", who=ADMIN):
    with unit_of_work(db) as uow:
        incidents.resolve_incident(uow, who, incident_id, "Electrician Wang replaced the bulb", public_note=note)
        uow.commit()


def test_the_resident_sees_status_notes_and_no_staff_identity(district, people):
    r1, _, _ = people
    report_id = report(district, r1).service_request_id
    with unit_of_work(district) as uow:
        incidents.escalate_incident(uow, WORKER_A, POLICY, report_id, "needs the medium grid")
        uow.commit()
    resolve(district, report_id, who=OFFICER_A)
    view = mine(district, r1)[report_id]
    assert (view.status, view.detailed_status, view.status_notes) == ("closed", "resolved", "Replaced the light")
    assert view.awaiting_confirmation and view.confirm_until == NOW + dt.timedelta(days=7)
    actors = [(s.action, s.actor, s.note) for s in view.steps]
    assert actors == [
        ("reported", "resident", None),
        ("escalated", "staff", None),  # the reason is staff's
        ("public_note", "staff", "Replaced the light"),
        ("resolved", "staff", None),  # the resolution is staff's
    ]
    assert "worker-a" not in repr(view) and "officer-a" not in repr(view) and "Wang" not in repr(view)
    assert mine(district, r1, status="open") == {}


def test_confirm_within_the_window_once(district, people, clock):
    r1, _, _ = people
    report_id = report(district, r1).service_request_id
    with pytest.raises(Conflict):  # not resolved yet
        run(district, reports.confirm_resolution, resident(r1), RULES, report_id)
    resolve(district, report_id)
    clock.advance(days=6)
    confirmed = run(district, reports.confirm_resolution, resident(r1), RULES, report_id)
    assert confirmed.confirmed_datetime == clock.now and not confirmed.awaiting_confirmation
    again = run(district, reports.confirm_resolution, resident(r1), RULES, report_id)
    assert [s.action for s in again.steps].count("confirmed") == 1
    with pytest.raises(Conflict):
        run(district, reports.reopen_report, resident(r1), POLICY, RULES, report_id, "still dark")


def test_reopen_puts_it_back_at_its_grid(district, people, clock):
    r1, _, _ = people
    report_id = report(district, r1).service_request_id
    for _ in range(2):
        with unit_of_work(district) as uow:
            incidents.escalate_incident(uow, ADMIN, POLICY, report_id, "up")
            uow.commit()
    resolve(district, report_id)
    clock.advance(days=1)
    view = run(district, reports.reopen_report, resident(r1), POLICY, RULES, report_id, "Still dark at night")
    assert (view.status, view.detailed_status, view.handling_level, view.reopened) == ("open", "open", "grid_small", 1)
    assert view.expected_datetime == clock.now + dt.timedelta(hours=24)
    assert (view.steps[-1].action, view.steps[-1].note, view.steps[-1].from_level) == (
        "reopened",
        "Still dark at night",
        "grid_large",
    )
    [(_, _, data)] = events(district, "incident_reopened")
    assert (data["status"], data["handling_unit_id"], data["reopened"]) == ("open", str(SMALL_A), 1)
    with unit_of_work(district) as uow:
        incident = uow.session.get(Incident, report_id)
        assert (incident.resolved_at, incident.resolution, incident.handling_unit_id) == (None, None, SMALL_A)


def test_past_the_window_is_a_conflict(district, people, clock):
    r1, _, _ = people
    report_id = report(district, r1).service_request_id
    resolve(district, report_id)
    clock.advance(days=7)
    assert not mine(district, r1)[report_id].awaiting_confirmation
    for attempt in (
        lambda: run(district, reports.confirm_resolution, resident(r1), RULES, report_id),
        lambda: run(district, reports.reopen_report, resident(r1), POLICY, RULES, report_id, None),
    ):
        with pytest.raises(Conflict):
            attempt()


def test_only_followers_confirm_or_reopen(district, people):
    r1, r2, _ = people
    report_id = report(district, r1).service_request_id
    resolve(district, report_id)
    with pytest.raises(Forbidden):
        run(district, reports.confirm_resolution, resident(r2), RULES, report_id)
    with pytest.raises(Forbidden):
        run(district, reports.reopen_report, resident(r2), POLICY, RULES, report_id, None)
    with pytest.raises(NotFound):
        run(district, reports.confirm_resolution, resident(r1), RULES, 99999)


def test_a_public_note_by_staff_in_reach(district, people):
    r1, _, _ = people
    report_id = report(district, r1).service_request_id
    with pytest.raises(Forbidden):
        run(district, reports.add_public_note, OFFICER_B, report_id, "Not ours")
    run(district, reports.add_public_note, WORKER_A, report_id, "An electrician comes on Monday")
    assert mine(district, r1)[report_id].status_notes == "An electrician comes on Monday"


# ---- merging -------------------------------------------------------------------------------------


def test_merge_keeps_every_reporter_informed(district, people):
    r1, r2, _ = people
    primary = report(district, r1).service_request_id
    duplicate = report(district, r2, description="Light broken again, floor 3").service_request_id
    merged = run(district, reports.merge_reports, OFFICER_A, primary, duplicate)
    assert (merged.merged_into_id, merged.status) == (primary, "resolved")
    r2_sees = mine(district, r2)
    assert set(r2_sees) == {primary, duplicate}
    assert (r2_sees[duplicate].detailed_status, r2_sees[duplicate].merged_into) == ("merged", primary)
    assert r2_sees[primary].relation == "follower" and r2_sees[primary].description is None  # r1's text
    resolve(district, primary, note="Fixed for everyone")
    for who in (r1, r2):
        assert mine(district, who)[primary].status_notes == "Fixed for everyone"
        assert mine(district, who)[primary].awaiting_confirmation
    [(_, subject, data)] = events(district, "incident_merged")
    assert (subject, data["merged_into_id"], data["status"]) == (f"incident/{duplicate}", str(primary), "resolved")
    # merging again changes nothing
    steps_before = len(mine(district, r2)[primary].steps)
    assert run(district, reports.merge_reports, OFFICER_A, primary, duplicate).merged_into_id == primary
    assert len(mine(district, r2)[primary].steps) == steps_before and len(events(district, "incident_merged")) == 1


def test_merge_rules(district, people):
    r1, r2, r3 = people
    a = report(district, r1).service_request_id
    b = report(district, r2).service_request_id
    c = report(district, r1, description="third").service_request_id
    other = report(district, r3).service_request_id  # community B
    with pytest.raises(ValidationError) as refused:
        run(district, reports.merge_reports, OFFICER_A, a, a)
    assert "duplicate_id" in refused.value.fields
    with pytest.raises(Forbidden):
        run(district, reports.merge_reports, OFFICER_A, a, other)
    with pytest.raises(Forbidden):
        run(district, reports.merge_reports, OFFICER_A, other, a)
    run(district, reports.merge_reports, OFFICER_A, a, b)
    with pytest.raises(Conflict):  # b is merged elsewhere already
        run(district, reports.merge_reports, OFFICER_A, c, b)
    with pytest.raises(Conflict):  # no chains, no cycles: b was merged itself
        run(district, reports.merge_reports, OFFICER_A, b, a)
    with pytest.raises(Conflict):
        run(district, reports.merge_reports, OFFICER_A, b, c)
    resolve(district, c)
    with pytest.raises(Conflict):  # a resolved report is no duplicate
        run(district, reports.merge_reports, OFFICER_A, a, c)
    with pytest.raises(Conflict):  # nor a primary
        run(district, reports.merge_reports, OFFICER_A, c, a)


def test_merging_a_primary_moves_its_followers_on(district, people):
    r1, r2, _ = people
    a, b = report(district, r1).service_request_id, report(district, r2).service_request_id
    c = report(district, r1, description="yet another").service_request_id
    run(district, reports.merge_reports, OFFICER_A, a, b)
    run(district, reports.merge_reports, OFFICER_A, c, a)
    assert c in mine(district, r2) and c in mine(district, r1)


# ---- the public list and Open311 -----------------------------------------------------------------


def test_the_public_list_holds_no_personal_text(district, people):
    r1, r2, r3 = people
    shown = report(district, r1, description="Mr Li in 101 blocks the exit", location_note="by Li's door")
    report(district, r2, code="dispute", description="Noise from 102")  # private category
    dup = report(district, r2, description="same")
    run(district, reports.merge_reports, OFFICER_A, shown.service_request_id, dup.service_request_id)
    report(district, r3)  # community B
    with unit_of_work(district) as uow:
        incidents.report_incident(uow, WORKER_A, POLICY, SMALL_A, "other", "staff only", None)
        uow.commit()
    with unit_of_work(district) as uow:
        rows, more = reports.public_reports(uow.session, COMMUNITY_A, None, None, 1, 50)
    assert [row.service_request_id for row in rows] == [shown.service_request_id] and not more
    text = repr(rows)
    assert "Li" not in text and "101" not in text
    assert rows[0].address == "grid_small A" and rows[0].status == "open"
    with unit_of_work(district) as uow, pytest.raises(NotFound):
        reports.public_reports(uow.session, 424242, None, None, 1, 50)


HOSTILE = [
    b"unit_id=1&unit_id=2",
    b"unit_id=%ff%fe",
    b"unit_id=\xff",
    b"unit_id=1%00",
    b"unit_id=" + b"9" * 5000,
    b"&".join(b"p%d=1" % n for n in range(40)),
    b"unit_id=1;DROP TABLE incidents",
    b"unit_id=1' OR '1'='1",
    b"service_request_id=1,,2",
    b"service_request_id=" + b",".join(b"1" for _ in range(101)),
    b"status=pending",
    b"service_code=fireworks",
    b"start_date=yesterday",
    b"start_date=9999-12-31T23:00:00-12:00",
    b"start_date=2026-01-01&end_date=2025-01-01",
    b"start_date=2025-01-01&end_date=2026-01-01",
    b"page=0",
    b"page_size=100000",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_query_strings_are_bad_requests(district, raw):
    with unit_of_work(district) as uow, pytest.raises(open311.BadRequest):
        open311.requests_document(uow.session, open311.parse_query(raw), 1000, NOW)


def test_scope_is_required_and_must_name_a_unit(district):
    for raw in (b"", b"unit_id=424242", b"jurisdiction_id=nowhere", b"unit_id=3&jurisdiction_id=D-1"):
        with unit_of_work(district) as uow, pytest.raises(open311.BadRequest):
            open311.requests_document(uow.session, open311.parse_query(raw), 1000, NOW)


def test_open311_requests(district, people, clock):
    r1, r2, _ = people
    old = report(district, r1, description="old").service_request_id
    clock.advance(days=100)
    new = report(district, r2, description="Mrs Zhao's light").service_request_id
    resolve(district, new, note="Done")

    def ask(raw):
        with unit_of_work(district) as uow:
            return open311.requests_document(uow.session, open311.parse_query(raw), 1000, clock.now)

    # jurisdiction_id: a unit's code (the district is D-1); the default window is the last 90 days
    [row] = ask(b"jurisdiction_id=D-1")
    assert row["service_request_id"] == str(new) and row["status"] == "closed" and row["status_notes"] == "Done"
    assert set(row) == {
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
    }
    assert "Zhao" not in repr(row)
    assert [r["service_request_id"] for r in ask(b"unit_id=%d&service_request_id=%d,%d" % (SMALL_A, old, new))] == [
        str(new),
        str(old),
    ]
    assert ask(b"unit_id=3&status=open") == []
    assert ask(b"unit_id=3&service_code=dispute") == []
    start = (clock.now - dt.timedelta(days=101)).isoformat().encode().replace(b"+", b"%2B")
    assert [r["service_request_id"] for r in ask(b"unit_id=3&start_date=" + start)] == [str(old)]
    assert ask(b"unit_id=%d&page_size=1&page=2" % SMALL_B) == []


def test_services_document():
    services = open311.services_document(POLICY)
    assert {s["service_code"] for s in services} == set(reports.SERVICES)
    assert all(s["metadata"] is False and s["type"] == "realtime" for s in services)
    assert next(s for s in services if s["service_code"] == "infrastructure")["group"] == "housing"


def test_rate_bound():
    now = [0.0]
    bound = open311.RateBound(rate=2, burst=3, clock=lambda: now[0])
    assert [bound.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert [bound.take(), bound.take()] == [True, False]


def test_the_view_answers_429_beyond_its_bound_and_never_a_bare_500():
    empty = open311.RateBound(rate=0, burst=0)
    refused = open311.serve(empty, lambda: [])
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert json.loads(refused.get_data()) == [{"code": 429, "description": "too many requests; retry in a second"}]
    bound = open311.RateBound(rate=100, burst=100)

    def broken():
        raise RuntimeError("the database went away")

    failed = open311.serve(bound, broken)
    assert failed.status_code == 500 and json.loads(failed.get_data())[0]["code"] == 500
    assert b"database" not in failed.get_data()  # no internals
    bad = open311.serve(bound, lambda: open311.parse_query(b"a=1&a=2"))
    assert bad.status_code == 400 and bad.mimetype == "application/json"


# ---- erasure -------------------------------------------------------------------------------------


def remembered(db):
    """(method, reply) of every reply kept for retried writes, decrypted."""
    from shared.idempotency import REPLY_CONTEXT

    with unit_of_work(db) as uow:
        model = uow.idempotency_model
        rows = uow.session.scalars(select(model).order_by(model.created_at, model.key)).all()
        return [(row.method, json.loads(VAULT.decrypt(row.reply, REPLY_CONTEXT))) for row in rows]


def test_the_erasure_forgets_the_replies_about_their_reports(district, people):
    """report_problem, confirm_resolution and reopen_report replies name no resident, but hold the
    resident's own words: the erasure blanks those of reports they reported or followed."""
    from shared.idempotency import ERASED_REPLY

    r1, r2, r3 = people
    own = call(
        district,
        "report_problem",
        who=resident(r1),
        service_code="infrastructure",
        description="Lift broken, the one by my door",
        location_note="3-2-101, left of the lift",
        idempotency_key="own",
    )["service_request_id"]
    own = int(own)
    followed = report(district, r2).service_request_id
    run(district, reports.merge_reports, OFFICER_A, followed, own)  # r1 now follows r2's report
    resolve(district, followed)
    call(
        district,
        "reopen_report",
        who=resident(r1),
        service_request_id=followed,
        reason="the light at my door is still dark",
        idempotency_key="reopen",
    )
    bench = {"service_code": "other", "description": "Bench loose", "idempotency_key": "x"}
    call(district, "report_problem", who=resident(r3), **bench)
    assert not any(reply == ERASED_REPLY for _, reply in remembered(district))
    for who in (OFFICER_A, caller("officer", unit=COMMUNITY_A, sub="officer-a2")):
        run(district, erasure.erase_resident, who, VAULT, r1, "asked")
    kept = remembered(district)
    assert [method for method, reply in kept if reply == ERASED_REPLY] == ["report_problem", "reopen_report"]
    text = json.dumps(kept)
    assert "Lift broken" not in text and "3-2-101" not in text and "still dark" not in text
    assert "Bench loose" in text  # another resident's report: kept
