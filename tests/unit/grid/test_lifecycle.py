"""The data lifecycle (PIPL) in the grid: tag policies and retention (services/grid/retention.py),
erasure by two managers (erasure.py) and the access log (access_log.py)."""

import datetime as dt
import json

import pytest
from sqlalchemy import select

from services.grid import erasure, incidents, residents, retention, screening
from services.grid.idnumbers import birth_date_of
from services.grid.models import (
    AccessLogEntry,
    ErasureRequest,
    Household,
    Incident,
    IncidentStep,
    ReleasedTag,
    ReportFollower,
    Resident,
    ResidentTag,
    ScreeningVisit,
)
from services.grid.service import GridService
from services.grid.vocabulary import DAY, ERASED, TAGS
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from shared.outbox import envelope
from tests.support import id_number
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    PATH_A,
    POLICY,
    SMALL_A,
    SMALL_B,
    STREET,
    WORKER_A,
    call,
    worker,
)
from tests.unit.local import VAULT, caller, events, unit_of_work

OFFICER_A2 = caller("officer", unit=COMMUNITY_A, sub="officer-a2")
PII_OFFICER = caller("officer", unit=COMMUNITY_A, pii=True, sub="officer-pii")
LIFECYCLE = retention.DEFAULT_LIFECYCLE


# ---- policies ---------------------------------------------------------------


def test_every_tag_has_a_purpose_and_a_retention_and_quarantine_a_short_one():
    policies = retention.policies_view(LIFECYCLE)
    assert [p.tag for p in policies] == list(TAGS)
    assert all(p.purpose and p.retention > 0 for p in policies)
    quarantine = LIFECYCLE.policy("quarantined")
    assert quarantine.purpose == "epidemic control: home quarantine follow-up"
    assert quarantine.retention == 14 * DAY
    assert quarantine.purge_after(NOW) == NOW + dt.timedelta(days=14)


def test_the_config_overrides_a_policy_field_by_field():
    lifecycle = retention.lifecycle_from_config(
        {"TAG_POLICIES": {"quarantined": {"retention": 60}, "pregnant": {"max_age": None}}, "ACCESS_LOG_RETENTION": 5}
    )
    assert lifecycle.policy("quarantined").retention == 60
    assert lifecycle.policy("quarantined").purpose == LIFECYCLE.policy("quarantined").purpose
    assert lifecycle.policy("pregnant").max_age is None
    assert lifecycle.access_log_retention == 5


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"TAG_POLICIES": ["quarantined"]}, "TAG_POLICIES:"),
        ({"TAG_POLICIES": {"martian": {}}}, "TAG_POLICIES: unknown tag 'martian'"),
        ({"TAG_POLICIES": {"quarantined": 3}}, "TAG_POLICIES.quarantined:"),
        ({"TAG_POLICIES": {"quarantined": {"retention": "two weeks"}}}, "TAG_POLICIES.quarantined.retention:"),
        ({"TAG_POLICIES": {"quarantined": {"retention": -1}}}, "TAG_POLICIES.quarantined.retention:"),
        ({"TAG_POLICIES": {"disabled": {"retention": True}}}, "TAG_POLICIES.disabled.retention:"),
        ({"TAG_POLICIES": {"pregnant": {"max_age": float("nan")}}}, "TAG_POLICIES.pregnant.max_age:"),
        ({"TAG_POLICIES": {"pregnant": {"purpose": ""}}}, "TAG_POLICIES.pregnant.purpose:"),
        ({"TAG_POLICIES": {"pregnant": {"purpose": "x" * 201}}}, "TAG_POLICIES.pregnant.purpose:"),
        ({"TAG_POLICIES": {"pregnant": {"retain": 3}}}, "TAG_POLICIES.pregnant.retain:"),
        ({"ACCESS_LOG_RETENTION": "3y"}, "ACCESS_LOG_RETENTION:"),
        ({"LIFECYCLE_INTERVAL": 0}, "LIFECYCLE_INTERVAL:"),
    ],
)
def test_a_bad_lifecycle_setting_is_refused_naming_it(config, named):
    with pytest.raises(ValueError) as refused:
        GridService.check_config(config)
    message = str(refused.value)
    assert message.startswith(named) and "\n" not in message


def test_tag_policies_are_served(district):
    served = call(district, "tag_policies", who=caller("resident", sub="1"))
    assert served[0] == {
        "tag": "quarantined",
        "purpose": "epidemic control: home quarantine follow-up",
        "retention_seconds": 14 * DAY,
        "max_age_seconds": 60 * DAY,
    }
    assert {row["tag"] for row in served} == set(TAGS)


# ---- retention ----------------------------------------------------------------


def released(db):
    with unit_of_work(db) as uow:
        rows = uow.session.scalars(select(ReleasedTag).order_by(ReleasedTag.id)).all()
        return [(r.resident_id, r.tag, r.reason, r.released_at, r.purge_after, r.purpose) for r in rows]


def purge(db, now):
    with unit_of_work(db) as uow:
        purged = retention.purge_released(uow, now)
        uow.commit()
        return purged


def test_a_released_tag_is_kept_until_its_retention_ends_then_purged_once(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 1, "quarantined")
    with unit_of_work(district) as uow:
        residents.untag_resident(uow, ADMIN, resident, "quarantined", lifecycle=LIFECYCLE)
        uow.commit()
    purpose = LIFECYCLE.policy("quarantined").purpose
    assert released(district) == [(resident, "quarantined", "untagged", NOW, NOW + dt.timedelta(days=14), purpose)]
    assert purge(district, NOW + dt.timedelta(days=14) - dt.timedelta(seconds=1)) == {}
    assert events(district, "tag_purged") == []
    assert purge(district, NOW + dt.timedelta(days=14)) == {("quarantined", "retention"): 1}
    assert purge(district, NOW + dt.timedelta(days=15)) == {}  # gone: purged once
    assert released(district) == []
    [(_, subject, data)] = events(district, "tag_purged")
    assert subject == f"resident/{resident}"
    assert data == {
        "resident_id": str(resident),
        "household_id": data["household_id"],
        "unit_id": str(SMALL_A),
        "unit_path": [str(i) for i in (1, 2, 3, 4, 5, 6)],
        "tag": "quarantined",
        "released_at": NOW.isoformat(),
        "reason": "retention",
    }


def test_an_expired_tag_still_says_expired_and_its_release_is_kept(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 2)
    call(
        district, "tag_resident", resident_id=resident, tag="pregnant", until=(NOW + dt.timedelta(hours=1)).isoformat()
    )
    clock.advance(hours=1)
    with unit_of_work(district) as uow:
        worker(uow).housekeeping()
    [(_, _, untagged)] = events(district, "resident_untagged")
    assert untagged["reason"] == "expired"
    [(rid, tag, reason, at, purge_after, _)] = released(district)
    assert (rid, tag, reason, purge_after - at) == (resident, "pregnant", "expired", dt.timedelta(days=30))


def test_a_tag_without_until_lapses_at_its_max_age(district, add_household, add_resident, clock):
    add_resident(add_household(), 3, "quarantined", "elderly_alone")
    lifecycle = retention.lifecycle_from_config({"TAG_POLICIES": {"quarantined": {"max_age": 3600}}})
    with unit_of_work(district) as uow:
        assert residents.expire_aged_tags(uow, NOW + dt.timedelta(minutes=59), lifecycle) == 0
        assert residents.expire_aged_tags(uow, NOW + dt.timedelta(hours=1), lifecycle) == 1
        uow.commit()
    assert [d["tag"] for _, _, d in events(district, "resident_untagged")] == ["quarantined"]
    assert [row[1] for row in released(district)] == ["quarantined"]  # elderly_alone has no max_age


def test_no_purge_is_announced_while_the_tag_is_held_again(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 4, "chronic_illness")
    with unit_of_work(district) as uow:
        residents.untag_resident(uow, ADMIN, resident, "chronic_illness")
        residents.tag_resident(uow, ADMIN, resident, "chronic_illness", None, None)
        uow.commit()
    assert purge(district, NOW + dt.timedelta(days=31)) == {}
    assert released(district) == [] and events(district, "tag_purged") == []


def test_the_timer_purges_and_commits_and_counts(district, add_household, add_resident, clock):
    resident = add_resident(add_household(), 5, "disabled")
    config = {"TAG_POLICIES": {"disabled": {"retention": 60}}, "ACCESS_LOG_RETENTION": 3600}
    with unit_of_work(district) as uow:
        service = worker(uow, **config)
        residents.untag_resident(uow, ADMIN, resident, "disabled", lifecycle=service.lifecycle.lifecycle)
        uow.session.add(access_row(resident, NOW - dt.timedelta(hours=2)))
        uow.session.add(access_row(resident, NOW - dt.timedelta(minutes=30)))
        uow.commit()
    clock.advance(seconds=60)
    with unit_of_work(district) as uow:
        service = worker(uow, **config)
        service.purge_expired_data()
    assert [d["reason"] for _, _, d in events(district, "tag_purged")] == ["retention"]
    counter = service.lifecycle.provider.tags_purged.labels("disabled", "retention")
    assert counter._value.get() == 1
    with unit_of_work(district) as uow:
        assert len(uow.session.scalars(select(AccessLogEntry)).all()) == 1  # the older one purged


def access_row(resident, at):
    return AccessLogEntry(
        resident_id=resident,
        service="grid",
        method="get_resident",
        what="resident_record",
        reader="x",
        reader_roles="officer",
        purpose="p",
        at=at,
    )


# ---- erasure --------------------------------------------------------------------


@pytest.fixture
def family(district, add_household, add_resident):
    """Two residents of one household (the first tagged and with a released tag), one next door."""
    household = add_household()
    first = add_resident(household, 11, "quarantined", "elderly_alone")
    second = add_resident(household, 12)
    neighbour = add_resident(add_household(room="502"), 13)
    with unit_of_work(district) as uow:
        residents.untag_resident(uow, ADMIN, first, "quarantined")
        uow.commit()
    return {"household": household, "first": first, "second": second, "neighbour": neighbour}


def erase(db, who, resident, reason="resident asked"):
    with unit_of_work(db) as uow:
        step = erasure.erase_resident(uow, who, VAULT, resident, reason)
        uow.commit()
        return step


def test_one_manager_requests_another_approves(district, family):
    first = family["first"]
    step = erase(district, OFFICER_A, first)
    assert (step.status, step.step, step.requested_by, step.approved_by) == (
        "pending_approval",
        "requested",
        "officer-a",
        None,
    )
    assert events(district, "resident_erased") == []
    with pytest.raises(Conflict, match="another manager must approve"):
        erase(district, OFFICER_A, first)
    done = erase(district, OFFICER_A2, first, "approved after checking")
    assert (done.status, done.step, done.erasure_id, done.approved_by) == (
        "erased",
        "erased",
        step.erasure_id,
        "officer-a2",
    )
    assert done.household_emptied is False
    again = erase(district, OFFICER_A, first)  # anyone again: the same answer, nothing more done
    assert (again.status, again.step, again.erasure_id) == ("erased", "unchanged", step.erasure_id)
    [(_, subject, data)] = events(district, "resident_erased")
    assert subject == f"resident/{first}"
    assert data == {
        "resident_id": str(first),
        "household_id": str(family["household"]),
        "unit_id": str(SMALL_A),
        "unit_path": ["1", "2", "3", "4", "5", "6"],
        "household_emptied": False,
        "erasure_id": str(step.erasure_id),
        "erased_at": NOW.isoformat(),
    }
    with unit_of_work(district) as uow:
        request = uow.session.get(ErasureRequest, step.erasure_id)
        assert (request.reason, request.approval_reason, request.status) == (
            "resident asked",
            "approved after checking",
            "done",
        )


def test_a_caller_out_of_reach_is_forbidden_before_anything_is_said(district, family):
    for who in (OFFICER_B, caller("officer", unit=SMALL_B, sub="b2")):
        with pytest.raises(Forbidden):
            erase(district, who, family["first"])
    erase(district, OFFICER_A, family["first"])
    with pytest.raises(Forbidden):  # not "pending", not "conflict": forbidden
        erase(district, OFFICER_B, family["first"])
    with pytest.raises(NotFound):
        erase(district, ADMIN, 999)
    with pytest.raises(Forbidden):  # a grid worker is no manager
        call(district, "erase_resident", who=WORKER_A, resident_id=family["first"], reason="x")


def test_a_reason_is_required_and_bounded(district, family):
    for reason in (None, "", "   ", "x" * 501):
        with pytest.raises(ValidationError) as refused:
            call(district, "erase_resident", who=OFFICER_A, resident_id=family["first"], reason=reason)
        assert "reason" in refused.value.fields
    with unit_of_work(district) as uow:
        assert uow.session.scalars(select(ErasureRequest)).all() == []


def test_the_erased_resident_says_nothing_and_loses_tags(district, family):
    first = family["first"]
    erase(district, OFFICER_A, first)
    erase(district, ADMIN, first)
    shown = call(district, "get_resident", who=PII_OFFICER, resident_id=first)
    assert (shown["name"], shown["phone"], shown["id_number"], shown["birth_date"], shown["tags"]) == (
        ERASED,
        "",
        "",
        "1900-01-01",
        [],
    )
    with unit_of_work(district) as uow:
        row = uow.session.get(Resident, first)
        assert row.id_number_hash == f"erased:{first}" and row.erased_at == NOW
        assert uow.session.scalars(select(ResidentTag).where(ResidentTag.resident_id == first)).all() == []
        assert uow.session.scalars(select(ReleasedTag)).all() == []
    untagged = [(d["tag"], d["reason"]) for _, _, d in events(district, "resident_untagged") if d["reason"] == "erased"]
    assert untagged == [("elderly_alone", "erased")]
    purged = sorted((d["tag"], d["reason"]) for _, _, d in events(district, "tag_purged"))
    assert purged == [("elderly_alone", "erased"), ("quarantined", "erased")]  # held, and released
    with pytest.raises(Conflict, match="erased"):
        call(district, "tag_resident", resident_id=first, tag="disabled")
    # the same ID number may register again: its blind index is gone
    with unit_of_work(district) as uow:
        residents.register_resident(
            uow,
            ADMIN,
            VAULT,
            family["household"],
            "Newcomer",
            id_number(11),
            "13900000011",
            birth_date_of(id_number(11)),
        )
        uow.commit()
    # an erased resident is nobody's audience any more
    found = call(district, "find_residents", under=SMALL_A)
    assert first not in [int(item["id"]) for item in found["items"]]
    assert first not in call(district, "find_resident_columns", under=SMALL_A)["ids"]
    assert str(first) not in call(district, "get_household", household_id=family["household"])["resident_ids"]


def test_the_last_resident_erased_empties_the_household(district, family, add_household):
    household = family["household"]
    with unit_of_work(district) as uow:
        campaign = screening.start_screening(uow, ADMIN, STREET, "Visits", NOW.date(), NOW.date())
        screening.record_visit(uow, ADMIN, POLICY, campaign.id, household, "seen_concern", "Mrs Resident 11 coughs")
        uow.commit()
    for resident in (family["first"], family["second"]):
        erase(district, OFFICER_A, resident)
        step = erase(district, ADMIN, resident)
    assert step.household_emptied is True
    emptied = [d["household_emptied"] for _, _, d in events(district, "resident_erased")]
    assert emptied == [False, True]
    with unit_of_work(district) as uow:
        row = uow.session.get(Household, household)
        assert (row.compound, row.building, row.entrance, row.room) == (ERASED,) * 4
        assert [v.note for v in uow.session.scalars(select(ScreeningVisit))] == [None]
        neighbour = uow.session.get(Household, uow.session.get(Resident, family["neighbour"]).household_id)
        assert neighbour.compound != ERASED


def test_the_residents_reports_and_free_text_forget_them(district, family):
    first = family["first"]
    with unit_of_work(district) as uow:
        own = incidents.report_incident(uow, ADMIN, POLICY, SMALL_A, "infrastructure", "Lift broken at my door", [])
        own.reporter_resident_id, own.reported_by = first, f"resident:{first}"
        own.location_note, own.photo_ref = "by room 501", "photo/1"
        uow.session.add(
            IncidentStep(incident_id=own.id, action="reopened", note="still broken", actor=f"resident:{first}", at=NOW)
        )
        uow.session.add(ReportFollower(incident_id=own.id, resident_id=first, since=NOW))
        dispute = incidents.report_incident(
            uow, ADMIN, POLICY, COMMUNITY_A, "dispute", "Resident 11 (13800000011) quarrels with 502", [first]
        )
        far = incidents.report_incident(uow, ADMIN, POLICY, SMALL_B, "other", "Resident 11 visits here", [])
        uow.commit()
        ids = own.id, dispute.id, far.id
    erase(district, OFFICER_A, first)
    erase(district, ADMIN, first)
    with unit_of_work(district) as uow:
        own, dispute, far = (uow.session.get(Incident, i) for i in ids)
        assert (own.description, own.location_note, own.photo_ref, own.reporter_resident_id, own.reported_by) == (
            ERASED,
            None,
            None,
            None,
            f"resident:{ERASED}",
        )
        assert own.status == "open"  # the report stays for staff
        step = uow.session.scalar(select(IncidentStep).where(IncidentStep.action == "reopened"))
        assert (step.actor, step.note) == (f"resident:{ERASED}", ERASED)
        assert uow.session.scalars(select(ReportFollower)).all() == []
        assert dispute.description == f"{ERASED} ({ERASED}) quarrels with 502"
        assert dispute.party_resident_ids == [first]  # the bare id: no personal data once erased
        assert far.description == "Resident 11 visits here"  # another community: untouched


def test_a_pending_erasure_can_be_cancelled_once(district, family):
    step = erase(district, OFFICER_A, family["first"])
    with unit_of_work(district) as uow, pytest.raises(Forbidden):
        erasure.cancel_erasure(uow, OFFICER_B, step.erasure_id)
    cancelled = call(district, "cancel_erasure", who=OFFICER_A2, erasure_id=step.erasure_id)
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("cancelled", "officer-a2")
    with pytest.raises(Conflict, match="only a pending one"):
        call(district, "cancel_erasure", who=OFFICER_A, erasure_id=step.erasure_id)
    # a new request starts afresh: the same manager may file it again
    assert erase(district, OFFICER_A, family["first"]).status == "pending_approval"
    listed = call(district, "list_erasures", who=OFFICER_A, under=COMMUNITY_A)
    assert [row["status"] for row in listed["items"]] == ["pending_approval", "cancelled"]
    assert call(district, "list_erasures", who=OFFICER_A, under=COMMUNITY_A, status="done")["items"] == []


def test_erasure_is_counted_at_commit(district, family):
    with unit_of_work(district) as uow:
        service = worker(uow, who=OFFICER_A)
        service.erase_resident(resident_id=family["first"], reason="asked")
    erasures = service.lifecycle.provider.erasures
    assert erasures.labels("requested")._value.get() == 1


# ---- access log -------------------------------------------------------------------


def log_rows(db):
    with unit_of_work(db) as uow:
        rows = uow.session.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id)).all()
        return [(r.resident_id, r.scope_path, r.method, r.what, r.reader, r.purpose) for r in rows]


def test_only_pii_reads_are_recorded(district, family):
    first = family["first"]
    call(district, "get_resident", who=OFFICER_A, resident_id=first)
    call(district, "find_residents", who=OFFICER_A, under=SMALL_A)
    call(district, "find_resident_columns", who=PII_OFFICER, under=SMALL_A)  # no phones asked for
    assert log_rows(district) == []
    call(district, "get_resident", who=PII_OFFICER, resident_id=first)
    call(district, "get_residents", who=PII_OFFICER, resident_ids=[first, family["neighbour"], 999])
    call(district, "find_resident_columns", who=PII_OFFICER, under=COMMUNITY_A, phones=True)
    assert log_rows(district) == [
        (first, None, "get_resident", "resident_record", "officer-pii", "resident record consulted"),
        (first, None, "get_residents", "resident_contact", "officer-pii", "residents looked up by id"),
        (family["neighbour"], None, "get_residents", "resident_contact", "officer-pii", "residents looked up by id"),
        (None, "/1/2/3/", "find_resident_columns", "phones", "officer-pii", "notice delivery"),
    ]


def test_the_callers_purpose_is_recorded_and_checked(district, family):
    with unit_of_work(district) as uow:
        service = worker(uow, who=PII_OFFICER)
        service.lifecycle = service.lifecycle.provider.access("welfare check after a fall")
        service.get_resident(resident_id=family["first"])
    assert log_rows(district)[0][-1] == "welfare check after a fall"
    for bad in ("", "x" * 201, "bad\x00", 12):
        with unit_of_work(district) as uow:
            service = worker(uow, who=PII_OFFICER)
            service.lifecycle = service.lifecycle.provider.access(bad)
            with pytest.raises(ValidationError) as refused:
                service.get_resident(resident_id=family["first"])
            assert "purpose" in refused.value.fields
    assert len(log_rows(district)) == 1


def sensitive_read(resident, at="2030-01-06T09:00:00+00:00"):
    data = {
        "resident_id": str(resident),
        "reader": "lawyer-7",
        "reader_roles": ["lawyer"],
        "what": "consultation_summary",
        "record": "consultation/12",
        "purpose": "consultation follow-up",
        "at": at,
    }
    return envelope("legal", "sensitive_data_read", "consultation/12", data)


def test_a_resident_reads_their_own_log_newest_first(district, family):
    first = family["first"]
    body = sensitive_read(first)
    with unit_of_work(district) as uow:
        assert worker(uow).on_sensitive_data_read(body) == "recorded"
    with unit_of_work(district) as uow:
        assert worker(uow).on_sensitive_data_read(body) == "duplicate"  # a replay records nothing more
    call(district, "get_resident", who=PII_OFFICER, resident_id=first)
    call(district, "find_resident_columns", who=caller("admin", pii=True, sub="pii-admin"), under=STREET, phones=True)
    call(district, "get_resident", who=PII_OFFICER, resident_id=family["neighbour"])
    me = caller("resident", sub=str(first))
    log = call(district, "access_log", who=me, resident_id=first)
    assert [(row["service"], row["what"], row["scope"]) for row in log["items"]] == [
        ("grid", "phones", ["1", "2"]),
        ("grid", "resident_record", None),
        ("legal", "consultation_summary", None),
    ]
    assert log["items"][2] == {
        "id": log["items"][2]["id"],
        "at": "2030-01-06T09:00:00+00:00",
        "service": "legal",
        "method": "sensitive_data_read",
        "what": "consultation_summary",
        "reader": "lawyer-7",
        "reader_roles": ["lawyer"],
        "purpose": "consultation follow-up",
        "record": "consultation/12",
        "scope": None,
    }
    paged = call(district, "access_log", who=me, resident_id=first, page=2, page_size=2)
    assert (len(paged["items"]), paged["has_more"]) == (1, False)
    with pytest.raises(Forbidden):
        call(district, "access_log", who=caller("resident", sub=str(family["neighbour"])), resident_id=first)
    with pytest.raises(Forbidden):
        call(district, "access_log", who=OFFICER_B, resident_id=first)


def test_staff_read_a_log_on_the_residents_behalf_and_are_recorded(district, family):
    first = family["first"]
    assert call(district, "access_log", who=OFFICER_A, resident_id=first)["items"] == []
    log = call(district, "access_log", who=OFFICER_A, resident_id=first)
    assert [(row["what"], row["reader"]) for row in log["items"]] == [("access_log", "officer-a")]


def test_an_erasure_keeps_the_access_log(district, family):
    first = family["first"]
    call(district, "get_resident", who=PII_OFFICER, resident_id=first)
    erase(district, OFFICER_A, first)
    erase(district, ADMIN, first)
    assert [row[0] for row in log_rows(district)] == [first]  # the read before the erasure stays
    assert [row["method"] for row in call(district, "access_log", who=ADMIN, resident_id=first)["items"]][-1] == (
        "get_resident"
    )


def test_a_read_is_recorded_in_the_same_path_as_the_resident(district, family):
    call(district, "find_resident_columns", who=PII_OFFICER, under=SMALL_A, phones=True)
    assert log_rows(district)[0][1] == PATH_A


def test_the_erasure_blanks_remembered_replies_that_hold_the_resident(district, family):
    """A write's reply is kept 24 h for its retries: the erasure must not leave the name in it."""
    from shared.idempotency import ERASED_REPLY, REPLY_CONTEXT, Remembered

    first, neighbour = family["first"], family["neighbour"]
    with unit_of_work(district) as uow:
        name = uow.session.get(Resident, first).name
        for key, reply in (
            ("k1", {"id": str(first), "name": name}),
            ("k2", {"note": f"call {name} tomorrow"}),
            ("k3", {"id": str(neighbour), "name": uow.session.get(Resident, neighbour).name}),
        ):
            remembered = Remembered(uow, VAULT, "officer-a", "register_resident", key, {"key": key})
            remembered.replay()
            remembered.remember(reply)
        uow.commit()
    erase(district, OFFICER_A, first)
    erase(district, OFFICER_A2, first)
    with unit_of_work(district) as uow:
        rows = uow.session.scalars(select(uow.idempotency_model)).all()
        replies = [VAULT.decrypt(row.reply, REPLY_CONTEXT) for row in rows]
    assert sum(reply == json.dumps(ERASED_REPLY) for reply in replies) == 2
    assert not any(name in reply for reply in replies)
    assert any(str(neighbour) in reply for reply in replies)  # another resident's reply is kept


def test_the_erasure_forgets_the_move_of_a_household_it_empties(district, family):
    """A move_household reply holds the address (as ``id``, with no household_id field)."""
    from shared.idempotency import ERASED_REPLY, REPLY_CONTEXT

    with unit_of_work(district) as uow:
        next_door = uow.session.get(Resident, family["neighbour"]).household_id
    for household, key in ((next_door, "emptied"), (family["household"], "kept")):
        call(district, "move_household", household_id=household, unit_id=SMALL_A, idempotency_key=key)
    erase(district, OFFICER_A, family["neighbour"])
    assert erase(district, OFFICER_A2, family["neighbour"]).household_emptied is True
    with unit_of_work(district) as uow:
        model = uow.idempotency_model
        rows = uow.session.scalars(select(model).where(model.method == "move_household"))
        replies = [json.loads(VAULT.decrypt(row.reply, REPLY_CONTEXT)) for row in rows]
    assert ERASED_REPLY in replies
    assert {str(reply.get("id")) for reply in replies} == {"None", str(family["household"])}  # the other kept


def test_the_erasure_takes_the_residents_data_out_of_the_managers_reasons(district, family):
    first = family["first"]
    with unit_of_work(district) as uow:
        name = uow.session.get(Resident, first).name
    phone, number = "13800000011", id_number(11)
    withdrawn = erase(district, OFFICER_A, first, f"{name} phoned from {phone}")
    call(district, "cancel_erasure", who=OFFICER_A2, erasure_id=withdrawn.erasure_id)
    erase(district, OFFICER_A, first, f"{name} ({number}) asked at the counter")
    done = erase(district, OFFICER_A2, first, f"approved: {name} is who she says")
    assert (done.reason, done.approval_reason) == (
        f"{ERASED} ({ERASED}) asked at the counter",
        f"approved: {ERASED} is who she says",
    )
    listed = call(district, "list_erasures", who=OFFICER_A, under=COMMUNITY_A)["items"]
    assert [(row["reason"], row["approval_reason"]) for row in listed] == [
        (f"{ERASED} ({ERASED}) asked at the counter", f"approved: {ERASED} is who she says"),
        (f"{ERASED} phoned from {ERASED}", None),
    ]
    with unit_of_work(district) as uow:
        stored = [(row.reason, row.approval_reason) for row in uow.session.scalars(select(ErasureRequest))]
    assert not any(secret in repr(stored) for secret in (name, phone, number))


def test_an_erased_resident_is_not_counted(district, family):
    from sqlalchemy import text

    from services.grid.service import GAUGES
    from shared.telemetry import SqlGauge

    [gauge] = [g for g in GAUGES if isinstance(g, SqlGauge) and g.name == "grassroots_grid_residents"]

    def counted():
        with unit_of_work(district) as uow:
            return (
                call(district, "count_residents", under=SMALL_A)["count"],
                uow.session.execute(text(gauge.sql)).scalar(),
            )

    assert counted() == (3, 3)
    erase(district, OFFICER_A, family["first"])
    erase(district, OFFICER_A2, family["first"])
    assert counted() == (2, 2)
    assert call(district, "count_residents", under=SMALL_A, tags_any=["elderly_alone"])["count"] == 0


def test_a_walk_over_a_unit_with_phones_is_logged_once(district, family):
    """Its first page (no ``after``) is recorded; the pages after it are the same read."""
    walk = call(district, "find_resident_columns", who=PII_OFFICER, under=SMALL_A, phones=True, page_size=1)
    while walk["has_more"]:
        walk = call(
            district,
            "find_resident_columns",
            who=PII_OFFICER,
            under=SMALL_A,
            phones=True,
            page_size=1,
            after=walk["next_after"],
        )
        assert walk["phones_enc"]
    assert log_rows(district) == [(None, PATH_A, "find_resident_columns", "phones", "officer-pii", "notice delivery")]
    call(district, "find_resident_columns", who=PII_OFFICER, under=SMALL_A, phones=True)  # another walk
    assert len(log_rows(district)) == 2
