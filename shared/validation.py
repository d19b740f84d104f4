"""marshmallow building blocks used by every service's schemas.

All schemas reject unknown fields and every string has an upper bound, so a
1 MB value is refused with a field error before it reaches the database.
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


class Str(fields.String):
    """A trimmed, length-bounded string (1..max_length characters by default)."""

    def __init__(self, *, max_length=200, min_length=1, **kwargs):
        validators = kwargs.pop("validate", None)
        validators = [validators] if callable(validators) else list(validators or [])
        validators.insert(0, validate.Length(min=min_length, max=max_length))
        super().__init__(validate=validators, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        return value.strip()


def OneOf(choices, **kwargs):
    """A string restricted to a vocabulary (the error lists the allowed values)."""
    return fields.String(validate=validate.OneOf(sorted(choices)), **kwargs)


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


class Phone(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs).strip()
        problem = phone_problem(value)
        if problem:
            raise MarshmallowError(problem)
        return value


class UtcDateTime(fields.AwareDateTime):
    """An ISO-8601 timestamp; one without an offset is taken as UTC."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=dt.UTC, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return super()._serialize(value, attr, obj, **kwargs)


CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WeeklyWindow(StrictSchema):
    """``{"weekday": 0-6, "start": "HH:MM", "end": "HH:MM"}``: a recurring window of a week."""

    weekday = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=6))
    start = fields.String(required=True, validate=validate.Regexp(CLOCK, error="Must be HH:MM."))
    end = fields.String(required=True, validate=validate.Regexp(CLOCK, error="Must be HH:MM."))

    @validates_schema
    def ordered(self, data, **kwargs):
        if data["end"] <= data["start"]:
            raise MarshmallowError("Must be after start.", "end")


class PageSchema(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


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
