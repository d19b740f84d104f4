"""The volunteer service: volunteers and pledges, duty posts and shifts, and help requests
matched to nearby volunteers."""

import datetime as dt
from zoneinfo import ZoneInfo

from services.grid.client import GridClient, HouseholdMoved, UnitClosed, UnitCreated, UnitMoved
from services.notices.client import NoticesClient
from services.volunteer import care, duty, erasure, grid_changes, people, requests, schemas
from services.volunteer.models import FACTS, Base, IdempotentRequest, OutboxEvent, ProcessedEvent
from shared import grid_facts, service as base
from shared.db import Database, utcnow
from shared.endpoints import endpoint, on_event, rpc
from shared.telemetry import CounterSpec, SqlGauge, Telemetry
from shared.timers import config_timer
from shared.validation import page_of

STAFF = ("admin", "officer", "grid_worker")
STAFF_SERVICE = STAFF + ("service",)
SELF_OR_STAFF = STAFF + ("volunteer", "service")
EVERYONE = ("admin", "officer", "grid_worker", "lawyer", "mediator", "volunteer", "resident", "service")

GAUGES = [
    SqlGauge(
        "grassroots_volunteer_volunteers",
        "Volunteers by active flag.",
        "SELECT CASE WHEN active THEN 'active' ELSE 'inactive' END, count(*) FROM volunteers GROUP BY active",
        labels=["state"],
    ),
    SqlGauge(
        "grassroots_volunteer_requests",
        "Help requests by status.",
        "SELECT status, count(*) FROM help_requests GROUP BY status",
        labels=["status"],
    ),
    SqlGauge(
        "grassroots_volunteer_pending_offers",
        "Offers waiting for an answer.",
        "SELECT count(*) FROM offers WHERE status = 'pending'",
    ),
]


PURGED_KINDS = (
    "grid_residents",
    "grid_households",
    "help_requests",
    "volunteers",
    "pledges",
    "care_subjects",
    "care_plans",
    "care_requests_cancelled",
)
COUNTERS = [
    CounterSpec("grassroots_volunteer_erasures_total", "Residents' erasures (grid.resident_erased) applied here."),
    CounterSpec(
        "grassroots_volunteer_derived_data_purged_total",
        "Rows anonymised or deleted because a resident was erased or a health tag purged, by kind (table).",
        labels=["kind"],
        start_labels=[(k,) for k in PURGED_KINDS],
    ),
]


class VolunteerService(grid_facts.KeepsGridFacts, base.ServiceBase):
    name = "volunteer"

    db = Database(Base, outbox_model=OutboxEvent, processed_model=ProcessedEvent, idempotency_model=IdempotentRequest)
    grid = GridClient()
    notices = NoticesClient()
    telemetry = Telemetry(gauges=GAUGES, counters=COUNTERS)

    @property
    def policy(self):
        return requests.Policy(self.config)

    @property
    def facts(self):
        """The grid's facts as this service's read model has them (the grid asked only on a miss)."""
        return grid_facts.LocalGrid(self.db.session, self.grid, FACTS)

    @property
    def zone(self):
        return ZoneInfo(self.config.get("TIMEZONE") or "Asia/Shanghai")

    # ---- volunteers and pledges -------------------------------------------

    @rpc
    @endpoint(roles=STAFF, schema=schemas.RegisterVolunteer(), returns=schemas.VOLUNTEER)
    def register_volunteer(self, caller, **args):
        return people.register_volunteer(self.db, caller, self.facts, self.vault, **args)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.UpdateVolunteer(), returns=schemas.VOLUNTEER)
    def update_volunteer(self, caller, volunteer_id, **changes):
        return people.update_volunteer(self.db, caller, self.facts, self.vault, volunteer_id, **changes)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.VolunteerRef(), returns=schemas.VOLUNTEER, read_only=True)
    def get_volunteer(self, caller, volunteer_id):
        return people.reachable_volunteer(self.db.session, caller, volunteer_id)

    @rpc
    @endpoint(roles=STAFF_SERVICE, schema=schemas.ListVolunteers(), returns=schemas.VOLUNTEER_PAGE, read_only=True)
    def list_volunteers(self, caller, page, page_size, **args):
        rows, more = people.list_volunteers(self.db.session, caller, self.facts, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.SetActive(), returns=schemas.VOLUNTEER)
    def set_active(self, caller, volunteer_id, active):
        return people.set_active(self.db, caller, volunteer_id, active)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.MakePledge(), returns=schemas.PLEDGE)
    def make_pledge(self, caller, **args):
        return people.make_pledge(self.db, caller, **args)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.FulfilPledge(), returns=schemas.PLEDGE)
    def fulfil_pledge(self, caller, **args):
        return people.fulfil_pledge(self.db, caller, **args)

    @rpc
    @endpoint(roles=EVERYONE, schema=schemas.ListPledges(), returns=schemas.PLEDGE_BOARD, read_only=True)
    def list_pledges(self, caller, under, status):
        return people.list_pledges(self.db.session, self.facts, under, status)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.Hours(), returns=schemas.HOURS, read_only=True)
    def hours(self, caller, volunteer_id, since):
        return people.hours(self.db.session, caller, volunteer_id, since)

    # ---- duty posts and shifts --------------------------------------------

    @rpc
    @endpoint(roles=("admin", "officer"), schema=schemas.CreatePost(), returns=schemas.POST)
    def create_post(self, caller, **args):
        return duty.create_post(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=("admin", "officer"), schema=schemas.AddShift(), returns=schemas.SHIFT)
    def add_shift(self, caller, **args):
        return duty.add_shift(self.db, caller, **args)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.ShiftVolunteer(), returns=schemas.SIGNUP)
    def sign_up(self, caller, shift_id, volunteer_id):
        return duty.sign_up(self.db, caller, shift_id, volunteer_id)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.ShiftVolunteer(), returns=schemas.SIGNUP)
    def withdraw(self, caller, shift_id, volunteer_id):
        return duty.withdraw(self.db, caller, shift_id, volunteer_id)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.ShiftVolunteer(), returns=schemas.SIGNUP)
    def check_in(self, caller, shift_id, volunteer_id):
        return duty.check_in(self.db, caller, shift_id, volunteer_id)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.ShiftVolunteer(), returns=schemas.SIGNUP)
    def check_out(self, caller, shift_id, volunteer_id):
        return duty.check_out(self.db, caller, shift_id, volunteer_id)

    @rpc
    @endpoint(roles=STAFF_SERVICE, schema=schemas.Coverage(), returns=schemas.SHIFT_GAPS, read_only=True)
    def coverage(self, caller, under, date):
        return duty.coverage(self.db.session, caller, self.facts, self.zone, under, date)

    # ---- help requests ----------------------------------------------------

    @rpc
    @endpoint(roles=STAFF_SERVICE + ("resident",), schema=schemas.CreateRequest(), returns=schemas.REQUEST_VIEW)
    def create_request(self, caller, **args):
        return requests.create_request(self.db, caller, self.facts, self.notices, self.policy, **args)

    @rpc
    @endpoint(roles=("volunteer", "admin"), schema=schemas.RespondOffer(), returns=schemas.OFFER_ANSWER)
    def respond_offer(self, caller, offer_id, accept):
        return requests.respond_offer(self.db, caller, self.facts, self.notices, self.policy, offer_id, accept)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.CompleteRequest(), returns=schemas.REQUEST_VIEW)
    def complete_request(self, caller, request_id, note):
        return requests.complete_request(self.db, caller, request_id, note)

    @rpc
    @endpoint(roles=STAFF_SERVICE + ("resident",), schema=schemas.ConfirmRequest(), returns=schemas.REQUEST_VIEW)
    def confirm_request(self, caller, request_id, rating):
        return requests.confirm_request(self.db, caller, request_id, rating)

    @rpc
    @endpoint(
        roles=SELF_OR_STAFF + ("resident",), schema=schemas.RequestRef(), returns=schemas.REQUEST_VIEW, read_only=True
    )
    def get_request(self, caller, request_id):
        return requests.reachable_request(self.db.session, caller, request_id)

    @rpc
    @endpoint(roles=STAFF_SERVICE, schema=schemas.ListRequests(), returns=schemas.REQUEST_PAGE, read_only=True)
    def list_requests(self, caller, page, page_size, **args):
        rows, more = requests.list_requests(self.db.session, caller, self.facts, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    @rpc
    @endpoint(roles=SELF_OR_STAFF, schema=schemas.VolunteerRef(), returns=schemas.TASKS, read_only=True)
    def my_tasks(self, caller, volunteer_id):
        return requests.my_tasks(self.db.session, caller, volunteer_id)

    # ---- the read model of grid facts (shared.grid_facts.KeepsGridFacts: resync RPC and timer) ----

    grid_fact_models = FACTS

    # ---- reacting to the grid and notices -----------------------------------

    @on_event("grid", "resident_tagged", schema=schemas.QuarantineTag())
    def on_resident_tagged(self, envelope, data):
        """A household member put under home quarantine: daily groceries and check-in for the household."""
        if data["tag"] != "quarantined":
            return "not quarantine"
        if grid_facts.erased_among(self.db.session, FACTS, [data["resident_id"]]):
            return "erased"  # arrived after the erasure: nothing about them is stored again
        if not care.record_tag(self.db.session, data["resident_id"], data["household_id"], True, _event_time(envelope)):
            return "stale"
        _, opened = care.start(self.db, self.facts, self.notices, self.policy, data["household_id"], utcnow())
        return [str(r.id) for r in opened]

    @on_event("grid", "resident_untagged", schema=schemas.QuarantineTag())
    def on_resident_untagged(self, envelope, data):
        """The last quarantined member released: the household's care stops and open requests close."""
        if data["tag"] != "quarantined":
            return "not quarantine"
        if grid_facts.erased_among(self.db.session, FACTS, [data["resident_id"]]):
            return "erased"
        if not care.record_tag(
            self.db.session, data["resident_id"], data["household_id"], False, _event_time(envelope)
        ):
            return "stale"
        if care.household_quarantined(self.db.session, data["household_id"]):
            return "household still quarantined"
        return [str(r.id) for r in care.stop(self.db, data["household_id"], utcnow())]

    # The read model's tags (matching skips quarantined volunteers) are kept by handlers of their own:
    # each commits alone, so a failure of the household's care above (notices away) cannot undo them.

    @on_event("grid", "resident_tagged", schema=schemas.QuarantineTag())
    def keep_resident_tagged(self, envelope, data):
        """A resident tagged: the read model's tags as the grid has them now."""
        return self._keep_tags(data)

    @on_event("grid", "resident_untagged", schema=schemas.QuarantineTag())
    def keep_resident_untagged(self, envelope, data):
        """A resident untagged: the read model's tags as the grid has them now."""
        return self._keep_tags(data)

    def _keep_tags(self, data):
        if data["tag"] not in FACTS.tags:
            return "tag not kept"
        return grid_changes.resident_changed(self.db.session, self.grid, data["resident_id"])

    @on_event("notices", "notice_unacknowledged", schema=schemas.NoticeUnacknowledged())
    def on_notice_unacknowledged(self, envelope, data):
        """Vulnerable residents who did not acknowledge a notice get a door-knock, one per household."""
        gone = grid_facts.erased_among(self.db.session, FACTS, [r["resident_id"] for r in data["residents"]])
        residents = [r for r in data["residents"] if int(r["resident_id"]) not in gone]
        opened = care.door_knocks(
            self.db, self.facts, self.notices, self.policy, data["notice_id"], residents, utcnow()
        )
        return [str(r.id) for r in opened]

    # ---- erasure (PIPL): the grid's resident_erased and tag_purged (services/volunteer/erasure.py) ----

    @on_event("grid", "resident_erased", schema=grid_facts.ResidentErased())
    def on_resident_erased(self, envelope, data):
        """A resident erased at the grid: their help requests, care state and volunteer record anonymised
        (ids and statuses kept), their read-model row gone and a tombstone keeping them out for good."""
        now = utcnow()
        model = grid_facts.resident_erased(self.db.session, FACTS, data, now)
        done = erasure.resident_erased(
            self.db, data["resident_id"], data["household_id"], data["household_emptied"], now
        )
        done["remembered_replies"] = erasure.forget_replies_of(
            self.db, self.vault, data["resident_id"], data["household_id"], data["household_emptied"]
        )
        self.telemetry.count("grassroots_volunteer_erasures_total", amount=model.pop("tombstone"))
        return self._count_purged({**model, **done})

    @on_event("grid", "tag_purged", schema=grid_facts.TagPurged())
    def on_tag_purged(self, envelope, data):
        """A resident's quarantine tag purged at the grid: their care subject and, with nobody left under
        care, the stopped care plan's address go; the tag leaves the read model's row. All local, no grid
        call: the purge never waits for the grid (the model first: the copies lock before care's)."""
        kept = grid_facts.tag_purged(self.db.session, FACTS, data["resident_id"], data["tag"])
        done = erasure.tag_purged(
            self.db,
            data["resident_id"],
            data["household_id"],
            data["tag"],
            data["released_at"],
            data["reason"],
            utcnow(),
        )
        done["grid_residents"] = int(kept)
        return self._count_purged(done)

    def _count_purged(self, done):
        for kind, rows in done.items():
            self.telemetry.count("grassroots_volunteer_derived_data_purged_total", kind, amount=rows)
        return done

    # ---- timers -----------------------------------------------------------

    @config_timer("CARE_INTERVAL", 300.0)
    def open_daily_care(self):
        """Each local day, open the day's groceries and check-in for every household under quarantine."""
        policy, now = self.policy, utcnow()
        for household_id in care.due_households(self.db.session, policy, now):
            care.open_due(self.db, self.facts, self.notices, policy, household_id, now)
            # Each household's requests commit on their own: one slow match holds no long transaction,
            # and a restart loses nothing (what was opened has its origin; the rest follows).
            self.db.commit()

    @config_timer("OFFER_SWEEP_INTERVAL", 5.0)
    def sweep_offers(self):
        """Expired offers move their requests on to the next candidate."""
        requests.expire_offers(self.db, self.facts, self.notices, self.policy, utcnow())

    @config_timer("SHIFT_CHECK_INTERVAL", 60.0)
    def check_shifts(self):
        """Warn about shifts starting soon with too few volunteers."""
        lead = dt.timedelta(minutes=float(self.config.get("UNDERSTAFFED_LEAD_MINUTES", 120)))
        duty.report_understaffed(self.db, lead, utcnow())

    # ---- the grid's tree changes (services/volunteer/grid_changes.py) -------

    @on_event("grid", "unit_created", schema=UnitCreated())
    def on_unit_created(self, envelope, data):
        """A new unit: into the read model of grid facts (so its first request reads it locally)."""
        return grid_changes.unit_changed(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "unit_moved", schema=UnitMoved())
    def on_unit_moved(self, envelope, data):
        """A unit moved under a new parent: homes, posts, shifts, pledges, requests and plans follow it."""
        return grid_changes.unit_moved(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "household_moved", schema=HouseholdMoved())
    def on_household_moved(self, envelope, data):
        """A household moved to another small grid: its care plan, pending requests and volunteers follow."""
        return grid_changes.household_moved(self.db.session, self.grid, data["household_id"])

    @on_event("grid", "unit_closed", schema=UnitClosed())
    def on_unit_closed(self, envelope, data):
        """A unit closed: nothing is stopped (its people are still there); what is open inside is logged."""
        grid_changes.unit_changed(self.db.session, self.grid, data["unit_id"])
        return grid_changes.unit_closed(self.db.session, data["unit_id"])


def _event_time(envelope):
    return dt.datetime.fromisoformat(envelope["time"])
