"""The legal contract's own rules on input (services/legal/schemas.py): each refusal names its field."""

import pytest

from services.legal import schemas
from shared.errors import ValidationError
from shared.validation import load

DAY = "2030-01-07"


def refused(schema, data):
    with pytest.raises(ValidationError) as error:
        load(schema, data)
    return set(error.value.details)


def test_windows_on_one_weekday_may_not_overlap():
    weekly = [{"weekday": 1, "start": "09:00", "end": "12:00"}, {"weekday": 1, "start": "11:00", "end": "13:00"}]
    assert refused(schemas.SetSchedule(), {"lawyer_id": "1", "station_id": "1", "weekly": weekly}) == {"weekly"}
    touching = [weekly[0], {**weekly[1], "start": "12:00"}, {**weekly[1], "weekday": 2}]
    loaded = load(schemas.SetSchedule(), {"lawyer_id": "1", "station_id": "1", "weekly": touching})
    assert (loaded["slot_minutes"], loaded["buffer_minutes"]) == (30, 0)


def test_time_off_ends_after_it_starts():
    data = {"lawyer_id": "1", "starts_at": "2030-01-07T10:00:00+08:00", "ends_at": "2030-01-07T02:00:00Z"}
    assert refused(schemas.AddTimeOff(), data) == {"ends_at"}  # the same instant


@pytest.mark.parametrize("date_to", ["2030-01-06", "2030-03-11"], ids=["before date_from", "over 62 days"])
def test_a_slot_search_is_ordered_and_bounded(date_to):
    assert refused(schemas.FindSlots(), {"specialty": "family", "date_from": DAY, "date_to": date_to}) == {"date_to"}


def test_an_agreement_needs_its_text():
    assert refused(schemas.CloseMediation(), {"case_id": "1", "outcome": "agreement"}) == {"agreement"}
    assert load(schemas.CloseMediation(), {"case_id": "1", "outcome": "withdrawn"})["agreement"] is None


@pytest.mark.parametrize("licence", ["LIC 1", "12345", "证书-000001"])
def test_a_licence_number_is_six_or_more_letters_digits_or_dashes(licence):
    data = {"name": "N", "firm": "F", "license_no": licence, "specialties": ["family"], "station_ids": ["1"]}
    assert refused(schemas.RegisterLawyer(), data) == {"license_no"}


def test_a_dispute_names_at_least_two_different_parties():
    data = {"unit_id": "3", "category": "neighbour", "description": "D", "party_resident_ids": ["7", "7"]}
    assert refused(schemas.OpenMediation(), data) == {"party_resident_ids"}
