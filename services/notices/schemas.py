"""Input and output schemas of the notices RPC contract."""

import datetime as dt

from marshmallow import ValidationError as FieldError, fields, validate, validates_schema

from services.notices import vocabulary as v
from services.notices.templates import TEMPLATES
from shared.validation import EventData, Id, ListOf, OneOf, PageSchema, Str, StrictSchema, Url, UtcDateTime

# ---- inputs ---------------------------------------------------------------


class Audience(StrictSchema):
    under = ListOf(Id(), required=True, min_items=1, max_items=50)
    tags_any = ListOf(OneOf(v.TAGS), load_default=list, max_items=len(v.TAGS))
    tags_all = ListOf(OneOf(v.TAGS), load_default=list, max_items=len(v.TAGS))


class CreateNotice(StrictSchema):
    title = Str(required=True, max_length=200)
    body = Str(required=True, max_length=4000)
    category = OneOf(v.CATEGORIES, required=True)
    severity = OneOf(v.SEVERITIES, required=True)
    urgency = OneOf(v.URGENCIES, required=True)
    audience = fields.Nested(Audience, required=True)
    channels = ListOf(OneOf(v.CHANNELS), required=True, min_items=1, max_items=len(v.CHANNELS))
    publish_at = UtcDateTime(load_default=None, allow_none=True)
    expires_at = UtcDateTime(load_default=None, allow_none=True)
    requires_ack = fields.Boolean(load_default=False)
    ack_deadline = UtcDateTime(load_default=None, allow_none=True)
    msg_type = OneOf(v.MSG_TYPES, load_default="alert")
    references = Id(load_default=None, allow_none=True)

    @validates_schema
    def consistent(self, data, **kwargs):
        errors = {}
        if data["msg_type"] in ("update", "cancel") and data["references"] is None:
            errors["references"] = [f"Required for msg_type {data['msg_type']}."]
        if data["msg_type"] == "alert" and data["references"] is not None:
            errors["references"] = ["Only update and cancel reference an earlier notice."]
        if data["requires_ack"] and data["ack_deadline"] is None:
            errors["ack_deadline"] = ["Required when requires_ack is true."]
        if data["ack_deadline"] is not None and not data["requires_ack"]:
            errors["ack_deadline"] = ["Only with requires_ack."]
        publish_at = data["publish_at"] or dt.datetime.now(dt.UTC)
        if data["expires_at"] is not None and data["expires_at"] <= publish_at:
            errors["expires_at"] = ["Must be after publish_at (or now)."]
        if data["ack_deadline"] is not None and data["ack_deadline"] <= publish_at:
            errors["ack_deadline"] = ["Must be after publish_at (or now)."]
        if errors:
            raise FieldError(errors)


class NoticeRef(StrictSchema):
    notice_id = Id(required=True)


class ListNotices(PageSchema):
    under = Id(load_default=None, allow_none=True)
    status = OneOf(v.STATUSES, load_default=None, allow_none=True)
    kind = OneOf(("notice", "direct"), load_default="notice")


class RecordDeliveryStatus(StrictSchema):
    delivery_id = Id(required=True)
    status = OneOf(("sent", "delivered", "failed"), required=True)
    detail = Str(load_default=None, allow_none=True, max_length=300)


class QuietHours(StrictSchema):
    start = fields.Time(required=True, format="%H:%M")
    end = fields.Time(required=True, format="%H:%M")

    @validates_schema
    def not_empty(self, data, **kwargs):
        if data["start"] == data["end"]:
            raise FieldError("Must not start and end at the same time.", "end")


class SetPreferences(StrictSchema):
    resident_id = Id(required=True)
    channels = ListOf(OneOf(v.PERSONAL_CHANNELS), required=True, min_items=1, max_items=3)
    quiet_hours = fields.Nested(QuietHours, load_default=None, allow_none=True)


class Acknowledge(StrictSchema):
    notice_id = Id(required=True)
    resident_id = Id(required=True)


class DeliveryReport(StrictSchema):
    notice_id = Id(required=True)
    level = OneOf(v.LEVELS, load_default=None, allow_none=True)


class SendDirect(StrictSchema):
    resident_ids = ListOf(Id(), required=True, min_items=1, max_items=1000)
    template = OneOf(TEMPLATES, required=True)
    params = fields.Dict(
        keys=Str(max_length=40),
        values=Str(max_length=500, min_length=0),
        required=True,
        validate=validate.Length(max=20),
    )
    channels = ListOf(OneOf(v.PERSONAL_CHANNELS), load_default=None, allow_none=True, min_items=1, max_items=3)


class SendDirectCommand(SendDirect):
    """``send_direct`` as a command from another service (shared.commands): one message per ``origin``."""

    origin = Str(required=True, max_length=120)


class RegisterChatGroup(StrictSchema):
    unit_id = Id(required=True)
    name = Str(required=True, max_length=100)
    webhook_url = Url(required=True, require_tld=False, schemes={"http", "https"}, validate=validate.Length(max=500))


# ---- events consumed from other services ---------------------------------


class ResidentTagged(EventData):
    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True)
    tag = Str(required=True, max_length=40)
    until = UtcDateTime(load_default=None, allow_none=True)


# ---- outputs --------------------------------------------------------------


class NoticeOut(StrictSchema):
    id = Id()
    kind = fields.String()
    title = fields.String()
    body = fields.String()
    category = fields.String()
    severity = fields.String()
    urgency = fields.String()
    msg_type = fields.String()
    references = Id(allow_none=True)
    audience = fields.Function(lambda n: {**n.audience, "under": [str(u) for u in n.audience.get("under", [])]})
    channels = fields.List(fields.String())
    publish_at = UtcDateTime(allow_none=True)
    expires_at = UtcDateTime(allow_none=True)
    requires_ack = fields.Boolean()
    ack_deadline = UtcDateTime(allow_none=True)
    status = fields.String()
    author = fields.String()
    approved_by = fields.String(allow_none=True)
    created_at = UtcDateTime()
    approved_at = UtcDateTime(allow_none=True)
    published_at = UtcDateTime(allow_none=True)
    cancelled_at = UtcDateTime(allow_none=True)
    recipient_count = fields.Integer()
    template = fields.Function(lambda n: n.audience.get("template"))
    origin = fields.String(allow_none=True)


class DeliveryOut(StrictSchema):
    id = Id()
    notice_id = Id()
    channel = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    detail = fields.String(allow_none=True)
    sent_at = UtcDateTime(allow_none=True)
    delivered_at = UtcDateTime(allow_none=True)
    failed_at = UtcDateTime(allow_none=True)


NOTICE = NoticeOut()
NOTICES = NoticeOut(many=True)
DELIVERY = DeliveryOut()
