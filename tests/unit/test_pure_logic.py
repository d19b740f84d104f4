"""Pure logic: no broker, no database."""

import json
import logging

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from nameko.exceptions import RemoteError, deserialize, serialize

from shared import paths as tree
from shared.auth import Caller, decode_token, mint_token
from shared.errors import Forbidden, NotFound, Unauthenticated, ValidationError
from shared.logs import JsonFormatter, bind_call, unbind_call
from shared.outbox import envelope
from shared.pii import PiiVault, mask_id_number, mask_phone
from shared.telemetry import outcome_of
from shared.validation import Id, Str, StrictSchema, load, phone_problem

SECRET = "unit-test-secret-with-enough-bytes!"


def test_phone_numbers():
    assert phone_problem("13812345678") is None
    assert phone_problem("12812345678") is not None
    assert phone_problem("1381234567") is not None


def test_masks_keep_only_the_ends():
    assert mask_id_number("370102195001010012") == "370***********0012"
    assert mask_phone("13812345678") == "138****5678"


def test_vault_round_trip_and_blind_index():
    vault = PiiVault("a-key-of-at-least-16-chars")
    blob = vault.encrypt("13812345678", b"phone")
    assert b"13812345678" not in blob and vault.decrypt(blob, b"phone") == "13812345678"
    assert vault.encrypt("13812345678", b"phone") != blob  # fresh nonce each time
    assert vault.blind_index("x", b"k") == vault.blind_index("x", b"k") != vault.blind_index("y", b"k")
    assert PiiVault("another-key-of-16-chars").blind_index("x", b"k") != vault.blind_index("x", b"k")
    with pytest.raises(InvalidTag):
        vault.decrypt(blob, b"id_number")  # bound to its purpose
    with pytest.raises(RuntimeError):
        PiiVault("short")


def test_subtree_ranges_include_descendants_only():
    path = "/1/5/"
    inside = ["/1/5/", "/1/5/23/", "/1/5/9/100/"]
    outside = ["/1/50/", "/1/4/", "/1/", "/1/6/", "/1/5"]
    low, high = path, path[:-1] + "0"
    assert all(low <= p < high for p in inside)
    assert not any(low <= p < high for p in outside)
    assert tree.path_ids("/1/5/23/") == [1, 5, 23]
    assert tree.child_path("/1/5/", 23) == "/1/5/23/"


def test_tokens_decode_and_refuse_bad_ones():
    caller = decode_token(SECRET, mint_token(SECRET, "alice", ["officer"], unit=12, pii=True))
    assert caller == Caller("alice", frozenset({"officer"}), "12", True)
    with pytest.raises(Unauthenticated, match="expired"):
        decode_token(SECRET, mint_token(SECRET, "alice", ["officer"], ttl=-1))
    with pytest.raises(Unauthenticated):
        decode_token(SECRET, mint_token("another-secret-with-enough-bytes!!", "alice", ["officer"]))
    with pytest.raises(Unauthenticated, match="missing"):
        decode_token(SECRET, None)
    with pytest.raises(Unauthenticated):
        decode_token(SECRET, jwt.encode({"sub": "a", "roles": ["admin"]}, SECRET, algorithm="HS256"))  # no exp


def test_scope_is_a_subtree():
    officer = Caller("o", frozenset({"officer"}), unit="5")
    assert officer.reaches([1, 5, 23]) and officer.reaches(["1", "5"])
    assert not officer.reaches([1, 6, 23]) and not officer.reaches([1])
    assert Caller("a", frozenset({"admin"})).reaches([9])
    assert not Caller("o", frozenset({"officer"})).reaches([9])  # scoped role without a unit
    with pytest.raises(Forbidden):
        officer.require_reach([1, 6])


def test_errors_cross_the_wire_typed_and_as_remote_errors():
    error = ValidationError({"name": ["Missing data for required field."]})
    data = json.loads(json.dumps(serialize(error)))
    assert data["exc_type"] == "ValidationError" and "name" in data["value"]
    back = deserialize(data)
    assert isinstance(back, ValidationError) and isinstance(back, RemoteError)
    assert back.exc_type == "ValidationError" and back.fields == {"name": ["Missing data for required field."]}
    assert isinstance(deserialize(serialize(NotFound("unit 3 not found"))), NotFound)


class Sample(StrictSchema):
    id = Id(required=True)
    name = Str(max_length=5)


def test_ids_and_bounded_strings():
    assert load(Sample(), {"id": "42", "name": " ab "}) == {"id": 42, "name": "ab"}
    for bad in ("abc", "0", -1, True, 1.5, "9" * 20, None):
        with pytest.raises(ValidationError) as err:
            load(Sample(), {"id": bad})
        assert "id" in err.value.fields
    with pytest.raises(ValidationError) as err:
        load(Sample(), {"id": 1, "name": "x" * 1_000_000, "extra": 1})
    assert set(err.value.fields) == {"name", "extra"}


def test_envelope_has_cloudevents_attributes():
    body = envelope("grid", "resident_tagged", "resident/1", {"tag": "quarantined"})
    assert set(body) >= {"specversion", "id", "source", "type", "time", "subject", "data"}
    assert body["source"] == "grassroots/grid" and body["type"] == "resident_tagged"


def test_outcomes():
    assert outcome_of(None) == "success"
    assert outcome_of((Forbidden, Forbidden("x"), None)) == "client_error"
    assert outcome_of((KeyError, KeyError("x"), None)) == "error"


def test_json_log_lines_carry_call_ids_and_drop_unknown_extras():
    bind_call("grid", "grid.get_unit.abc", ["gateway.x.1", "grid.get_unit.abc"])
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "call finished", None, None)
    record.method, record.id_number = "get_unit", "370102195001010012"
    line = json.loads(JsonFormatter().format(record))
    unbind_call()
    assert line["call_id_stack"] == ["gateway.x.1", "grid.get_unit.abc"] and line["method"] == "get_unit"
    assert "370102195001010012" not in json.dumps(line)
