"""Notices tables. Recipients are resolved once, at send time, and kept: who was
targeted, where (unit path), with which vulnerable tags, and each delivery's fate."""

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import BigId
from shared.grid_facts import fact_models
from shared.idempotency import idempotency_model
from shared.outbox import outbox_models
from shared.paths import PathText


class Base(DeclarativeBase):
    pass


OutboxEvent, ProcessedEvent = outbox_models(Base)
IdempotentRequest = idempotency_model(Base)
# The grid facts its audience and scope checks read locally (shared.grid_facts): units and their paths,
# residents' households and places. No tag and no address (phones and tags for sending stay the grid's).
FACTS = fact_models(Base)


class Notice(Base):
    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(10), default="notice")  # notice | direct
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(4000))
    category: Mapped[str] = mapped_column(String(30))
    severity: Mapped[str] = mapped_column(String(10))
    urgency: Mapped[str] = mapped_column(String(10))
    msg_type: Mapped[str] = mapped_column(String(10))
    references: Mapped[int | None] = mapped_column(BigId, ForeignKey("notices.id"))
    audience: Mapped[dict] = mapped_column(JSON)
    channels: Mapped[list] = mapped_column(JSON)
    publish_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    requires_ack: Mapped[bool] = mapped_column(Boolean, default=False)
    ack_deadline: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ack_checked: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), index=True)
    author: Mapped[str] = mapped_column(String(100))
    approved_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    # Set when another service's event caused the message: one message per origin.
    origin: Mapped[str | None] = mapped_column(String(120), unique=True)
    # Audience resolution resumes here after a restart: index into audience units, last resident id.
    resolve_cursor: Mapped[dict | None] = mapped_column(JSON)


class NoticeTarget(Base):
    """One row per audience unit, with its path: lists by subtree, scope checks on approval."""

    __tablename__ = "notice_targets"

    notice_id: Mapped[int] = mapped_column(BigId, ForeignKey("notices.id"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)


# Mostly NULL columns a lookup always names a value of: their indexes leave the NULLs out (partial; a
# lookup ``column = value`` implies the condition, so both databases use them). Built CONCURRENTLY
# on PostgreSQL (migrations 0008, 0009): the fan-out and the dispatcher keep writing meanwhile.
HAS_ADDRESS_HASH = "address_hash IS NOT NULL"
HAS_GATEWAY_MESSAGE_ID = "gateway_message_id IS NOT NULL"


class Recipient(Base):
    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("notice_id", "resident_id", name="uq_recipient_notice_resident"),
        Index(
            "ix_recipients_address_hash",
            "address_hash",
            postgresql_where=text(HAS_ADDRESS_HASH),
            sqlite_where=text(HAS_ADDRESS_HASH),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys on the two bulk tables (migration 0007): written only here, a page of thousands
    # at a time, with their notice (and a delivery with its recipient); a key checked per row cost more
    # than the row.
    notice_id: Mapped[int] = mapped_column(BigId)
    # Indexed (migration 0009): an erasure or a purged tag rewrites one resident's rows in every notice.
    resident_id: Mapped[int] = mapped_column(BigId, index=True)
    household_id: Mapped[int] = mapped_column(BigId)
    unit_path: Mapped[str] = mapped_column(PathText)
    vulnerable_tags: Mapped[list] = mapped_column(JSON)
    vulnerable: Mapped[bool] = mapped_column(Boolean)
    # Phone number for sms/voice, encrypted like the grid stores it.
    address_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Its keyed blind index (services.notices.inbound.phone_hash), so that an SMS reply or keypress
    # naming only its sender's phone finds the recipient: written for notices that require an
    # acknowledgement (migration 0008; older rows keep NULL). Indexed where set (``__table_args__``).
    address_hash: Mapped[str | None] = mapped_column(String(64))


# Deliveries the dispatcher may claim: queued ones, and claims whose lease ran out (their process
# died mid-post). The dispatcher's query repeats this text, so both databases use the partial index.
CLAIMABLE = "status IN ('queued', 'sending')"


class Delivery(Base):
    """status: queued → sending (claimed; ``next_attempt_at`` is then when the claim's lease ends) →
    sent → delivered, or failed; a retryable failure goes back to queued."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # What the dispatcher asks for: one channel's claimable deliveries that are due, oldest first.
        Index(
            "ix_deliveries_claimable_due",
            "channel",
            "next_attempt_at",
            "id",
            postgresql_where=text(CLAIMABLE),
            sqlite_where=text(CLAIMABLE),
        ),
        Index("ix_deliveries_notice", "notice_id", "recipient_id"),
        Index(
            "ix_deliveries_gateway_message_id",
            "gateway_message_id",
            postgresql_where=text(HAS_GATEWAY_MESSAGE_ID),
            sqlite_where=text(HAS_GATEWAY_MESSAGE_ID),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notice_id: Mapped[int] = mapped_column(BigId)  # notices.id (no foreign key: see Recipient)
    recipient_id: Mapped[int | None] = mapped_column(BigId)  # recipients.id
    unit_path: Mapped[str] = mapped_column(PathText)  # chat_group: the small grid
    channel: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[str | None] = mapped_column(String(300))
    fallback_of: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The id the gateway gave this post (its answer's ``message_id``): a reply naming it finds the delivery.
    # Indexed where set (``__table_args__``).
    gateway_message_id: Mapped[str | None] = mapped_column(String(100))


class Acknowledgement(Base):
    __tablename__ = "acknowledgements"

    notice_id: Mapped[int] = mapped_column(BigId, ForeignKey("notices.id"), primary_key=True)
    resident_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    acknowledged_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class InboundMessage(Base):
    """An SMS reply or keypress a gateway reported (services.notices.inbound), once per gateway event
    id, matched to the delivery it answers. No phone and no message text: ids and an outcome only."""

    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("gateway", "gateway_event_id", name="uq_inbound_gateway_event"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway: Mapped[str] = mapped_column(String(12))  # sms | voice
    kind: Mapped[str] = mapped_column(String(12))  # sms_reply | keypress
    gateway_event_id: Mapped[str] = mapped_column(String(100))
    matched_by: Mapped[str] = mapped_column(String(20))  # gateway_message_id | delivery_id | phone
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    notice_id: Mapped[int] = mapped_column(BigId, index=True)
    resident_id: Mapped[int] = mapped_column(BigId)
    outcome: Mapped[str] = mapped_column(String(14))  # acknowledged | not_an_ack
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Preference(Base):
    __tablename__ = "preferences"

    resident_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channels: Mapped[list] = mapped_column(JSON)
    quiet_start: Mapped[dt.time | None] = mapped_column(Time)
    quiet_end: Mapped[dt.time | None] = mapped_column(Time)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ChatGroup(Base):
    """A small grid's chat group and its robot's webhook."""

    __tablename__ = "chat_groups"

    unit_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    name: Mapped[str] = mapped_column(String(100))
    webhook_url: Mapped[str] = mapped_column(String(500))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
