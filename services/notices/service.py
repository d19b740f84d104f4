"""The notices service: CAP-style notices to grid audiences over several channels, with
delivery tracking and acknowledgements; direct messages for the other services."""

import logging
from contextlib import closing

from nameko.extensions import DependencyProvider
from nameko.web.handlers import http

from services.grid.client import GridClient, HouseholdMoved, UnitClosed, UnitCreated, UnitMoved
from services.notices import (
    acks,
    audience,
    delivery,
    erasure,
    grid_changes,
    notices,
    outbound,
    preferences,
    publishing,
    schemas,
    webhook,
)
from services.notices.channels import RateLimiter, build_channels, check_settings, per_replica_rates
from services.notices.models import FACTS, Base, IdempotentRequest, OutboxEvent, ProcessedEvent
from shared import grid_facts, service as base
from shared.commands import on_command
from shared.db import Database, utcnow
from shared.endpoints import endpoint, on_event, rpc
from shared.replies import page
from shared.telemetry import SqlGauge, Telemetry
from shared.timers import config_timer
from shared.validation import page_of

MANAGERS = ("admin", "officer")
READERS = ("admin", "officer", "grid_worker", "service")
SERVICES = ("admin", "service")
ACKERS = ("admin", "officer", "grid_worker", "service", "resident")

log = logging.getLogger(__name__)

GAUGES = [
    SqlGauge(
        "grassroots_notices_notices",
        "Notices by status.",
        "SELECT status, count(*) FROM notices WHERE kind = 'notice' GROUP BY status",
        labels=["status"],
    ),
    SqlGauge(
        "grassroots_notices_deliveries",
        "Deliveries by channel and status.",
        "SELECT channel, status, count(*) FROM deliveries GROUP BY channel, status",
        labels=["channel", "status"],
    ),
    SqlGauge(
        "grassroots_notices_due_deliveries",
        "Deliveries whose time has come: queued ones, and claims past their lease (their dispatcher died).",
        "SELECT channel, count(*) FROM deliveries "
        "WHERE status IN ('queued', 'sending') AND next_attempt_at <= CURRENT_TIMESTAMP GROUP BY channel",
        labels=["channel"],
    ),
    SqlGauge(
        "grassroots_notices_acknowledgements",
        "Residents' acknowledgements of notices.",
        "SELECT count(*) FROM acknowledgements",
    ),
]


def commit_steps(uow, steps):
    """Run a generator of steps (``publishing.publish_due``, ``delivery.dispatch_due``), committing
    ``uow`` at every step boundary it yields: these transactions are the timer's, the domain never
    commits. The generator is closed even when a commit fails, so a dispatch's posts still out stop
    at once. Returns what the steps return."""
    with closing(steps):
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value
            uow.commit()


class Channels(DependencyProvider):
    """The deployment's channel adapters (stub twins where a URL says ``stub``; gateways with their
    auth header), rate limits (this replica's share of each channel's quota: ``per_replica_rates``)
    and outbound URL policies (gateways; chat-group webhooks). A refused gateway URL or channel
    setting fails the setup (the runner refuses even earlier: ``NoticesService.check_config``)."""

    def setup(self):
        self.policies = outbound.startup_policies(self.container.config)
        check_settings(self.container.config)
        config = self.container.config.get("CHANNELS") or {}
        self.adapters = build_channels(config, self.policies.gateways, self.policies.webhooks)
        rates = per_replica_rates(self.container.config)
        self.limiter = RateLimiter(rates)
        log.info(
            "channel rates per replica, sends per second: %s",
            ", ".join(f"{name} {rate:g}" for name, rate in sorted(rates.items())),
        )
        self.retry = delivery.RetryPolicy(
            self.container.config.get("DELIVERY_MAX_ATTEMPTS", 4), self.container.config.get("DELIVERY_RETRY_BASE", 2.0)
        )
        # Fresh deliveries due now are written already claimed and handed to this process's dispatcher
        # (publish_due → dispatch): up to two dispatch batches or audience pages wait there, whichever is
        # more (with the default batch, 2,000, two batches would not hold one page of 5,000: most of each
        # page would be written queued and claimed again from the table).
        config = self.container.config
        self.handoff = delivery.Handoff(
            self.adapters,
            self.limiter,
            lease=float(config.get("CLAIM_LEASE_SECONDS", delivery.LEASE_SECONDS)),
            capacity=2 * max(int(config.get("DISPATCH_BATCH", 2000)), audience.PAGE_SIZE),
        )

    def get_dependency(self, worker_ctx):
        return self


class NoticesService(grid_facts.KeepsGridFacts, base.ServiceBase):
    name = "notices"

    db = Database(Base, outbox_model=OutboxEvent, processed_model=ProcessedEvent, idempotency_model=IdempotentRequest)
    grid = GridClient(pii=True)
    channels = Channels()
    telemetry = Telemetry(gauges=GAUGES, counters=[*erasure.COUNTERS, *webhook.COUNTERS])
    inbound = webhook.InboundGateways()

    @property
    def timezone(self):
        return self.config.get("TIMEZONE") or "Asia/Shanghai"

    @property
    def facts(self):
        """The grid's facts as this service's read model has them (the grid asked only on a miss)."""
        return grid_facts.LocalGrid(self.db.session, self.grid, FACTS)

    @classmethod
    def check_config(cls, config):
        """Before anything starts (shared.runner): a refused gateway URL, outbound setting, auth
        header, rate or replica ceiling is a ValueError whose one-line message names the setting."""
        outbound.startup_policies(config)
        check_settings(config)
        webhook.inbound_secrets(config)

    # ---- notices ----------------------------------------------------------

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.CreateNotice(), returns=schemas.NOTICE)
    def create_notice(self, caller, **args):
        """A draft notice to the residents under the audience units (every one within the caller's scope)."""
        return notices.create_notice(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.NoticeRef(), returns=schemas.NOTICE)
    def approve_notice(self, caller, notice_id):
        """Approve a draft: the publishing timer publishes it at ``publish_at`` (now if none)."""
        return notices.approve_notice(self.db, caller, notice_id)

    @rpc
    @endpoint(roles=READERS, schema=schemas.NoticeRef(), returns=schemas.NOTICE, read_only=True)
    def get_notice(self, caller, notice_id):
        """A notice or direct message whose audience reaches into the caller's scope."""
        return notices.reachable_notice(self.db.session, caller, notice_id)

    @rpc
    @endpoint(roles=READERS, schema=schemas.ListNotices(), returns=page(schemas.NOTICE), read_only=True)
    def list_notices(self, caller, page, page_size, **args):
        """Notices (or direct messages) to units under ``under``, newest first; without ``under``, those
        under the caller's unit (all of them for an admin or service token naming no unit)."""
        rows, more = notices.list_notices(self.db.session, caller, self.facts, page=page, page_size=page_size, **args)
        return page_of(rows, page, page_size, more)

    # ---- deliveries -------------------------------------------------------

    @rpc
    @endpoint(roles=SERVICES, schema=schemas.RecordDeliveryStatus(), returns=schemas.DELIVERY)
    def record_delivery_status(self, caller, delivery_id, status, detail):
        """A gateway's report on a delivery: sent, delivered or failed."""
        return delivery.record_delivery_status(self.db, caller, delivery_id, status, detail)

    @rpc
    @endpoint(roles=ACKERS, schema=schemas.SetPreferences(), returns=schemas.PREFERENCES)
    def set_preferences(self, caller, **args):
        """A resident's channels and quiet hours (by the resident, or staff for a resident in their scope)."""
        return preferences.set_preferences(self.db, caller, self.facts, **args)

    @rpc
    @endpoint(roles=MANAGERS, schema=schemas.RegisterChatGroup(), returns=schemas.CHAT_GROUP)
    def register_chat_group(self, caller, **args):
        """Register (or replace) a small grid's chat-group robot webhook."""
        return preferences.register_chat_group(self.db, caller, self.facts, self.channels.policies.webhooks, **args)

    # ---- acknowledgements and reports -------------------------------------

    @rpc
    @endpoint(roles=ACKERS, schema=schemas.Acknowledge(), returns=schemas.ACKNOWLEDGEMENT)
    def acknowledge(self, caller, notice_id, resident_id):
        """A recipient acknowledges a notice (by the resident, or staff for a resident in their scope); once."""
        return acks.acknowledge(self.db, caller, self.facts, notice_id, resident_id)

    @rpc
    @endpoint(roles=READERS, schema=schemas.DeliveryReport(), returns=schemas.DELIVERY_REPORT, read_only=True)
    def delivery_report(self, caller, notice_id, level):
        """Who a notice reached, per unit, as far as the caller's scope goes."""
        notice = notices.reachable_notice(self.db.session, caller, notice_id)
        return acks.delivery_report(self.db.session, caller, self.facts, notice, level)

    # ---- gateways' inbound reports: SMS replies and keypresses (services/notices/inbound.py) ----

    @rpc
    @endpoint(roles=SERVICES, schema=schemas.RecordInbound(), returns=schemas.INBOUND)
    def record_inbound(self, caller, **args):
        """A gateway's report of a resident's SMS reply or keypress, matched to the delivery it answers (by
        the gateway's message id or our delivery id, else by phone: the latest open notice requiring an
        acknowledgement); recorded once per gateway_event_id. A reply ``1``, ``收到`` or ``确认`` (any
        width or case) or a keypress 1 acknowledges the notice. Unmatched: NotFound, nothing recorded."""
        return self.inbound.record(self.db, caller, self.vault, **args)

    @http("POST", "/gateways/<gateway>/inbound")
    def gateway_inbound(self, request, gateway):
        """``record_inbound`` over HTTP, signed with the gateway's secret (services/notices/webhook.py)."""
        caller = webhook.gateway_caller(gateway)

        def record(fields):
            reply = self.inbound.record_fields(self.db, caller, self.vault, fields)
            self.db.commit()  # before the answer, as @endpoint does
            return reply

        try:
            return webhook.handle(request, gateway, self.inbound.secrets, record, self.inbound.count)
        except Exception as error:  # handle answers every refusal: this is a lost race, or our bug
            self.db.rollback()
            return webhook.failure(error)

    # ---- direct messages --------------------------------------------------

    @rpc
    @endpoint(roles=SERVICES, schema=schemas.SendDirect(), returns=schemas.DIRECT_MESSAGE)
    def send_direct(self, caller, **args):
        """A message from a template to residents; a token scoped to a unit reaches only residents under it."""
        return publishing.send_direct(self.db, caller, self.grid, self.vault, self.timezone, **args)

    @on_command("send_direct", schema=schemas.SendDirectCommand())
    def on_send_direct(self, sender, envelope, data):
        """Another service's message to residents (an offer, a reminder): one message per origin."""
        message = publishing.send_direct(self.db, sender, self.grid, self.vault, self.timezone, **data)
        return str(message.id)

    # ---- reacting to the grid ---------------------------------------------

    @on_event("grid", "resident_tagged", schema=schemas.ResidentTagged())
    def on_resident_tagged(self, envelope, data):
        """A resident put under home quarantine: their household gets the instructions."""
        if data["tag"] != "quarantined":
            return "not quarantine"
        if grid_facts.erased_among(self.db.session, FACTS, [data["resident_id"]]):
            return "erased"  # arrived after the erasure: nothing is sent about them
        message, not_sent = publishing.quarantine_instructions(
            self.db, f"system:{self.name}", self.grid, self.vault, self.timezone, data["household_id"], data["until"]
        )
        return not_sent or str(message.id)

    # ---- erasure (PIPL): the grid's resident_erased and tag_purged (services/notices/erasure.py) ----

    @on_event("grid", "resident_erased", schema=grid_facts.ResidentErased())
    def on_resident_erased(self, envelope, data):
        """A resident erased at the grid: their recipients' phones and tag snapshots cleared, deliveries not
        yet sent failed (no post after the erasure), preferences deleted; a tombstone keeps them out."""
        now = utcnow()
        done = {**grid_facts.resident_erased(self.db.session, FACTS, data, now)}
        done.update(erasure.resident_erased(self.db.session, data["resident_id"], now))
        done["remembered_replies"] = erasure.forget_replies_of(self.db, self.vault, data["resident_id"])
        self.telemetry.count("grassroots_notices_erasures_total", amount=done.pop("tombstone"))
        for kind, rows in done.items():
            self.telemetry.count("grassroots_notices_derived_data_purged_total", kind, amount=rows)
        return done

    @on_event("grid", "tag_purged", schema=grid_facts.TagPurged())
    def on_tag_purged(self, envelope, data):
        """A resident's health tag purged at the grid: it leaves their recipients' tag snapshots."""
        rows = erasure.tag_purged(
            self.db.session, data["resident_id"], data["tag"], data["released_at"], data["reason"]
        )
        self.telemetry.count("grassroots_notices_derived_data_purged_total", "recipients", amount=rows)
        return {"recipients": rows}

    # ---- timers -----------------------------------------------------------

    @config_timer("PUBLISH_INTERVAL", 1.0)
    def publish_due(self):
        """Resolve audiences of approved notices whose publish_at has come, and publish them: each
        page of an audience committed (with its cursor) as it is stored, each notice's round too."""
        commit_steps(
            self.db,
            publishing.publish_due(self.db, self.grid, self.vault, self.timezone, handoff=self.channels.handoff),
        )

    @config_timer("DISPATCH_INTERVAL", 0.5)
    def dispatch(self):
        """Hand due deliveries to their channels: each channel's claims committed before any is
        posted, outcomes committed as they are recorded."""
        commit_steps(
            self.db,
            delivery.dispatch_due(
                self.db,
                self.channels.adapters,
                self.channels.limiter,
                self.vault,
                self.channels.retry,
                batch=int(self.config.get("DISPATCH_BATCH", 2000)),
                lease=float(self.config.get("CLAIM_LEASE_SECONDS", delivery.LEASE_SECONDS)),
                handoff=self.channels.handoff,
            ),
        )

    @config_timer("HOUSEKEEPING_INTERVAL", 5.0)
    def housekeeping(self):
        """Stop expired notices; report who has not acknowledged by the deadline; apply again the erasure of
        residents erased in the last day who hold something again (erasure.sweep_recent) (one transaction)."""
        now = utcnow()
        notices.expire_notices(self.db, now)
        for notice in acks.due_ack_checks(self.db.session, now):
            acks.report_unacknowledged(self.db, notice)
        for kind, rows in erasure.sweep_recent(self.db.session, now).items():
            self.telemetry.count("grassroots_notices_derived_data_purged_total", kind, amount=rows)

    # ---- the read model of grid facts (shared.grid_facts.KeepsGridFacts: resync RPC and timer) ----

    grid_fact_models = FACTS

    # ---- the grid's tree changes (services/notices/grid_changes.py) ---------

    @on_event("grid", "unit_created", schema=UnitCreated())
    def on_unit_created(self, envelope, data):
        """A new unit: into the read model of grid facts."""
        return grid_changes.unit_created(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "unit_moved", schema=UnitMoved())
    def on_unit_moved(self, envelope, data):
        """A unit moved under a new parent: audiences, recipients, deliveries and chat groups follow it."""
        return grid_changes.unit_moved(self.db.session, self.grid, data["unit_id"])

    @on_event("grid", "household_moved", schema=HouseholdMoved())
    def on_household_moved(self, envelope, data):
        """A household moved to another small grid: its pending deliveries, acknowledgements and messages follow."""
        return grid_changes.household_moved(self.db.session, self.grid, data["household_id"], data["old_unit_path"][-1])

    @on_event("grid", "unit_closed", schema=UnitClosed())
    def on_unit_closed(self, envelope, data):
        """A small grid closed: its chat group is retired once nobody lives there."""
        return grid_changes.unit_closed(self.db.session, self.grid, data["unit_id"])
