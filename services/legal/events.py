"""Payloads of the events the legal service publishes on the ``legal.events`` topic exchange.

Each event travels in the CloudEvents-shaped envelope of ``shared.outbox.envelope``; these
schemas describe its ``data`` (documented in docs/asyncapi.yaml by ``tools.asyncapi``): ids as
strings of digits, unit paths as lists of id strings from the district down, timestamps as
ISO-8601 strings. Topics, summaries and agreements never travel in an event.
"""

from marshmallow import EXCLUDE, Schema, fields

from services.legal import vocabulary as v
from shared.validation import Id, OneOf, Str, UtcDateTime


class EventPayload(Schema):
    """Consumers tolerate fields added later: unknown fields are ignored, not refused."""

    class Meta:
        unknown = EXCLUDE


class ConsultationEvent(EventPayload):
    """A consultation's state after the change."""

    consultation_id = Id(required=True)
    lawyer_id = Id(required=True)
    station_id = Id(required=True)
    resident_id = Id(required=True)
    starts_at = UtcDateTime(required=True)
    status = OneOf(v.CONSULTATION_STATUSES, required=True)


class ConsultationBooked(ConsultationEvent):
    """Emitted by ``book`` when a consultation slot is booked (not again for a repeated idempotency key)."""


class ConsultationCancelled(ConsultationEvent):
    """Emitted by ``cancel`` when a booked consultation is cancelled."""


class ConsultationRescheduled(ConsultationEvent):
    """Emitted by ``reschedule`` when a booked consultation moves; ``starts_at`` (and ``lawyer_id``) are
    the new ones."""


class ConsultationCompleted(ConsultationEvent):
    """Emitted by ``complete`` when the lawyer closes a consultation with its outcome."""

    outcome = OneOf(v.OUTCOMES, required=True)


class MediationEvent(EventPayload):
    """A mediation case's state after the change."""

    case_id = Id(required=True)
    unit_id = Id(required=True)
    unit_path = fields.List(
        Id(), required=True, metadata={"description": "Unit ids from the district down to the case's unit."}
    )
    category = OneOf(v.CASE_CATEGORIES, required=True)
    status = OneOf(v.CASE_STATUSES, required=True)
    party_resident_ids = fields.List(Id(), required=True)
    source_incident_id = Id(
        required=True, allow_none=True, metadata={"description": "The grid incident the case was opened from, if any."}
    )


class MediationOpened(MediationEvent):
    """Emitted when a mediation case is opened: by ``open_mediation``, or for a dispute reported at the grid."""


class MediationClosed(MediationEvent):
    """Emitted by ``close_mediation`` when a case closes with its outcome."""

    outcome = OneOf(v.CASE_OUTCOMES, required=True)


class SensitiveDataRead(EventPayload):
    """Emitted each time a resident's sensitive data is shown: a consultation summary read by its lawyer,
    its resident or an admin (``get_consultation``), and a mediation case party's phone shown unmasked
    (``get_case`` to an assigned mediator or a ``pii`` caller: one event per party shown). The grid keeps
    them in the resident's access log (``grid.access_log``). Ids and codes only: no name, no text."""

    resident_id = Id(required=True, metadata={"description": "Whose data was read."})
    reader = Str(required=True, max_length=100, metadata={"description": "The reader's token subject."})
    reader_roles = fields.List(Str(max_length=40), required=True)
    what = OneOf(("consultation_summary", "case_party_phone"), required=True)
    record = Str(required=True, max_length=40, metadata={"description": "consultation/<id> or case/<id>."})
    purpose = Str(required=True, max_length=200, metadata={"description": "Why it was shown (a fixed phrase)."})
    at = UtcDateTime(required=True)


EVENTS = {
    "consultation_booked": ConsultationBooked(),
    "consultation_cancelled": ConsultationCancelled(),
    "consultation_rescheduled": ConsultationRescheduled(),
    "consultation_completed": ConsultationCompleted(),
    "mediation_opened": MediationOpened(),
    "mediation_closed": MediationClosed(),
    "sensitive_data_read": SensitiveDataRead(),
}
