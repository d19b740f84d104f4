"""Tag policies and retention (PIPL): why each tag is kept, how long a released tag's record stays,
and the purge that ends it.

A tag taken off a resident — untagged, past its ``until``, older than its policy's ``max_age``, or
removed by an erasure — leaves a ``released_tags`` row saying when its retention ends
(``purge_after``). The lifecycle timer purges rows whose time has come and emits ``tag_purged``
(reason ``retention``), so every service drops what it derived from that tag. A resident who carries
the tag again (or whose later release of it is still kept) is not announced: what the other services
hold now belongs to the live tag or the later release. The same timer drops access log rows past
their retention (services/grid/access_log.py).
"""

import datetime as dt
import logging
import math
from collections import Counter
from dataclasses import dataclass

from nameko.extensions import DependencyProvider
from prometheus_client import CollectorRegistry, Counter as MetricCounter
from sqlalchemy import delete, event, select

from services.grid import vocabulary as v
from services.grid.events import path_out
from services.grid.models import AccessLogEntry, ReleasedTag, Resident, ResidentTag
from shared import paths as tree
from shared.db import locking

log = logging.getLogger(__name__)

MAX_PURPOSE_LENGTH = 200
MAX_SECONDS = 100 * 365 * v.DAY  # a century: anything longer is a typo
PURGE_REASONS = ("retention", "erased")


@dataclass(frozen=True)
class TagPolicy:
    tag: str
    purpose: str
    retention: float  # seconds a released tag's record is kept
    max_age: float | None  # seconds a tag without ``until`` may stand; None: no limit

    def purge_after(self, released_at):
        return released_at + dt.timedelta(seconds=self.retention)


@dataclass(frozen=True)
class Lifecycle:
    """The validated lifecycle settings: a policy per tag, and the access log's retention."""

    policies: dict
    access_log_retention: float

    def policy(self, tag):
        return self.policies[tag]


def _seconds(value, setting, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{setting}: must be a number of seconds, not {value!r}")
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{setting}: must be between 0 and {MAX_SECONDS} seconds, not {value!r}")
    return float(value)


def lifecycle_from_config(config):
    """The lifecycle settings of ``config`` over the defaults (services/grid/vocabulary.py); a bad
    setting is a ValueError whose one line names it (``TAG_POLICIES.quarantined.retention: …``)."""
    configured = config.get("TAG_POLICIES") or {}
    if not isinstance(configured, dict):
        raise ValueError("TAG_POLICIES: must be a mapping of tag to its policy")
    unknown = sorted(set(configured) - set(v.TAGS), key=str)
    if unknown:
        raise ValueError(f"TAG_POLICIES: unknown tag {unknown[0]!r} (tags: {', '.join(v.TAGS)})")
    policies = {}
    for tag in v.TAGS:
        override = configured.get(tag) or {}
        if not isinstance(override, dict):
            raise ValueError(f"TAG_POLICIES.{tag}: must be a mapping (purpose, retention, max_age)")
        extra = sorted(set(override) - {"purpose", "retention", "max_age"}, key=str)
        if extra:
            raise ValueError(f"TAG_POLICIES.{tag}.{extra[0]}: unknown setting (purpose, retention, max_age)")
        merged = {**v.DEFAULT_TAG_POLICIES[tag], **override}
        purpose = merged["purpose"]
        if not isinstance(purpose, str) or not purpose.strip() or len(purpose) > MAX_PURPOSE_LENGTH:
            raise ValueError(f"TAG_POLICIES.{tag}.purpose: must be text of 1 to {MAX_PURPOSE_LENGTH} characters")
        max_age = merged["max_age"]
        if max_age in ("", "none", "null"):  # an environment variable left empty: no limit
            max_age = None
        policies[tag] = TagPolicy(
            tag=tag,
            purpose=purpose.strip(),
            retention=_seconds(merged["retention"], f"TAG_POLICIES.{tag}.retention"),
            max_age=_seconds(max_age, f"TAG_POLICIES.{tag}.max_age", allow_none=True),
        )
    retention = config.get("ACCESS_LOG_RETENTION", v.DEFAULT_ACCESS_LOG_RETENTION)
    return Lifecycle(policies, _seconds(retention, "ACCESS_LOG_RETENTION"))


DEFAULT_LIFECYCLE = lifecycle_from_config({})


def check_config(config):
    """Before anything starts (shared.runner): a bad lifecycle setting is a one-line ValueError."""
    lifecycle_from_config(config)
    interval = config.get("LIFECYCLE_INTERVAL", 60)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 86400:
        raise ValueError(f"LIFECYCLE_INTERVAL: must be a number of seconds in (0, 86400], not {interval!r}")


def resident_facts(resident):
    """The ids an event about ``resident`` carries (no personal data)."""
    return {
        "resident_id": str(resident.id),
        "household_id": str(resident.household_id),
        "unit_id": str(tree.path_ids(resident.unit_path)[-1]),
        "unit_path": path_out(resident.unit_path),
    }


def record_release(session, lifecycle, resident_id, tag, unit_path, reason, now):
    """Keep the record of a tag taken off a resident until its policy's retention ends."""
    policy = (lifecycle or DEFAULT_LIFECYCLE).policy(tag)
    row = ReleasedTag(
        resident_id=resident_id,
        tag=tag,
        unit_path=unit_path,
        purpose=policy.purpose,
        reason=reason[:20],
        released_at=now,
        purge_after=policy.purge_after(now),
    )
    session.add(row)
    return row


def tag_purged(uow, resident, tag, released_at, reason):
    uow.emit(
        "tag_purged",
        f"resident/{resident.id}",
        {**resident_facts(resident), "tag": tag, "released_at": released_at.isoformat(), "reason": reason},
    )


def purge_released(uow, now, limit=500):
    """Purge released tags whose retention ended (a bounded batch; rows another replica holds are
    skipped); returns a Counter of (tag, reason) announced."""
    session = uow.session
    query = select(ReleasedTag).where(ReleasedTag.purge_after <= now).order_by(ReleasedTag.purge_after).limit(limit)
    rows = session.scalars(locking(query, session, skip_locked=True)).all()
    purged: Counter = Counter()
    for row in rows:
        session.delete(row)
        if _still_held(session, row, now):
            continue
        resident = session.get(Resident, row.resident_id)
        tag_purged(uow, resident, row.tag, row.released_at, "retention")
        purged[(row.tag, "retention")] += 1
    session.flush()
    return purged


def _still_held(session, row, now):
    """The resident carries the tag again, or a later release of it is still kept."""
    if session.get(ResidentTag, (row.resident_id, row.tag)) is not None:
        return True
    later = select(ReleasedTag.id).where(
        ReleasedTag.resident_id == row.resident_id,
        ReleasedTag.tag == row.tag,
        ReleasedTag.id != row.id,
        ReleasedTag.purge_after > now,
    )
    return session.scalar(later.limit(1)) is not None


def purge_access_log(uow, now, retention, limit=5000):
    """Delete a bounded batch of access log rows older than ``retention`` seconds; returns how many."""
    session = uow.session
    cutoff = now - dt.timedelta(seconds=retention)
    ids = session.scalars(select(AccessLogEntry.id).where(AccessLogEntry.at < cutoff).limit(limit)).all()
    if ids:
        session.execute(delete(AccessLogEntry).where(AccessLogEntry.id.in_(ids)))
    return len(ids)


def policies_view(lifecycle):
    """Every tag's policy, in vocabulary order (``tag_policies``)."""
    return [lifecycle.policy(tag) for tag in v.TAGS]


class LifecycleProvider(DependencyProvider):
    """The grid's lifecycle settings (validated at setup), the worker's read purpose (context data
    ``purpose``) and the lifecycle counters, exported on the service's metrics (``telemetry``)."""

    def __init__(self, telemetry_attr="telemetry"):
        self.telemetry_attr = telemetry_attr

    def setup(self):
        self.lifecycle = lifecycle_from_config(self.container.config)
        self.registry = CollectorRegistry()  # until start() finds the service's own

    def start(self):
        telemetry = next((d for d in self.container.dependencies if d.attr_name == self.telemetry_attr), None)
        self._make_counters(getattr(telemetry, "registry", None) or self.registry)

    @classmethod
    def local(cls, config=None):
        """A provider outside any container (unit tests): settings from ``config``, counters on a
        registry of its own."""
        provider = cls()
        provider.lifecycle = lifecycle_from_config(config or {})
        provider.registry = CollectorRegistry()
        provider._make_counters(provider.registry)
        return provider

    def _make_counters(self, registry):
        self.tags_purged = MetricCounter(
            "grassroots_grid_tags_purged_total",
            "Tags purged with what other services derived from them, by tag and reason (retention, erased).",
            ["tag", "reason"],
            registry=registry,
        )
        self.erasures = MetricCounter(
            "grassroots_grid_erasures_total",
            "Erasure requests by step: requested, erased (approved and carried out), cancelled.",
            ["step"],
            registry=registry,
        )
        self.access_logged = MetricCounter(
            "grassroots_grid_access_log_rows_total",
            "Reads of residents' personal data recorded in the access log, by the service that read.",
            ["service"],
            registry=registry,
        )
        # Exported at 0, so the first purge or erasure is an increase() alerts can see.
        for tag in v.TAGS:
            for reason in PURGE_REASONS:
                self.tags_purged.labels(tag, reason)
        for step in ("requested", "erased", "cancelled"):
            self.erasures.labels(step)

    def get_dependency(self, worker_ctx):
        return self.access(worker_ctx.data.get("purpose"))

    def access(self, purpose=None):
        return LifecycleAccess(self, purpose)


class LifecycleAccess:
    """One worker's view: the settings, the purpose its caller gave, counters applied at commit."""

    def __init__(self, provider, purpose):
        self.provider = provider
        self.lifecycle = provider.lifecycle
        self.purpose = purpose

    def after_commit(self, session, counts):
        """Count ``counts`` ({(metric, labels): n}) once ``session`` commits (never for a rollback)."""
        counts = {key: n for key, n in counts.items() if n}
        if not counts:
            return

        def apply(_session):
            for (metric, labels), n in counts.items():
                getattr(self.provider, metric).labels(*labels).inc(n)

        event.listen(session, "after_commit", apply, once=True)

    def count_purged(self, session, purged):
        self.after_commit(session, {("tags_purged", key): n for key, n in purged.items()})

    def count_erasure(self, session, step):
        """An erasure step (requested, erased, cancelled) and the tags it purged, counted at commit."""
        counts = {("tags_purged", key): n for key, n in (step.purged or {}).items()}
        if step.step != "unchanged":
            counts[("erasures", (step.step,))] = 1
        self.after_commit(session, counts)
