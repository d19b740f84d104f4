"""Payloads of the events the volunteer service publishes on the ``volunteer.events`` topic exchange.

Each event travels in the CloudEvents-shaped envelope of ``shared.outbox.envelope``; these
schemas describe its ``data`` (documented in docs/asyncapi.yaml by ``tools.asyncapi``): ids as
strings of digits, unit paths as lists of id strings from the district down, timestamps as
ISO-8601 strings. A request's details and the resident's identity never travel in an event.
"""

from marshmallow import EXCLUDE, Schema, fields, validate

from services.volunteer import vocabulary as v
from shared.validation import Id, OneOf, Str, UtcDateTime


class EventPayload(Schema):
    """Consumers tolerate fields added later: unknown fields are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE


UNIT_PATH = "Unit ids from the district down to the unit itself."


class RequestEvent(EventPayload):
    """A help request's state after the change."""

    request_id = Id(required=True)
    unit_id = Id(required=True)
    unit_path = fields.List(Id(), required=True, metadata={"description": UNIT_PATH})
    kind = OneOf(v.REQUEST_KINDS, required=True)
    urgency = OneOf(v.URGENCIES, required=True)
    status = OneOf(v.REQUEST_STATUSES, required=True)
    household_id = Id(required=True, allow_none=True)
    volunteer_id = Id(required=True, allow_none=True, metadata={"description": "The assigned volunteer, if any."})


class RequestCreated(RequestEvent):
    """Emitted when a help request is created (by ``create_request`` or opened by the service itself),
    before its first offer goes out."""


class RequestMatched(RequestEvent):
    """Emitted by ``respond_offer`` when a volunteer accepts an offer and is assigned the request."""


class RequestCompleted(RequestEvent):
    """Emitted by ``complete_request`` when the assigned volunteer reports the request done."""


class RequestUnmatched(RequestEvent):
    """Emitted when no eligible volunteer is left to offer the request to."""


class RequestCancelled(RequestEvent):
    """Emitted when a not-yet-done request is cancelled (its pending offers are withdrawn)."""

    reason = Str(required=True, max_length=1000, metadata={"description": "Why it was cancelled."})


class ShiftUnderstaffed(EventPayload):
    """Emitted once per shift, ``VOLUNTEER_UNDERSTAFFED_LEAD_MINUTES`` (120) before it starts, when fewer
    volunteers signed up than it needs."""

    shift_id = Id(required=True)
    post_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The duty post's unit."})
    unit_path = fields.List(Id(), required=True, metadata={"description": UNIT_PATH})
    starts_at = UtcDateTime(required=True)
    needed = fields.Integer(required=True, validate=validate.Range(min=1))
    signed = fields.Integer(required=True, validate=validate.Range(min=0))


EVENTS = {
    "request_created": RequestCreated(),
    "request_matched": RequestMatched(),
    "request_completed": RequestCompleted(),
    "request_unmatched": RequestUnmatched(),
    "request_cancelled": RequestCancelled(),
    "shift_understaffed": ShiftUnderstaffed(),
}
