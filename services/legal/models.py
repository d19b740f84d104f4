"""Legal tables. A consultation's time is a half-open range; PostgreSQL refuses two booked
ranges that overlap for one lawyer (an exclusion constraint), SQLite a second booking at the
same start (a partial unique index)."""

import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, false, text
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
# The grid facts its lookups read locally (shared.grid_facts): units and their paths, residents' households
# and places. No tag and no address: legal acts on neither.
FACTS = fact_models(Base)


class Station(Base):
    __tablename__ = "stations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(BigId, index=True)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Lawyer(Base):
    __tablename__ = "lawyers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    firm: Mapped[str] = mapped_column(String(200))
    license_no: Mapped[str] = mapped_column(String(40), unique=True)
    specialties: Mapped[list] = mapped_column(JSON)
    # Optional: the lawyer as a grid resident (reminders via notices; mediator conflict checks).
    resident_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class LawyerStation(Base):
    __tablename__ = "lawyer_stations"

    lawyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("lawyers.id"), primary_key=True)
    station_id: Mapped[int] = mapped_column(BigId, ForeignKey("stations.id"), primary_key=True)


class Schedule(Base):
    __tablename__ = "schedules"

    lawyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("lawyers.id"), primary_key=True)
    station_id: Mapped[int] = mapped_column(BigId, ForeignKey("stations.id"), primary_key=True)
    weekly: Mapped[list] = mapped_column(JSON)
    slot_minutes: Mapped[int] = mapped_column(Integer)
    buffer_minutes: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class TimeOff(Base):
    __tablename__ = "time_off"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lawyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("lawyers.id"), index=True)
    starts_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(String(200))


class Consultation(Base):
    __tablename__ = "consultations"
    __table_args__ = (
        Index(
            "uq_consultations_lawyer_start_booked",
            "lawyer_id",
            "starts_at",
            unique=True,
            postgresql_where=text("status = 'booked'"),
            sqlite_where=text("status = 'booked'"),
        ),
        Index("ix_consultations_reminders", "status", "starts_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lawyer_id: Mapped[int] = mapped_column(BigId, ForeignKey("lawyers.id"), index=True)
    station_id: Mapped[int] = mapped_column(BigId, ForeignKey("stations.id"), index=True)
    station_path: Mapped[str] = mapped_column(PathText, index=True)
    resident_id: Mapped[int] = mapped_column(BigId, index=True)
    starts_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    topic: Mapped[str] = mapped_column(String(500))
    mode: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(12))
    # Unused since every write takes an idempotency key (shared.idempotency); kept for old rows.
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    summary_enc: Mapped[bytes | None] = mapped_column(LargeBinary)  # confidential: encrypted at rest
    outcome: Mapped[str | None] = mapped_column(String(30))
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    reminded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    booked_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # A legal hold (services/legal/erasure.py): while ``legal_hold_reason`` is set an erasure of a resident
    # in the record is deferred (``erasure_deferred``; the erasures waiting in ``deferred_erasures``).
    legal_hold_reason: Mapped[str | None] = mapped_column(String(500))
    legal_hold_by: Mapped[str | None] = mapped_column(String(100))
    legal_hold_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    erasure_deferred: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SummaryRead(Base):
    """Audit trail: every read of a consultation summary."""

    __tablename__ = "summary_reads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    consultation_id: Mapped[int] = mapped_column(BigId, ForeignKey("consultations.id"), index=True)
    reader: Mapped[str] = mapped_column(String(100))
    reader_roles: Mapped[list] = mapped_column(JSON)
    read_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MediationCase(Base):
    __tablename__ = "mediation_cases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit_id: Mapped[int] = mapped_column(BigId)
    unit_path: Mapped[str] = mapped_column(PathText, index=True)
    category: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(4000))
    party_resident_ids: Mapped[list] = mapped_column(JSON)
    party_household_ids: Mapped[list] = mapped_column(JSON)
    # The grid incident the case came from: at most one case per incident.
    source_incident_id: Mapped[int | None] = mapped_column(BigId, unique=True)
    status: Mapped[str] = mapped_column(String(12), index=True)
    outcome: Mapped[str | None] = mapped_column(String(20))
    agreement: Mapped[str | None] = mapped_column(String(4000))
    opened_by: Mapped[str] = mapped_column(String(100))
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # A legal hold (services/legal/erasure.py): while ``legal_hold_reason`` is set an erasure of a resident
    # in the record is deferred (``erasure_deferred``; the erasures waiting in ``deferred_erasures``).
    legal_hold_reason: Mapped[str | None] = mapped_column(String(500))
    legal_hold_by: Mapped[str | None] = mapped_column(String(100))
    legal_hold_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    erasure_deferred: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class CaseMediator(Base):
    __tablename__ = "case_mediators"

    case_id: Mapped[int] = mapped_column(BigId, ForeignKey("mediation_cases.id"), primary_key=True)
    mediator_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    assigned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MediationSession(Base):
    __tablename__ = "mediation_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(BigId, ForeignKey("mediation_cases.id"), index=True)
    held_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    attendees: Mapped[list] = mapped_column(JSON)
    notes: Mapped[str] = mapped_column(String(8000))
    recorded_by: Mapped[str] = mapped_column(String(100))


class DeferredErasure(Base):
    """An erasure of a resident that reached a record under a legal hold: applied when the hold is released.
    ``record``: ``consultation/<id>`` or ``case/<id>``."""

    __tablename__ = "deferred_erasures"

    record: Mapped[str] = mapped_column(String(40), primary_key=True)
    resident_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    erasure_id: Mapped[int | None] = mapped_column(BigId)
    deferred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class LegalHoldLog(Base):
    """Audit trail of legal holds: each set, release and automatic hold (ids, roles and the reason only)."""

    __tablename__ = "legal_hold_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record: Mapped[str] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(10))  # set | release | auto
    reason: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    actor_roles: Mapped[list] = mapped_column(JSON)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
