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
    false,
    text,
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
    # Set when the resident's record was erased (services/grid/erasure.py): the row stays, anonymised.
    erased_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


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
    __table_args__ = (
        Index("ix_incidents_reporter_resident_id", "reporter_resident_id", "reported_at"),
        Index("ix_incidents_public_path", "public", "unit_path"),
    )

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
    # Residents' reports (services/grid/reports.py, grid migration 0004). ``source``: resident, staff
    # or service; a resident's report names its reporter, its Open311 service code, where in the
    # compound and a photo reference; ``public`` reports are listed (without free text) in the public
    # list and the Open311 view; ``status_notes`` is the department's latest public note.
    source: Mapped[str] = mapped_column(String(10), default="staff", server_default="staff")
    reporter_resident_id: Mapped[int | None] = mapped_column(BigId)
    service_code: Mapped[str | None] = mapped_column(String(30))
    location_note: Mapped[str | None] = mapped_column(String(200))
    photo_ref: Mapped[str | None] = mapped_column(String(500))
    public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status_notes: Mapped[str | None] = mapped_column(String(2000))
    merged_into_id: Mapped[int | None] = mapped_column(FK_BIGID, ForeignKey("incidents.id"), index=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reopened: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ReportFollower(Base):
    """A resident following a report: its reporter, and the reporters of duplicates merged into it."""

    __tablename__ = "report_followers"
    __table_args__ = (Index("ix_report_followers_resident_id", "resident_id", "incident_id"),)

    incident_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("incidents.id"), primary_key=True)
    resident_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    since: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


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


# ---- the data lifecycle (PIPL): services/grid/retention.py, erasure.py, access_log.py ----


class ReleasedTag(Base):
    """A tag taken off a resident (untagged, expired), kept until its policy's retention ends; then
    purged, and ``tag_purged`` tells the other services to drop what they derived from it."""

    __tablename__ = "released_tags"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resident_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("residents.id"), index=True)
    tag: Mapped[str] = mapped_column(String(30))
    unit_path: Mapped[str] = mapped_column(PathText)
    purpose: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(20))
    released_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    purge_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class ErasureRequest(Base):
    """An erasure of a resident: requested by one manager, approved (and carried out) by another.
    The audit trail of the erasure: who, when, why — no personal data."""

    __tablename__ = "erasure_requests"
    __table_args__ = (
        Index(
            "uq_erasure_requests_pending",
            "resident_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resident_id: Mapped[int] = mapped_column(FK_BIGID, ForeignKey("residents.id"), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))  # pending, done, cancelled
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str | None] = mapped_column(String(100))
    approved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    approval_reason: Mapped[str | None] = mapped_column(String(500))
    cancelled_by: Mapped[str | None] = mapped_column(String(100))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    household_emptied: Mapped[bool | None] = mapped_column(Boolean)


class AccessLogEntry(Base):
    """A read of a resident's personal data: unmasked reads in the grid, and the reads other services
    report (legal's ``sensitive_data_read``). ``resident_id`` for a read of one resident; ``scope_path``
    for a bulk read of every resident under a unit. Ids and codes only."""

    __tablename__ = "access_log"
    __table_args__ = (
        Index("ix_access_log_resident_id", "resident_id", "id"),
        Index("ix_access_log_scope_path", "scope_path", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resident_id: Mapped[int | None] = mapped_column(BigId)
    scope_path: Mapped[str | None] = mapped_column(PathText)
    service: Mapped[str] = mapped_column(String(30))
    method: Mapped[str] = mapped_column(String(60))
    what: Mapped[str] = mapped_column(String(60))
    reader: Mapped[str] = mapped_column(String(100))
    reader_roles: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(200))
    record: Mapped[str | None] = mapped_column(String(120))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
