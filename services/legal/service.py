"""The legal service: community legal stations, lawyer advisers and their schedules, appointment
booking, confidential consultations, and mediation cases."""

import logging

from services.grid.client import GridClient, HouseholdMoved, UnitClosed, UnitCreated, UnitMoved
from services.legal import bookings, directory, erasure, grid_changes, mediation, schemas
from services.legal.models import FACTS, Base, IdempotentRequest, OutboxEvent, ProcessedEvent
from services.notices.client import NoticesClient
from shared import grid_facts, service as base
from shared.auth import system_caller
from shared.db import Database, utcnow
from shared.endpoints import endpoint, on_event, rpc
from shared.telemetry import CounterSpec, SqlGauge, Telemetry
from shared.timers import config_timer
from shared.validation import page_of

log = logging.getLogger(__name__)

ADMIN_OFFICER = ("admin", "officer")
PLANNERS = ("admin", "officer", "lawyer")
EVERYONE = ("admin", "officer", "grid_worker", "lawyer", "mediator", "volunteer", "resident", "service")
BOOKERS = ("admin", "officer", "grid_worker", "resident", "service")
PARTICIPANTS = ("admin", "officer", "grid_worker", "lawyer", "resident", "service")
CASE_WORKERS = ("admin", "officer", "grid_worker", "mediator", "lawyer", "service")
NO_SHOW_MARKERS = ("admin", "officer", "grid_worker", "lawyer")
CASE_OPENERS = ("admin", "officer", "grid_worker", "service")

GAUGES = [
    SqlGauge(
        "grassroots_legal_consultations",
        "Consultations by status.",
        "SELECT status, count(*) FROM consultations GROUP BY status",
        labels=["status"],
    ),
    SqlGauge(
        "grassroots_legal_upcoming_consultations",
        "Booked consultations still to come.",
        "SELECT count(*) FROM consultations WHERE status = 'booked' AND starts_at > CURRENT_TIMESTAMP",
    ),
    SqlGauge(
        "grassroots_legal_mediation_cases",
        "Mediation cases by status.",
        "SELECT status, count(*) FROM mediation_cases GROUP BY status",
        labels=["status"],
    ),
    SqlGauge("grassroots_legal_lawyers", "Registered lawyers.", "SELECT count(*) FROM lawyers"),
    SqlGauge(
        "grassroots_legal_erasure_deferred_records",
        "Records under a legal hold that an erasure waits on, by kind.",
        "SELECT 'consultation', count(*) FROM consultations WHERE erasure_deferred "
        "UNION ALL SELECT 'case', count(*) FROM mediation_cases WHERE erasure_deferred",
        labels=["record"],
    ),
]
PURGED_KINDS = (
    "grid_residents",
    "grid_households",
    "consultations",
    "cancelled",
    "mediation_cases",
    "mediation_sessions",
    "lawyers",
    "deferred",
)
COUNTERS = [
    CounterSpec("grassroots_legal_erasures_total", "Residents' erasures (grid.resident_erased) applied here."),
    CounterSpec(
        "grassroots_legal_erased_rows_total",
        "Rows anonymised because a resident was erased (deferred: records kept under a legal hold), by kind.",
        labels=["kind"],
        start_labels=[(k,) for k in PURGED_KINDS],
    ),
]


class LegalService(grid_facts.KeepsGridFacts, base.ServiceBase):
    name = "legal"

    db = Database(Base, outbox_model=OutboxEvent, processed_model=ProcessedEvent, idempotency_model=IdempotentRequest)
    grid = GridClient()
    # Reads the parties' phones unmasked; legal masks them itself for callers who may not see them.
    grid_contacts = GridClient(pii=True)
    notices = NoticesClient()
    telemetry = Telemetry(gauges=GAUGES, counters=COUNTERS)

    @property
    def policy(self):
        return bookings.Policy(self.config)

    @property
    def facts(self):
        """The grid's facts as this service's read model has them (the grid asked only on a miss)."""
        return grid_facts.LocalGrid(self.db.session, self.grid, FACTS)

    # ---- stations and lawyers ---------------------------------------------

    @rpc
    @endpoint(roles=ADMIN_OFFICER, schema=schemas.CreateStation(), returns=schemas.STATION)
    def create_station(self, caller, **args):
        return directory.create_station(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=EVERYONE, schema=schemas.ListStations(), returns=schemas.STATIONS, read_only=True)
    def list_stations(self, caller, under):
        return directory.list_stations(self.db.session, self.facts, under)

    @rpc
    @endpoint(roles=ADMIN_OFFICER, schema=schemas.RegisterLawyer(), returns=schemas.LAWYER)
    def register_lawyer(self, caller, **args):
        return directory.register_lawyer(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=PLANNERS, schema=schemas.SetSchedule(), returns=schemas.SCHEDULE)
    def set_schedule(self, caller, **args):
        return directory.set_schedule(self.db, caller, **args)

    @rpc
    @endpoint(roles=PLANNERS, schema=schemas.AddTimeOff(), returns=schemas.TIME_OFF)
    def add_time_off(self, caller, **args):
        return directory.add_time_off(self.db, caller, **args)

    # ---- booking ----------------------------------------------------------

    @rpc
    @endpoint(roles=EVERYONE, schema=schemas.FindSlots(), returns=schemas.SLOTS, read_only=True)
    def find_slots(self, caller, **args):
        return bookings.find_slots(self.db.session, self.facts, self.policy, **args)

    @rpc
    @endpoint(roles=BOOKERS, schema=schemas.Book(), returns=schemas.CONSULTATION)
    def book(self, caller, **args):
        return bookings.book(self.db, caller, self.facts, self.policy, **args)

    @rpc
    @endpoint(roles=PARTICIPANTS, schema=schemas.Cancel(), returns=schemas.CONSULTATION)
    def cancel(self, caller, consultation_id, reason):
        return bookings.cancel(self.db, caller, consultation_id, reason)

    @rpc
    @endpoint(roles=PARTICIPANTS, schema=schemas.Reschedule(), returns=schemas.CONSULTATION)
    def reschedule(self, caller, **args):
        return bookings.reschedule(self.db, caller, self.policy, **args)

    @rpc
    @endpoint(roles=NO_SHOW_MARKERS, schema=schemas.ConsultationRef(), returns=schemas.CONSULTATION)
    def mark_no_show(self, caller, consultation_id):
        return bookings.mark_no_show(self.db, caller, consultation_id)

    @rpc
    @endpoint(roles=("lawyer",), schema=schemas.Complete(), returns=schemas.CONSULTATION)
    def complete(self, caller, **args):
        return bookings.complete(self.db, caller, self.vault, **args)

    @rpc
    # Writes only an audit row (who read the summary): each call is checked and audited afresh.
    @endpoint(roles=PARTICIPANTS, schema=schemas.ConsultationRef(), returns=schemas.CONSULTATION_READ, remember=False)
    def get_consultation(self, caller, consultation_id):
        return bookings.read_consultation(self.db, caller, self.vault, consultation_id)

    @rpc
    @endpoint(roles=PARTICIPANTS, schema=schemas.ListConsultations(), returns=schemas.CONSULTATION_PAGE, read_only=True)
    def list_consultations(self, caller, page, page_size, **args):
        rows, more = bookings.list_consultations(self.db.session, caller, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    # ---- mediation --------------------------------------------------------

    @rpc
    @endpoint(roles=CASE_OPENERS, schema=schemas.OpenMediation(), returns=schemas.CASE)
    def open_mediation(self, caller, **args):
        return mediation.open_mediation(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=("admin", "officer", "service"), schema=schemas.AssignMediator(), returns=schemas.CASE)
    def assign_mediator(self, caller, **args):
        return mediation.assign_mediator(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=CASE_WORKERS, schema=schemas.RecordSession(), returns=schemas.RECORDED_SESSION)
    def record_session(self, caller, **args):
        return mediation.record_session(self.db, caller, **args)

    @rpc
    @endpoint(roles=CASE_WORKERS, schema=schemas.CloseMediation(), returns=schemas.CASE)
    def close_mediation(self, caller, **args):
        return mediation.close_mediation(self.db, caller, **args)

    @rpc
    # Writes only the access-log events of the phones it shows: each call is checked and told afresh.
    @endpoint(roles=CASE_WORKERS, schema=schemas.CaseRef(), returns=schemas.CASE_DETAIL, remember=False)
    def get_case(self, caller, case_id):
        return mediation.case_detail(self.db, caller, self.grid_contacts, case_id)

    @rpc
    @endpoint(roles=CASE_WORKERS, schema=schemas.ListCases(), returns=schemas.CASE_PAGE, read_only=True)
    def list_cases(self, caller, page, page_size, **args):
        rows, more = mediation.list_cases(self.db.session, caller, self.facts, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    @on_event("grid", "incident_reported", schema=schemas.IncidentReported())
    def on_incident_reported(self, envelope, data):
        """A dispute reported at the grid opens a mediation case with its parties."""
        if data["category"] != "dispute":
            return "not a dispute"
        case = mediation.open_from_incident(
            self.db,
            system_caller(self.name),
            self.facts,
            data["incident_id"],
            data["unit_id"],
            data["party_resident_ids"],
        )
        return str(case.id) if case is not None else "too few parties"

    # ---- erasure (PIPL) and legal holds (services/legal/erasure.py) --------

    @rpc
    @endpoint(roles=ADMIN_OFFICER, schema=schemas.LegalHold(), returns=schemas.LEGAL_HOLD)
    def set_legal_hold(self, caller, record, record_id, reason):
        """Keep a consultation or mediation case as it is while the law requires it: an erasure of a resident
        in it is deferred (flagged) until the hold is released. Audited."""
        return erasure.set_legal_hold(self.db, caller, record, record_id, reason)

    @rpc
    @endpoint(roles=ADMIN_OFFICER, schema=schemas.ReleaseLegalHold(), returns=schemas.LEGAL_HOLD)
    def release_legal_hold(self, caller, record, record_id, reason):
        """Release a record's legal hold: the erasures deferred on it are applied now. Audited."""
        return erasure.release_legal_hold(self.db, caller, record, record_id, reason)

    @on_event("grid", "resident_erased", schema=grid_facts.ResidentErased())
    def on_resident_erased(self, envelope, data):
        """A resident erased at the grid: their consultations, cases and lawyer record anonymised — records
        under a legal hold kept and flagged — their read-model row gone and a tombstone keeping them out."""
        now = utcnow()
        model = grid_facts.resident_erased(self.db.session, FACTS, data, now)
        done = {**model, **erasure.resident_erased(self.db, data["resident_id"], data["erasure_id"], now)}
        done["remembered_replies"] = erasure.forget_replies_of(self.db, self.vault, data["resident_id"])
        self.telemetry.count("grassroots_legal_erasures_total", amount=done.pop("tombstone"))
        for kind, rows in done.items():
            self.telemetry.count("grassroots_legal_erased_rows_total", kind, amount=rows)
        return done

    # ---- reminders --------------------------------------------------------

    @config_timer("REMINDER_INTERVAL", 30.0)
    def send_reminders(self):
        """Remind residents (and lawyers) of consultations within the lead time; cancelled ones get none."""
        for _ in range(100):
            consultation = bookings.next_due_reminder(self.db.session, self.policy, utcnow())
            if consultation is None:
                break
            try:
                bookings.send_reminder(self.notices, self.db, self.policy, consultation)
                # One reminder a transaction: it is recorded (with its command to notices) and its row's
                # SKIP LOCKED claim released before the next, so a later failure loses none already sent.
                self.db.commit()
            except Exception:
                # a database failure: leave it unreminded; the next tick tries again
                self.db.rollback()
                log.warning("reminder not recorded; will retry", exc_info=True)
                break

    # ---- the read model of grid facts (shared.grid_facts.KeepsGridFacts: resync RPC and timer) ----

    grid_fact_models = FACTS

    # ---- the grid's tree changes (services/legal/grid_changes.py) -----------

    @on_event("grid", "unit_created", schema=UnitCreated())
    def on_unit_created(self, envelope, data):
        """A new unit: into the read model of grid facts."""
        return grid_changes.unit_changed(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "household_moved", schema=HouseholdMoved())
    def on_household_moved(self, envelope, data):
        """A household moved: the read model's place of it (and of its residents) follows."""
        return grid_changes.household_moved(self.db.session, self.grid, data["household_id"])

    @on_event("grid", "unit_moved", schema=UnitMoved())
    def on_unit_moved(self, envelope, data):
        """A unit moved under a new parent: stations, consultations and cases follow it."""
        return grid_changes.unit_moved(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "unit_closed", schema=UnitClosed())
    def on_unit_closed(self, envelope, data):
        """A unit closed: its stations keep serving the people still there; what is open inside is logged."""
        grid_changes.unit_changed(self.db.session, self.grid, data["unit_id"])
        return grid_changes.unit_closed(self.db.session, data["unit_id"])
