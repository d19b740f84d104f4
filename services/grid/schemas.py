"""Input and output schemas of the grid RPC contract."""

import re

from marshmallow import ValidationError as FieldError, fields, missing, pre_dump, validate, validates_schema

from services.grid import vocabulary as v
from services.grid.idnumbers import birth_date_of, id_number_problem, normalise_id_number
from shared.paths import path_ids
from shared.validation import (
    EARLIEST_BIRTH_DATE,
    Date,
    EventData,
    Id,
    ListOf,
    OneOf,
    PageSchema,
    Phone,
    Str,
    StrictSchema,
    Text,
    UtcDateTime,
)

# ---- inputs ---------------------------------------------------------------


class CreateUnit(StrictSchema):
    parent_id = Id(required=True, allow_none=True)
    level = OneOf(v.LEVELS, required=True)
    name = Str(required=True, max_length=200)
    code = Str(load_default=None, allow_none=True, max_length=50)


class NoArguments(StrictSchema):
    """A method that takes no arguments (any argument given is refused, naming it)."""


class UnitRef(StrictSchema):
    unit_id = Id(required=True)


class ListUnits(PageSchema):
    under = Id(load_default=None, allow_none=True)
    level = OneOf(v.LEVELS, load_default=None, allow_none=True)
    include_closed = fields.Boolean(load_default=False)


class MoveUnit(StrictSchema):
    unit_id = Id(required=True)
    new_parent_id = Id(required=True)


class SetPartyOrg(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=200)


class AssignStaff(StrictSchema):
    unit_id = Id(required=True)
    user_id = Str(required=True, max_length=100)
    role = OneOf(v.STAFF_ROLES, required=True)
    name = Str(required=True, max_length=100)


class Address(StrictSchema):
    compound = Str(required=True, max_length=100)
    building = Str(required=True, max_length=30)
    entrance = Str(required=True, max_length=30)
    room = Str(required=True, max_length=30)


class RegisterHousehold(StrictSchema):
    unit_id = Id(required=True)
    address = fields.Nested(Address, required=True)


class IdNumber(Text):
    def _deserialize(self, value, attr, data, **kwargs):
        value = normalise_id_number(super()._deserialize(value, attr, data, **kwargs))
        problem = id_number_problem(value)
        if problem:
            raise FieldError(problem)
        return value


class RegisterResident(StrictSchema):
    household_id = Id(required=True)
    name = Str(required=True, max_length=100)
    id_number = IdNumber(required=True)
    phone = Phone(required=True)
    birth_date = Date(required=True, earliest=EARLIEST_BIRTH_DATE)

    @validates_schema
    def birth_date_matches_id(self, data, **kwargs):
        if data["birth_date"] != birth_date_of(data["id_number"]):
            raise FieldError("Does not match the birth date in id_number.", "birth_date")


class ResidentRef(StrictSchema):
    resident_id = Id(required=True)


class MoveHousehold(StrictSchema):
    household_id = Id(required=True)
    unit_id = Id(required=True)


class TagResident(StrictSchema):
    resident_id = Id(required=True)
    tag = OneOf(v.TAGS, required=True)
    until = UtcDateTime(load_default=None, allow_none=True)
    note = Str(load_default=None, allow_none=True, max_length=500)


class UntagResident(StrictSchema):
    resident_id = Id(required=True)
    tag = OneOf(v.TAGS, required=True)


class ResidentFilter(StrictSchema):
    under = Id(required=True)
    tags_any = ListOf(OneOf(v.TAGS), load_default=None, allow_none=True, max_items=len(v.TAGS))
    tags_all = ListOf(OneOf(v.TAGS), load_default=None, allow_none=True, max_items=len(v.TAGS))


class FindResidents(ResidentFilter, PageSchema):
    # Keyset paging for long walks (audience resolution): rows with id > after, no OFFSET.
    after = Id(load_default=None, allow_none=True)
    page_size = fields.Integer(load_default=100, strict=True, validate=validate.Range(min=1, max=1000))


class FindResidentColumns(ResidentFilter):
    # Keyset only: rows with id > after. Large pages: a walk over a street is ~10-20 calls.
    after = Id(load_default=None, allow_none=True)
    page_size = fields.Integer(load_default=5000, strict=True, validate=validate.Range(min=1, max=10_000))
    phones = fields.Boolean(load_default=False, metadata={"description": "Add phones_enc (pii callers only)."})


class GetResidents(StrictSchema):
    resident_ids = ListOf(Id(), required=True, min_items=1, max_items=1000)


class StartScreening(StrictSchema):
    under = Id(required=True)
    title = Str(required=True, max_length=200)
    starts_on = Date(required=True)
    ends_on = Date(required=True)

    @validates_schema
    def ends_after_start(self, data, **kwargs):
        if data["ends_on"] < data["starts_on"]:
            raise FieldError("Must not be before starts_on.", "ends_on")


class RecordVisit(StrictSchema):
    campaign_id = Id(required=True)
    household_id = Id(required=True)
    outcome = OneOf(v.VISIT_OUTCOMES, required=True)
    note = Str(load_default=None, allow_none=True, max_length=1000)


class ScreeningProgress(StrictSchema):
    campaign_id = Id(required=True)
    level = OneOf(v.LEVELS, load_default=None, allow_none=True)


class ReportIncident(StrictSchema):
    unit_id = Id(required=True)
    category = OneOf(v.INCIDENT_CATEGORIES, required=True)
    description = Str(required=True, max_length=4000)
    party_resident_ids = ListOf(Id(), load_default=None, allow_none=True, max_items=20)


class EscalateIncident(StrictSchema):
    incident_id = Id(required=True)
    reason = Str(required=True, max_length=1000)


class ResolveIncident(StrictSchema):
    incident_id = Id(required=True)
    resolution = Str(required=True, max_length=4000)
    public_note = Str(
        load_default=None,
        allow_none=True,
        max_length=2000,
        metadata={"description": "A note for residents following it and the public list (``status_notes``)."},
    )


class HouseholdRef(StrictSchema):
    household_id = Id(required=True)


class IncidentRef(StrictSchema):
    incident_id = Id(required=True)


class ListIncidents(PageSchema):
    under = Id(required=True)
    status = OneOf(v.INCIDENT_STATUSES, load_default=None, allow_none=True)
    source = OneOf(
        (*v.INCIDENT_SOURCES, "any"),
        load_default="any",
        metadata={"description": "Only residents' reports, staff's, or those raised for a service; ``any``: all."},
    )


# ---- residents' reports (services/grid/reports.py) ------------------------

# An opaque photo reference: an https URL, or a URL-safe token (a key in a photo store); no whitespace.
_URL_CHARACTERS = re.compile(r"^https://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._~-]*$")


def _photo_ref(value):
    if not (_URL_CHARACTERS.match(value) or _TOKEN.match(value)):
        raise FieldError("Must be an https URL or a URL-safe token (letters, digits, . _ ~ -), without spaces.")


class ReportProblem(StrictSchema):
    service_code = OneOf(
        v.INCIDENT_CATEGORIES, required=True, metadata={"description": "The problem's category (Open311 service)."}
    )
    description = Str(required=True, max_length=2000)
    location_note = Str(
        load_default=None,
        allow_none=True,
        max_length=200,
        metadata={"description": "Where in the compound (e.g. 'by the east gate'); not an address."},
    )
    photo_ref = Str(
        load_default=None,
        allow_none=True,
        max_length=500,
        validate=_photo_ref,
        metadata={"description": "A reference to a photo already uploaded elsewhere: https URL or token."},
    )


class MyReports(PageSchema):
    status = OneOf(("open", "closed"), load_default=None, allow_none=True)
    page_size = fields.Integer(load_default=20, strict=True, validate=validate.Range(min=1, max=100))


class ReportRef(StrictSchema):
    service_request_id = Id(required=True)


class ReopenReport(ReportRef):
    reason = Str(load_default=None, allow_none=True, max_length=1000)


class MergeReports(StrictSchema):
    primary_id = Id(required=True, metadata={"description": "The report that stays open."})
    duplicate_id = Id(required=True, metadata={"description": "The report closed as its duplicate."})


class AddPublicNote(StrictSchema):
    incident_id = Id(required=True)
    note = Str(required=True, max_length=2000)


class PublicReports(PageSchema):
    unit_id = Id(required=True, metadata={"description": "Any unit: the public reports under it."})
    status = OneOf(("open", "closed"), load_default=None, allow_none=True)
    service_code = OneOf(v.INCIDENT_CATEGORIES, load_default=None, allow_none=True)


# ---- events consumed from other services ---------------------------------


class HelpRequestUnmatched(EventData):
    request_id = Id(required=True)
    unit_id = Id(required=True)
    kind = Str(required=True, max_length=40)
    urgency = Str(required=True, max_length=20)


class ShiftUnderstaffed(EventData):
    shift_id = Id(required=True)
    post_id = Id(required=True)
    unit_id = Id(required=True)
    starts_at = Str(required=True, max_length=40)
    needed = fields.Integer(required=True, strict=True)
    signed = fields.Integer(required=True, strict=True)


class MediationClosed(EventData):
    case_id = Id(required=True)
    source_incident_id = Id(required=True, allow_none=True)
    outcome = Str(required=True, max_length=40)


# ---- outputs --------------------------------------------------------------


class UnitPath(fields.List):
    """A materialised path (``/1/5/23/``) dumped as its unit ids, district first."""

    def __init__(self, **kwargs):
        super().__init__(Id(), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return super()._serialize(None if value is None else path_ids(value), attr, obj, **kwargs)


class Inline(fields.Nested):
    """A nested object made of the parent's own attributes (a household's address columns); null
    where ``present(parent)`` is false."""

    def __init__(self, nested, present=None, **kwargs):
        super().__init__(nested, **kwargs)
        self.present = present

    def get_value(self, obj, attr, accessor=None, default=missing):
        return obj if self.present is None or self.present(obj) else None


class LookedUp(fields.String):
    """The value ``table`` gives the attribute (documented as the table's values)."""

    def __init__(self, table, **kwargs):
        super().__init__(validate=validate.OneOf(sorted(set(table.values()))), **kwargs)
        self.table = table

    def _serialize(self, value, attr, obj, **kwargs):
        return super()._serialize(self.table[value], attr, obj, **kwargs)


class PartyOrgOut(StrictSchema):
    """A unit's Party organisation: its name, and its type, which the unit's level sets."""

    name = fields.String(attribute="party_org_name")
    type = LookedUp(v.PARTY_ORG_TYPES, attribute="level")


class UnitOut(StrictSchema):
    id = Id()
    parent_id = Id(allow_none=True)
    level = fields.String()
    name = fields.String()
    code = fields.String(allow_none=True)
    path = UnitPath()
    closed = fields.Boolean()
    party_org = Inline(PartyOrgOut, present=lambda unit: unit.party_org_name, allow_none=True)


class StaffOut(StrictSchema):
    id = Id()
    unit_id = Id()
    user_id = fields.String()
    role = fields.String()
    name = fields.String()
    assigned_at = UtcDateTime()


class HouseholdOut(StrictSchema):
    id = Id()
    unit_id = Id()
    address = Inline(Address)


class HouseholdDetailOut(HouseholdOut):
    """A household with its unit path and members (ids only: no names, no tags)."""

    unit_path = UnitPath()
    resident_ids = fields.List(Id())


class TagOut(StrictSchema):
    tag = fields.String()
    until = UtcDateTime(allow_none=True)
    note = fields.String(allow_none=True)


class TagSetOut(TagOut):
    """The tag as it now stands on the resident; ``created``: the resident did not carry it before."""

    resident_id = Id()
    created = fields.Boolean()


class TagRemovedOut(StrictSchema):
    """The tag was taken off the resident."""

    resident_id = Id()
    tag = fields.String()
    removed = fields.Constant(True)


class ResidentOut(StrictSchema):
    """Built from a ResidentView: id_number and phone arrive already masked or revealed."""

    id = Id()
    household_id = Id()
    unit_id = Id()
    name = fields.String()
    id_number = fields.String()
    phone = fields.String()
    birth_date = fields.Date()
    tags = fields.List(fields.Nested(TagOut))


class ResidentSummaryOut(StrictSchema):
    """A page row: enough to reach the resident (phone masked unless pii), no ID number."""

    id = Id()
    household_id = Id()
    unit_id = Id()
    unit_path = UnitPath()
    name = fields.String()
    phone = fields.String()
    tags = fields.List(fields.String())


class ResidentPage(StrictSchema):
    """One page of residents in id order; ``has_more``: a next page exists, fetched with ``after`` set
    to ``next_after`` (null on the last page)."""

    items = fields.List(fields.Nested(ResidentSummaryOut))
    page = fields.Integer()
    page_size = fields.Integer()
    has_more = fields.Boolean()
    next_after = Id(allow_none=True)


class Column(fields.List):
    """A column of a compact page: its values go out as the domain built them (ints, strings, lists
    of strings), not dumped one at a time — a page holds thousands."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else list(value)


class ResidentColumnsOut(StrictSchema):
    """One keyset page of residents in id order, as parallel columns (row i is ``ids[i]``,
    ``household_ids[i]``, …); ``paths`` maps each small grid in ``unit_ids`` to its path, district first.
    ``phones_enc``: each phone as the grid stores it (AES-256-GCM under the suite's PII key, context
    ``phone``), hex — only when asked for by a ``pii`` caller, else null. ``has_more``: fetch the next
    page with ``after`` set to ``next_after`` (null on the last)."""

    ids = Column(fields.Integer())
    household_ids = Column(fields.Integer())
    unit_ids = Column(fields.Integer())
    paths = fields.Dict(keys=fields.String(), values=Column(fields.String()))
    tags = Column(fields.List(fields.String()))
    phones_enc = Column(fields.String(), allow_none=True)
    has_more = fields.Boolean()
    next_after = fields.Integer(allow_none=True)


class ResidentsFound(StrictSchema):
    """The residents found, in id order; ``missing``: the ids asked for that no resident has."""

    items = fields.List(fields.Nested(ResidentSummaryOut))
    missing = fields.List(Id())


class ResidentCount(StrictSchema):
    """How many residents match the filter."""

    count = fields.Integer()

    @pre_dump
    def from_number(self, count, **kwargs):
        return {"count": count}


class CampaignOut(StrictSchema):
    id = Id()
    unit_id = Id()
    title = fields.String()
    starts_on = fields.Date()
    ends_on = fields.Date()
    created_by = fields.String()


class VisitOut(StrictSchema):
    id = Id()
    campaign_id = Id()
    household_id = Id()
    outcome = fields.String()
    visited_by = fields.String()
    visited_at = UtcDateTime()


# One count per outcome of the vocabulary, so the two cannot drift apart.
VisitOutcomeCounts = type(
    "VisitOutcomeCounts",
    (StrictSchema,),
    {
        "__doc__": "Households by the outcome of their latest visit.",
        "__module__": __name__,
        **{outcome: fields.Integer() for outcome in v.VISIT_OUTCOMES},
    },
)


class UnitProgressOut(StrictSchema):
    """One unit's share of a campaign."""

    unit_id = Id()
    name = fields.String()
    level = fields.String()
    households = fields.Integer()
    visited = fields.Integer()
    outcomes = fields.Nested(VisitOutcomeCounts)
    coverage_percent = fields.Float()


class ScreeningProgressOut(StrictSchema):
    """A campaign's progress over its whole area, then per unit at ``level``: households, households
    visited, latest outcomes, coverage percent (visited of households)."""

    campaign_id = Id()
    title = fields.String()
    level = fields.String()
    households = fields.Integer()
    visited = fields.Integer()
    outcomes = fields.Nested(VisitOutcomeCounts)
    coverage_percent = fields.Float()
    units = fields.List(fields.Nested(UnitProgressOut))


class IncidentStepOut(StrictSchema):
    action = fields.String()
    from_level = fields.String(allow_none=True)
    to_level = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    actor = fields.String()
    at = UtcDateTime()


class IncidentOut(StrictSchema):
    id = Id()
    unit_id = Id()
    category = fields.String()
    description = fields.String()
    department = fields.String()
    party_resident_ids = fields.List(Id())
    status = fields.String()
    handling_unit_id = Id(allow_none=True)
    handling_level = fields.String()
    escalations = fields.Integer()
    due_at = UtcDateTime(allow_none=True)
    resolution = fields.String(allow_none=True)
    reported_by = fields.String()
    reported_at = UtcDateTime()
    resolved_at = UtcDateTime(allow_none=True)
    origin = fields.String(allow_none=True)
    source = fields.String(metadata={"description": "resident, staff or service."})
    reporter_resident_id = Id(allow_none=True, metadata={"description": "The resident who reported it."})
    service_code = fields.String(allow_none=True)
    location_note = fields.String(allow_none=True)
    photo_ref = fields.String(allow_none=True)
    public = fields.Boolean()
    status_notes = fields.String(allow_none=True, metadata={"description": "The latest public note."})
    merged_into_id = Id(allow_none=True)
    updated_at = UtcDateTime(allow_none=True)
    confirmed_at = UtcDateTime(allow_none=True)
    reopened = fields.Integer()


class IncidentDetailOut(IncidentOut):
    """An incident with its trail: reported, each escalation, resolved (oldest first)."""

    steps = fields.List(fields.Nested(IncidentStepOut))


class ReportStepOut(StrictSchema):
    """A step of a report as residents see it: staff by role only, notes only where public."""

    action = fields.String()
    actor = fields.String(metadata={"description": "resident, staff or system."})
    by_you = fields.Boolean()
    from_level = fields.String(allow_none=True)
    to_level = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    at = UtcDateTime()


class ReportOut(StrictSchema):
    """A report a resident follows, in Open311's names: ``status`` open or closed, ``detailed_status``
    open, escalated, resolved or merged; ``relation`` reporter (your report: its description, location
    and photo shown) or follower (a report yours was merged into); ``awaiting_confirmation``: resolved,
    and you may confirm or reopen it until ``confirm_until``."""

    service_request_id = Id()
    service_code = fields.String()
    service_name = fields.String()
    status = fields.String()
    detailed_status = fields.String()
    status_notes = fields.String(allow_none=True)
    agency_responsible = fields.String()
    handling_level = fields.String()
    requested_datetime = UtcDateTime()
    updated_datetime = UtcDateTime()
    expected_datetime = UtcDateTime(allow_none=True)
    relation = fields.String()
    description = fields.String(allow_none=True)
    location_note = fields.String(allow_none=True)
    photo_ref = fields.String(allow_none=True)
    merged_into = Id(allow_none=True)
    awaiting_confirmation = fields.Boolean()
    confirm_until = UtcDateTime(allow_none=True)
    confirmed_datetime = UtcDateTime(allow_none=True)
    reopened = fields.Integer()
    steps = fields.List(fields.Nested(ReportStepOut))


class PublicReportOut(StrictSchema):
    """A public report: category, status, dates, department, public notes; ``address`` is its small
    grid's name. No resident's text and nobody's identity."""

    service_request_id = Id()
    service_code = fields.String()
    service_name = fields.String()
    status = fields.String()
    detailed_status = fields.String()
    status_notes = fields.String(allow_none=True)
    agency_responsible = fields.String()
    requested_datetime = UtcDateTime()
    updated_datetime = UtcDateTime()
    expected_datetime = UtcDateTime(allow_none=True)
    unit_id = Id()
    address = fields.String()
    age_days = fields.Integer()


UNIT = UnitOut()
UNITS = UnitOut(many=True)
STAFF = StaffOut()
STAFF_LIST = StaffOut(many=True)
HOUSEHOLD = HouseholdOut()
HOUSEHOLD_DETAIL = HouseholdDetailOut()
RESIDENT = ResidentOut()
CAMPAIGN = CampaignOut()
VISIT = VisitOut()
INCIDENT = IncidentOut()
REPORT = ReportOut()


# ---- the data lifecycle (PIPL): tag policies, erasure, access log ----------


class EraseResident(StrictSchema):
    resident_id = Id(required=True)
    reason = Str(required=True, max_length=500, metadata={"description": "Why (kept in the audit trail)."})


class ErasureRef(StrictSchema):
    erasure_id = Id(required=True)


class ListErasures(PageSchema):
    under = Id(required=True)
    status = OneOf(("pending", "done", "cancelled"), load_default=None, allow_none=True)


class AccessLogArgs(PageSchema):
    resident_id = Id(required=True)


class SensitiveDataRead(EventData):
    """legal's ``sensitive_data_read``: a read of a resident's data in legal (ids and codes only)."""

    resident_id = Id(required=True)
    reader = Str(required=True, max_length=100)
    reader_roles = ListOf(Str(max_length=30), required=True, max_items=10, unique=False)
    what = Str(required=True, max_length=60)
    record = Str(required=True, max_length=120)
    purpose = Str(required=True, max_length=200)
    at = UtcDateTime(required=True)


class TagPolicyOut(StrictSchema):
    """Why the grid keeps a tag and how long: ``retention_seconds`` a released tag is kept before it is
    purged in every service; ``max_age_seconds`` a tag set without ``until`` may stand (null: no limit)."""

    tag = fields.String()
    purpose = fields.String()
    retention_seconds = fields.Float(attribute="retention")
    max_age_seconds = fields.Float(attribute="max_age", allow_none=True)


class ErasureOut(StrictSchema):
    """An erasure request: ``status`` pending_approval (another manager must approve it), erased, or
    cancelled; ``household_emptied``: the erasure left the household without residents (its address
    erased too), null until erased."""

    erasure_id = Id()
    resident_id = Id()
    status = fields.String()
    reason = fields.String()
    requested_by = fields.String()
    requested_at = UtcDateTime()
    approved_by = fields.String(allow_none=True)
    approved_at = UtcDateTime(allow_none=True)
    approval_reason = fields.String(allow_none=True)
    cancelled_by = fields.String(allow_none=True)
    cancelled_at = UtcDateTime(allow_none=True)
    household_emptied = fields.Boolean(allow_none=True)


class AccessLogEntryOut(StrictSchema):
    """A read of the resident's data: when, by whom (their id and roles), through which service and
    method, what (resident_record, resident_contact, phones, access_log, consultation_summary,
    case_party_phone, …), why, and the record read; ``scope``: the unit path of a bulk read of every
    resident under a unit (null for a read of this resident)."""

    id = Id()
    at = UtcDateTime()
    service = fields.String()
    method = fields.String()
    what = fields.String()
    reader = fields.String()
    reader_roles = fields.List(fields.String())
    purpose = fields.String()
    record = fields.String(allow_none=True)
    scope = UnitPath(allow_none=True)


TAG_POLICIES = TagPolicyOut(many=True)
ERASURE = ErasureOut()
