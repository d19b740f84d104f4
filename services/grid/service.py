"""The grid service: the unit tree, staff, households and residents, screening,
incidents and escalation. Entrypoints are thin: authorise and validate
(``endpoint``), call the domain, dump."""

from nameko.web.handlers import http

from services.grid import (
    access_log,
    erasure,
    incidents,
    open311,
    reports,
    residents,
    retention,
    schemas,
    screening,
    units,
)
from services.grid.models import Base, IdempotentRequest, OutboxEvent, ProcessedEvent
from services.grid.unit_cache import UnitCacheProvider, unit_event_broadcast
from services.grid.vocabulary import DEFAULT_DEADLINES, DEFAULT_DEPARTMENTS
from shared import service as base
from shared.db import Database, utcnow
from shared.endpoints import endpoint, on_event, rpc
from shared.errors import RateLimited
from shared.replies import page
from shared.telemetry import SqlGauge, Telemetry
from shared.timers import config_timer
from shared.validation import page_of

ADMIN = ("admin",)
MANAGERS = ("admin", "officer")
STAFF = ("admin", "officer", "grid_worker")
STAFF_AND_SERVICES = ("admin", "officer", "grid_worker", "service")
RESIDENT = ("resident",)
# The public list of reports answers every authenticated caller.
EVERYONE = ("admin", "officer", "grid_worker", "service", "resident", "volunteer", "lawyer", "mediator")
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
    SqlGauge(
        "grassroots_grid_residents",
        "Registered residents (erased ones left out).",
        "SELECT count(*) FROM residents WHERE erased_at IS NULL",
    ),
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
    telemetry = Telemetry(gauges=GAUGES + reports.GAUGES, counters=reports.COUNTERS)
    open311_bound = open311.Open311Bound()
    unit_cache = UnitCacheProvider()
    lifecycle = retention.LifecycleProvider()

    @classmethod
    def check_config(cls, config):
        """Before anything starts (shared.runner): a bad lifecycle setting (TAG_POLICIES,
        ACCESS_LOG_RETENTION, LIFECYCLE_INTERVAL) is a ValueError whose one line names it."""
        retention.check_config(config)

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

    # The four reads below show names and, to a ``pii`` caller, ID and phone numbers unmasked: such a read
    # is recorded in the residents' access log (services/grid/access_log.py) in the read's transaction;
    # any other read stays in autocommit mode (``Reading``), as a ``read_only`` endpoint's.

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES + ("resident",), schema=schemas.ResidentRef(), returns=schemas.RESIDENT, remember=False
    )
    def get_resident(self, caller, resident_id):
        """A resident with their tags; ID and phone numbers masked unless the caller has ``pii`` (such a
        read is recorded in the resident's access log, with the context data's ``purpose``)."""
        reading = access_log.Reading(self.db, self.lifecycle, caller, "get_resident")
        resident = residents.get_resident(self.db.session, caller, self.vault, resident_id)
        reading.residents([resident.id], "resident_record")
        return resident

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.TagResident(), returns=schemas.TagSetOut())
    def tag_resident(self, caller, **args):
        return residents.tag_resident(self.db, caller, **args)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.UntagResident(), returns=schemas.TagRemovedOut())
    def untag_resident(self, caller, resident_id, tag):
        return residents.untag_resident(self.db, caller, resident_id, tag, lifecycle=self.lifecycle.lifecycle)

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.FindResidents(), returns=schemas.ResidentPage(), remember=False)
    def find_residents(self, caller, **args):
        """A page of residents (phones masked unless ``pii``: each resident shown is then recorded in
        their access log)."""
        reading = access_log.Reading(self.db, self.lifecycle, caller, "find_residents")
        found = residents.find_residents(self.db.session, caller, self.vault, **args)
        reading.residents([item.id for item in found["items"]], "resident_contact")
        return found

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES,
        schema=schemas.FindResidentColumns(),
        returns=schemas.ResidentColumnsOut(),
        remember=False,
    )
    def find_resident_columns(self, caller, **args):
        """Residents under a unit as a compact keyset page of columns (a notice's audience, page by page).
        A walk with phones is recorded once in the access log of every resident under the unit: at its
        first page (no ``after``); the pages after it continue the same read."""
        with_phones = bool(args["phones"] and caller.pii)
        first_page = args.get("after") is None
        reading = access_log.Reading(
            self.db, self.lifecycle, caller, "find_resident_columns", audited=with_phones and first_page
        )
        columns = residents.resident_columns(self.db.session, caller, **args)
        reading.scope(columns["scope_path"], "phones")
        return columns

    @rpc
    @endpoint(roles=STAFF_AND_SERVICES, schema=schemas.GetResidents(), returns=schemas.ResidentsFound(), remember=False)
    def get_residents(self, caller, resident_ids):
        """Several residents by id (phones masked unless ``pii``: each one found is then recorded in their
        access log)."""
        reading = access_log.Reading(self.db, self.lifecycle, caller, "get_residents")
        found = residents.get_residents(self.db.session, caller, self.vault, resident_ids)
        reading.residents([item.id for item in found["items"]], "resident_contact")
        return found

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES, schema=schemas.ResidentFilter(), returns=schemas.ResidentCount(), read_only=True
    )
    def count_residents(self, caller, **args):
        return residents.count_residents(self.db.session, caller, **args)

    # ---- the data lifecycle (PIPL): retention.py, erasure.py, access_log.py ----

    @rpc
    @endpoint(
        roles=STAFF_AND_SERVICES + ("resident",),
        schema=schemas.NoArguments(),
        returns=schemas.TAG_POLICIES,
        read_only=True,
    )
    def tag_policies(self, caller):
        """Every tag's purpose, how long a released tag is kept before it is purged in every service,
        and how long a tag set without ``until`` may stand."""
        return retention.policies_view(self.lifecycle.lifecycle)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.EraseResident(), returns=schemas.ERASURE)
    def erase_resident(self, caller, resident_id, reason):
        """Erase a resident's personal data: a first manager's call files the request (``pending_approval``);
        another manager's call approves and carries it out (``erased``; ``resident_erased`` tells every
        service). The requester calling again is a Conflict; an erased resident answers ``erased``."""
        step = erasure.erase_resident(self.db, caller, self.vault, resident_id, reason)
        self.lifecycle.count_erasure(self.db.session, step)
        return step

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.ErasureRef(), returns=schemas.ERASURE)
    def cancel_erasure(self, caller, erasure_id):
        """Withdraw a pending erasure request (its requester, or another manager who reaches the resident)."""
        step = erasure.cancel_erasure(self.db, caller, erasure_id)
        self.lifecycle.count_erasure(self.db.session, step)
        return step

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.ListErasures(), returns=page(schemas.ErasureOut), read_only=True)
    def list_erasures(self, caller, under, status, page, page_size):
        """Erasure requests of residents under ``under``, newest first (``status``: pending, done, cancelled)."""
        rows, more = erasure.list_erasures(self.db.session, caller, under, status, page, page_size)
        return page_of(rows, page, page_size, more)

    @rpc
    @endpoint(
        roles=STAFF + ("resident",),
        schema=schemas.AccessLogArgs(),
        returns=page(schemas.AccessLogEntryOut),
        remember=False,
    )
    def access_log(self, caller, resident_id, page, page_size):
        """Who read the resident's personal data, when, where and why, newest first: ``pii`` reads in the
        grid (of the resident, or of every resident under a unit above them) and reads other services
        reported (legal). A resident reads their own; staff who reach the resident read it on their
        behalf, and that read is recorded too."""
        rows, more = access_log.access_log(self.db, self.lifecycle, caller, resident_id, page, page_size)
        return page_of(rows, page, page_size, more)

    @on_event("legal", "sensitive_data_read", schema=schemas.SensitiveDataRead())
    def on_sensitive_data_read(self, envelope, data):
        """legal read a resident's sensitive data (a consultation summary, an unmasked party phone): the
        resident's access log records it."""
        access_log.record_reported(self.db, self.lifecycle, "legal", data)
        return "recorded"

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

    # ---- residents' reports and the Open311 view (services/grid/reports.py, open311.py) ----

    @property
    def report_rules(self):
        return reports.ReportRules.from_config(self.config)

    @rpc
    @endpoint(roles=RESIDENT, schema=schemas.ReportProblem(), returns=schemas.REPORT)
    def report_problem(self, caller, **args):
        """A resident reports a problem at their own household's small grid: an incident (source
        ``resident``), at most ``REPORT_LIMIT`` per ``REPORT_LIMIT_PERIOD`` seconds (``RateLimited``)."""
        try:
            return reports.report_problem(self.db, caller, self.policy, self.report_rules, **args)
        except RateLimited:
            reports.count_refusal(self.telemetry, "rate_limit")
            raise

    @rpc
    @endpoint(roles=RESIDENT, schema=schemas.MyReports(), returns=page(schemas.REPORT), read_only=True)
    def my_reports(self, caller, page, page_size, status):
        """The reports the resident follows (their own, and those theirs were merged into), newest first."""
        rows, more = reports.my_reports(self.db.session, caller, self.report_rules, status, page, page_size)
        return page_of(rows, page, page_size, more)

    @rpc
    @endpoint(roles=RESIDENT, schema=schemas.ReportRef(), returns=schemas.REPORT)
    def confirm_resolution(self, caller, service_request_id):
        """The resident confirms a resolution of a report they follow, within ``REPORT_CONFIRM_WINDOW``."""
        return reports.confirm_resolution(self.db, caller, self.report_rules, service_request_id)

    @rpc
    @endpoint(roles=RESIDENT, schema=schemas.ReopenReport(), returns=schemas.REPORT)
    def reopen_report(self, caller, service_request_id, reason):
        """The resident reopens a resolved report they follow, within ``REPORT_CONFIRM_WINDOW``: it is
        open again at the unit it was reported at (``incident_reopened``)."""
        return reports.reopen_report(self.db, caller, self.policy, self.report_rules, service_request_id, reason)

    @rpc
    @endpoint(roles=STAFF, schema=schemas.AddPublicNote(), returns=schemas.INCIDENT)
    def add_public_note(self, caller, incident_id, note):
        """A note residents following the incident and the public list read (its ``status_notes``)."""
        return reports.add_public_note(self.db, caller, incident_id, note)

    @rpc
    @endpoint(roles=STAFF, schema=schemas.MergeReports(), returns=schemas.INCIDENT)
    def merge_reports(self, caller, primary_id, duplicate_id):
        """Close a report as a duplicate of another (both in the caller's reach); its reporters follow the
        other (``incident_merged``). Merging again changes nothing. Returns the duplicate."""
        return reports.merge_reports(self.db, caller, primary_id, duplicate_id)

    @rpc
    @endpoint(roles=EVERYONE, schema=schemas.PublicReports(), returns=page(schemas.PublicReportOut()), read_only=True)
    def public_reports(self, caller, unit_id, status, service_code, page, page_size):
        """The public reports under any unit, for any caller: category, status, dates, department and
        public notes; no resident's text, nobody's identity."""
        rows, more = reports.public_reports(self.db.session, unit_id, status, service_code, page, page_size)
        return page_of(rows, page, page_size, more)

    @http("GET", "/open311/v2/services.json")
    def open311_services(self, request):
        """Open311's service list: one service per incident category."""
        return open311.services_response(request, self.open311_bound, self.policy)

    @http("GET", "/open311/v2/requests.json")
    def open311_requests(self, request):
        """The public reports under a unit in GeoReport v2's names (services/grid/open311.py)."""
        max_rows = self.config.get("OPEN311_MAX_ROWS", open311.DEFAULT_MAX_ROWS)
        try:
            return open311.requests_response(request, self.open311_bound, self.db, max_rows)
        finally:
            self.db.commit()  # a read: hands the connection back

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
        residents.expire_tags(self.db, now, lifecycle=self.lifecycle.lifecycle)

    @config_timer("LIFECYCLE_INTERVAL", 60.0)
    def purge_expired_data(self):
        """The data lifecycle (services/grid/retention.py): lapse tags older than their policy's
        ``max_age``, purge released tags past their retention (``tag_purged``), drop access log rows past
        ``ACCESS_LOG_RETENTION``; a bounded batch of each per tick."""
        now = utcnow()
        lifecycle = self.lifecycle.lifecycle
        residents.expire_aged_tags(self.db, now, lifecycle)
        self.db.commit()
        purged = retention.purge_released(self.db, now)
        self.lifecycle.count_purged(self.db.session, purged)
        self.db.commit()
        retention.purge_access_log(self.db, now, lifecycle.access_log_retention)
