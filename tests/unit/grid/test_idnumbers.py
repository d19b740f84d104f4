"""PRC resident identity numbers (services/grid/idnumbers.py, GB 11643-1999), and how the input
schema uses them."""

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from services.grid.idnumbers import birth_date_of, check_digit, id_number_problem, make_id_number, normalise_id_number
from services.grid.schemas import RegisterResident
from shared.errors import ValidationError
from shared.validation import load

BIRTHS = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2029, 12, 31))


def test_known_id_number_check_digits():
    assert check_digit("11010519491231002") == "X"  # the standard's own example
    assert id_number_problem("11010519491231002X") is None
    assert id_number_problem("110105194912310021") == "Check digit does not match."
    assert id_number_problem("110105194902300021").startswith("Embedded birth date")
    assert id_number_problem("11010519491231002") is not None
    assert id_number_problem(None) is not None


@given(BIRTHS, st.integers(0, 999))
def test_a_made_number_is_valid_and_carries_its_birth_date(birth, seq):
    number = make_id_number("370102", birth, seq)
    assert id_number_problem(number) is None
    assert birth_date_of(number) == birth


@given(BIRTHS, st.integers(0, 999), st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_changed_is_caught(birth, seq, position, shift):
    # MOD 11-2: every weight is non-zero modulo 11, so any one changed digit changes the check.
    number = make_id_number("370102", birth, seq)
    changed = number[:position] + str((int(number[position]) + shift) % 10) + number[position + 1 :]
    assert id_number_problem(changed) is not None


@given(BIRTHS, st.integers(0, 999), st.integers(0, 15))
def test_two_neighbouring_digits_swapped_are_caught(birth, seq, position):
    # Neighbouring weights differ modulo 11: a swap of two different digits changes the check.
    number = make_id_number("370102", birth, seq)
    swapped = number[:position] + number[position + 1] + number[position] + number[position + 2 :]
    assert swapped == number or id_number_problem(swapped) is not None


def test_a_lower_case_x_and_spaces_are_normalised_before_the_check():
    assert normalise_id_number(" 11010519491231002x ") == "11010519491231002X"
    assert normalise_id_number(42) == 42  # not text: left for the check to refuse


def test_the_registration_schema_checks_the_number_and_the_birth_date_it_carries():
    number = make_id_number("370102", dt.date(1950, 7, 5), 5)
    args = {"household_id": 1, "name": "Li", "id_number": number, "phone": "13800000005"}
    assert load(RegisterResident(), {**args, "birth_date": "1950-07-05"})["id_number"] == number
    with pytest.raises(ValidationError) as err:
        load(RegisterResident(), {**args, "birth_date": "1950-07-06"})
    assert "birth_date" in err.value.fields
    wrong_check = number[:17] + ("1" if number[17] == "0" else "0")
    with pytest.raises(ValidationError) as err:
        load(RegisterResident(), {**args, "id_number": wrong_check, "birth_date": "1950-07-05"})
    assert err.value.fields["id_number"] == ["Check digit does not match."]
