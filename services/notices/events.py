"""Payloads of the events the notices service publishes on the ``notices.events`` topic exchange.

Each event travels in the CloudEvents-shaped envelope of ``shared.outbox.envelope``; these
schemas describe its ``data`` (documented in docs/asyncapi.yaml by ``tools.asyncapi``): ids as
strings of digits. Titles, bodies and phone numbers never travel in an event.
"""

from marshmallow import EXCLUDE, Schema, fields, validate

from services.notices import vocabulary as v
from shared.validation import Id, OneOf


class EventPayload(Schema):
    """Consumers tolerate fields added later: unknown fields are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE


class NoticePublished(EventPayload):
    """Emitted when an approved notice is published: its audience is resolved and its deliveries are queued
    (a ``cancel`` notice is published once it has cancelled the notice it references)."""

    notice_id = Id(required=True)
    msg_type = OneOf(v.MSG_TYPES, required=True)
    category = OneOf(v.CATEGORIES, required=True)
    severity = OneOf(v.SEVERITIES, required=True)
    urgency = OneOf(v.URGENCIES, required=True)
    references = Id(
        required=True,
        allow_none=True,
        metadata={"description": "The earlier notice an ``update`` or ``cancel`` refers to."},
    )
    audience_unit_ids = fields.List(
        Id(), required=True, metadata={"description": "The units whose residents the notice reaches."}
    )
    recipient_count = fields.Integer(required=True, validate=validate.Range(min=0))
    requires_ack = fields.Boolean(required=True)


class NoticeCancelled(EventPayload):
    """Emitted when a published ``cancel`` notice cancels the notice it references (its queued deliveries
    stop)."""

    notice_id = Id(required=True, metadata={"description": "The notice that was cancelled."})
    cancelled_by = Id(required=True, metadata={"description": "The ``cancel`` notice that cancelled it."})


class UnacknowledgedResident(EventPayload):
    """A vulnerable recipient who has not acknowledged the notice."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True, metadata={"description": "The resident's small grid."})


class NoticeUnacknowledged(EventPayload):
    """Emitted once a notice's ``ack_deadline`` passes, listing its vulnerable recipients (tagged
    ``elderly_alone``, ``disabled``, ``chronic_illness`` or ``quarantined``) without an acknowledgement,
    in chunks of up to 500 residents (one event per chunk)."""

    notice_id = Id(required=True)
    chunk = fields.Integer(
        required=True, validate=validate.Range(min=1), metadata={"description": "This event's chunk, from 1."}
    )
    chunks = fields.Integer(
        required=True, validate=validate.Range(min=1), metadata={"description": "How many chunks the list came in."}
    )
    residents = fields.List(
        fields.Nested(UnacknowledgedResident), required=True, validate=validate.Length(min=1, max=500)
    )


EVENTS = {
    "notice_published": NoticePublished(),
    "notice_cancelled": NoticeCancelled(),
    "notice_unacknowledged": NoticeUnacknowledged(),
}
