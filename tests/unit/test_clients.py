"""The typed clients' pure parts and their fake twins; the idempotency helpers (no broker, no database)."""

import pytest
from hypothesis import given, strategies as st

from services.grid.client import FakeGrid
from services.notices.client import FakeNotices, send_direct_command
from shared.endpoints import MAX_KEY_LENGTH, idempotency_key
from shared.errors import NotFound, ServiceUnavailable, ValidationError
from shared.idempotency import request_hash


@pytest.fixture
def grid():
    fake = FakeGrid()
    fake.add_unit(1, "district")
    fake.add_unit(2, "street", parent_id=1)
    fake.add_unit(3, "grid_small", parent_id=2)
    fake.add_household(10, 3)
    fake.add_resident(100, 10, tags=["quarantined"])
    fake.add_resident(101, 10)
    return fake


def test_the_fake_grid_answers_as_the_grid_does(grid):
    assert grid.unit(3, "unit_id")["path_string"] == "/1/2/3/"
    assert [u["id"] for u in grid.ancestors(unit_id=3)] == ["1", "2"]
    assert grid.get_household(household_id=10)["resident_ids"] == ["100", "101"]
    assert grid.get_household_async(household_id=10).result()["unit_path"] == ["1", "2", "3"]
    assert [r["tags"] for r in grid.residents([100, 101], "resident_ids")] == [["quarantined"], []]
    assert [u["id"] for u in grid.list_units(under=2, level="grid_small")["items"]] == ["3"]


def test_unknown_ids_are_the_callers_mistake_named_by_field(grid):
    with pytest.raises(ValidationError) as unit:
        grid.unit(99, "unit_id")
    assert unit.value.fields == {"unit_id": ["Unknown unit 99."]}
    with pytest.raises(ValidationError) as residents:
        grid.residents([100, 555], "party_resident_ids")
    assert residents.value.fields == {"party_resident_ids": ["Unknown residents: 555."]}
    with pytest.raises(NotFound):
        grid.get_household(household_id=77)
    with pytest.raises(NotFound):
        grid.get_household_async(household_id=77).result()


def test_a_grid_that_is_down_is_unavailable_not_wrong(grid):
    grid.unavailable = True
    with pytest.raises(ServiceUnavailable):
        grid.unit(3, "unit_id")
    with pytest.raises(ServiceUnavailable):
        grid.get_household_async(household_id=10).result()


class RecordingUnitOfWork:
    def __init__(self):
        self.commands = []

    def command(self, target, command, origin, data):
        self.commands.append((target, command, origin, data))


def test_the_notices_client_records_a_checked_command_in_the_unit_of_work():
    from services.notices.client import Notices

    uow = RecordingUnitOfWork()
    Notices().send_direct(
        uow, origin="volunteer:offer/7", resident_ids=[5], template="volunteer_offer", params={"kind": "groceries"}
    )
    assert uow.commands == [
        (
            "notices",
            "send_direct",
            "volunteer:offer/7",
            {"resident_ids": ["5"], "template": "volunteer_offer", "params": {"kind": "groceries"}, "channels": None},
        )
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"origin": ""}, "origin"),
        ({"origin": "x" * 121}, "origin"),
        ({"template": "no_such_template"}, "template"),
        ({"resident_ids": []}, "resident_ids"),
        ({"channels": ["fax"]}, "channels"),
    ],
)
def test_a_malformed_command_fails_in_the_senders_call_naming_the_field(change, field):
    args = {"origin": "o/1", "resident_ids": [1], "template": "volunteer_offer", "params": {}, **change}
    uow = RecordingUnitOfWork()
    fake = FakeNotices()
    with pytest.raises(ValidationError) as raised:
        fake.send_direct(uow, **args)
    assert field in raised.value.fields
    with pytest.raises(ValidationError):
        send_direct_command(**args)
    assert fake.sent == {}


def test_the_fake_notices_applies_one_command_per_origin():
    fake = FakeNotices()
    for _ in range(3):
        fake.send_direct(
            None, origin="legal:consultation/1/reminder/x", resident_ids=[1], template="volunteer_offer", params={}
        )
    assert fake.recorded == 3
    assert list(fake.sent) == ["legal:consultation/1/reminder/x"]


def test_the_idempotency_key_comes_from_the_caller_else_the_request():
    kwargs = {"idempotency_key": "abc", "name": "x"}
    assert idempotency_key(kwargs, "corr-1") == "key:abc"
    assert kwargs == {"name": "x"}  # taken out before the arguments are validated
    assert idempotency_key({"name": "x"}, "corr-1") == "request:corr-1"
    assert idempotency_key({"idempotency_key": None}, None) is None
    assert idempotency_key({}, None) is None


@pytest.mark.parametrize("bad", ["", "x" * (MAX_KEY_LENGTH + 1), "tab\there", 12, ["k"], {"k": 1}, b"bytes"])
def test_a_bad_idempotency_key_names_the_field(bad):
    with pytest.raises(ValidationError) as raised:
        idempotency_key({"idempotency_key": bad}, "corr-1")
    assert list(raised.value.fields) == ["idempotency_key"]


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10), st.none()), max_size=6))
def test_request_hash_ignores_keyword_order_and_tells_arguments_apart(params):
    reordered = dict(reversed(list(params.items())))
    assert request_hash(reordered) == request_hash(params)
    assert request_hash({**params, "extra-key-not-in-params": 1}) != request_hash(params)
