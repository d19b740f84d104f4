"""What legal publishes matches what it documents (services/legal/events.py), and carries no confidential text."""

from services.legal import bookings, events as published, mediation
from shared.validation import load
from tests.unit.legal.conftest import DESK, GRID_A, OFFICER_A, TUESDAY, at, lawyer
from tests.unit.local import VAULT, events


def test_every_event_a_change_records_is_one_the_contract_documents(committed, db, grid, policy, practice, book):
    dropped, kept = book(1000, "09:00", topic="CONFIDENTIAL topic"), book(1010, "09:30", topic="CONFIDENTIAL topic")
    with committed() as uow:
        bookings.cancel(uow, DESK, dropped.id, "CONFIDENTIAL reason")
        bookings.reschedule(uow, DESK, policy, kept.id, at(TUESDAY, "10:00"), None)
        bookings.complete(uow, lawyer(practice["lawyer"]), VAULT, kept.id, "CONFIDENTIAL summary", "referred")
        case = mediation.open_mediation(uow, OFFICER_A, grid, GRID_A, "family", [1000, 1010], "CONFIDENTIAL", None)
        mediation.close_mediation(uow, OFFICER_A, case.id, "agreement", "CONFIDENTIAL agreement")
        bookings.read_consultation(uow, lawyer(practice["lawyer"]), VAULT, kept.id)  # sensitive_data_read
    recorded = events(db)
    assert {event for event, _, _ in recorded} == set(published.EVENTS)
    for event, _, data in recorded:
        # loading refuses a documented field that is missing or wrong; one not documented is dropped
        assert set(load(published.EVENTS[event], data)) == set(data), event
        assert "CONFIDENTIAL" not in str(data), event
