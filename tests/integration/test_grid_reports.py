"""Residents report problems themselves, and the Open311 view, over real RabbitMQ, PostgreSQL and HTTP:
a resident reports, staff see it beside their own, it escalates as any incident, the department resolves it
with a public note, the resident reads the note and confirms or reopens; merged duplicates keep every
reporter informed; another community neither sees nor merges; the public list and the Open311 view show
no personal data and answer bad parameters with 400."""

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

import eventlet
import pytest

from services.grid.models import Base
from services.grid.service import GridService
from shared.errors import Conflict, Forbidden, RateLimited
from tests.support import (
    add_household,
    add_resident,
    assert_bad_input_refused,
    expect_invalid,
    free_port,
    table_counts,
    token,
    wait_until,
)

LIMIT = 3
PERSONAL = ("Sunny Garden", "Zhang", "stairwell by room")  # residents' names, address, their own words


@pytest.fixture(autouse=True)
def report_settings(grid_config):
    """A small report limit."""
    grid_config["REPORT_LIMIT"] = LIMIT
    grid_config["REPORT_LIMIT_PERIOD"] = 3600


@pytest.fixture
def fast_deadlines(grid_config):
    """Fast deadlines at the two lowest levels (the large grid keeps an hour). Ask for it before the grid."""
    grid_config["ESCALATION_DEADLINES"] = {"grid_small": 0.5, "grid_medium": 0.5, "grid_large": 3600}


@pytest.fixture
def people(admin, district, call_as):
    """Residents a1, a2 (community A, two households) and b1 (community B), each with a resident token."""
    found = {}
    for name, unit, seq in (("a1", "small_a", 1), ("a2", "small_a", 2), ("b1", "small_b", 3)):
        household = add_household(admin, district[unit], room=str(100 + seq))
        resident = add_resident(admin, household, seq, name=f"Zhang {name}")["id"]
        found[name] = resident
        found[f"{name}_grid"] = call_as(token("resident", sub=resident)).grid
    found["officer_a"] = call_as(token("officer", sub="officer-a", unit=district["community_a"])).grid
    found["officer_b"] = call_as(token("officer", sub="officer-b", unit=district["community_b"])).grid
    found["worker_a"] = call_as(token("grid_worker", sub="worker-a", unit=district["small_a"])).grid
    return found


def reported(grid, description="The stairwell light on floor 3 is broken", code="infrastructure", **more):
    return grid.report_problem(service_code=code, description=description, **more)


def followed(grid, report_id):
    return next(r for r in grid.my_reports(page_size=100)["items"] if r["service_request_id"] == report_id)


def test_a_resident_report_from_report_to_confirmation(fast_deadlines, admin, district, people, grid_events):
    a1 = people["a1_grid"]
    report = reported(a1, location_note="stairwell by room 501", photo_ref="https://photos.example/p/1.jpg")
    report_id = report["service_request_id"]
    assert (report["status"], report["relation"], report["agency_responsible"]) == ("open", "reporter", "housing")
    event = grid_events.next("incident_reported", where=lambda e: e["data"]["incident_id"] == report_id)
    assert event["data"]["source"] == "resident" and event["data"]["unit_id"] == district["small_a"]
    assert "stairwell" not in json.dumps(event)  # ids and codes only

    # staff see it beside their own, with the reporter's id
    staff_incident = admin.report_incident(unit_id=district["small_a"], category="other", description="Gate")["id"]
    listed = people["worker_a"].list_incidents(under=district["small_a"])["items"]
    assert {i["id"] for i in listed} == {report_id, staff_incident}
    [mine] = people["worker_a"].list_incidents(under=district["small_a"], source="resident")["items"]
    assert (mine["id"], mine["source"], mine["reporter_resident_id"]) == (report_id, "resident", people["a1"])
    assert mine["location_note"] == "stairwell by room 501"

    # escalation works unchanged: it climbs on its deadlines to the large grid, and stays there
    wait_until(
        lambda: admin.get_incident(incident_id=report_id)["handling_level"] == "grid_large",
        message="the report did not climb on its deadlines",
    )
    people["officer_a"].resolve_incident(
        incident_id=report_id, resolution="Electrician Wang replaced the bulb", public_note="The light is fixed"
    )
    seen = followed(a1, report_id)
    assert (seen["status"], seen["detailed_status"], seen["status_notes"]) == (
        "closed",
        "resolved",
        "The light is fixed",
    )
    assert seen["awaiting_confirmation"] and seen["confirm_until"]
    assert [(s["action"], s["actor"]) for s in seen["steps"]] == [
        ("reported", "resident"),
        ("escalated", "system"),
        ("escalated", "system"),
        ("public_note", "staff"),
        ("resolved", "staff"),
    ]
    text = json.dumps(seen)
    assert "officer-a" not in text and "Wang" not in text and "worker-a" not in text
    confirmed = a1.confirm_resolution(service_request_id=report_id)
    assert confirmed["confirmed_datetime"] and not confirmed["awaiting_confirmation"]
    with pytest.raises(Conflict):
        a1.reopen_report(service_request_id=report_id, reason="changed my mind")

    # a second report: resolved, then reopened at its small grid
    second = reported(a1, description="Water leaking in the basement")["service_request_id"]
    admin.resolve_incident(incident_id=second, resolution="Dried", public_note="Pipe repaired")
    reopened = a1.reopen_report(service_request_id=second, reason="It leaks again")
    assert (reopened["status"], reopened["reopened"]) == ("open", 1)
    event = grid_events.next("incident_reopened", where=lambda e: e["data"]["incident_id"] == second)
    assert (event["data"]["handling_level"], event["data"]["handling_unit_id"]) == ("grid_small", district["small_a"])
    assert admin.get_incident(incident_id=second)["status"] in ("open", "escalated")


def test_merging_keeps_both_reporters_informed(admin, district, people, grid_events):
    first = reported(people["a1_grid"])["service_request_id"]
    duplicate = reported(people["a2_grid"], description="No light on floor 3")["service_request_id"]
    merged = people["officer_a"].merge_reports(primary_id=first, duplicate_id=duplicate)
    assert (merged["merged_into_id"], merged["status"]) == (first, "resolved")
    again = people["officer_a"].merge_reports(primary_id=first, duplicate_id=duplicate)  # changes nothing
    assert again["merged_into_id"] == first
    event = grid_events.next("incident_merged", where=lambda e: e["data"]["incident_id"] == duplicate)
    assert event["data"]["merged_into_id"] == first
    a2_sees = {r["service_request_id"]: r for r in people["a2_grid"].my_reports()["items"]}
    assert a2_sees[duplicate]["detailed_status"] == "merged" and a2_sees[duplicate]["merged_into"] == first
    assert a2_sees[first]["relation"] == "follower" and a2_sees[first]["description"] is None
    admin.resolve_incident(incident_id=first, resolution="Fixed", public_note="Bulbs replaced on every floor")
    for who in ("a1_grid", "a2_grid"):
        seen = followed(people[who], first)
        assert (seen["status_notes"], seen["awaiting_confirmation"]) == ("Bulbs replaced on every floor", True)
    # the duplicate's reporter may reopen the shared resolution
    assert people["a2_grid"].reopen_report(service_request_id=first)["status"] == "open"
    with pytest.raises(Conflict):
        people["officer_a"].merge_reports(primary_id=duplicate, duplicate_id=first)  # no cycles


def test_another_community_neither_sees_nor_merges(admin, district, people, grid_db):
    a_report = reported(people["a1_grid"])["service_request_id"]
    b_report = reported(people["b1_grid"])["service_request_id"]
    a_other = reported(people["a2_grid"])["service_request_id"]
    admin.resolve_incident(incident_id=a_report, resolution="Fixed")
    before = table_counts(grid_db, Base.metadata)
    with pytest.raises(Forbidden):
        people["officer_b"].merge_reports(primary_id=b_report, duplicate_id=a_report)
    with pytest.raises(Forbidden):
        people["officer_a"].merge_reports(primary_id=a_report, duplicate_id=b_report)
    with pytest.raises(Forbidden):
        people["officer_b"].get_incident(incident_id=a_report)
    with pytest.raises(Forbidden):
        people["officer_b"].add_public_note(incident_id=a_report, note="Not ours")
    assert people["officer_b"].list_incidents(under=district["community_b"], source="resident")["items"][0]["id"] == (
        b_report
    )
    for attempt in (
        lambda: people["b1_grid"].confirm_resolution(service_request_id=a_report),
        lambda: people["b1_grid"].reopen_report(service_request_id=a_report),
        lambda: people["a2_grid"].confirm_resolution(service_request_id=a_report),  # a neighbour, not a follower
    ):
        with pytest.raises(Forbidden):
            attempt()
    assert table_counts(grid_db, Base.metadata) == before
    assert {r["service_request_id"] for r in people["b1_grid"].my_reports()["items"]} == {b_report}
    # the public list answers anyone about any unit, and holds no personal data
    public = people["b1_grid"].public_reports(unit_id=district["community_a"])["items"]
    assert {r["service_request_id"] for r in public} == {a_report, a_other}
    assert not any(word in json.dumps(public) for word in PERSONAL + ("stairwell light",))
    assert {r["address"] for r in public} == {"Small a"}


def test_the_rate_limit_holds_and_a_retry_is_not_counted_twice(admin, people, grid_db, grid_config):
    a1 = people["a1_grid"]
    first = reported(a1, idempotency_key="report-1")
    assert reported(a1, idempotency_key="report-1") == first  # the retry gets the first reply
    for n in range(LIMIT - 1):
        reported(a1, description=f"Problem {n}")
    before = table_counts(grid_db, Base.metadata)
    with pytest.raises(RateLimited) as refused:
        reported(a1, description="One too many")
    assert refused.value.exc_type == "RateLimited"
    details = refused.value.details  # nameko carries an error's arguments as text
    assert (details["field"], details["limit"], details["period_seconds"]) == ("report_problem", "3", "3600")
    assert table_counts(grid_db, Base.metadata) == before
    reported(people["a2_grid"])  # a neighbour's limit is their own
    status, _, body = get(grid_config, "/metrics")
    assert status == 200 and 'grassroots_grid_report_refusals_total{reason="rate_limit"} 1.0' in body
    assert 'grassroots_grid_resident_reports{service_code="infrastructure",status="open"} 4.0' in body


@pytest.fixture
def replica_b(grid, grid_config, container_factory):
    """A second grid replica on the same database and queues."""
    container = container_factory(GridService, {**grid_config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}"})
    container.start()
    yield container
    container.kill()


def spawn(container, auth_token, method, **kwargs):
    """``method`` run by this replica's worker (not through the queue both replicas consume): an Event."""
    entrypoint = next(e for e in container.entrypoints if e.method_name == method)
    done = eventlet.event.Event()

    def handle_result(_worker_ctx, result, exc_info):
        done.send(exc_info[1] if exc_info else result)
        return result, exc_info

    container.spawn_worker(entrypoint, (), kwargs, context_data={"auth_token": auth_token}, handle_result=handle_result)
    return done


def test_the_rate_limit_holds_across_replicas(grid, replica_b, people, grid_db):
    """Concurrent reports by one resident on two replicas: exactly the limit is written."""
    resident = token("resident", sub=people["a1"])
    args = {"service_code": "other", "description": "Concurrent report"}
    calls = [spawn(container, resident, "report_problem", **args) for container in (grid, replica_b) * LIMIT]
    outcomes = [call.wait() for call in calls]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(refused) == LIMIT and len(outcomes) - len(refused) == LIMIT, outcomes
    rows = table_counts(
        grid_db,
        Base.metadata,
        {"mine": f"SELECT count(*) FROM incidents WHERE reporter_resident_id = {int(people['a1'])}"},
    )
    assert rows["mine"] == LIMIT


def test_a_token_naming_no_resident_reports_nothing(people, call_as, grid_db):
    before = table_counts(grid_db, Base.metadata)
    for sub in ("worker-a", "999999999"):
        with pytest.raises(Forbidden):
            reported(call_as(token("resident", sub=sub)).grid)
    assert call_as(token("resident", sub="nobody")).grid.my_reports()["items"] == []
    with pytest.raises(Forbidden):
        reported(people["officer_a"])  # staff report with report_incident
    assert table_counts(grid_db, Base.metadata) == before


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input_to_the_residents_methods_is_refused_and_changes_nothing(admin, people, grid_db):
    a1 = people["a1_grid"]
    report_id = reported(a1)["service_request_id"]
    admin.resolve_incident(incident_id=report_id, resolution="Fixed")
    cases = {
        a1.report_problem: (
            {"service_code": "other", "description": "D", "location_note": "Gate"},
            "description",
            "service_code",
            "fireworks",
        ),
        a1.my_reports: ({"status": "open"}, "status", "page_size", 1000),
        a1.confirm_resolution: ({"service_request_id": report_id}, "service_request_id", "service_request_id", -1),
        a1.reopen_report: ({"service_request_id": report_id, "reason": "R"}, "reason", "service_request_id", "x"),
    }
    for method, (kwargs, string_field, typed_field, wrong) in cases.items():
        assert_bad_input_refused(
            method, kwargs, string_field, typed_field, wrong, lambda: table_counts(grid_db, Base.metadata)
        )
    before = table_counts(grid_db, Base.metadata)
    for field, value in (
        ("photo_ref", "has spaces"),
        ("photo_ref", "javascript:alert(1)"),
        ("photo_ref", "x" * 501),
        ("location_note", "y" * 201),
        ("description", "nul\x00"),
        ("service_code", None),
    ):
        expect_invalid(a1.report_problem, field, **{"service_code": "other", "description": "D", field: value})
    expect_invalid(a1.report_problem, "description", service_code="other")
    expect_invalid(people["officer_a"].merge_reports, "duplicate_id", primary_id=report_id, duplicate_id=report_id)
    expect_invalid(admin.public_reports, "unit_id", unit_id="1 OR 1=1")
    assert table_counts(grid_db, Base.metadata) == before


# ---- the Open311 view over HTTP -----------------------------------------------------------------


def get(config, path):
    url = f"http://{config['WEB_SERVER_ADDRESS']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read().decode()


def raw_get(config, target):
    """A GET whose request target is sent as these bytes (not UTF-8, say): (status, body)."""
    host, port = config["WEB_SERVER_ADDRESS"].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: grid\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode("utf-8", "replace")


def test_open311_services_and_requests(admin, district, people, grid_config):
    status, content_type, body = get(grid_config, "/open311/v2/services.json")
    assert status == 200 and content_type.startswith("application/json")
    services = json.loads(body)
    assert {s["service_code"] for s in services} >= {"infrastructure", "public_health", "other"}
    assert all(s["metadata"] is False and s["type"] == "realtime" for s in services)

    report_id = reported(people["a1_grid"], photo_ref="https://photos.example/p/9.jpg")["service_request_id"]
    reported(people["a2_grid"], code="dispute", description="Noise from 102")  # a private category
    reported(people["b1_grid"])
    admin.report_incident(unit_id=district["small_a"], category="other", description="Staff only: Zhang a1")
    admin.resolve_incident(incident_id=report_id, resolution="Wang fixed it", public_note="Fixed")
    status, content_type, body = get(grid_config, f"/open311/v2/requests.json?unit_id={district['community_a']}")
    assert status == 200 and content_type.startswith("application/json")
    [row] = json.loads(body)
    assert (row["service_request_id"], row["status"], row["status_notes"]) == (str(report_id), "closed", "Fixed")
    assert row["service_code"] == "infrastructure" and row["agency_responsible"] == "housing"
    assert row["address"] == "Small a" and "lat" not in row and "media_url" not in row
    assert not any(word in body for word in (*PERSONAL, "Wang", "photos.example", "stairwell light"))
    # jurisdiction_id names the unit too; Open311's filters
    query = urllib.parse.urlencode({"jurisdiction_id": district["district"], "status": "closed"})
    assert [r["service_request_id"] for r in json.loads(get(grid_config, f"/open311/v2/requests.json?{query}")[2])] == [
        str(report_id)
    ]
    assert json.loads(get(grid_config, f"/open311/v2/requests.json?unit_id={district['street']}&status=open")[2])
    ids = f"service_request_id={report_id}&unit_id={district['community_b']}"
    assert json.loads(get(grid_config, f"/open311/v2/requests.json?{ids}")[2]) == []  # outside the scope asked


@pytest.mark.parametrize(
    "query",
    [
        "",
        "unit_id=abc",
        "unit_id=424242424",
        "unit_id=1%27%20OR%20%271%27%3D%271",
        "unit_id=1;DROP%20TABLE%20incidents",
        "unit_id=1&unit_id=2",
        "unit_id=1&status=pending",
        "unit_id=1&service_code=fireworks",
        "unit_id=1&start_date=yesterday",
        "unit_id=1&start_date=2020-01-01&end_date=2024-01-01",
        "unit_id=1&service_request_id=1,,2",
        "unit_id=1&page_size=100000",
        "unit_id=%ff%fe",
        "unit_id=1%00",
        "jurisdiction_id=" + "j" * 3000,
        "unit_id=" + "9" * 5000,
    ],
)
def test_open311_bad_parameters_are_400(grid, grid_config, query):
    status, content_type, body = get(grid_config, f"/open311/v2/requests.json?{query}")
    assert status == 400 and content_type.startswith("application/json"), (status, body)
    [error] = json.loads(body)
    assert error["code"] == 400 and error["description"]


def test_open311_survives_bytes_that_are_not_utf8(grid, grid_config):
    status, body = raw_get(grid_config, b"/open311/v2/requests.json?unit_id=\xff\xfe")
    assert status == 400 and json.loads(body)[0]["code"] == 400
    assert get(grid_config, "/open311/v2/services.json")[0] == 200  # still serving
