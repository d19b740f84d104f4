"""Input and output schemas of the legal RPC contract."""

import itertools

from marshmallow import ValidationError as FieldError, fields, validate, validates_schema

from services.legal import vocabulary as v
from shared import replies
from shared.validation import (
    Date,
    EventData,
    Id,
    ListOf,
    OneOf,
    PageSchema,
    Str,
    StrictSchema,
    UtcDateTime,
    WeeklyWindow,
)

# ---- inputs ---------------------------------------------------------------


class CreateStation(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=200)
    address = Str(required=True, max_length=300)


class ListStations(StrictSchema):
    under = Id(load_default=None, allow_none=True)


class RegisterLawyer(StrictSchema):
    name = Str(required=True, max_length=100)
    firm = Str(required=True, max_length=200)
    license_no = Str(required=True, max_length=40, validate=validate.Regexp(r"^[0-9A-Za-z-]{6,40}$"))
    specialties = ListOf(OneOf(v.SPECIALTIES), required=True, min_items=1, max_items=len(v.SPECIALTIES))
    station_ids = ListOf(Id(), required=True, min_items=1, max_items=20)
    resident_id = Id(load_default=None, allow_none=True)


class SetSchedule(StrictSchema):
    lawyer_id = Id(required=True)
    station_id = Id(required=True)
    weekly = fields.List(fields.Nested(WeeklyWindow), required=True, validate=validate.Length(max=42))
    slot_minutes = fields.Integer(load_default=30, strict=True, validate=validate.Range(min=10, max=240))
    buffer_minutes = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=120))

    @validates_schema
    def windows_do_not_overlap(self, data, **kwargs):
        by_day: dict[int, list[tuple[str, str]]] = {}
        for window in data["weekly"]:
            by_day.setdefault(window["weekday"], []).append((window["start"], window["end"]))
        for windows in by_day.values():
            windows.sort()
            if any(earlier[1] > later[0] for earlier, later in itertools.pairwise(windows)):
                raise FieldError("Windows on one weekday overlap.", "weekly")


class AddTimeOff(StrictSchema):
    lawyer_id = Id(required=True)
    starts_at = UtcDateTime(required=True)
    ends_at = UtcDateTime(required=True)
    reason = Str(load_default=None, allow_none=True, max_length=200)

    @validates_schema
    def ordered(self, data, **kwargs):
        if data["ends_at"] <= data["starts_at"]:
            raise FieldError("Must be after starts_at.", "ends_at")


class FindSlots(StrictSchema):
    specialty = OneOf(v.SPECIALTIES, required=True)
    date_from = Date(required=True)
    date_to = Date(required=True)
    station_id = Id(load_default=None, allow_none=True)
    unit_id = Id(load_default=None, allow_none=True)
    limit = fields.Integer(load_default=1000, strict=True, validate=validate.Range(min=1, max=5000))

    @validates_schema
    def bounded(self, data, **kwargs):
        if data["date_to"] < data["date_from"]:
            raise FieldError("Must not be before date_from.", "date_to")
        if (data["date_to"] - data["date_from"]).days > 62:
            raise FieldError("At most 62 days at a time.", "date_to")


class Book(StrictSchema):
    lawyer_id = Id(required=True)
    station_id = Id(required=True)
    starts_at = UtcDateTime(required=True)
    resident_id = Id(required=True)
    topic = Str(required=True, max_length=500)
    mode = OneOf(v.MODES, load_default="in_person")


class Cancel(StrictSchema):
    consultation_id = Id(required=True)
    reason = Str(required=True, max_length=500)


class Reschedule(StrictSchema):
    consultation_id = Id(required=True)
    starts_at = UtcDateTime(required=True)
    lawyer_id = Id(load_default=None, allow_none=True)


class ConsultationRef(StrictSchema):
    consultation_id = Id(required=True)


class Complete(StrictSchema):
    consultation_id = Id(required=True)
    summary = Str(required=True, max_length=8000)
    outcome = OneOf(v.OUTCOMES, required=True)


class ListConsultations(PageSchema):
    resident_id = Id(load_default=None, allow_none=True)
    lawyer_id = Id(load_default=None, allow_none=True)
    station_id = Id(load_default=None, allow_none=True)
    status = OneOf(v.CONSULTATION_STATUSES, load_default=None, allow_none=True)


class OpenMediation(StrictSchema):
    unit_id = Id(required=True)
    category = OneOf(v.CASE_CATEGORIES, required=True)
    party_resident_ids = ListOf(Id(), required=True, min_items=2, max_items=20)
    description = Str(required=True, max_length=4000)
    source_incident_id = Id(load_default=None, allow_none=True)


class AssignMediator(StrictSchema):
    case_id = Id(required=True)
    mediator_id = Id(required=True)
    kind = OneOf(v.MEDIATOR_KINDS, required=True)


class RecordSession(StrictSchema):
    case_id = Id(required=True)
    held_at = UtcDateTime(required=True)
    attendees = ListOf(Str(max_length=100), required=True, min_items=1, max_items=50)
    notes = Str(required=True, max_length=8000)


class CloseMediation(StrictSchema):
    case_id = Id(required=True)
    outcome = OneOf(v.CASE_OUTCOMES, required=True)
    agreement = Str(load_default=None, allow_none=True, max_length=4000)

    @validates_schema
    def agreement_text(self, data, **kwargs):
        if data["outcome"] == "agreement" and not data["agreement"]:
            raise FieldError("Required when the outcome is agreement.", "agreement")


class CaseRef(StrictSchema):
    case_id = Id(required=True)


class LegalHold(StrictSchema):
    """A record to put under a legal hold: while held, an erasure of a resident in it is deferred."""

    record = OneOf(v.HOLD_RECORDS, required=True, metadata={"description": "consultation or case (mediation)."})
    record_id = Id(required=True)
    reason = Str(
        required=True, min_length=3, max_length=500, metadata={"description": "Why the law requires keeping it."}
    )


class ReleaseLegalHold(StrictSchema):
    """A held record to release: every erasure deferred on it is applied at once."""

    record = OneOf(v.HOLD_RECORDS, required=True, metadata={"description": "consultation or case (mediation)."})
    record_id = Id(required=True)
    reason = Str(required=True, min_length=3, max_length=500, metadata={"description": "Why it may go now."})


class ListCases(PageSchema):
    under = Id(load_default=None, allow_none=True)
    status = OneOf(v.CASE_STATUSES, load_default=None, allow_none=True)


# ---- events consumed from other services ---------------------------------


class IncidentReported(EventData):
    incident_id = Id(required=True)
    unit_id = Id(required=True)
    category = Str(required=True, max_length=40)
    party_resident_ids = fields.List(Id(), load_default=list, validate=validate.Length(max=20))


# ---- outputs --------------------------------------------------------------


class StationOut(StrictSchema):
    """A legal station: where lawyers receive residents of the street or community it serves."""

    id = Id()
    unit_id = Id()
    name = fields.String()
    address = fields.String()


class LawyerOut(StrictSchema):
    """A lawyer as registered, with the stations they serve (in the order the registrar named them)."""

    id = Id()
    name = fields.String()
    firm = fields.String()
    license_no = fields.String()
    specialties = fields.List(fields.String())
    station_ids = fields.List(Id())


class ScheduleOut(StrictSchema):
    """A lawyer's weekly plan at one station."""

    lawyer_id = Id()
    station_id = Id()
    weekly = fields.List(fields.Nested(WeeklyWindow))
    slot_minutes = fields.Integer()
    buffer_minutes = fields.Integer()


class TimeOffOut(StrictSchema):
    """A lawyer's time off: no slot overlapping it is offered or booked."""

    id = Id()
    lawyer_id = Id()
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()
    reason = fields.String(allow_none=True)


class SlotOut(StrictSchema):
    """A free slot: a lawyer at a station from ``starts_at`` to ``ends_at``."""

    lawyer_id = Id()
    lawyer_name = fields.String()
    station_id = Id()
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()


class ConsultationOut(StrictSchema):
    """A consultation, without its confidential summary."""

    id = Id()
    lawyer_id = Id()
    station_id = Id()
    resident_id = Id()
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()
    topic = fields.String()
    mode = fields.String()
    status = fields.String()
    outcome = fields.String(allow_none=True)
    cancel_reason = fields.String(allow_none=True)


class ConsultationWithSummaryOut(ConsultationOut):
    """A completed consultation as its lawyer, its resident or an admin reads it: with the summary (each
    read audited)."""

    summary = fields.String()


class CaseOut(StrictSchema):
    """A mediation case."""

    id = Id()
    unit_id = Id()
    category = fields.String()
    description = fields.String()
    party_resident_ids = fields.List(Id())
    source_incident_id = Id(allow_none=True)
    status = fields.String()
    outcome = fields.String(allow_none=True)
    agreement = fields.String(allow_none=True)
    opened_by = fields.String()
    opened_at = UtcDateTime()
    closed_at = UtcDateTime(allow_none=True)


class PartyOut(StrictSchema):
    """A party to a dispute: the phone masked (138****5678) unless the caller may contact the parties."""

    resident_id = Id()
    household_id = Id()
    name = fields.String()
    phone = fields.String()


class MediatorOut(StrictSchema):
    """A mediator assigned to a case: a lawyer (``judicial``) or a community resident (``social``)."""

    mediator_id = fields.String()
    kind = fields.String()


class CaseSessionOut(StrictSchema):
    """A mediation session held on a case."""

    held_at = UtcDateTime()
    attendees = fields.List(fields.String())
    notes = fields.String()


class CaseDetailOut(CaseOut):
    """A mediation case with its parties, mediators and sessions (in the order they were held)."""

    parties = fields.List(fields.Nested(PartyOut))
    mediators = fields.List(fields.Nested(MediatorOut))
    sessions = fields.List(fields.Nested(CaseSessionOut))


class RecordedSessionOut(StrictSchema):
    """A mediation session as recorded (its notes are read back with the case)."""

    id = Id()
    case_id = Id()
    held_at = UtcDateTime()
    attendees = fields.List(fields.String())


class LegalHoldOut(StrictSchema):
    """A record's legal hold as it stands."""

    record = fields.String(metadata={"description": "consultation or case."})
    record_id = Id()
    held = fields.Boolean()
    reason = fields.String(allow_none=True)
    held_by = fields.String(allow_none=True, metadata={"description": "Who set the hold (system:legal: automatic)."})
    held_at = UtcDateTime(allow_none=True)
    erasure_deferred = fields.Boolean(metadata={"description": "An erasure waits for the hold's release."})
    deferred_erasure_ids = fields.List(Id(), metadata={"description": "The grid's erasures waiting."})


STATION = StationOut()
STATIONS = StationOut(many=True)
LAWYER = LawyerOut()
SCHEDULE = ScheduleOut()
TIME_OFF = TimeOffOut()
SLOTS = SlotOut(many=True)
CONSULTATION = ConsultationOut()
CONSULTATION_WITH_SUMMARY = ConsultationWithSummaryOut()
# The summary only for those bookings.read_summary lets read it (it is None for everyone else).
CONSULTATION_READ = replies.OneOf(
    CONSULTATION,
    CONSULTATION_WITH_SUMMARY,
    choose=lambda caller, read: CONSULTATION if read.summary is None else CONSULTATION_WITH_SUMMARY,
)
CONSULTATION_PAGE = replies.page(CONSULTATION)
CASE = CaseOut()
CASE_DETAIL = CaseDetailOut()
CASE_PAGE = replies.page(CASE)
RECORDED_SESSION = RecordedSessionOut()
LEGAL_HOLD = LegalHoldOut()
