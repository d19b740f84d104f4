"""A service's local read model of the grid facts it acts on: units (path, level, closed), households
(small grid, path, address) and residents (household, the tags the service depends on).

Hot paths (``volunteer.create_request`` and the like) read these tables instead of calling the grid.
They live in the service's own database, so every replica shares them and a new replica needs no
warm-up. ``fact_models(Base, tags=...)`` declares them on the service's declarative base; ``LocalGrid``
answers the grid client's reads from them (the same shapes, ``services/grid/client.py``).

How the model stays true — the rule of shared.grid_copies: *the event says what changed; the grid says
what it is now*, and every write to the model happens under the service's copies lock
(``grid_copies.hold``) with the grid read taken while the lock is held:

- the grid's events (unit created/moved/closed, household moved, resident tagged/untagged) re-read the
  fact from the grid and upsert it, present in the model or not (``unit_changed``,
  ``household_changed``, ``resident_changed``; a unit move rebases every path through the unit, as for
  the service's other copies: ``path_columns``);
- a miss (a household or resident registered since, which the grid announces to nobody) is read
  through: take the lock, read the grid, upsert. Any change the grid commits after that read has its
  event handled after this transaction commits (the handler waits for the lock), so it overwrites what
  the miss stored; a change committed before the read is in what was read. Households and residents
  change only through the evented operations (an address is never edited, a resident never changes
  household), so nothing else can make a stored fact stale. The miss only *tries* the lock: while a
  handler or a resync page holds it, the grid's answer is used and not kept (the next miss keeps it),
  so a hot path never waits behind a handler, nor deadlocks with one over rows it has locked;
- a resync (``sync_step``, driven by a timer and restarted on demand) pages through the model's rows and
  refreshes them from the grid in batches, under the same lock: for a gap in the events (a queue lost,
  a replica restored from backup).

- an erasure (the grid's ``resident_erased``: ``resident_erased`` here) deletes the resident's row (and,
  the household emptied, its address) and keeps a tombstone (``erased_residents``): from then on the
  resident is missing to every read (the grid is not asked), a resync or a late event stores nothing
  about them, and an emptied household's address read from the grid is used, never kept. A purged tag
  (``tag_purged``) leaves the row still holding it, with no grid call (the grid emits it only for a tag
  no longer held), so the purge never waits for the grid.

Every grid read here needs ids, paths and tags, never a phone: it goes without the ``pii`` claim (the
client's ``without_pii()``), so a read-through or a daily resync is not recorded as a read of residents'
personal data in their access logs (services/grid/access_log.py), even for a service whose grid client
holds the claim (notices).

The lock is only taken on a miss, an event or a resync page: the common case reads and takes no lock.
Lock order: the copies lock first, then a service's own (volunteer's ``care``): a handler that writes
the model does so before it takes any other lock.
"""

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from marshmallow import fields
from sqlalchemy import JSON, Boolean, DateTime, String, select
from sqlalchemy.orm import Mapped, mapped_column

from shared import grid_copies
from shared.db import BigId, utcnow
from shared.endpoints import endpoint, rpc
from shared.errors import NotFound, ValidationError
from shared.paths import PathText, as_path, path_ids
from shared.timers import config_timer
from shared.validation import EventData, Id, ListOf, OneOf, Str, StrictSchema, UtcDateTime

log = logging.getLogger(__name__)

KINDS = ("units", "households", "residents")  # the resync's order: a household's path after its units'


@dataclass(frozen=True)
class FactModels:
    """The model's tables on one service's base, the tags it keeps (the rest are dropped) and whether it
    keeps households' addresses (personal data: only a service that already stores them)."""

    unit: Any
    household: Any
    resident: Any
    sync: Any
    tags: frozenset
    address: bool
    erased: Any = None  # the ``erased_residents`` tombstones (see ``resident_erased``)

    @property
    def path_columns(self):
        """Its unit paths, for the service's ``unit_moved`` rebase (shared.grid_copies.unit_moved)."""
        return (self.unit.path, self.household.unit_path)


def fact_models(base: type[Any], tags=(), address=False):
    """The ``grid_units``, ``grid_households``, ``grid_residents`` and ``grid_facts_sync`` tables of a
    service's read model, on its own declarative base; ``tags``: the resident tags it acts on; ``address``:
    it keeps households' addresses (else the column stays empty)."""

    class GridUnit(base):
        __tablename__ = "grid_units"

        id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
        path: Mapped[str] = mapped_column(PathText, index=True)
        level: Mapped[str] = mapped_column(String(20))
        closed: Mapped[bool] = mapped_column(Boolean)

    class GridHousehold(base):
        __tablename__ = "grid_households"

        id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
        unit_id: Mapped[int] = mapped_column(BigId)
        unit_path: Mapped[str] = mapped_column(PathText, index=True)
        # As the service stores addresses elsewhere (volunteer: its requests' and plans' JSON); None for a
        # service that keeps none, and until a read that needs it (a resident's read-through learns the
        # household's place, not its address).
        address: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))

    class GridResident(base):
        __tablename__ = "grid_residents"

        id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
        household_id: Mapped[int] = mapped_column(BigId, index=True)
        tags: Mapped[list] = mapped_column(JSON)  # only the tags the service keeps

    class GridFactsSync(base):
        """Where the resync of one kind of fact stands: ``next_id`` the last id refreshed in the pass
        running (None: none running), ``passed_at`` when the last pass ended."""

        __tablename__ = "grid_facts_sync"

        kind: Mapped[str] = mapped_column(String(20), primary_key=True)
        next_id: Mapped[int | None] = mapped_column(BigId)
        started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
        passed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
        refreshed: Mapped[int] = mapped_column(BigId, default=0)
        changed: Mapped[int] = mapped_column(BigId, default=0)

    class ErasedResident(base):
        """A resident the grid erased (``resident_erased``), kept for good: no later event, read-through or
        resync stores anything about them again (their read-model row, their household's address once it
        emptied), and the service refuses them as unknown."""

        __tablename__ = "erased_residents"

        id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
        household_id: Mapped[int | None] = mapped_column(BigId)
        household_emptied: Mapped[bool] = mapped_column(Boolean)
        erasure_id: Mapped[int | None] = mapped_column(BigId)
        erased_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
        applied_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    return FactModels(GridUnit, GridHousehold, GridResident, GridFactsSync, frozenset(tags), address, ErasedResident)


def _plain(grid):
    """``grid`` called without the ``pii`` claim (services.grid.client.GridReads.without_pii)."""
    without = getattr(grid, "without_pii", None)
    return without() if without is not None else grid


# ---- writing the model (the caller holds the copies lock) -----------------------------------


def _upsert(session, model, key, values):
    """Set the row ``key`` to ``values``; True when that changed it (or created it)."""
    row = session.get(model, key)
    if row is None:
        session.add(model(id=key, **values))
        return True
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def store_unit(session, facts, unit):
    """A unit as the grid's ``get_unit`` answers it."""
    values = {"path": as_path(unit["path"]), "level": unit["level"], "closed": bool(unit["closed"])}
    return _upsert(session, facts.unit, int(unit["id"]), values)


def store_household(session, facts, household, *, first_address=False):
    """A household as ``get_household`` answers it: its place, and — if the service keeps addresses — the
    address it already kept. Only a read that needs the address (a miss, ``first_address``) adds one
    where the model had none: events and the resync refresh what is kept and add no personal data, so
    the model holds the addresses of the households the service served, of no others."""
    values = {"unit_id": int(household["unit_id"]), "unit_path": as_path(household["unit_path"])}
    row = session.get(facts.household, int(household["id"]))
    if facts.address and household_erased(session, facts, int(household["id"])):
        values["address"] = None  # emptied by an erasure: its address is kept no more
    elif facts.address and (first_address or (row is not None and row.address is not None)):
        values["address"] = dict(household["address"])
    elif row is None:
        values["address"] = None
    return _upsert(session, facts.household, int(household["id"]), values)


def store_resident(session, facts, resident):
    """A resident as ``get_residents`` answers it; its household's place too when the model has no row for
    the household yet (its address comes with the first read that needs it)."""
    household_id = int(resident["household_id"])
    if erased_among(session, facts, [int(resident["id"])]):
        return False  # erased: nothing about them is stored again
    changed = _upsert(
        session, facts.resident, int(resident["id"]), {"household_id": household_id, "tags": _kept(facts, resident)}
    )
    path = as_path(resident["unit_path"])
    household = session.get(facts.household, household_id)
    if household is None:
        session.add(facts.household(id=household_id, unit_id=path_ids(path)[-1], unit_path=path, address=None))
        return True
    if household.unit_path != path:  # read under the lock: this is where it lives now
        household.unit_id, household.unit_path = path_ids(path)[-1], path
        return True
    return changed


def _kept(facts, resident):
    return sorted(facts.tags.intersection(resident["tags"]))


# ---- the grid's events (each service's grid_changes.py calls these) -----------------------------


def unit_changed(session, grid, facts, unit_id):
    """``unit_created`` / ``unit_closed``: the unit as the grid has it now. (``unit_moved`` rebases paths:
    shared.grid_copies.unit_moved with ``facts.path_columns`` among the columns.)"""
    grid_copies.hold(session)
    try:
        return store_unit(session, facts, _plain(grid).get_unit(unit_id=str(unit_id)))
    except NotFound:
        return False


def household_changed(session, grid, facts, household_id):
    """``household_moved``: the household as the grid has it now."""
    grid_copies.hold(session)
    try:
        return store_household(session, facts, _plain(grid).get_household(household_id=str(household_id)))
    except NotFound:
        return False


def resident_changed(session, grid, facts, resident_id):
    """``resident_tagged`` / ``resident_untagged``: the resident's tags (and household) as the grid has them
    now — of a resident the model holds. One it does not hold needs nothing, and no grid call (with the
    grid away that call would hold a worker for its whole timeout): a later miss reads the grid under
    the same lock, after this event's change; and a miss that read before it holds the lock until it
    commits, so this check, made once the lock is ours, sees its row."""
    grid_copies.hold(session)
    if session.get(facts.resident, int(resident_id)) is None:
        return False
    found = _plain(grid).get_residents(resident_ids=[str(resident_id)])["items"]
    return bool(found) and store_resident(session, facts, found[0])


# ---- erasure (PIPL): the grid's resident_erased and tag_purged -------------------------------------


class ResidentErased(EventData):
    """grid.resident_erased: a resident's personal data erased at the grid (``grid.erase_resident``, two
    managers); every service anonymises what it holds about them. ids only."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True)
    unit_path = ListOf(Id(), min_items=1, max_items=20, unique=False, required=True)
    household_emptied = fields.Boolean(
        required=True, metadata={"description": "No other resident lives in the household: its address goes too."}
    )
    erasure_id = Id(required=True)
    erased_at = UtcDateTime(required=True)


class TagPurged(EventData):
    """grid.tag_purged: a health or vulnerability tag of a resident purged (its retention after release
    ended, or an erasure removed it); the data a service derived from that tag goes."""

    resident_id = Id(required=True)
    household_id = Id(required=True)
    unit_id = Id(required=True)
    unit_path = ListOf(Id(), min_items=1, max_items=20, unique=False, required=True)
    tag = Str(required=True, max_length=40)
    released_at = UtcDateTime(required=True, allow_none=True)
    reason = OneOf(("retention", "erased"), required=True)


def erased_among(session, facts, resident_ids):
    """The ids among ``resident_ids`` the grid erased (tombstoned here): a set."""
    ids = [int(i) for i in resident_ids]
    if facts.erased is None or not ids:
        return set()
    found: set[int] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        found.update(session.scalars(select(facts.erased.id).where(facts.erased.id.in_(chunk))))
    return found


def household_erased(session, facts, household_id):
    """True when an erasure emptied the household: its address is not kept any more."""
    if facts.erased is None:
        return False
    query = select(facts.erased.id).where(
        facts.erased.household_id == int(household_id), facts.erased.household_emptied.is_(True)
    )
    return session.scalar(query.limit(1)) is not None


def resident_erased(session, facts, data, now=None):
    """``resident_erased`` in the read model, under the copies lock: the tombstone stored (once; a replay
    changes nothing), the resident's row deleted, and — the household emptied — its address dropped.
    Returns {"tombstone": 1 when new, "grid_residents": rows deleted, "grid_households": addresses dropped}.
    Safe in any order: an event about the resident handled later finds no row to refresh, a read-through
    or resync finds the tombstone and stores nothing."""
    grid_copies.hold(session)
    resident_id, household_id = int(data["resident_id"]), int(data["household_id"])
    emptied = bool(data["household_emptied"])
    done = {"tombstone": 0, "grid_residents": 0, "grid_households": 0}
    tombstone = session.get(facts.erased, resident_id)
    if tombstone is None:
        session.add(
            facts.erased(
                id=resident_id,
                household_id=household_id,
                household_emptied=emptied,
                erasure_id=int(data["erasure_id"]),
                erased_at=data.get("erased_at"),
                applied_at=now or utcnow(),
            )
        )
        done["tombstone"] = 1
    elif emptied and not tombstone.household_emptied:
        tombstone.household_emptied = True
    row = session.get(facts.resident, resident_id)
    if row is not None:
        session.delete(row)
        done["grid_residents"] = 1
    if emptied:
        home = session.get(facts.household, household_id)
        if home is not None and home.address is not None:
            home.address = None
            done["grid_households"] = 1
    session.flush()
    return done


def tag_purged(session, facts, resident_id, tag):
    """``tag_purged`` in the read model: the tag leaves the resident's row, with no grid call — the grid
    emits the event only when the tag is no longer held (services/grid/retention.py: a release whose
    retention ended and that was not set again; an erasure), so the purge of the data derived from it
    never waits for, nor fails with, the grid. True when the row changed. A tag set again after the
    purge has its own ``resident_tagged``, which re-reads the grid; were it handled before this one,
    the next resync restores it."""
    if tag not in facts.tags:
        return False
    grid_copies.hold(session)
    row = session.get(facts.resident, int(resident_id))
    if row is None or tag not in row.tags:
        return False
    row.tags = [kept for kept in row.tags if kept != tag]
    session.flush()
    return True


# ---- reading: the grid client's reads, answered from the model -------------------------------------


class LocalGrid:
    """The reads of ``services.grid.client.GridReads`` answered from the service's read model, the grid
    asked (and the answer kept) only for a fact the model lacks. Replies have the grid's shapes, with
    only what the model keeps: a unit's id, path, level and closed flag; a household's id, small grid,
    path (and address, if kept); a resident's id, household, small grid, path and the tags kept.

    A miss keeps the grid's answer only when it gets the copies lock at once (``grid_copies.try_hold``,
    then held until this transaction ends): taken before the grid is asked, it orders the answer with
    the event handlers and the resync. While one of them holds the lock, the answer is used and not
    kept, so a hot path never waits on a handler (nor deadlocks with one on rows it has locked).

    ``misses`` counts the grid calls made (tests and benches read it)."""

    def __init__(self, session, grid, facts):
        self.session, self.grid, self.facts = session, _plain(grid), facts
        self.misses = 0
        # Rows read in bulk, held so the session's (weak) identity map keeps them for the reads after.
        self._held: list = []

    def _keep(self):
        """Before asking the grid about a fact the model lacks: may the answer be kept?"""
        self.misses += 1
        return grid_copies.try_hold(self.session)

    # ---- units

    def get_unit(self, *, unit_id):
        row = self.session.get(self.facts.unit, int(unit_id))
        if row is None:
            keep = self._keep()
            found = self.grid.get_unit(unit_id=str(unit_id))  # NotFound passes on
            if not keep:
                return {key: found[key] for key in ("id", "parent_id", "level", "path", "closed")}
            store_unit(self.session, self.facts, found)
            row = self.session.get(self.facts.unit, int(unit_id))
        ids = [str(i) for i in path_ids(row.path)]
        return {
            "id": str(row.id),
            "parent_id": ids[-2] if len(ids) > 1 else None,
            "level": row.level,
            "path": ids,
            "closed": row.closed,
        }

    def ancestors(self, *, unit_id):
        """The units above ``unit_id``, district first (NotFound for an unknown unit, as the grid says)."""
        ids = [int(i) for i in self.get_unit(unit_id=unit_id)["path"][:-1]]
        self._held += self.session.scalars(select(self.facts.unit).where(self.facts.unit.id.in_(ids))).all()
        return [self.get_unit(unit_id=i) for i in ids]

    def unit(self, unit_id, field):
        try:
            found = self.get_unit(unit_id=unit_id)
        except NotFound:
            raise ValidationError({field: [f"Unknown unit {unit_id}."]}) from None
        return {**found, "path_string": as_path(found["path"])}

    def unit_path(self, unit_id, field):
        return self.unit(unit_id, field)["path_string"]

    # ---- households

    def get_household(self, *, household_id):
        row = self.session.get(self.facts.household, int(household_id))
        if row is None or (self.facts.address and row.address is None):
            keep = self._keep()
            found = self.grid.get_household(household_id=str(household_id))
            if not keep:
                return self._household_reply(found["id"], found["unit_id"], found["unit_path"], found.get("address"))
            store_household(self.session, self.facts, found, first_address=True)
            row = self.session.get(self.facts.household, int(household_id))
            if self.facts.address and row.address is None:  # an erased household's: used, not kept
                return self._household_reply(found["id"], found["unit_id"], found["unit_path"], found.get("address"))
        return self._household_reply(row.id, row.unit_id, path_ids(row.unit_path), row.address)

    def _household_reply(self, household_id, unit_id, unit_path, address):
        found = {"id": str(household_id), "unit_id": str(unit_id), "unit_path": [str(i) for i in unit_path]}
        if not self.facts.address:
            return found
        return {**found, "address": dict(address) if address is not None else None}

    def get_household_async(self, *, household_id):
        """Answered at once (a local read); ``.result()`` raises what the read raised."""
        try:
            return _Ready(self.get_household(household_id=household_id))
        except Exception as exc:  # handed to .result(), as the grid client's future would
            return _Ready(error=exc)

    # ---- residents

    def _resident_rows(self, ids):
        """{id: reply} from the model; the households stay in the session, so a ``get_household`` of one
        right after (a request's requester, then their household) reads no more."""
        resident, household = self.facts.resident, self.facts.household
        query = select(resident, household).join(household, household.id == resident.household_id)
        rows = self.session.execute(query.where(resident.id.in_(ids))).all()
        self._held += [home for _person, home in rows]
        return {
            person.id: self._resident_reply(
                person.id, person.household_id, home.unit_id, path_ids(home.unit_path), person.tags
            )
            for person, home in rows
        }

    def _resident_reply(self, resident_id, household_id, unit_id, unit_path, tags):
        return {
            "id": str(resident_id),
            "household_id": str(household_id),
            "unit_id": str(unit_id),
            "unit_path": [str(i) for i in unit_path],
            "tags": sorted(self.facts.tags.intersection(tags)),
        }

    def get_residents(self, *, resident_ids):
        ids = [int(i) for i in resident_ids]
        found = self._resident_rows(ids) if ids else {}
        absent = [i for i in ids if i not in found]
        if absent:
            gone = erased_among(self.session, self.facts, absent)  # erased: unknown here, the grid not asked
            absent = [i for i in absent if i not in gone]
        if absent:
            keep = self._keep()
            items = self.grid.get_residents(resident_ids=[str(i) for i in absent])["items"]
            for item in items:
                if keep:
                    store_resident(self.session, self.facts, item)
                found[int(item["id"])] = self._resident_reply(
                    item["id"], item["household_id"], item["unit_id"], item["unit_path"], item["tags"]
                )
        return {
            "items": [found[i] for i in ids if i in found],
            "missing": [str(i) for i in ids if i not in found],
        }

    def residents(self, resident_ids, field):
        found = self.get_residents(resident_ids=resident_ids)
        if found["missing"]:
            raise ValidationError({field: [f"Unknown residents: {', '.join(found['missing'])}."]})
        return found["items"]

    def resident(self, resident_id, field="resident_id"):
        return self.residents([resident_id], field)[0]

    # ---- what the model does not keep: the grid's answer

    def get_incident(self, *, incident_id):
        return self.grid.get_incident(incident_id=incident_id)

    def list_units(self, **query):
        """A subtree's units by level (a report's rows): the model holds the units seen, not every unit."""
        return self.grid.list_units(**query)


class _Ready:
    def __init__(self, value=None, error=None):
        self._value, self._error = value, error

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


# ---- resync: the model's rows refreshed from the grid, page by page -----------------------------------


def request_resync(session, facts, now=None):
    """Start a pass over every kind now (an operator's call after a gap in the events); the timer's
    ``sync_step`` does the work. Returns the sync rows."""
    now = now or utcnow()
    rows = []
    for kind in KINDS:
        row = session.get(facts.sync, kind) or facts.sync(kind=kind, refreshed=0, changed=0)
        row.next_id, row.started_at, row.refreshed, row.changed = 0, now, 0, 0
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


class SyncOut(StrictSchema):
    """Where the resync of one kind of grid fact stands (an operator's ``resync_grid_facts`` reply)."""

    kind = fields.String(metadata={"description": "units, households or residents"})
    running = fields.Function(lambda row: row.next_id is not None, metadata={"description": "A pass is under way."})
    started_at = UtcDateTime(allow_none=True, metadata={"description": "When the last (or current) pass began."})
    passed_at = UtcDateTime(allow_none=True, metadata={"description": "When the last pass ended."})
    refreshed = fields.Integer(metadata={"description": "Rows the pass re-read from the grid so far."})
    changed = fields.Integer(metadata={"description": "Of those, rows the grid had changed (events missed)."})


def sync_status(session, facts):
    return session.scalars(select(facts.sync).order_by(facts.sync.kind)).all()


def sync_step(session, grid, facts, now, every, batch=100):
    """One page of the resync, or nothing: True when a page was done (the caller commits and calls again).

    A kind whose last pass ended more than ``every`` ago (or never: a fresh deployment) starts a new one.
    Each page takes the copies lock, then reads its ``batch`` facts from the grid and writes them, so an
    event handled meanwhile is either in what the page read or handled after it."""
    for kind in KINDS:
        row = session.get(facts.sync, kind)
        if row is None:
            row = facts.sync(kind=kind, next_id=0, started_at=now, refreshed=0, changed=0)
            session.add(row)
        elif row.next_id is None:
            if row.passed_at is not None and row.passed_at > now - every:
                continue
            row.next_id, row.started_at, row.refreshed, row.changed = 0, now, 0, 0
        grid_copies.hold(session)
        model = getattr(facts, kind[:-1])
        ids = session.scalars(select(model.id).where(model.id > row.next_id).order_by(model.id).limit(batch)).all()
        if ids:
            row.changed += _REFRESH[kind](session, _plain(grid), facts, ids)
            row.refreshed += len(ids)
            row.next_id = ids[-1]
        if len(ids) < batch:
            row.next_id, row.passed_at = None, now
            log.info(
                "grid facts resync pass done",
                extra={"kind": kind, "refreshed": row.refreshed, "changed": row.changed},
            )
        session.flush()
        return True
    return False


def _refresh_units(session, grid, facts, ids):
    changed = 0
    for unit_id in ids:
        try:
            changed += store_unit(session, facts, grid.get_unit(unit_id=str(unit_id)))
        except NotFound:
            continue  # units are never deleted: not the grid's (kept as it is)
    return changed


def _refresh_households(session, grid, facts, ids):
    pending = {i: grid.get_household_async(household_id=str(i)) for i in ids}  # all sent, then read
    changed = 0
    for reply in pending.values():
        try:
            changed += store_household(session, facts, reply.result())
        except NotFound:
            continue
    return changed


def _refresh_residents(session, grid, facts, ids):
    changed = 0
    for item in grid.get_residents(resident_ids=[str(i) for i in ids])["items"]:
        changed += store_resident(session, facts, item)
    return changed


_REFRESH = {"units": _refresh_units, "households": _refresh_households, "residents": _refresh_residents}


class ResyncGridFacts(StrictSchema):
    """No arguments: a resync of the read model of grid facts starts now (the timer pages through it)."""


class KeepsGridFacts:
    """The read model's upkeep on a service class: the operator's ``resync_grid_facts`` RPC and the
    ``sync_grid_facts`` timer, written once for every service that keeps grid facts. The class sets
    ``grid_fact_models`` (its ``fact_models``) and has the ``db``, ``grid`` and ``config`` dependencies."""

    grid_fact_models: Any = None
    db: Any  # the service's dependencies, declared on the service class
    grid: Any
    config: Any

    @rpc
    @endpoint(roles=("admin",), schema=ResyncGridFacts(), returns=SyncOut(many=True))
    def resync_grid_facts(self, caller):
        """Re-read every grid fact the service keeps (after a gap in the grid's events); the resync timer
        does it page by page. Returns where each kind's resync stands."""
        return request_resync(self.db.session, self.grid_fact_models, utcnow())

    @config_timer("GRID_FACTS_SYNC_INTERVAL", 60.0)
    def sync_grid_facts(self):
        """The read model's resync: a pass every GRID_FACTS_RESYNC_HOURS, or when an operator asks; one
        page at a time, each committed, at most GRID_FACTS_SYNC_PAGES per tick."""
        every = dt.timedelta(hours=float(self.config.get("GRID_FACTS_RESYNC_HOURS", 24)))
        for _ in range(int(self.config.get("GRID_FACTS_SYNC_PAGES", 20))):
            if not sync_step(self.db.session, self.grid, self.grid_fact_models, utcnow(), every):
                break
            self.db.commit()
