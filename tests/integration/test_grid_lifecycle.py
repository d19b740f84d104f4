"""The grid's side of the data lifecycle (PIPL) through real RPC, RabbitMQ and PostgreSQL: a released
tag purged after its (here tiny) retention, erasure by two managers, and the access log with legal's
reads fed in as legal publishes them."""

import datetime as dt
import urllib.request

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from shared.errors import Conflict, Forbidden
from shared.outbox import envelope
from tests.support import EventTap, add_household, add_resident, token, wait_until

RETENTION = 1  # seconds a released quarantine tag is kept in this module


@pytest.fixture
def grid_config(grid_config):
    return {
        **grid_config,
        "LIFECYCLE_INTERVAL": 0.2,
        "TAG_POLICIES": {"quarantined": {"retention": RETENTION}},
    }


def metrics(config):
    with urllib.request.urlopen(f"http://{config['WEB_SERVER_ADDRESS']}/metrics", timeout=10) as response:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.read().decode())
            for s in family.samples
        }


def sql(url, query, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            return conn.execute(text(query), params).all()
    finally:
        engine.dispose()


def events_until(tap, marker_type, where):
    """Every event the tap sees up to (and with) the first ``marker_type`` event matching ``where``."""
    seen = []
    while True:
        body = tap.next_any()
        seen.append(body)
        if body["type"] == marker_type and where(body):
            return seen


class Tap(EventTap):
    def next_any(self, timeout=15.0):
        """The next event of any type."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.queue.get(timeout=0.5)
            except self.queue.Empty:
                continue
            message.ack()
            return message.payload
        raise AssertionError(f"no event within {timeout}s")


@pytest.fixture
def tap(grid_config):
    events = Tap(grid_config["AMQP_URI"], "grid")
    yield events
    events.close()


def test_a_released_tag_is_purged_after_its_retention(admin, district, grid_events, grid_db, grid_config):
    resident = add_resident(admin, add_household(admin, district["small_a"]), 1)["id"]
    assert {p["tag"]: p["retention_seconds"] for p in admin.tag_policies()}["quarantined"] == RETENTION
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    admin.tag_resident(resident_id=resident, tag="quarantined", until=until.isoformat())
    untagged = grid_events.next("resident_untagged", where=lambda e: e["data"]["resident_id"] == resident)
    assert untagged["data"]["reason"] == "expired"  # what other services rely on, as before
    purged = grid_events.next("tag_purged", where=lambda e: e["data"]["resident_id"] == resident)
    data = purged["data"]
    released_at = dt.datetime.fromisoformat(data["released_at"])
    assert dt.datetime.fromisoformat(purged["time"]) >= released_at + dt.timedelta(seconds=RETENTION)
    assert data == {
        "resident_id": resident,
        "household_id": data["household_id"],
        "unit_id": district["small_a"],
        "unit_path": [district[k] for k in ("district", "street", "community_a", "large_a", "medium_a", "small_a")],
        "tag": "quarantined",
        "released_at": data["released_at"],
        "reason": "retention",
    }
    assert sql(grid_db, "SELECT count(*) FROM released_tags")[0][0] == 0
    # counted at the purge's commit, by this replica
    purged = ("grassroots_grid_tags_purged_total", (("reason", "retention"), ("tag", "quarantined")))

    def counted():
        values = metrics(grid_config)
        return values if values.get(purged) == 1 else None

    values = wait_until(counted, message="the purge was not counted")
    assert values[("grassroots_grid_tags_purged_total", (("reason", "erased"), ("tag", "quarantined")))] == 0


@pytest.fixture
def managers(call_as, district):
    def officer(sub, unit):
        return call_as(token("officer", sub=sub, unit=unit)).grid

    return {
        "a": officer("officer-a", district["community_a"]),
        "a2": officer("officer-a2", district["street"]),
        "b": officer("officer-b", district["community_b"]),
    }


def test_two_managers_erase_a_resident_once(admin, district, managers, tap, grid_db, call_as):
    household = add_household(admin, district["small_a"])
    resident = add_resident(admin, household, 2)["id"]
    housemate = add_resident(admin, household, 3)["id"]
    admin.tag_resident(resident_id=resident, tag="elderly_alone")
    with pytest.raises(Forbidden):
        managers["b"].erase_resident(resident_id=resident, reason="asked")
    with pytest.raises(Forbidden):  # a grid worker is no manager
        call_as(token("grid_worker", unit=district["small_a"])).grid.erase_resident(resident_id=resident, reason="x")
    pending = managers["a"].erase_resident(resident_id=resident, reason="the resident asked in writing")
    assert (pending["status"], pending["requested_by"], pending["approved_by"]) == (
        "pending_approval",
        "officer-a",
        None,
    )
    with pytest.raises(Conflict) as refused:
        managers["a"].erase_resident(resident_id=resident, reason="again")
    assert "another manager must approve" in refused.value.value
    with pytest.raises(Forbidden):  # out of reach: nothing is said about the pending request
        managers["b"].erase_resident(resident_id=resident, reason="approve")
    done = managers["a2"].erase_resident(resident_id=resident, reason="checked the request")
    assert (done["status"], done["erasure_id"], done["approved_by"], done["household_emptied"]) == (
        "erased",
        pending["erasure_id"],
        "officer-a2",
        False,
    )
    again = managers["a"].erase_resident(resident_id=resident, reason="once more")
    assert (again["status"], again["erasure_id"]) == ("erased", pending["erasure_id"])
    shown = admin.get_resident(resident_id=resident)
    assert (shown["name"], shown["tags"]) == ("[erased]", [])
    with pytest.raises(Conflict):
        admin.tag_resident(resident_id=resident, tag="disabled")
    # The events: resident_erased once, the tag untagged and purged (reason erased); a marker after them.
    admin.tag_resident(resident_id=housemate, tag="disabled")
    seen = events_until(tap, "resident_tagged", lambda e: e["data"]["resident_id"] == housemate)
    erased = [e["data"] for e in seen if e["type"] == "resident_erased"]
    assert erased == [
        {
            "resident_id": resident,
            "household_id": household,
            "unit_id": district["small_a"],
            "unit_path": erased[0]["unit_path"],
            "household_emptied": False,
            "erasure_id": pending["erasure_id"],
            "erased_at": erased[0]["erased_at"],
        }
    ]
    tag_changes = [
        (e["type"], e["data"]["tag"], e["data"]["reason"])
        for e in seen
        if e["type"] in ("resident_untagged", "tag_purged") and e["data"]["resident_id"] == resident
    ]
    assert tag_changes == [("resident_untagged", "elderly_alone", "erased"), ("tag_purged", "elderly_alone", "erased")]
    # The audit trail: who asked, who approved, when and why — and no personal data in the row.
    [row] = sql(grid_db, "SELECT requested_by, approved_by, reason, status FROM erasure_requests")
    assert tuple(row) == ("officer-a", "officer-a2", "the resident asked in writing", "done")
    assert sql(grid_db, "SELECT count(*) FROM residents WHERE name = 'Resident 2'")[0][0] == 0


def test_a_retried_request_answers_again_and_the_last_resident_empties_the_household(
    admin, district, managers, grid_db
):
    household = add_household(admin, district["small_a"], room="502")
    resident = add_resident(admin, household, 4)["id"]
    first = managers["a"].erase_resident(resident_id=resident, reason="asked", idempotency_key="erase-4")
    retried = managers["a"].erase_resident(resident_id=resident, reason="asked", idempotency_key="erase-4")
    assert retried == first and first["status"] == "pending_approval"
    done = managers["a2"].erase_resident(resident_id=resident, reason="ok")
    assert done["household_emptied"] is True
    [address] = sql(
        grid_db, "SELECT compound, building, entrance, room FROM households WHERE id = :h", h=int(household)
    )
    assert tuple(address) == ("[erased]",) * 4
    cancelled_case = add_resident(admin, household, 5)["id"]  # a newcomer; a request withdrawn
    filed = managers["a"].erase_resident(resident_id=cancelled_case, reason="asked")
    withdrawn = managers["a2"].cancel_erasure(erasure_id=filed["erasure_id"])
    assert (withdrawn["status"], withdrawn["cancelled_by"]) == ("cancelled", "officer-a2")
    listed = managers["a"].list_erasures(under=district["community_a"])
    assert [row["status"] for row in listed["items"]] == ["cancelled", "erased"]


def sensitive_read(resident, at, record="consultation/12"):
    data = {
        "resident_id": resident,
        "reader": "lawyer-7",
        "reader_roles": ["lawyer"],
        "what": "consultation_summary",
        "record": record,
        "purpose": "consultation follow-up",
        "at": at,
    }
    return envelope("legal", "sensitive_data_read", record, data)


def test_the_access_log_shows_staff_and_legal_reads_to_the_resident(admin, district, call_as, grid_config):
    household = add_household(admin, district["small_a"], room="503")
    resident = add_resident(admin, household, 6)["id"]
    neighbour = add_resident(admin, household, 7)["id"]
    officer = token("officer", sub="officer-pii", unit=district["community_a"], pii=True)
    with ClusterRpcProxy(
        grid_config, context_data={"auth_token": officer, "purpose": "welfare visit"}, timeout=30
    ) as proxy:
        assert proxy.grid.get_resident(resident_id=resident)["phone"] == "13800000006"
    service = call_as(token("service", sub="system:notices", pii=True)).grid
    service.find_resident_columns(under=district["community_a"], phones=True)
    call_as(token("officer", sub="officer-plain", unit=district["community_a"])).grid.get_resident(
        resident_id=resident
    )  # masked: not recorded
    legal = EventTap(grid_config["AMQP_URI"], "legal")
    try:
        now = dt.datetime.now(dt.UTC)
        read = sensitive_read(resident, (now - dt.timedelta(hours=2)).isoformat())
        legal.republish(read)
        legal.republish(read)  # a redelivery: recorded once
        legal.republish(sensitive_read(resident, (now - dt.timedelta(hours=1)).isoformat(), record="case/4"))
    finally:
        legal.close()
    me = call_as(token("resident", sub=resident)).grid

    def my_log():
        return me.access_log(resident_id=resident, page_size=50)["items"]

    wait_until(lambda: any(row["record"] == "case/4" for row in my_log()), message="legal's reads not logged")
    log = my_log()
    # the later legal read arrived after the first (and its replay): had the replay been kept, it'd show
    assert [row["record"] for row in log if row["service"] == "legal"] == ["case/4", "consultation/12"]
    grid_rows = [
        (row["method"], row["reader"], row["purpose"], row["scope"]) for row in log if row["service"] == "grid"
    ]
    path = [district[k] for k in ("district", "street", "community_a")]
    assert grid_rows == [
        ("find_resident_columns", "system:notices", "notice delivery", path),
        ("get_resident", "officer-pii", "welfare visit", None),
    ]
    with pytest.raises(Forbidden):
        call_as(token("resident", sub=neighbour)).grid.access_log(resident_id=resident)
    with pytest.raises(Forbidden):
        call_as(token("officer", unit=district["community_b"])).grid.access_log(resident_id=resident)
    staff = call_as(token("grid_worker", sub="worker-a", unit=district["small_a"])).grid
    staff.access_log(resident_id=resident)
    assert my_log()[0]["reader"] == "worker-a" and my_log()[0]["what"] == "access_log"


# Backends of the grid's database waiting for a row lock held on a household or on a tag.
WAITING_ON_THE_HOUSEHOLD = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    " AND (query ILIKE '%resident_tags%' OR query ILIKE '%households%')"
)


def test_the_last_two_residents_erased_at_once_empty_the_household(admin, district, managers, grid_db):
    """Two approvals in one household at the same time: each counts the other's resident as living
    there unless they take turns on the household row — then the second sees the first erased."""
    household = add_household(admin, district["small_a"], room="504")
    pair = [add_resident(admin, household, seq)["id"] for seq in (8, 9)]
    neighbour = add_resident(admin, add_household(admin, district["small_a"], room="505"), 10)["id"]
    # A tag note naming both: each erasure rewrites it after counting, so holding it keeps both
    # erasures inside their transactions (past the count, or waiting for the household) until released.
    admin.tag_resident(resident_id=neighbour, tag="elderly_alone", note="Resident 8 and Resident 9 visit her")
    for resident in pair:
        managers["a"].erase_resident(resident_id=resident, reason="asked")
    engine = create_engine(grid_db.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT 1 FROM resident_tags WHERE resident_id = :r FOR UPDATE"), {"r": int(neighbour)})
            approvals = [
                managers["a2"].erase_resident.call_async(resident_id=resident, reason="approved") for resident in pair
            ]

            def both_waiting():
                [(waiting,)] = sql(grid_db, WAITING_ON_THE_HOUSEHOLD)
                return waiting >= 2

            wait_until(both_waiting, message="the two approvals never reached the household")
            holder.rollback()
        done = [approval.result() for approval in approvals]
    finally:
        engine.dispose()
    assert sorted(step["household_emptied"] for step in done) == [False, True]
    [address] = sql(
        grid_db, "SELECT compound, building, entrance, room FROM households WHERE id = :h", h=int(household)
    )
    assert tuple(address) == ("[erased]",) * 4
