"""Templates of direct messages (services.notices.templates): each names the params it needs, and a
call is checked against them before anything is sent."""

import pytest
from hypothesis import given, strategies as st

from services.notices.templates import TEMPLATES, fields_of, render
from shared.errors import ValidationError


def test_templates_check_their_params():
    title, body = render("check_in", {"when": "tomorrow 10:00"})
    assert "tomorrow 10:00" in body and title
    with pytest.raises(ValidationError) as err:
        render("check_in", {"when": "x", "extra": "y"})
    assert "params" in err.value.fields
    with pytest.raises(ValidationError):
        render("consultation_reminder", {"station": "A"})


def test_each_template_names_the_params_it_needs():
    assert {name: fields_of(name) for name in TEMPLATES} == {
        "consultation_reminder": {"station", "starts_at"},
        "volunteer_offer": {"kind", "respond_by"},
        "quarantine_instructions": {"until"},
        "check_in": {"when"},
        "general": {"title", "text"},
    }


def test_missing_and_unused_params_are_both_named():
    with pytest.raises(ValidationError) as raised:
        render("volunteer_offer", {"kind": "groceries", "colour": "red"})
    assert raised.value.fields == {"params": ["Missing: respond_by.", "Not used by volunteer_offer: colour."]}


@given(st.text(max_size=60), st.text(max_size=200))
def test_a_params_text_is_put_in_as_it_is_never_read_as_a_template(title, text):
    assert render("general", {"title": title, "text": text}) == (title, text)
