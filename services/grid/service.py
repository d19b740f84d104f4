"""The grid service: the unit tree, staff, households and residents, screening,
incidents and escalation. Entrypoints are thin: authorise and validate
(``endpoint``), call the domain, dump."""

from services.grid import incidents, residents, schemas, screening, units
from services.grid.models import Base, IdempotentRequest, OutboxEvent, ProcessedEvent
from services.grid.unit_cache import UnitCacheProvider, unit_event_broadcast
from services.grid.vocabulary import DEFAULT_DEADLINES, DEFAULT_DEPARTMENTS
from shared import service as base
from shared.db import Database, utcnow
from shared.endpoints import endpoint, on_event, rpc
from shared.replies import page
from shared.telemetry import SqlGauge, Telemetry
from shared.timers import config_timer
from shared.validation import page_of

ADMIN = ("admin",)
MANAGERS = ("admin", "officer")
STAFF = ("admin", "officer", "grid_worker")
STAFF_AND_SERVICES = ("admin", "officer", "grid_worker", "service")
# Reading the unit tree takes a unit scope, which only staff and services have: a resident, volunteer,
# lawyer or mediator reaches no unit, whatever unit their token names (shared.auth.Caller.reaches).
UNIT_READERS = STAFF_AND_SERVICES

GAUGES = [
    SqlGauge(
        "grassroots_grid_units",
        "Open units by level.",
        "SELECT level, count(*) FROM units WHERE closed = false GROUP BY level",
        labels=["level"],
    ),
    SqlGauge("grassroots_grid_residents", "Registered residents.", "SELECT count(*) FROM residents"),
    SqlGauge(
        "grassroots_grid_tagged_residents",
        "Residents carrying each tag.",
        "SELECT tag, count(*) FROM resident_tags GROUP BY tag",
        labels=["tag"],
    ),
    SqlGauge(
        "grassroots_grid_open_incidents",
        "Unresolved incidents by the level handling them.",
        "SELECT handling_level, count(*) FROM incidents WHERE status <> 'resolved' GROUP BY handling_level",
        labels=["handling_level"],
    ),
    # Households visited at least once over households in the area, for campaigns running today.
    SqlGauge(
        "grassroots_grid_screening_coverage_ratio",
        "Screening coverage of each running campaign (0-1).",
        "SELECT c.id, (SELECT count(DISTINCT v.household_id) FROM screening_visits v WHERE v.campaign_id = c.id)"
        " * 1.0 / NULLIF((SELECT count(*) FROM households h WHERE h.unit_path LIKE c.unit_path || '%'), 0)"
        " FROM screening_campaigns c WHERE c.starts_on <= CURRENT_DATE AND c.ends_on >= CURRENT_DATE",
        labels=["campaign_id"],
    ),
]


class GridService(base.ServiceBase):
    name = "grid"

    db = Database(Base, outbox_model=OutboxEvent, processed_model=ProcessedEvent, idempotency_model=IdempotentRequest)
    telemetry = Telemetry(gauges=GAUGES)
    unit_cache = UnitCacheProvider()

    @property
    def policy(self):
        return incidents.Policy(
            {**DEFAULT_DEPARTMENTS, **(self.config.get("INCIDENT_DEPARTMENTS") or {})},
            {**DEFAULT_DEADLINES, **(self.config.get("ESCALATION_DEADLINES") or {})},
        )

    # ---- units ------------------------------------------------------------

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.CreateUnit(), returns=schemas.UNIT)
    def create_unit(self, caller, **args):
        return units.create_unit(self.db, caller, **args)

    @rpc
    @endpoint(roles=UNIT_READERS, schema=schemas.UnitRef(), returns=schemas.UNIT, read_only=True)
    def get_unit(self, caller, unit_id):
        return units.cached_unit(self.db, self.unit_cache, caller, unit_id)

    @unit_event_broadcast
    def drop_cached_units(self, body):
        """Every replica drops the cached units a unit event changed (services/grid/unit_cache.py)."""
        return self.unit_cache.apply(body)

    @rpc
    @endpoint(roles=UNIT_READERS, schema=schemas.ListUnits(), returns=page(schemas.UNIT), read_only=True)
    def list_units(self, caller, page, page_size, **args):
        rows, more = units.list_units(self.db.session, caller, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    @rpc
    @endpoint(roles=UNIT_READERS, schema=schemas.UnitRef(), returns=schemas.UNITS, read_only=True)
    def ancestors(self, caller, unit_id):
        return units.ancestors(self.db.session, caller, unit_id)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.MoveUnit(), returns=schemas.UNIT)
    def move_unit(self, caller, **args):
        return units.move_unit(self.db, caller, **args)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.UnitRef(), returns=schemas.UNIT)
    def close_unit(self, caller, unit_id):
        return units.close_unit(self.db, caller, unit_id)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.SetPartyOrg(), returns=schemas.UNIT)
    def set_party_org(self, caller, **args):
        return units.set_party_org(self.db, caller, **args)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.AssignStaff(), returns=schemas.STAFF)
    def assign_staff(self, caller, **args):
        return units.assign_staff(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.UnitRef(), returns=schemas.STAFF_LIST, read_only=True)
    def list_staff(self, caller, unit_id):
        return units.list_staff(self.db.session, caller, unit_id)

    # ---- households and residents -----------------------------------------

    @rpc
    @endpoint(roles=STAFF, schema=schemas.RegisterHousehold(), returns=schemas.HOUSEHOLD)
    def register_household(self, caller, **args):
        return residents.register_household(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.HouseholdRef(), returns=schemas.HOUSEHOLD_DETAIL, read_only=True)
    def get_household(self, caller, household_id):
        """A household's address, unit path and member ids (for services acting on a whole household)."""
        return residents.household_view(self.db.session, caller, household_id)

    @rpc
    @endpoint(roles=STAFF, schema=schemas.MoveHousehold(), returns=schemas.HOUSEHOLD)
    def move_household(self, caller, **args):
        return residents.move_household(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF, schema=schemas.RegisterResident(), returns=schemas.RESIDENT)
    def register_resident(self, caller, **args):
        return residents.register_resident(self.db, caller, self.vault, **args)

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES + ("resident",), schema=schemas.ResidentRef(), returns=schemas.RESIDENT, read_only=True
    )
    def get_resident(self, caller, resident_id):
        return residents.get_resident(self.db.session, caller, self.vault, resident_id)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.TagResident(), returns=schemas.TagSetOut())
    def tag_resident(self, caller, **args):
        return residents.tag_resident(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.UntagResident(), returns=schemas.TagRemovedOut())
    def untag_resident(self, caller, resident_id, tag):
        return residents.untag_resident(self.db, caller, resident_id, tag)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.FindResidents(), returns=schemas.ResidentPage(), read_only=True)
    def find_residents(self, caller, **args):
        return residents.find_residents(self.db.session, caller, self.vault, **args)

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES,
        schema=schemas.FindResidentColumns(),
        returns=schemas.ResidentColumnsOut(),
        read_only=True,
    )
    def find_resident_columns(self, caller, **args):
        """Residents under a unit as a compact keyset page of columns (a notice's audience, page by page)."""
        return residents.resident_columns(self.db.session, caller, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.GetResidents(), returns=schemas.ResidentsFound(), read_only=True)
    def get_residents(self, caller, resident_ids):
        return residents.get_residents(self.db.session, caller, self.vault, resident_ids)

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES, schema=schemas.ResidentFilter(), returns=schemas.ResidentCount(), read_only=True
    )
    def count_residents(self, caller, **args):
        return residents.count_residents(self.db.session, caller, **args)

    # ---- screening --------------------------------------------------------

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.StartScreening(), returns=schemas.CAMPAIGN)
    def start_screening(self, caller, **args):
        return screening.start_screening(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF, schema=schemas.RecordVisit(), returns=schemas.VISIT)
    def record_visit(self, caller, **args):
        return screening.record_visit(self.db, caller, self.policy, **args)

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES,
        schema=schemas.ScreeningProgress(),
        returns=schemas.ScreeningProgressOut(),
        read_only=True,
    )
    def screening_progress(self, caller, **args):
        return screening.screening_progress(self.db.session, caller, **args)

    # ---- incidents --------------------------------------------------------

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.ReportIncident(), returns=schemas.INCIDENT)
    def report_incident(self, caller, **args):
        return incidents.report_incident(self.db, caller, self.policy, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.EscalateIncident(), returns=schemas.INCIDENT)
    def escalate_incident(self, caller, **args):
        return incidents.escalate_incident(self.db, caller, self.policy, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.ResolveIncident(), returns=schemas.INCIDENT)
    def resolve_incident(self, caller, **args):
        return incidents.resolve_incident(self.db, caller, **args)

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES, schema=schemas.IncidentRef(), returns=schemas.IncidentDetailOut(), read_only=True
    )
    def get_incident(self, caller, incident_id):
        return incidents.incident_trail(self.db.session, caller, incident_id)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.ListIncidents(), returns=page(schemas.INCIDENT), read_only=True)
    def list_incidents(self, caller, page, page_size, **args):
        rows, more = incidents.list_incidents(self.db.session, caller, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    # ---- escalation from other services (bottom-up) ------------------------

    @on_event("volunteer", "request_unmatched", schema=schemas.HelpRequestUnmatched())
    def on_request_unmatched(self, envelope, data):
        """Nobody could take a help request: the grid it came from takes it up as an incident."""
        incident, _ = incidents.raise_for_unmatched_request(self.db, self.policy, **data)
        return str(incident.id)

    @on_event("volunteer", "shift_understaffed", schema=schemas.ShiftUnderstaffed())
    def on_shift_understaffed(self, envelope, data):
        """A duty post will be short of volunteers: its grid has to find people."""
        incident, _ = incidents.raise_for_understaffed_shift(self.db, self.policy, **data)
        return str(incident.id)

    @on_event("legal", "mediation_closed", schema=schemas.MediationClosed())
    def on_mediation_closed(self, envelope, data):
        """A dispute's mediation ended: resolve its incident, or send it on to political_legal (court)."""
        if data["source_incident_id"] is None:
            return "not from an incident"
        incident = incidents.settle_from_mediation(
            self.db, self.policy, data["source_incident_id"], data["case_id"], data["outcome"], "system:legal"
        )
        return "settled" if incident is not None else "already settled"

    # ---- housekeeping -----------------------------------------------------

    @config_timer("HOUSEKEEPING_INTERVAL", 15.0)
    def housekeeping(self):
        """Escalate incidents past their deadline and drop expired tags."""
        now = utcnow()
        incidents.escalate_overdue(self.db, self.policy, now)
        residents.expire_tags(self.db, now)
