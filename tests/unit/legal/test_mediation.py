"""Mediation cases: opening (by a caller or from a grid dispute), mediators free of conflicts of
interest, sessions, closing, and who reads what about the parties (services/legal/mediation.py)."""

import datetime as dt

import pytest

from services.legal import mediation
from services.legal.models import MediationCase
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from tests.unit.legal.conftest import (
    ADMIN,
    COMMUNITY_A,
    COMMUNITY_B,
    DESK,
    GRID_A,
    NOW,
    OFFICER_A,
    OFFICER_B,
    STREET,
    field_of,
    lawyer,
    phone_of,
)
from tests.unit.local import caller, events, unit_of_work

GRID_WORKER_A = caller("grid_worker", unit=COMMUNITY_A, sub="worker-a")
OFFICER_STREET = caller("officer", unit=STREET, sub="officer-street")


@pytest.fixture
def open_case(committed, grid):
    """``open_case(parties=(1000, 1010), unit=COMMUNITY_A, who=OFFICER_A, incident=None)``: a committed case."""

    def make(parties=(1000, 1010), unit=COMMUNITY_A, who=OFFICER_A, incident=None):
        with committed() as uow:
            return mediation.open_mediation(uow, who, grid, unit, "neighbour", list(parties), "Noise", incident)

    return make


@pytest.fixture
def incident(grid):
    grid.incidents["70"] = {"id": "70", "unit_id": str(GRID_A), "description": "Dog barks all night"}
    return 70


def detail(db, who, grid, case_id):
    with unit_of_work(db) as uow:
        found = mediation.case_detail(uow, who, grid, case_id)
        return {
            "parties": found.parties,
            "mediators": [(m.kind, m.mediator_id) for m in found.mediators],
            "sessions": [s.notes for s in found.sessions],
            "status": found.status,
        }


class TestOpening:
    def test_a_case_in_scope_and_the_event_without_the_description(self, db, open_case, incident):
        case = open_case(incident=incident)
        assert (case.status, case.unit_path, case.party_resident_ids, case.party_household_ids) == (
            "open",
            "/1/2/3/",
            [1000, 1010],
            [100, 101],
        )
        assert events(db, "mediation_opened") == [
            (
                "mediation_opened",
                f"mediation/{case.id}",
                {
                    "case_id": str(case.id),
                    "unit_id": str(COMMUNITY_A),
                    "unit_path": ["1", "2", "3"],
                    "category": "neighbour",
                    "status": "open",
                    "party_resident_ids": ["1000", "1010"],
                    "source_incident_id": "70",
                },
            )
        ]

    def test_every_party_must_be_in_the_callers_scope_before_anything_is_said_of_them(self, open_case, db):
        with pytest.raises(Forbidden):
            open_case(parties=(1000, 1020))  # 1020 lives in community B
        assert events(db) == []

    def test_parties_live_inside_the_cases_unit(self, open_case):
        with pytest.raises(ValidationError, match="1020") as error:
            open_case(parties=(1000, 1020), who=OFFICER_STREET)
        assert field_of(error) == {"party_resident_ids"}

    @pytest.mark.parametrize("parties", [(1000,), (1000, 1000)], ids=["one", "the same twice"])
    def test_a_dispute_needs_two_different_parties(self, open_case, parties):
        with pytest.raises(ValidationError) as error:
            open_case(parties=parties)
        assert field_of(error) == {"party_resident_ids"}

    def test_an_unknown_party_or_unit_names_its_field(self, open_case):
        with pytest.raises(ValidationError) as error:
            open_case(parties=(1000, 4040))
        assert field_of(error) == {"party_resident_ids"}
        with pytest.raises(ValidationError) as error:
            open_case(unit=404)
        assert field_of(error) == {"unit_id"}

    def test_the_source_incident_must_exist_and_lie_inside_the_cases_unit(self, grid, open_case, incident):
        with pytest.raises(ValidationError) as error:
            open_case(incident=71)
        assert field_of(error) == {"source_incident_id"}
        grid.incidents["72"] = {"id": "72", "unit_id": str(COMMUNITY_A), "description": "x"}
        with pytest.raises(ValidationError, match="not inside") as error:
            open_case(unit=GRID_A, who=ADMIN, incident=72)  # the incident is at the community, above the case
        assert field_of(error) == {"source_incident_id"}

    def test_an_incident_outside_the_callers_scope_is_forbidden(self, grid, open_case):
        grid.incidents["73"] = {"id": "73", "unit_id": str(COMMUNITY_B), "description": "x"}
        with pytest.raises(Forbidden):
            open_case(incident=73)


class TestFromIncidents:
    def open(self, committed, grid, incident, parties):
        with committed() as uow:
            return mediation.open_from_incident(uow, DESK, grid, incident, GRID_A, parties)

    def test_once_per_incident(self, committed, db, grid, incident):
        first = self.open(committed, grid, incident, [1000, 1010])
        again = self.open(committed, grid, incident, [1000, 1010])
        assert again.id == first.id and (first.category, first.description) == ("neighbour", "Dog barks all night")
        assert len(events(db, "mediation_opened")) == 1

    def test_fewer_than_two_parties_open_nothing(self, committed, db, grid, incident):
        assert self.open(committed, grid, incident, [1000, 1000]) is None
        assert events(db) == []

    def test_parties_outside_the_incidents_unit_are_left_out(self, committed, grid, incident, caplog):
        case = self.open(committed, grid, incident, [1000, 1010, 1020])
        assert case.party_resident_ids == [1000, 1010]
        # the log counts them: no resident id, name or phone in it
        assert "1 parties outside its unit" in caplog.text
        assert "1020" not in caplog.text and "Resident" not in caplog.text

    def test_no_case_when_fewer_than_two_remain_inside(self, committed, db, grid, incident):
        assert self.open(committed, grid, incident, [1000, 1020]) is None
        with unit_of_work(db) as uow:
            assert uow.session.query(MediationCase).count() == 0


class TestMediators:
    def assign(self, committed, grid, case_id, mediator_id, kind, who=OFFICER_A):
        with committed() as uow:
            return mediation.assign_mediator(uow, who, grid, case_id, mediator_id, kind)

    def test_a_social_mediator_from_elsewhere_and_a_lawyer_put_the_case_in_progress(
        self, committed, db, grid, open_case, practice
    ):
        case = open_case()
        with pytest.raises(Forbidden):  # 1020 lives in community B: outside officer A's scope
            self.assign(committed, grid, case.id, 1020, "social")
        assert self.assign(committed, grid, case.id, 1020, "social", who=OFFICER_STREET).status == "in_progress"
        self.assign(committed, grid, case.id, practice["lawyer"], "judicial")
        assert detail(db, ADMIN, grid, case.id)["mediators"] == [
            ("judicial", str(practice["lawyer"])),
            ("social", "1020"),
        ]
        with pytest.raises(Conflict, match="already"):
            self.assign(committed, grid, case.id, 1020, "social", who=OFFICER_STREET)

    @pytest.mark.parametrize(("mediator", "why"), [(1010, "party"), (1001, "household")])
    def test_no_party_and_no_one_from_a_partys_household(self, committed, grid, open_case, mediator, why):
        case = open_case()
        with pytest.raises(Conflict, match=why):
            self.assign(committed, grid, case.id, mediator, "social")

    def test_a_lawyer_who_is_a_party_is_refused(self, committed, grid, open_case, practice):
        case = open_case(parties=(1020, 1030), unit=COMMUNITY_B, who=OFFICER_B)  # the practice's lawyer is 1030
        with pytest.raises(Conflict, match="party"):
            self.assign(committed, grid, case.id, practice["lawyer"], "judicial", who=OFFICER_B)

    def test_only_officers_assign_and_not_on_a_closed_case(self, committed, grid, open_case):
        case = open_case()
        with pytest.raises(Forbidden, match="officers"):
            self.assign(committed, grid, case.id, 1020, "social", who=GRID_WORKER_A)
        with committed() as uow:
            mediation.close_mediation(uow, OFFICER_A, case.id, "withdrawn", None)
        with pytest.raises(Conflict, match="closed"):
            self.assign(committed, grid, case.id, 1020, "social", who=ADMIN)

    def test_an_unknown_lawyer_is_not_found(self, committed, grid, open_case):
        with pytest.raises(NotFound):
            self.assign(committed, grid, open_case().id, 404, "judicial")


class TestSessionsAndClosing:
    def test_sessions_are_recorded_after_they_are_held_and_read_back_in_order(self, committed, db, grid, open_case):
        case = open_case()
        with committed() as uow:
            mediation.record_session(uow, OFFICER_A, case.id, NOW - dt.timedelta(hours=1), ["a"], "second")
            mediation.record_session(uow, OFFICER_A, case.id, NOW - dt.timedelta(days=1), ["a", "b"], "first")
        assert detail(db, OFFICER_A, grid, case.id)["sessions"] == ["first", "second"]
        with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
            mediation.record_session(uow, OFFICER_A, case.id, NOW + dt.timedelta(minutes=1), ["a"], "soon")
        assert field_of(error) == {"held_at"}

    def test_closing_tells_the_outcome_once_and_ends_the_record(self, committed, db, open_case):
        case = open_case()
        with committed() as uow:
            closed = mediation.close_mediation(uow, OFFICER_A, case.id, "agreement", "Quiet after 22:00.")
        assert (closed.status, closed.outcome, closed.closed_at) == ("closed", "agreement", NOW)
        [(_, _, data)] = events(db, "mediation_closed")
        assert (data["outcome"], data["status"]) == ("agreement", "closed")
        assert "Quiet" not in str(data)  # agreements never travel in an event
        for change in (
            lambda uow: mediation.close_mediation(uow, OFFICER_A, case.id, "withdrawn", None),
            lambda uow: mediation.record_session(uow, OFFICER_A, case.id, NOW, ["a"], "late"),
        ):
            with unit_of_work(db) as uow, pytest.raises(Conflict, match="closed"):
                change(uow)


class TestReading:
    def test_staff_read_masked_phones_and_never_id_numbers(self, db, grid, open_case):
        case = open_case()
        parties = detail(db, OFFICER_A, grid, case.id)["parties"]
        assert parties == [
            {"resident_id": "1000", "household_id": "100", "name": "Resident 1000", "phone": "138****1000"},
            {"resident_id": "1010", "household_id": "101", "name": "Resident 1010", "phone": "138****1010"},
        ]

    def test_assigned_mediators_and_pii_holders_read_the_phones(self, committed, db, grid, open_case):
        case = open_case()
        with committed() as uow:
            mediation.assign_mediator(uow, ADMIN, grid, case.id, 1020, "social")
        for reader in (caller("mediator", sub="1020"), caller("officer", unit=COMMUNITY_A, pii=True)):
            assert [p["phone"] for p in detail(db, reader, grid, case.id)["parties"]] == [
                phone_of(1000),
                phone_of(1010),
            ]

    def test_the_grid_is_asked_with_pii_only_for_a_reader_of_unmasked_phones(self, committed, db, grid, open_case):
        """A masked view asks the grid without the ``pii`` claim: no read is recorded in the parties'
        access logs as made by legal's account."""
        case = open_case()
        with committed() as uow:
            mediation.assign_mediator(uow, ADMIN, grid, case.id, 1020, "social")
        grid.pii = True  # legal's grid_contacts holds the claim
        grid.calls.clear()
        phones = [p["phone"] for p in detail(db, OFFICER_A, grid, case.id)["parties"]]
        assert phones == ["138****1000", "138****1010"]
        assert grid.calls == ["get_residents"] and grid.pii_calls == []
        assert [p["phone"] for p in detail(db, caller("mediator", sub="1020"), grid, case.id)["parties"]] == [
            phone_of(1000),
            phone_of(1010),
        ]
        assert grid.pii_calls == ["get_residents"]

    @pytest.mark.parametrize(
        "who",
        [OFFICER_B, caller("mediator", sub="1020"), lawyer(1)],
        ids=["officer elsewhere", "unassigned mediator", "unassigned lawyer"],
    )
    def test_others_do_not_reach_the_case(self, db, grid, open_case, who):
        case = open_case()
        with pytest.raises(Forbidden):
            detail(db, who, grid, case.id)

    def list_ids(self, db, grid, who, under=None, status=None):
        with unit_of_work(db) as uow:
            rows, _ = mediation.list_cases(uow.session, who, grid, under, status, 1, 10)
            return [row.id for row in rows]

    def test_lists_are_newest_first_within_the_callers_scope(self, committed, db, grid, open_case):
        a = open_case().id
        b = open_case(parties=(1020, 1030), unit=COMMUNITY_B, who=OFFICER_B).id
        with committed() as uow:
            mediation.close_mediation(uow, OFFICER_A, a, "withdrawn", None)
        assert self.list_ids(db, grid, ADMIN) == [b, a]
        assert self.list_ids(db, grid, OFFICER_A) == [a]
        assert self.list_ids(db, grid, ADMIN, under=COMMUNITY_B) == [b]
        assert self.list_ids(db, grid, ADMIN, status="closed") == [a]
        with pytest.raises(Forbidden):
            self.list_ids(db, grid, OFFICER_A, under=COMMUNITY_B)
        with pytest.raises(Forbidden, match="no unit"):  # a mediator reads their cases one by one
            self.list_ids(db, grid, caller("mediator", sub="1020", unit=COMMUNITY_A))
