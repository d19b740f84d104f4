"""Finding slots, booking, moving and closing consultations, confidential summaries and reminders
(services/legal/bookings.py)."""

import datetime as dt

import pytest
from sqlalchemy import select

from services.legal import bookings, directory
from services.legal.models import Consultation, SummaryRead
from services.notices.client import FakeNotices
from shared.errors import Conflict, Forbidden, ValidationError
from tests.unit.legal.conftest import (
    ADMIN,
    COMMUNITY_A,
    DESK,
    GRID_A,
    GRID_B,
    NOW,
    OFFICER_A,
    OFFICER_B,
    TUESDAY,
    at,
    field_of,
    lawyer,
    resident,
)
from tests.unit.local import VAULT, caller, events, unit_of_work


def find(db, grid, policy, day=TUESDAY, **narrowing):
    args = {"specialty": "family", "station_id": None, "unit_id": None, **narrowing}
    with unit_of_work(db) as uow:
        return bookings.find_slots(uow.session, grid, policy, date_from=day, date_to=day, **args)


def starts(slots):
    return [slot.starts_at for slot in slots]


class TestFindingSlots:
    def test_a_days_slots_in_start_order_with_the_lawyers_name(self, db, grid, policy, practice):
        found = find(db, grid, policy)
        assert len(found) == 12  # 09-12 and 14-17 in 30 minutes
        assert starts(found)[:2] == [at(TUESDAY, "09:00"), at(TUESDAY, "09:30")]
        assert (found[0].lawyer_id, found[0].lawyer_name, found[0].station_id) == (
            practice["lawyer"],
            "Lawyer One",
            practice["station"],
        )
        assert found[0].ends_at - found[0].starts_at == dt.timedelta(minutes=30)

    def test_minimum_notice_hides_todays_early_slots(self, db, grid, policy, practice):
        # now is Monday 10:00; an hour's notice leaves 11:00 onwards
        assert starts(find(db, grid, policy, day=dt.date(2030, 1, 7)))[0] == at(dt.date(2030, 1, 7), "11:00")

    def test_bookings_and_time_off_take_their_slots(self, committed, db, grid, policy, practice, book):
        book(1000, "09:00")
        with committed() as uow:
            directory.add_time_off(uow, ADMIN, practice["lawyer"], at(TUESDAY, "14:00"), at(TUESDAY, "17:00"), None)
        assert starts(find(db, grid, policy)) == [
            at(TUESDAY, clock) for clock in ("09:30", "10:00", "10:30", "11:00", "11:30")
        ]

    def test_limit_and_specialty(self, db, grid, policy, practice):
        assert starts(find(db, grid, policy, limit=3)) == starts(find(db, grid, policy))[:3]
        assert find(db, grid, policy, specialty="criminal_defence") == []

    def test_a_unit_finds_the_stations_serving_it_or_its_ancestors(self, db, grid, policy, practice):
        assert len(find(db, grid, policy, unit_id=GRID_A)) == 12
        assert find(db, grid, policy, unit_id=GRID_B) == []


class TestBooking:
    def test_a_resident_books_for_themselves_and_the_event_says_so_without_the_topic(self, db, book, practice):
        booked = book(1000, "09:00", who=resident(1000), topic="My landlord, Mr Wang")
        assert (booked.status, booked.mode, booked.station_path, booked.booked_by) == (
            "booked",
            "phone",
            "/1/2/3/",
            "1000",
        )
        assert booked.ends_at - booked.starts_at == dt.timedelta(minutes=30)
        assert events(db, "consultation_booked") == [
            (
                "consultation_booked",
                f"consultation/{booked.id}",
                {
                    "consultation_id": str(booked.id),
                    "lawyer_id": str(practice["lawyer"]),
                    "station_id": str(practice["station"]),
                    "resident_id": "1000",
                    "starts_at": at(TUESDAY, "09:00").isoformat(),
                    "status": "booked",
                },
            )
        ]

    @pytest.mark.parametrize(
        "who",
        [resident(1001), lawyer(1), caller("officer", unit=5)],
        ids=["another resident", "a lawyer", "officer elsewhere"],
    )
    def test_others_book_only_for_residents_in_their_scope(self, db, book, who):
        with pytest.raises(Forbidden):
            book(1000, "09:00", who=who)
        assert events(db) == []

    def test_staff_in_scope_book_for_a_resident(self, book):
        assert book(1000, "09:00", who=OFFICER_A).resident_id == 1000

    def test_a_slot_is_booked_once(self, book):
        book(1000, "09:00")
        with pytest.raises(Conflict):
            book(1010, "09:00")

    @pytest.mark.parametrize(
        ("day", "clock", "why"),
        [
            (TUESDAY, "09:10", "Not a slot"),
            (TUESDAY, "12:30", "Not a slot"),  # the lunch break
            (dt.date(2030, 1, 7), "10:30", "Must be between"),  # half an hour from now: too little notice
            (dt.date(2030, 1, 28), "09:00", "Must be between"),  # beyond the 14-day horizon
        ],
    )
    def test_only_a_plan_slot_inside_the_booking_window(self, book, day, clock, why):
        with pytest.raises(ValidationError, match=why) as error:
            book(1000, clock, day=day)
        assert field_of(error) == {"starts_at"}

    def test_time_off_refuses_the_slot(self, committed, book, practice):
        with committed() as uow:
            directory.add_time_off(uow, ADMIN, practice["lawyer"], at(TUESDAY, "08:00"), at(TUESDAY, "09:15"), None)
        with pytest.raises(Conflict, match="away"):
            book(1000, "09:00")

    def test_a_lawyer_without_a_plan_at_the_station(self, committed, db, grid, policy, practice):
        with committed() as uow:
            other = directory.create_station(uow, OFFICER_A, grid, COMMUNITY_A, "Other", "2 Road").id
        with unit_of_work(db) as uow, pytest.raises(ValidationError) as error:
            bookings.book(uow, DESK, grid, policy, practice["lawyer"], other, at(TUESDAY, "09:00"), 1000, "T", "phone")
        assert field_of(error) == {"station_id"}

    def test_a_resident_holds_at_most_three_upcoming_bookings(self, book):
        for clock in ("09:00", "09:30", "10:00"):
            book(1000, clock)
        with pytest.raises(Conflict, match="3 upcoming"):
            book(1000, "10:30")
        book(1001, "10:30")  # the cap is per resident


class TestChanges:
    def test_cancel_frees_the_slot_and_tells(self, committed, db, book, practice):
        booked = book(1000, "09:00")
        with committed() as uow:
            cancelled = bookings.cancel(uow, resident(1000), booked.id, "Solved it")
        assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "Solved it")
        assert [data["status"] for _, _, data in events(db, "consultation_cancelled")] == ["cancelled"]
        with unit_of_work(db) as uow, pytest.raises(Conflict, match="cancelled"):
            bookings.cancel(uow, resident(1000), booked.id, "again")
        assert book(1010, "09:00").status == "booked"

    @pytest.mark.parametrize("who", [resident(1001), OFFICER_B, lawyer(999)], ids=["resident", "officer", "lawyer"])
    def test_strangers_do_not_reach_a_consultation(self, db, book, who):
        booked = book(1000, "09:00")
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            bookings.cancel(uow, who, booked.id, "not mine")

    def test_reschedule_moves_the_booking_and_rearms_its_reminder(self, committed, db, book, policy, practice):
        booked = book(1000, "09:00")
        with committed() as uow:
            uow.session.get(Consultation, booked.id).reminded_at = NOW
        with committed() as uow:
            moved = bookings.reschedule(uow, DESK, policy, booked.id, at(TUESDAY, "10:00"), None)
        assert (moved.starts_at, moved.reminded_at) == (at(TUESDAY, "10:00"), None)
        assert [data["starts_at"] for _, _, data in events(db, "consultation_rescheduled")] == [
            at(TUESDAY, "10:00").isoformat()
        ]

    def test_reschedule_onto_a_taken_slot_keeps_the_old_one(self, db, book, policy):
        first, _ = book(1000, "09:00"), book(1010, "09:30")
        with unit_of_work(db) as uow, pytest.raises(Conflict):
            bookings.reschedule(uow, DESK, policy, first.id, at(TUESDAY, "09:30"), None)
        with unit_of_work(db) as uow:
            assert uow.session.get(Consultation, first.id).starts_at == at(TUESDAY, "09:00")
        assert events(db, "consultation_rescheduled") == []

    def test_a_no_show_is_marked_once_the_consultation_started_by_its_lawyer_or_staff(
        self, committed, db, book, clock, practice
    ):
        booked = book(1000, "09:00")
        with unit_of_work(db) as uow, pytest.raises(Conflict, match="not started"):
            bookings.mark_no_show(uow, lawyer(practice["lawyer"]), booked.id)
        clock.now = at(TUESDAY, "09:40")
        # a resident who also holds the lawyer role (of another consultation) marks nothing of theirs
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            bookings.mark_no_show(uow, caller("resident", "lawyer", sub="1000"), booked.id)
        with committed() as uow:
            assert bookings.mark_no_show(uow, lawyer(practice["lawyer"]), booked.id).status == "no_show"


class TestSummaries:
    @pytest.fixture
    def completed(self, committed, book, practice):
        booked = book(1000, "09:00")
        with committed() as uow:
            bookings.complete(uow, lawyer(practice["lawyer"]), VAULT, booked.id, "Advised mediation.", "mediation")
        return booked.id

    def test_only_the_consultations_lawyer_completes_it(self, db, book):
        booked = book(1000, "09:00")
        with unit_of_work(db) as uow, pytest.raises(Forbidden):
            bookings.complete(uow, lawyer(999), VAULT, booked.id, "x", "referred")

    def test_the_summary_is_encrypted_and_never_in_the_event(self, db, completed):
        with unit_of_work(db) as uow:
            stored = uow.session.get(Consultation, completed)
            assert (stored.status, stored.outcome) == ("completed", "mediation")
            assert b"Advised" not in stored.summary_enc
        [(_, _, data)] = events(db, "consultation_completed")
        assert data["outcome"] == "mediation" and "Advised" not in str(data)

    def test_its_lawyer_its_resident_and_admins_read_the_summary_and_each_read_is_audited(
        self, committed, db, completed, practice
    ):
        readers = [lawyer(practice["lawyer"]), resident(1000), ADMIN]
        for reader in readers:
            with committed() as uow:
                read = bookings.read_consultation(uow, reader, VAULT, completed)
            assert read.summary == "Advised mediation." and read.status == "completed"
        with committed() as uow:
            assert bookings.read_consultation(uow, OFFICER_A, VAULT, completed).summary is None
        with unit_of_work(db) as uow:
            audit = uow.session.scalars(select(SummaryRead.reader).order_by(SummaryRead.id)).all()
        assert audit == [str(practice["lawyer"]), "1000", "root"]  # the officer read no summary: no row

    def test_nothing_is_audited_before_there_is_a_summary(self, committed, db, book):
        booked = book(1000, "09:00")
        with committed() as uow:
            assert bookings.read_consultation(uow, ADMIN, VAULT, booked.id).summary is None
        with unit_of_work(db) as uow:
            assert uow.session.scalars(select(SummaryRead)).all() == []


class TestListing:
    @pytest.fixture
    def booked(self, book):
        return {rid: book(rid, clock).id for rid, clock in ((1000, "09:00"), (1010, "09:30"), (1001, "10:00"))}

    def ids(self, db, who, **filters):
        args = {"resident_id": None, "lawyer_id": None, "station_id": None, "status": None, **filters}
        with unit_of_work(db) as uow:
            rows, _ = bookings.list_consultations(uow.session, who, page=1, page_size=10, **args)
            return [row.id for row in rows]

    def test_each_role_sees_its_own(self, db, booked, practice):
        assert self.ids(db, resident(1000)) == [booked[1000]]
        assert self.ids(db, lawyer(practice["lawyer"])) == list(booked.values())
        assert self.ids(db, OFFICER_A) == list(booked.values())
        assert self.ids(db, OFFICER_B) == []
        assert self.ids(db, lawyer(999)) == []

    def test_filters_narrow_and_never_widen(self, db, booked):
        assert self.ids(db, ADMIN, resident_id=1010) == [booked[1010]]
        assert self.ids(db, resident(1000), resident_id=1010) == []
        assert self.ids(db, ADMIN, status="cancelled") == []

    def test_a_token_naming_no_unit_and_no_self_role_sees_nothing(self, db):
        with pytest.raises(Forbidden):
            self.ids(db, caller("officer"))

    def test_pages(self, db, booked):
        with unit_of_work(db) as uow:
            args = {"resident_id": None, "lawyer_id": None, "station_id": None, "status": None}
            first, more = bookings.list_consultations(uow.session, ADMIN, page=1, page_size=2, **args)
            last, no_more = bookings.list_consultations(uow.session, ADMIN, page=2, page_size=2, **args)
            assert ([c.id for c in first + last], more, no_more) == (list(booked.values()), True, False)


class TestReminders:
    def remind_all(self, committed, policy, notices):
        """What the timer does: one due consultation a transaction until none is left."""
        reminded: list[int] = []
        while True:
            with committed() as uow:
                due = bookings.next_due_reminder(uow.session, policy, bookings.utcnow())
                if due is None:
                    return reminded
                bookings.send_reminder(notices, uow, policy, due)
                reminded.append(due.id)

    def test_one_reminder_per_booking_within_the_lead_time_none_for_cancelled(self, committed, book, policy, clock):
        notices = FakeNotices()
        soon, dropped = book(1000, "09:00"), book(1010, "09:30")
        later = book(1001, "09:00", day=TUESDAY + dt.timedelta(days=2))  # beyond the 24-hour lead
        with committed() as uow:
            bookings.cancel(uow, DESK, dropped.id, "not needed")
        assert self.remind_all(committed, policy, notices) == [soon.id]
        assert self.remind_all(committed, policy, notices) == []  # marked: not again
        assert list(notices.sent) == [f"legal:consultation/{soon.id}/reminder/20300108T0100Z"]
        clock.advance(days=2)  # the later one comes within the lead time
        assert self.remind_all(committed, policy, notices) == [later.id]

    def test_the_reminder_names_the_station_and_local_time_and_goes_to_the_resident_and_the_lawyer(
        self, committed, book, policy
    ):
        notices = FakeNotices()
        book(1000, "09:00")
        self.remind_all(committed, policy, notices)
        [sent] = notices.sent.values()
        # the practice's lawyer is resident 1030; the topic and names never travel
        assert sent["resident_ids"] == ["1000", "1030"]
        assert (sent["template"], sent["params"]) == (
            "consultation_reminder",
            {"station": "Sunny Station", "starts_at": "2030-01-08 09:00"},
        )

    def test_a_rescheduled_booking_is_reminded_again_under_a_new_origin(self, committed, book, policy):
        notices = FakeNotices()
        booked = book(1000, "09:00")
        self.remind_all(committed, policy, notices)
        with committed() as uow:
            bookings.reschedule(uow, DESK, policy, booked.id, at(TUESDAY, "09:30"), None)
        assert self.remind_all(committed, policy, notices) == [booked.id]
        assert sorted(notices.sent) == [
            f"legal:consultation/{booked.id}/reminder/20300108T0100Z",
            f"legal:consultation/{booked.id}/reminder/20300108T0130Z",
        ]
