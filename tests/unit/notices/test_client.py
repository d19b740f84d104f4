"""The notices service as the other services see it (services.notices.client): a ``send_direct``
command recorded in the sender's own unit of work, checked against notices' schema on the way in, and
exactly what notices' command handler will load. (The fake twin and the command's field errors:
tests/unit/test_clients.py.)"""

import pytest
from hypothesis import given, strategies as st
from sqlalchemy import select

from services.notices.client import Notices, send_direct_command
from services.notices.schemas import SendDirectCommand
from services.notices.templates import TEMPLATES
from shared.commands import command_exchange_name
from shared.errors import ValidationError
from shared.validation import MAX_ID, load
from tests.unit.local import events, local_database, unit_of_work

OFFER = {"origin": "volunteer:offer/7", "resident_ids": [5], "template": "check_in", "params": {"when": "9"}}


@pytest.fixture
def sender_db():
    """A sending service's database (notices' tables serve: the outbox is the same for every service)."""
    database = local_database("notices")
    yield database
    database.stop()


def test_a_command_is_recorded_in_the_senders_outbox_and_leaves_only_if_it_commits(sender_db):
    with unit_of_work(sender_db) as uow:
        Notices().send_direct(
            uow, origin="volunteer:offer/7", resident_ids=[5], template="check_in", params={"when": "9"}
        )
        # not committed: rolled back with the sender's change
    assert events(sender_db) == []
    with unit_of_work(sender_db) as uow:
        Notices().send_direct(
            uow, origin="volunteer:offer/7", resident_ids=[5], template="check_in", params={"when": "9"}
        )
        uow.commit()
        destination = uow.session.scalar(select(sender_db.outbox_model.destination))
    assert destination == command_exchange_name("notices")
    assert events(sender_db) == [
        (
            "send_direct",
            "volunteer:offer/7",
            {
                "resident_ids": ["5"],
                "template": "check_in",
                "params": {"when": "9"},
                "channels": None,
                "origin": "volunteer:offer/7",
            },
        )
    ]


def test_a_malformed_command_records_nothing(sender_db):
    with unit_of_work(sender_db) as uow:
        with pytest.raises(ValidationError) as raised:
            Notices().send_direct(uow, origin="o/1", resident_ids=[0], template="check_in", params={})
        uow.commit()
    assert "resident_ids" in raised.value.fields and events(sender_db) == []


@given(
    origin=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=120),
    resident_ids=st.lists(st.integers(1, MAX_ID), min_size=1, max_size=5, unique=True),
    template=st.sampled_from(sorted(TEMPLATES)),
    channels=st.none() | st.lists(st.sampled_from(["sms", "voice_call", "app_push"]), min_size=1, unique=True),
)
def test_what_a_sender_records_is_what_notices_loads(origin, resident_ids, template, channels):
    data = send_direct_command(origin, resident_ids, template, {}, channels)
    assert load(SendDirectCommand(), data) == {
        "origin": origin,
        "resident_ids": resident_ids,
        "template": template,
        "params": {},
        "channels": channels,
    }
