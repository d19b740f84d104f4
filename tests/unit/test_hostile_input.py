"""The pure parts of issue 12's second pass: what a hostile sender controls never becomes an untyped
error, a loop or an unbounded log line (tests/integration/test_hostile_messages.py sends the same
through a real broker)."""

import datetime as dt
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
import yaml
from marshmallow import Schema, fields

from shared.auth import MAX_TOKEN_LENGTH, decode_token, mint_token
from shared.endpoints import endpoint
from shared.errors import InternalError, Unauthenticated
from shared.handlers import kept_headers, printable
from shared.logs import MAX_MESSAGE, JsonFormatter
from shared.rpc import reply_address_problem
from shared.validation import Date, UtcDateTime, ValidationError, load

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "token",
    [
        "eyJ\udcff\udcfe",  # header bytes that were not UTF-8, as shared.amqp_wire reads them
        "eyJ\ud800",  # an encoded surrogate
        "eyJé",
        "e" * (MAX_TOKEN_LENGTH + 1),
        b"eyJ",
        ["eyJ"],
    ],
)
def test_a_token_that_is_not_ascii_text_is_unauthenticated(token):
    with pytest.raises(Unauthenticated):
        decode_token(SECRET, token)


def test_a_signed_token_with_roles_that_are_not_text_is_unauthenticated():
    bad_roles: list[object] = [[{}], [["admin"]], [1], "admin"]
    for roles in bad_roles:
        claims = {"sub": "x", "roles": roles, "exp": 4_000_000_000}
        with pytest.raises(Unauthenticated):
            decode_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))
    assert decode_token(SECRET, mint_token(SECRET, "x", ["admin"])).roles == {"admin"}


class When(Schema):
    day = Date()
    at = UtcDateTime()


@pytest.mark.parametrize(
    "data",
    [
        {"day": dt.datetime(2030, 1, 1)},  # compared with a date: TypeError
        {"day": dt.date(2030, 1, 1)},
        {"at": dt.datetime(2030, 1, 1)},
        {"at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
        {"day": 20300101},
        {"at": {"__type__": "datetime", "__value__": "2030-01-01T00:00:00"}},
    ],
)
def test_dates_and_timestamps_are_strings_only(data):
    with pytest.raises(ValidationError) as err:
        load(When(), data)
    assert set(err.value.fields) == set(data)


def test_dates_and_timestamps_as_strings_still_load():
    assert load(When(), {"day": "2030-01-01", "at": "2030-01-01T08:00:00+08:00"}) == {
        "day": dt.date(2030, 1, 1),
        "at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    }


def test_a_log_line_is_bounded_whatever_its_message_quotes():
    huge = "field-name-a-caller-chose" * 10_000
    record = logging.LogRecord(
        "nameko.containers", logging.ERROR, __file__, 1, "error handling worker %s: %s", ("w", huge), None
    )
    line = JsonFormatter().format(record)
    assert len(line) < MAX_MESSAGE + 200 and huge not in line
    assert f"(cut: {len('error handling worker w: ') + len(huge)} characters)" in line
    short = logging.LogRecord("x", logging.INFO, __file__, 1, "call finished", (), None)
    assert '"message": "call finished"' in JsonFormatter().format(short)


def service_logging(service):
    text = (ROOT / "services" / service / "config.yml").read_text()
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::([^}]*))?\}", lambda m: m.group(1) or "", text)
    return yaml.safe_load(text)["LOGGING"]


@pytest.mark.parametrize("service", ["grid", "notices", "legal", "volunteer"])
def test_nameko_expected_error_lines_are_dropped_as_deployed(service):
    """nameko logs every expected (client) error at WARNING with the error's whole text — field names
    the caller sent. The services' LOGGING drops that logger below ERROR (telemetry logs one line per
    call instead); what passes is bounded by the JSON formatter."""
    config = service_logging(service)
    level = config["loggers"]["nameko.containers"]["level"]
    assert logging.getLevelName(level) >= logging.ERROR
    assert config["formatters"]["json"]["()"] == "shared.logs.JsonFormatter"


def test_retries_and_dead_letters_keep_only_headers_we_read():
    headers = {
        "nameko.call_id_stack": ["grid.report_incident.1"],
        "x-padding": "p" * 100_000,
        "nameko.auth_token": "secret",
        "x-grassroots-attempt": 2,
    }
    assert kept_headers(SimpleNamespace(headers=headers)) == {
        "nameko.call_id_stack": ["grid.report_incident.1"],
        "x-grassroots-attempt": 2,
    }
    # not a stack we carry, not an attempt count
    assert kept_headers(SimpleNamespace(headers={"nameko.call_id_stack": ["x" * 10_000]})) == {}
    assert kept_headers(SimpleNamespace(headers={"x-grassroots-attempt": "2" * 100_000})) == {}
    assert kept_headers(SimpleNamespace(headers=None)) == {}


def test_printable_text_for_a_header():
    assert printable("grid.\udcff\x00\x7fok", 100) == "grid.\\udcff\\x00\\x7fok"
    assert printable(b"\xff", 100) == "\\xff"
    assert printable("x" * 1000, 10) == "x" * 10
    assert printable(None, 10) is None
    printable("\ud800" * 10, 100).encode()  # always encodable


@pytest.mark.parametrize(
    ("reply_to", "problem"),
    [
        ("rpc.reply-grid-1", None),
        ("amq.rabbitmq.reply-to.g1h2AA", None),
        (None, "no reply_to"),
        ("", "no reply_to"),
        ("\udcff\udcfe", "bad reply_to"),
        ("reply\x00to", "bad reply_to"),
        ("reply\nto", "bad reply_to"),
        ("\x7f", "bad reply_to"),
        (b"reply", "bad reply_to"),
    ],
)
def test_a_reply_address_no_queue_can_have_is_unanswerable(reply_to, problem):
    assert reply_address_problem({"reply_to": reply_to}) == problem


class FakeDb:
    def __init__(self):
        self.calls = []

    def read_only(self):
        self.calls.append("read_only")

    def commit(self):
        self.calls.append("commit")

    def rollback(self):
        self.calls.append("rollback")


def fake_service(authorize):
    return SimpleNamespace(auth=SimpleNamespace(authorize=authorize), db=FakeDb())


class Ran(Schema):
    ran = fields.Boolean()


def test_a_bug_in_authorising_or_validating_is_an_internal_error_and_typed_errors_pass():
    """authorize() and load() ran outside the guard: whatever they raised reached the caller raw."""

    @endpoint(roles=["admin"], schema=When(), read_only=True, returns=Ran())
    def method(self, caller, **args):
        return {"ran": True}

    def broken(roles):
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    with pytest.raises(InternalError):
        method(fake_service(broken))

    def refused(roles):
        raise Unauthenticated("invalid token")

    with pytest.raises(Unauthenticated):
        method(fake_service(refused))
    service = fake_service(lambda roles: "caller")
    with pytest.raises(ValidationError):
        method(service, day={"__type__": "date"})
    with pytest.raises(ValidationError):
        method(service, "positional")
    assert method(service, day="2030-01-01") == {"ran": True}
