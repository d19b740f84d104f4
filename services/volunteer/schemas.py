"""Input and output schemas of the volunteer RPC contract."""

from marshmallow import fields, validate

from services.volunteer import vocabulary as v
from services.volunteer.requests import staff_reaches
from shared import replies
from shared.validation import (
    Date,
    EventData,
    Id,
    ListOf,
    OneOf,
    PageSchema,
    Phone,
    Str,
    StrictSchema,
    UtcDateTime,
    WeeklyWindow,
)


def availability_field(**kwargs):
    return fields.List(fields.Nested(WeeklyWindow), validate=validate.Length(max=42), **kwargs)


class RegisterVolunteer(StrictSchema):
    name = Str(required=True, max_length=100)
    phone = Phone(required=True)
    home_unit_id = Id(required=True)
    skills = ListOf(OneOf(v.SKILLS), required=True, min_items=1, max_items=len(v.SKILLS))
    availability = availability_field(required=True)
    max_active_tasks = fields.Integer(load_default=3, strict=True, validate=validate.Range(min=1, max=20))
    resident_id = Id(load_default=None, allow_none=True)
    party_member = fields.Boolean(load_default=False)


class UpdateVolunteer(StrictSchema):
    volunteer_id = Id(required=True)
    name = Str(max_length=100)
    phone = Phone()
    home_unit_id = Id()
    skills = ListOf(OneOf(v.SKILLS), min_items=1, max_items=len(v.SKILLS))
    availability = availability_field()
    max_active_tasks = fields.Integer(strict=True, validate=validate.Range(min=1, max=20))
    party_member = fields.Boolean()


class VolunteerRef(StrictSchema):
    volunteer_id = Id(required=True)


class ListVolunteers(PageSchema):
    under = Id(required=True)
    skill = OneOf(v.SKILLS, load_default=None, allow_none=True)


class SetActive(StrictSchema):
    volunteer_id = Id(required=True)
    active = fields.Boolean(required=True)


class MakePledge(StrictSchema):
    volunteer_id = Id(required=True)
    text = Str(required=True, max_length=500)
    due_on = Date(required=True)


class FulfilPledge(StrictSchema):
    pledge_id = Id(required=True)
    note = Str(required=True, max_length=1000)


class ListPledges(StrictSchema):
    under = Id(required=True)
    status = OneOf(v.PLEDGE_STATUSES, load_default=None, allow_none=True)


class CreatePost(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=200)
    location = Str(required=True, max_length=300)


class AddShift(StrictSchema):
    post_id = Id(required=True)
    starts_at = UtcDateTime(required=True)
    ends_at = UtcDateTime(required=True)
    needed = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=500))


class ShiftVolunteer(StrictSchema):
    shift_id = Id(required=True)
    volunteer_id = Id(required=True)


class Coverage(StrictSchema):
    under = Id(required=True)
    date = Date(required=True)


class CreateRequest(StrictSchema):
    unit_id = Id(required=True)
    kind = OneOf(v.REQUEST_KINDS, required=True)
    details = Str(required=True, max_length=2000)
    urgency = OneOf(v.URGENCIES, required=True)
    needed_by = UtcDateTime(required=True)
    household_id = Id(load_default=None, allow_none=True)
    resident_id = Id(load_default=None, allow_none=True)


class RespondOffer(StrictSchema):
    offer_id = Id(required=True)
    accept = fields.Boolean(required=True)


class CompleteRequest(StrictSchema):
    request_id = Id(required=True)
    note = Str(required=True, max_length=1000)


class ConfirmRequest(StrictSchema):
    request_id = Id(required=True)
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))


class RequestRef(StrictSchema):
    request_id = Id(required=True)


class ListRequests(PageSchema):
    under = Id(required=True)
    status = OneOf(v.REQUEST_STATUSES, load_default=None, allow_none=True)


class Hours(StrictSchema):
    volunteer_id = Id(required=True)
    since = UtcDateTime(load_default=None, allow_none=True)


# ---- events consumed from other services ---------------------------------


class QuarantineTag(EventData):
    """grid.resident_tagged / grid.resident_untagged."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    tag = Str(required=True, max_length=40)


class UnacknowledgedResident(EventData):
    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True)


class NoticeUnacknowledged(EventData):
    notice_id = Id(required=True)
    residents = fields.List(fields.Nested(UnacknowledgedResident), required=True, validate=validate.Length(max=1000))


# ---- outputs --------------------------------------------------------------


class VolunteerOut(StrictSchema):
    """A volunteer: home unit, skills, weekly availability and task limit (never the phone number)."""

    id = Id()
    name = fields.String()
    home_unit_id = Id()
    skills = fields.List(fields.String())
    availability = fields.List(fields.Dict())
    max_active_tasks = fields.Integer()
    resident_id = Id(allow_none=True)
    party_member = fields.Boolean()
    active = fields.Boolean()


class PledgeOut(StrictSchema):
    """A volunteer's public pledge (亮牌践诺) and, once fulfilled, the note saying how."""

    id = Id()
    volunteer_id = Id()
    text = fields.String()
    due_on = fields.Date()
    status = fields.String()
    note = fields.String(allow_none=True)


class ShiftOut(StrictSchema):
    """A shift at a duty post and how many volunteers it needs."""

    id = Id()
    post_id = Id()
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()
    needed = fields.Integer()


class RequestOut(StrictSchema):
    """What a volunteer may see of a request: the need, where and when — no resident, no health
    tags, no ID numbers, and not what caused the request (its origin would tell a quarantine)."""

    id = Id()
    unit_id = Id()
    kind = fields.String()
    details = fields.String()
    urgency = fields.String()
    needed_by = UtcDateTime()
    address = fields.Dict(allow_none=True)
    status = fields.String()
    volunteer_id = Id(allow_none=True)
    note = fields.String(allow_none=True)
    rating = fields.Integer(allow_none=True)


class StaffRequestOut(RequestOut):
    """What grid staff and services see: also whose request it is and what opened it."""

    household_id = Id(allow_none=True)
    resident_id = Id(allow_none=True)
    origin = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = UtcDateTime()


class OfferOut(StrictSchema):
    """A request offered to one volunteer: pending until they answer or ``expires_at`` passes."""

    id = Id()
    request_id = Id()
    volunteer_id = Id()
    status = fields.String()
    expires_at = UtcDateTime()


class PostOut(StrictSchema):
    """A duty post (先锋岗): where in which unit volunteers stand their shifts."""

    id = Id()
    unit_id = Id()
    name = fields.String()
    location = fields.String()


class SignupOut(StrictSchema):
    """A volunteer's place on a shift: signed up or withdrawn, when they checked in and out, and the
    hours credited (from the actual times, once checked out)."""

    shift_id = Id()
    volunteer_id = Id()
    status = fields.String()
    checked_in_at = UtcDateTime(allow_none=True)
    checked_out_at = UtcDateTime(allow_none=True)
    hours = fields.Float(allow_none=True)


class ShiftGapOut(StrictSchema):
    """A shift of the day with fewer volunteers signed up than it needs."""

    shift_id = Id()
    post_id = Id()
    post = fields.String(metadata={"description": "The duty post's name."})
    starts_at = UtcDateTime()
    ends_at = UtcDateTime()
    needed = fields.Integer()
    signed = fields.Integer()
    missing = fields.Integer()


class HoursOut(StrictSchema):
    """A volunteer's checked-out shifts and their hours (rounded to 0.01), since ``since`` if given."""

    volunteer_id = Id()
    hours = fields.Float()
    shifts = fields.Integer()
    since = UtcDateTime(allow_none=True)


class UnitPledgesOut(StrictSchema):
    """Pledges made under one child unit of the one asked about, and how many are fulfilled."""

    unit_id = Id()
    pledges = fields.Integer()
    fulfilled = fields.Integer()
    fulfilment_rate = fields.Float(metadata={"description": "fulfilled / pledges, rounded to 0.001."})


class PledgeBoardOut(StrictSchema):
    """Public pledges (亮牌践诺) under a unit, and the fulfilment rate per child unit."""

    items = fields.List(fields.Nested(PledgeOut))
    units = fields.List(fields.Nested(UnitPledgesOut))


VOLUNTEER = VolunteerOut()
PLEDGE = PledgeOut()
SHIFT = ShiftOut()
POST = PostOut()
SIGNUP = SignupOut()
SHIFT_GAPS = ShiftGapOut(many=True)
HOURS = HoursOut()
PLEDGE_BOARD = PledgeBoardOut()
REQUEST = RequestOut()
STAFF_REQUEST = StaffRequestOut()
OFFER = OfferOut()
VOLUNTEER_PAGE = replies.page(VolunteerOut)


def _request_shape(caller, request):
    """The whole record for staff and services reaching the request; the need only for anyone else
    (a volunteer, the requester), whatever other roles they hold."""
    return STAFF_REQUEST if staff_reaches(caller, request) else REQUEST


REQUEST_VIEW = replies.OneOf(STAFF_REQUEST, REQUEST, choose=_request_shape)
REQUEST_PAGE = replies.page(REQUEST_VIEW, name="RequestPage")


class OfferAnswerOut(StrictSchema):
    """The answered offer, and its request as it stands after the answer."""

    offer = fields.Nested(OfferOut)
    request = replies.Choice(REQUEST_VIEW)


class TasksOut(StrictSchema):
    """A volunteer's matched requests (soonest needed first) and pending offers (soonest expiring first)."""

    tasks = fields.List(replies.Choice(REQUEST_VIEW))
    offers = fields.List(fields.Nested(OfferOut))


OFFER_ANSWER = OfferAnswerOut()
TASKS = TasksOut()
