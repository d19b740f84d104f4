"""marshmallow building blocks used by every service's schemas.

All schemas reject unknown fields and every string has an upper bound, so a
1 MB value is refused with a field error before it reaches the database. No input
string may carry NUL, another C0 control character (tab, newline and carriage
return excepted) or a lone surrogate — PostgreSQL cannot store the first and
UTF-8 cannot encode the last; every timestamp and date lies in a window the
database and Python's datetime arithmetic both handle; integers are strict
(``1.5``, ``"2"`` and ``true`` are refused, not coerced).
"""

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError as MarshmallowError, fields, validate, validates_schema

from shared.errors import ValidationError

MAX_ID = 2**63 - 1


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class EventData(Schema):
    """The part of another service's event a handler relies on.

    Unknown fields are dropped, not refused: a producer may add fields to an
    event without breaking the services that consume it.
    """

    class Meta:
        unknown = EXCLUDE


class Id(fields.Field):
    """A database id: accepted as a positive integer or its decimal string, returned as a string."""

    # marshmallow's Field declares it an instance attribute: mypy refuses a ClassVar override
    default_error_messages = {"invalid": "Not a valid id."}  # noqa: RUF012

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
            value = int(value)
        if not isinstance(value, int) or not 0 < value <= MAX_ID:
            raise self.make_error("invalid")
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)


# NUL, the other C0 controls but tab, newline and carriage return, and any surrogate: in a str
# decoded from JSON a surrogate is always a lone one (json pairs the others into one character).
_BAD_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def text_problem(value):
    """None for a string every store and encoder takes, else why not (naming the character, not the text)."""
    match = _BAD_CHARACTER.search(value)
    if match is None:
        return None
    code = f"U+{ord(match.group()):04X}"
    if 0xD800 <= ord(match.group()) <= 0xDFFF:
        return f"Must not contain a lone surrogate ({code})."
    return f"Must not contain the control character {code}."


class Text(fields.String):
    """A string with no NUL, other C0 control character (tab, newline, carriage return excepted)
    or lone surrogate. PostgreSQL refuses NUL in text and UTF-8 cannot encode a lone surrogate:
    either would fail on the database instead of as a field error. Every input string builds on
    it (``Str``, ``OneOf``, ``Phone``, ``Url``, the grid's ID numbers)."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        problem = text_problem(value)
        if problem:
            raise MarshmallowError(problem)
        return value


class Str(Text):
    """A trimmed, length-bounded string (1..max_length characters by default) of allowed characters."""

    def __init__(self, *, max_length=200, min_length=1, **kwargs):
        validators = kwargs.pop("validate", None)
        validators = [validators] if callable(validators) else list(validators or [])
        validators.insert(0, validate.Length(min=min_length, max=max_length))
        super().__init__(validate=validators, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        return value.strip()


class Url(Text, fields.Url):
    """An absolute URL of allowed characters."""


def OneOf(choices, **kwargs):
    """A string restricted to a vocabulary (the error lists the allowed values)."""
    return Text(validate=validate.OneOf(sorted(choices)), **kwargs)


def ListOf(field, *, max_items=100, min_items=0, unique=True, **kwargs):
    validators: list[Callable[[Any], Any]] = [validate.Length(min=min_items, max=max_items)]
    if unique:
        validators.append(_unique)
    return fields.List(field, validate=validators, **kwargs)


def _unique(values):
    if len(set(values)) != len(values):
        raise MarshmallowError("Values must be unique.")


_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def phone_problem(value):
    """None for an 11-digit mainland mobile number, else why not."""
    if not isinstance(value, str) or not _MOBILE.match(value):
        return "Must be an 11-digit mainland mobile number."
    return None


class Phone(Text):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs).strip()
        problem = phone_problem(value)
        if problem:
            raise MarshmallowError(problem)
        return value


# Every timestamp of the contract is a moment of the suite's own time: a deadline, a shift, a
# booking, a session held, when a tag ends, where a report starts. Nothing there predates the Unix
# epoch, and 2200 keeps every value — with any offset, plus any lead time or horizon the services
# add — far inside what PostgreSQL hands back to psycopg2 (year <= 9999) and what Python's datetime
# arithmetic takes (9999-12-31T23:00-12:00 was stored as year 10000 and broke every read after).
EARLIEST_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST_TIME = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
# Calendar days of the same things (campaigns, pledges, coverage, slot searches). Birth dates
# reach further back (grid's register_resident: EARLIEST_BIRTH_DATE): people alive today were born
# long before 1970.
EARLIEST_DATE = dt.date(1970, 1, 1)
LATEST_DATE = dt.date(2199, 12, 31)
EARLIEST_BIRTH_DATE = dt.date(1900, 1, 1)


class UtcDateTime(fields.AwareDateTime):
    """An ISO-8601 timestamp (a string: nothing else comes from JSON); one without an offset is
    taken as UTC. On input it must lie in [earliest, latest) — compared as instants, whatever the offset."""

    def __init__(self, *, earliest=EARLIEST_TIME, latest=LATEST_TIME, **kwargs):
        super().__init__(default_timezone=dt.UTC, **kwargs)
        self.earliest = earliest
        self.latest = latest

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):  # marshmallow passes a datetime object through unchecked
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        value = super()._deserialize(value, attr, data, **kwargs)
        # Aware comparisons subtract offsets without building a datetime: no overflow at the edges.
        if not self.earliest <= value < self.latest:
            raise MarshmallowError(
                f"Must be from {self.earliest.isoformat()} up to (not including) {self.latest.isoformat()}."
            )
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return super()._serialize(value, attr, obj, **kwargs)


class Date(fields.Date):
    """An ISO-8601 calendar date (a string) in [earliest, latest] (both days included)."""

    def __init__(self, *, earliest=EARLIEST_DATE, latest=LATEST_DATE, **kwargs):
        super().__init__(**kwargs)
        self.earliest = earliest
        self.latest = latest

    def _deserialize(self, value, attr, data, **kwargs):
        # marshmallow passes a date object through unchecked — a datetime too (a date subclass),
        # which then cannot be compared with the window's dates.
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        value = super()._deserialize(value, attr, data, **kwargs)
        if not self.earliest <= value <= self.latest:
            raise MarshmallowError(f"Must be from {self.earliest.isoformat()} to {self.latest.isoformat()}.")
        return value


CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WeeklyWindow(StrictSchema):
    """``{"weekday": 0-6, "start": "HH:MM", "end": "HH:MM"}``: a recurring window of a week."""

    weekday = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=6))
    start = Text(required=True, validate=validate.Regexp(CLOCK, error="Must be HH:MM."))
    end = Text(required=True, validate=validate.Regexp(CLOCK, error="Must be HH:MM."))

    @validates_schema
    def ordered(self, data, **kwargs):
        if data["end"] <= data["start"]:
            raise MarshmallowError("Must be after start.", "end")


class PageSchema(StrictSchema):
    page = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=100, strict=True, validate=validate.Range(min=1, max=500))


def load(schema, data):
    """Validate ``data`` with ``schema``; failures become our typed ValidationError."""
    try:
        return schema.load(data)
    except MarshmallowError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationError(messages) from None


def page_of(items, page, page_size, has_more):
    """The answer of every paged list method."""
    return {"items": items, "page": page, "page_size": page_size, "has_more": has_more}
