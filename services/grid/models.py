"""Grid tables. Subtree queries use a materialised path (``/1/5/23/``, ids from
the district down) copied onto households, residents and tags, so a count under
any unit is one index range scan with no joins up the tree."""

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import BigId
from shared.idempotency import idempotency_model
from shared.outbox import outbox_models
from shared.paths import PathText

FK_BIGID = BigId


class Base(DeclarativeBase):
    pass


OutboxEvent, ProcessedEvent = outbox_models(Base)
IdempotentRequest = idempotency_model(Base)


class Unit(Base):
    __tablename__ = "units"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    parent_id: Mapped[int | None] = mapped_column(FK_BIGID, ForeignKey("units.id"), index=True)
    level: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str | None] = mapped_column(String(50), unique=True)
    path: Mapped[str] = mapped_column(PathText, index=True)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    party_org_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Staff(Base):
    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("unit_id", "user_id", "role", name="uq_staff_unit_user_role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("units.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(100))
    assigned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Household(Base):
    __tablename__ = "households"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("units.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    compound: Mapped[str] = mapped_column(String(100))
    building: Mapped[str] = mapped_column(String(30))
    entrance: Mapped[str] = mapped_column(String(30))
    room: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Resident(Base):
    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    household_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("households.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    name: Mapped[str] = mapped_column(String(100))
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    phone_enc: Mapped[bytes] = mapped_column(LargeBinary)
    birth_date: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ResidentTag(Base):
    __tablename__ = "resident_tags"
    __table_args__ = (Index("ix_resident_tags_tag_path", "tag", "unit_path", "resident_id"),)

    resident_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("residents.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(30), primary_key=True)
    unit_path: Mapped[str] = mapped_column(PathText)
    until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    note: Mapped[str | None] = mapped_column(String(500))
    tagged_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ScreeningCampaign(Base):
    __tablename__ = "screening_campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("units.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    title: Mapped[str] = mapped_column(String(200))
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ScreeningVisit(Base):
    __tablename__ = "screening_visits"
    __table_args__ = (Index("ix_screening_visits_campaign_household", "campaign_id", "household_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("screening_campaigns.id"))
    household_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("households.id"))
    outcome: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(1000))
    visited_by: Mapped[str] = mapped_column(String(100))
    visited_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("units.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    category: Mapped[str] = mapped_column(String(30))
    description: Mapped[str] = mapped_column(String(4000))
    department: Mapped[str] = mapped_column(String(30))
    party_resident_ids: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), index=True)
    # Who handles it now: a unit, or (handling_unit_id NULL) the department.
    handling_unit_id: Mapped[int | None] = mapped_column(FK_BIGID, ForeignKey("units.id"))
    handling_level: Mapped[str] = mapped_column(String(20))
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    resolution: Mapped[str | None] = mapped_column(String(4000))
    reported_by: Mapped[str] = mapped_column(String(100))
    reported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # What raised it when a service did (e.g. "volunteer:request/12"): one incident per origin,
    # however often the event behind it is delivered.
    origin: Mapped[str | None] = mapped_column(String(120), unique=True)


class IncidentStep(Base):
    """The incident's trail: reported, escalated (by whom, why), resolved."""

    __tablename__ = "incident_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("incidents.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    from_level: Mapped[str | None] = mapped_column(String(20))
    to_level: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(4000))
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
