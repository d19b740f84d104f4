"""The unit tree: units, their staff and Party organisations."""

from sqlalchemy import select, update

from services.grid.events import path_out
from services.grid.models import Household, Incident, Resident, ResidentTag, ScreeningCampaign, Staff, Unit
from services.grid.unit_cache import CachedUnit
from services.grid.vocabulary import DEPTH
from shared import paths as tree
from shared.db import fetch, paged, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError

# Tables carrying a copy of their unit's path; a move rewrites them all.
PATH_COPIES = (
    (Unit, Unit.path),
    (Household, Household.unit_path),
    (Resident, Resident.unit_path),
    (ResidentTag, ResidentTag.unit_path),
    (ScreeningCampaign, ScreeningCampaign.unit_path),
    (Incident, Incident.unit_path),
)


class RowView:
    """A row with a few more attributes for its reply (a household's member ids, an incident's steps);
    every other attribute is read through to the row."""

    def __init__(self, row, **extra):
        self.row = row
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self.row, name)


def reachable_unit(session, caller, unit_id, *, lock=False):
    unit = fetch(session, Unit, unit_id, "unit", lock=lock)
    caller.require_reach(tree.path_ids(unit.path))
    return unit


# get_unit's read on a cache miss: the columns of its reply, no ORM object.
UNIT_COLUMNS = select(*(Unit.__table__.c[name] for name in CachedUnit.COLUMNS))


def cached_unit(uow, cache, caller, unit_id):
    """``reachable_unit`` for get_unit, answered from the replica's unit cache when it holds the unit
    (services/grid/unit_cache.py); the caller's reach is checked on every call, hit or miss. A hit
    opens no session.

    Another service's call always reads the database: those are the correctness reads — its event
    handlers re-read the unit an event names ("the event says what changed, the grid says what it is
    now") and its read model's misses — and this replica may not yet have handled the event that the
    calling service already has. People's reads (staff screens) take the cache; another replica's write
    reaches them once this replica has handled its event.
    """
    unit = None if caller.has_role("service") else cache.get(unit_id)
    if unit is None:
        generation = cache.generation  # before the query: a drop during it keeps its result out
        row = uow.session.execute(UNIT_COLUMNS.where(Unit.id == unit_id)).first()
        if row is None:
            raise NotFound(f"unit {unit_id} not found")
        unit = CachedUnit.of(row)
        cache.put(unit, generation)
    caller.require_reach(unit.path_ids)
    return unit


def unit_event(unit):
    return {"unit_id": str(unit.id), "level": unit.level, "unit_path": path_out(unit.path)}


def create_unit(uow, caller, parent_id, level, name, code):
    session = uow.session
    if parent_id is None:
        if level != "district":
            raise ValidationError({"parent_id": ["Required for every level below district."]})
        if not caller.has_role("admin"):
            raise Forbidden("only admin creates a district")
        parent_path = "/"
    else:
        parent = reachable_unit(session, caller, parent_id)
        if DEPTH[level] <= DEPTH[parent.level]:
            raise ValidationError({"level": [f"Must be deeper than the parent's level ({parent.level})."]})
        if parent.closed:
            raise Conflict(f"unit {parent.id} is closed")
        parent_path = parent.path
    if code is not None and session.scalar(select(Unit.id).where(Unit.code == code)) is not None:
        raise Conflict(f"unit code {code!r} is taken")
    unit = Unit(parent_id=parent_id, level=level, name=name, code=code, path="", closed=False, created_at=utcnow())
    session.add(unit)
    session.flush()
    unit.path = tree.child_path(parent_path, unit.id)
    session.flush()
    uow.emit("unit_created", f"unit/{unit.id}", unit_event(unit))
    return unit


def list_units(session, caller, under, level, include_closed, page, page_size):
    if under is None:
        if caller.unrestricted:
            query = select(Unit)
        elif caller.scope_unit is None or not caller.scope_unit.isdigit():
            raise Forbidden("token names no unit scope")
        else:
            under = int(caller.scope_unit)
    if under is not None:
        root = reachable_unit(session, caller, under)
        query = select(Unit).where(tree.in_subtree(Unit.path, root.path), Unit.id != root.id)
    if level is not None:
        query = query.where(Unit.level == level)
    if not include_closed:
        query = query.where(Unit.closed.is_(False))
    return paged(session, query.order_by(Unit.id), page, page_size)


def ancestors(session, caller, unit_id):
    unit = reachable_unit(session, caller, unit_id)
    ids = tree.path_ids(unit.path)[:-1]
    by_id = {u.id: u for u in session.scalars(select(Unit).where(Unit.id.in_(ids)))}
    return [by_id[i] for i in ids]


def move_unit(uow, caller, unit_id, new_parent_id):
    session = uow.session
    unit = reachable_unit(session, caller, unit_id, lock=True)
    parent = reachable_unit(session, caller, new_parent_id, lock=True)
    if unit.parent_id is None:
        raise ValidationError({"unit_id": ["A district cannot be moved."]})
    if parent.path.startswith(unit.path):
        raise ValidationError({"new_parent_id": ["Cannot move a unit under itself or its descendants."]})
    if DEPTH[unit.level] <= DEPTH[parent.level]:
        raise ValidationError({"new_parent_id": [f"Must be shallower than the unit's level ({unit.level})."]})
    if parent.closed:
        raise Conflict(f"unit {parent.id} is closed")
    old_path, new_path = unit.path, tree.child_path(parent.path, unit.id)
    for model, column in PATH_COPIES:
        session.execute(
            update(model)
            .where(tree.in_subtree(column, old_path))
            .values({column.key: tree.replace_prefix(column, old_path, new_path)})
            .execution_options(synchronize_session=False)
        )
    session.expire_all()
    unit = fetch(session, Unit, unit_id, "unit")
    unit.parent_id = parent.id
    session.flush()
    uow.emit("unit_moved", f"unit/{unit.id}", {**unit_event(unit), "old_path": path_out(old_path)})
    return unit


def close_unit(uow, caller, unit_id):
    unit = reachable_unit(uow.session, caller, unit_id)
    if not unit.closed:
        unit.closed = True
        uow.emit("unit_closed", f"unit/{unit.id}", unit_event(unit))
    return unit


def set_party_org(uow, caller, unit_id, name):
    unit = reachable_unit(uow.session, caller, unit_id)
    if unit.party_org_name != name:
        unit.party_org_name = name
        uow.emit("unit_updated", f"unit/{unit.id}", unit_event(unit))
    return unit


def assign_staff(uow, caller, unit_id, user_id, role, name):
    session = uow.session
    unit = reachable_unit(session, caller, unit_id)
    held = select(Staff.id).where(Staff.unit_id == unit.id, Staff.user_id == user_id, Staff.role == role)
    if session.scalar(held) is not None:
        raise Conflict(f"{user_id} already holds role {role} in unit {unit.id}")
    staff = Staff(unit_id=unit.id, user_id=user_id, role=role, name=name, assigned_at=utcnow())
    session.add(staff)
    session.flush()
    return staff


def list_staff(session, caller, unit_id):
    unit = reachable_unit(session, caller, unit_id)
    return session.scalars(select(Staff).where(Staff.unit_id == unit.id).order_by(Staff.id)).all()
