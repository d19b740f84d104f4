"""Input and output schemas of the notices RPC contract."""

import datetime as dt

from marshmallow import Schema, ValidationError as FieldError, fields, pre_dump, validate, validates_schema

from services.notices import vocabulary as v
from services.notices.phones import canonical_phone
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


class InboundPhone(Str):
    """A reported sender's number (``phones.canonical_phone``: +86 and separators accepted), loaded
    as its 11 digits. Its error never repeats it."""

    def __init__(self, **kwargs):
        super().__init__(max_length=30, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        phone = canonical_phone(super()._deserialize(value, attr, data, **kwargs))
        if phone is None:
            raise FieldError("Must be an 11-digit mainland mobile number (a +86 prefix, spaces and dashes allowed).")
        return phone


INBOUND_MAX_SKEW = dt.timedelta(minutes=5)  # how far ahead of our clock a report's received_at may be


class RecordInbound(StrictSchema):
    """A gateway's report of an SMS reply or a keypress (services/notices/inbound.py)."""

    gateway = OneOf(v.INBOUND_GATEWAYS, required=True)
    kind = OneOf(v.INBOUND_KINDS, required=True)
    gateway_event_id = Str(required=True, max_length=100)
    # Two id spaces, never mixed: the gateway's message id of our post, and our delivery id (the
    # ``delivery_id`` and Idempotency-Key of every post). A gateway numbering its messages would
    # otherwise name another resident's delivery.
    in_reply_to = Str(load_default=None, allow_none=True, max_length=100)
    delivery_id = Id(load_default=None, allow_none=True)
    from_phone = InboundPhone(load_default=None, allow_none=True)
    text = Str(load_default=None, allow_none=True, max_length=1000)
    digits = Str(
        load_default=None,
        allow_none=True,
        max_length=20,
        validate=validate.Regexp(r"^[0-9*#]+$", error="Must be keypad keys: 0-9, * and #."),
    )
    received_at = UtcDateTime(load_default=None, allow_none=True)

    @validates_schema
    def consistent(self, data, **kwargs):
        errors = {}
        if v.INBOUND_KINDS[data["kind"]] != data["gateway"]:
            errors["kind"] = [f"A {data['kind']} comes from the {v.INBOUND_KINDS[data['kind']]} gateway."]
        elif data["kind"] == "sms_reply":
            if data["text"] is None:
                errors["text"] = ["Required for an sms_reply."]
            if data["digits"] is not None:
                errors["digits"] = ["Only for a keypress."]
        else:
            if data["digits"] is None:
                errors["digits"] = ["Required for a keypress."]
            if data["text"] is not None:
                errors["text"] = ["Only for an sms_reply."]
        if data["in_reply_to"] is None and data["delivery_id"] is None and data["from_phone"] is None:
            errors["from_phone"] = ["Required when neither in_reply_to nor delivery_id is given."]
        received_at = data["received_at"]
        if received_at is not None and received_at > dt.datetime.now(dt.UTC) + INBOUND_MAX_SKEW:
            errors["received_at"] = ["Must not be in the future."]
        if errors:
            raise FieldError(errors)


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


class AudienceOut(fields.Dict):
    """A notice's audience as stored (``under``, ``tags_any``, ``tags_all``; a direct message's also
    ``template`` and, for a household, ``household_id``), its unit ids as strings like every id."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else {**value, "under": [str(u) for u in value.get("under", [])]}


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
    audience = AudienceOut()
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
    # A direct message's template (kept in its audience); null for a notice.
    template = fields.String(attribute="audience.template", dump_default=None, allow_none=True)
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


class PreferencesOut(Schema):
    """A resident's channels and quiet hours, as saved (``quiet_hours`` null: none)."""

    resident_id = Id()
    channels = fields.List(fields.String())
    quiet_hours = fields.Nested(QuietHours, allow_none=True)

    @pre_dump
    def quiet_hours_as_one(self, preference, **kwargs):
        """The stored ``quiet_start`` and ``quiet_end`` as one ``{start, end}`` value."""
        quiet = {"start": preference.quiet_start, "end": preference.quiet_end} if preference.quiet_start else None
        return {"resident_id": preference.resident_id, "channels": preference.channels, "quiet_hours": quiet}


class ChatGroupOut(Schema):
    """A small grid's chat group as registered (its webhook URL is not repeated)."""

    unit_id = Id()
    name = fields.String()


class AcknowledgementOut(Schema):
    """A resident's acknowledgement of a notice (the first one, when acknowledged again)."""

    notice_id = Id()
    resident_id = Id()
    acknowledged_at = UtcDateTime()


class DirectMessageOut(Schema):
    """The direct message sent: its id (a notice of kind ``direct``) and how many residents it goes to."""

    message_id = Id(attribute="id")
    recipients = fields.Integer(attribute="recipient_count")


class UnitReport(Schema):
    """One unit's residents: targeted, sent (any channel), delivered, failed (every channel), acknowledged."""

    unit_id = Id()
    targeted = fields.Integer()
    sent = fields.Integer()
    delivered = fields.Integer()
    failed = fields.Integer()
    acknowledged = fields.Integer()


class ChatGroupReport(Schema):
    """The notice's chat-group deliveries by status."""

    queued = fields.Integer()
    sent = fields.Integer()
    delivered = fields.Integer()
    failed = fields.Integer()


class DeliveryReportOut(Schema):
    """A notice's delivery report: residents targeted, sent, delivered, failed and acknowledged in
    total and per unit (the audience units, or the units at ``level`` under them), and its chat-group
    deliveries; a caller scoped to a unit sees only what lies under it."""

    notice_id = Id()
    level = fields.String(allow_none=True)
    targeted = fields.Integer()
    sent = fields.Integer()
    delivered = fields.Integer()
    failed = fields.Integer()
    acknowledged = fields.Integer()
    units = fields.List(fields.Nested(UnitReport))
    chat_groups = fields.Nested(ChatGroupReport)
    # Gateways' inbound reports (notices.record_inbound): residents whose SMS reply or keypress
    # acknowledged, and every reply or keypress recorded (acknowledging or not).
    acknowledged_by_sms = fields.Integer()
    acknowledged_by_keypress = fields.Integer()
    inbound_replies = fields.Integer()


class InboundOut(Schema):
    """An inbound report as recorded (the first one's, for a replayed ``gateway_event_id``): what it
    was matched to and how, and whether it acknowledged. Never the phone nor the text."""

    id = Id()
    gateway = fields.String()
    kind = fields.String()
    gateway_event_id = fields.String()
    outcome = fields.String(metadata={"description": "acknowledged | not_an_ack"})
    matched_by = fields.String(metadata={"description": "gateway_message_id | delivery_id | phone"})
    notice_id = Id()
    delivery_id = Id(allow_none=True)
    resident_id = Id()
    received_at = UtcDateTime()
    recorded_at = UtcDateTime()


NOTICE = NoticeOut()
DELIVERY = DeliveryOut()
PREFERENCES = PreferencesOut()
CHAT_GROUP = ChatGroupOut()
ACKNOWLEDGEMENT = AcknowledgementOut()
DIRECT_MESSAGE = DirectMessageOut()
DELIVERY_REPORT = DeliveryReportOut()
INBOUND = InboundOut()
