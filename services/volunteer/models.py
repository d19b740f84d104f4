"""Volunteer tables. Volunteers, posts, shifts and requests carry their unit's path, so
"nearest first" is a comparison of path prefixes and "under a unit" is one index range."""

import datetime as dt

from sqlalchemy import JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String
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
# The grid facts create_request and care act on, kept locally (shared.grid_facts): the quarantine tag
# is the one that keeps a volunteer from being sent out; addresses, as requests and care plans keep them.
FACTS = fact_models(Base, tags=("quarantined",), address=True)


class Volunteer(Base):
    __tablename__ = "volunteers"
    __table_args__ = (Index("ix_volunteers_active_path", "active", "home_path"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    phone_enc: Mapped[bytes] = mapped_column(LargeBinary)
    home_unit_id: Mapped[int] = mapped_column(BigId)
    home_path: Mapped[str] = mapped_column(PathText)
    skills: Mapped[list] = mapped_column(JSON)
    availability: Mapped[list] = mapped_column(JSON)
    max_active_tasks: Mapped[int] = mapped_column(Integer)
    resident_id: Mapped[int | None] = mapped_column(BigId, unique=True)
    household_id: Mapped[int | None] = mapped_column(BigId)
    party_member: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Pledge(Base):
    __tablename__ = "pledges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    volunteer_id: Mapped[int] = mapped_column(BigId, ForeignKey("volunteers.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    text: Mapped[str] = mapped_column(String(500))
    due_on: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))
    note: Mapped[str | None] = mapped_column(String(1000))
    made_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    fulfilled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(BigId)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    name: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(300))


class Shift(Base):
    __tablename__ = "shifts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("posts.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    starts_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    ends_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    needed: Mapped[int] = mapped_column(Integer)
    understaffed_reported: Mapped[bool] = mapped_column(Boolean, default=False)


class Signup(Base):
    __tablename__ = "signups"

    shift_id: Mapped[int] = mapped_column(BigId, ForeignKey("shifts.id"), primary_key=True)
    volunteer_id: Mapped[int] = mapped_column(BigId, ForeignKey("volunteers.id"), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(String(10))  # signed | withdrawn
    signed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    checked_in_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    checked_out_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    hours: Mapped[float | None] = mapped_column()


class HelpRequest(Base):
    __tablename__ = "help_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(BigId)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    kind: Mapped[str] = mapped_column(String(12))
    details: Mapped[str] = mapped_column(String(2000))
    urgency: Mapped[str] = mapped_column(String(10))
    needed_by: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    household_id: Mapped[int | None] = mapped_column(BigId)
    resident_id: Mapped[int | None] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(12), index=True)
    volunteer_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("volunteers.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    matched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(String(1000))
    rating: Mapped[int | None] = mapped_column(Integer)
    # Where to go (the household's address when the request is for a household).
    address: Mapped[dict | None] = mapped_column(JSON)
    # Set when another service's event caused the request: one request per origin.
    origin: Mapped[str | None] = mapped_column(String(120), unique=True)
    # The shallowest unit-path depth matching may widen to (None: up to the district).
    search_floor: Mapped[int | None] = mapped_column(Integer)


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        Index("ix_offers_pending_expiry", "status", "expires_at"),
        Index("uq_offers_request_volunteer", "request_id", "volunteer_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(BigId, ForeignKey("help_requests.id"))
    volunteer_id: Mapped[int] = mapped_column(BigId, ForeignKey("volunteers.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    offered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    responded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CareSubject(Base):
    """A resident's quarantine tag as last heard from the grid (events may arrive out of order)."""

    __tablename__ = "care_subjects"

    resident_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    household_id: Mapped[int] = mapped_column(BigId, index=True)
    quarantined: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CarePlan(Base):
    """Daily help for a household under home quarantine, while any member is quarantined."""

    __tablename__ = "care_plans"

    household_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    unit_id: Mapped[int] = mapped_column(BigId)
    unit_path: Mapped[str] = mapped_column(PathText)
    # NULL once an erasure or a purged health tag left nobody to care for (services/volunteer/erasure.py).
    address: Mapped[dict | None] = mapped_column(JSON)
    kinds: Mapped[list] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, index=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
