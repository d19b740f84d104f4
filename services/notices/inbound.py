"""Two-way acknowledgement without a smartphone: SMS replies and keypresses reported by the gateways
(``notices.record_inbound``, and its signed webhook: services/notices/webhook.py).

Each report names the gateway (``sms`` or ``voice``) and the gateway's own id for the event
(``gateway_event_id``: a second report with the same id records nothing and answers the first one's
reply). It is matched to the delivery it answers:

1. ``delivery_id``: our delivery id (the ``delivery_id`` and Idempotency-Key of every post), of a
   delivery on that gateway's channel;
2. else ``in_reply_to``: the gateway's message id of our post (``deliveries.gateway_message_id``, from
   the gateway's answer to it), of a delivery on that gateway's channel. Only that: the two id spaces
   are never mixed — an unknown message id is not tried as a delivery id, since a gateway numbering
   its messages ``1, 2, 3…`` would name another resident's delivery (acknowledging them, and sparing
   them their door-knock);
3. else ``from_phone``: its keyed blind index (``phone_hash``) finds the recipients with that phone,
   and the latest published notice requiring an acknowledgement that one of them was sent on that
   gateway's channel and has not acknowledged yet is the one answered (all acknowledged: the latest
   of them, recorded again as a reply). Cancelled and expired notices are not candidates; one whose
   ack deadline passed still is (a late acknowledgement is recorded and counted in the report, though
   its door-knock was already asked for). Two recipients of that notice with the same phone (a
   household's one phone) is ambiguous: refused, nothing recorded — guessing could keep the wrong
   resident from a door-knock.

A report that matches nothing is refused (NotFound) and changes nothing; a token scoped to a unit
(a gateway bridge for one district) is refused (Forbidden) a delivery outside it, and matches by
phone only recipients under it. A matched one is recorded
(``inbound_messages``: ids and an outcome, never the phone nor the text) as ``acknowledged`` — a
keypress ``1``, or an SMS whose text is ``1``, ``收到`` or ``确认`` (``is_ack_text``) — writing the
resident's acknowledgement of the notice (``Acknowledgement``, as ``notices.acknowledge`` does: the
delivery report and ``notice_unacknowledged`` read it), or as ``not_an_ack``: counted, nothing else.

The phone is never logged, stored in clear, echoed back or put in an event.
"""

import logging
import unicodedata
import zlib
from dataclasses import dataclass

from sqlalchemy import select

from services.notices.models import Acknowledgement, Delivery, InboundMessage, Notice, Recipient
from services.notices.phones import canonical_phone
from services.notices.vocabulary import INBOUND_GATEWAYS, INBOUND_KINDS
from shared.db import serialize_on, utcnow
from shared.errors import Conflict, NotFound
from shared.paths import path_ids

log = logging.getLogger(__name__)

GATEWAYS = INBOUND_GATEWAYS  # gateway name -> the channel of our posts it carries
KINDS = INBOUND_KINDS  # kind of report -> the gateway that makes it
OUTCOMES = ("acknowledged", "not_an_ack")
# The metric's outcomes besides the recorded ones: a replay, and refusals.
REFUSALS = ("duplicate", "unmatched", "ambiguous", "conflict", "invalid", "unsigned")

PHONE_INDEX = b"phone"  # the blind index's kind (shared.pii.PiiVault.blind_index)
# An SMS text that acknowledges, once normalised (``normalise_reply``): the three, and the
# traditional-script form of 确认 (phones set to traditional Chinese send it).
ACK_TEXTS = frozenset({"1", "收到", "确认", "確認"})
ACK_DIGITS = "1"


def phone_hash(vault, phone):
    """The keyed blind index of a phone number (its canonical form when it has one): what
    ``recipients.address_hash`` holds and a report's ``from_phone`` is looked up by."""
    return vault.blind_index(canonical_phone(phone) or phone.strip(), PHONE_INDEX)


def normalise_reply(text):
    """An SMS reply as it is compared: Unicode NFKC (full-width forms become ASCII: a full-width one is ``1``),
    case folded, with every whitespace, punctuation, symbol (``~``, emoji), control and format
    character dropped: ``收到~``, ``1。`` and ``确认👍`` acknowledge; letters and digits are kept."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "ZPSC")


def is_ack_text(text):
    return normalise_reply(text) in ACK_TEXTS


def is_ack_digits(digits):
    return unicodedata.normalize("NFKC", digits).strip() == ACK_DIGITS


def acknowledges(kind, text=None, digits=None):
    """Whether a report of ``kind`` with this ``text`` (SMS) or ``digits`` (keypress) acknowledges."""
    if kind == "keypress":
        return digits is not None and is_ack_digits(digits)
    return text is not None and is_ack_text(text)


@dataclass
class Match:
    delivery_id: int | None
    notice: Notice
    resident_id: int
    matched_by: str


def record_inbound(
    uow,
    caller,
    vault,
    gateway,
    kind,
    gateway_event_id,
    in_reply_to=None,
    delivery_id=None,
    from_phone=None,
    text=None,
    digits=None,
    received_at=None,
):
    """Record one inbound report (arguments as ``schemas.RecordInbound`` loads them): (the
    InboundMessage, whether it was recorded before — a replay, which changes nothing). NotFound when
    nothing matches, Conflict when the phone is ambiguous or the notice was cancelled: nothing changed."""
    session = uow.session
    now = utcnow()
    # One report of an event id at a time (a gateway retrying while the first is still in flight).
    serialize_on(session, "notices.inbound", zlib.crc32(f"{gateway}\n{gateway_event_id}".encode()))
    existing = session.scalar(
        select(InboundMessage).where(
            InboundMessage.gateway == gateway, InboundMessage.gateway_event_id == gateway_event_id
        )
    )
    if existing is not None:
        if not caller.unrestricted:  # the event answered a delivery: one outside the caller's unit is not theirs
            caller.require_reach(path_ids(_delivery_path(session, existing.delivery_id)), "the event's delivery")
        return existing, True
    channel = GATEWAYS[gateway]
    if delivery_id is not None:
        match = _by_delivery(session, caller, channel, Delivery.id == int(delivery_id), "delivery_id")
    elif in_reply_to is not None:
        match = _by_delivery(session, caller, channel, Delivery.gateway_message_id == in_reply_to, "gateway_message_id")
    else:
        match = _by_phone(session, caller, channel, phone_hash(vault, from_phone))
    if match is None:
        log.warning(
            "inbound %s %s matched no delivery",
            gateway,
            kind,
            extra={"method": "record_inbound", "reason": "unmatched"},
        )
        raise NotFound(f"no delivery of the {gateway} gateway answers this {kind}: nothing recorded")
    notice = match.notice
    if notice.status == "cancelled":
        raise Conflict(f"notice {notice.id} was cancelled: nothing recorded")
    received_at = min(received_at or now, now)
    outcome = "acknowledged" if acknowledges(kind, text, digits) else "not_an_ack"
    if outcome == "acknowledged" and session.get(Acknowledgement, (notice.id, match.resident_id)) is None:
        session.add(Acknowledgement(notice_id=notice.id, resident_id=match.resident_id, acknowledged_at=received_at))
    message = InboundMessage(
        gateway=gateway,
        kind=kind,
        gateway_event_id=gateway_event_id,
        matched_by=match.matched_by,
        delivery_id=match.delivery_id,
        notice_id=notice.id,
        resident_id=match.resident_id,
        outcome=outcome,
        received_at=received_at,
        recorded_at=now,
    )
    session.add(message)
    session.flush()
    return message, False


def _by_delivery(session, caller, channel, names, matched_by):
    """The (latest) delivery on ``channel`` that ``names`` (a condition on Delivery) selects."""
    delivery = session.scalar(
        select(Delivery).where(names, Delivery.channel == channel).order_by(Delivery.id.desc()).limit(1)
    )
    if delivery is None or delivery.recipient_id is None:
        return None
    caller.require_reach(path_ids(delivery.unit_path), "delivery")  # as record_delivery_status does
    resident_id = session.scalar(select(Recipient.resident_id).where(Recipient.id == delivery.recipient_id))
    notice = session.get(Notice, delivery.notice_id)
    if resident_id is None or notice is None:
        return None
    return Match(delivery.id, notice, resident_id, matched_by)


def _delivery_path(session, delivery_id):
    path = session.scalar(select(Delivery.unit_path).where(Delivery.id == delivery_id)) if delivery_id else None
    return path or "/"


CANDIDATES = 200  # deliveries to one phone looked at, newest notices first


def _by_phone(session, caller, channel, address_hash):
    """The latest open notice requiring an acknowledgement sent on ``channel`` to a recipient whose
    phone has this blind index and who has not acknowledged it yet (all have: the latest of them);
    Conflict when two of its recipients share the phone."""
    rows = session.execute(
        select(Delivery.id, Delivery.unit_path, Recipient.resident_id, Notice.id)
        .join(Recipient, (Recipient.id == Delivery.recipient_id) & (Recipient.notice_id == Delivery.notice_id))
        .join(Notice, Notice.id == Recipient.notice_id)
        .where(
            Recipient.address_hash == address_hash,
            Delivery.channel == channel,
            Notice.requires_ack.is_(True),
            Notice.status == "published",
        )
        .order_by(Notice.published_at.desc(), Notice.id.desc(), Delivery.id.desc())
        .limit(CANDIDATES)
    ).all()
    rows = [row for row in rows if caller.reaches(path_ids(row[1]))]
    if not rows:
        return None
    chosen = _first_unacknowledged(session, rows)
    residents = {resident_id for _d, _p, resident_id, notice_id in rows if notice_id == chosen}
    if len(residents) > 1:
        log.warning(
            "inbound report: a phone shared by %d recipients of notice %s",
            len(residents),
            chosen,
            extra={"method": "record_inbound", "reason": "ambiguous"},
        )
        ambiguous = Conflict(
            f"the phone belongs to {len(residents)} recipients of notice {chosen}: "
            "name the message answered (in_reply_to or delivery_id); nothing recorded"
        )
        ambiguous.reason = "ambiguous"  # the metric's outcome (the error crosses the wire as a Conflict)
        raise ambiguous
    delivery_id, _path, resident_id, _notice = next(row for row in rows if row[3] == chosen)
    return Match(delivery_id, session.get(Notice, chosen), resident_id, "phone")


def _first_unacknowledged(session, rows):
    """Of the candidate (delivery, path, resident, notice) rows, newest notice first: the first notice
    one of whose recipients there has not acknowledged it, else the newest (one query)."""
    notice_ids = list(dict.fromkeys(row[3] for row in rows))
    acknowledged = set(
        session.execute(
            select(Acknowledgement.notice_id, Acknowledgement.resident_id).where(
                Acknowledgement.notice_id.in_(notice_ids),
                Acknowledgement.resident_id.in_({row[2] for row in rows}),
            )
        ).all()
    )
    return next((row[3] for row in rows if (row[3], row[2]) not in acknowledged), notice_ids[0])
