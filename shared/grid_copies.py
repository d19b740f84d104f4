"""Other services' copies of grid facts, kept in step with the grid's tree.

Notices, volunteer and legal keep a unit path (``/1/5/23/``, shared.paths) beside what they hold for a
unit, a household or a resident: subtree lists and scope checks read the copy, not the grid. The grid
rewrites its own copies when a unit or a household moves, but nothing rewrote the others' — this is
what their ``grid.unit_moved`` and ``grid.household_moved`` handlers use (``services/<name>/grid_changes.py``
say which copies follow what).

The event says *what* moved; the grid says *where it is now*. A handler takes this service's copies lock
(``hold``), reads the unit's or household's current place from the grid and sets the copies to it. So a
duplicate, a replay under a new envelope id, or two moves handled in the opposite order all end in the
grid's present tree, and running a handler again changes nothing. For a unit, every copy whose path
goes through the unit is rebased on the unit's current path, wherever the rest of the path points: a
copy an ancestor's move (handled first) rebased under the ancestor's new place is corrected when the
unit's own move is handled, so the order in which moves arrive does not matter.
"""

from sqlalchemy import literal, select, text, update
from sqlalchemy.exc import OperationalError

from shared.errors import NotFound, ServiceUnavailable
from shared.paths import as_path, in_subtree, replace_prefix

LOCK = "grid_copies"


HOLD_WAIT_SECONDS = 2.0  # how long a handler waits for the lock before it gives up and is retried


def hold(session, wait=HOLD_WAIT_SECONDS):
    """Copy handlers of one service run one after another (all replicas): each reads the grid after the
    previous one committed, so an older read never overwrites a newer one.

    Waits at most ``wait`` seconds, then raises ServiceUnavailable (the handler is retried later, backing
    off): the holder reads the grid under the lock, and with the grid away it holds it for a whole
    call's timeout — handlers queued behind it would each hold a database connection meanwhile, and a
    backlog of events would starve the service's own calls of the pool."""
    if session.bind.dialect.name != "postgresql":
        return  # SQLite units of work are serial already
    before = session.scalar(text("SELECT current_setting('lock_timeout')"))
    session.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(wait * 1000)}ms"})
    try:
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:namespace), :key)"), {"namespace": LOCK, "key": 0})
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) != "55P03":  # lock_not_available: the wait ran out
            raise
        raise ServiceUnavailable(f"the grid copies lock stayed busy for {wait:g} s; retried later") from None
    session.execute(text("SELECT set_config('lock_timeout', :before, true)"), {"before": before})


def try_hold(session):
    """``hold`` if the lock is free (or this transaction has it already): True; False at once, without
    waiting, while another transaction holds it. SQLite units of work are serial: always True."""
    if session.bind.dialect.name != "postgresql":
        return True
    # The same lock as serialize_on(LOCK, 0) takes.
    query = text("SELECT pg_try_advisory_xact_lock(hashtext(:namespace), :key)")
    return bool(session.scalar(query, {"namespace": LOCK, "key": 0}))


# ---- pure path logic ----------------------------------------------------------


def through(path, unit_id):
    """The prefix of ``path`` that ends with ``unit_id`` (the unit as this copy knows it), or None.

    The last occurrence: a path holds a unit twice only after a move was handled before an earlier one
    (unit 3 moved out from under 2, then 2 moved under 3; 2's move handled first rebases 3's copy
    ``/1/2/3/`` to ``/1/3/2/3/``). Its deepest occurrence is the stale part, which 3's own move then
    rebases on 3's present path."""
    segment = f"/{unit_id}/"
    at = path.rfind(segment)
    return None if at < 0 else path[: at + len(segment)]


def rebase(path, unit_id, unit_path):
    """``path`` with the unit's part replaced by the unit's current path ``unit_path``; None when the
    path does not go through the unit."""
    prefix = through(path, unit_id)
    return None if prefix is None else unit_path + path[len(prefix) :]


def stale_prefixes(paths, unit_id, unit_path):
    """The distinct prefixes through ``unit_id`` among ``paths`` that are not its current path: each is
    one subtree to rebase."""
    return {p for p in (through(path, unit_id) for path in paths) if p is not None and p != unit_path}


def contains(outer, inner):
    """True if the unit at path ``outer`` is the one at ``inner`` or above it."""
    return inner.startswith(outer)


# ---- the grid's present -------------------------------------------------------


def unit_path_now(grid, unit_id):
    """The unit's path in the grid now; None for a unit the grid does not know (units are never deleted:
    an event naming one is not the grid's)."""
    try:
        return as_path(grid.get_unit(unit_id=str(unit_id))["path"])
    except NotFound:
        return None


def household_now(grid, household_id):
    """(small grid id, its path) where the household lives now; None for a household the grid does not know."""
    try:
        household = grid.get_household(household_id=str(household_id))
    except NotFound:
        return None
    return int(household["unit_id"]), as_path(household["unit_path"])


# ---- rewriting copies -----------------------------------------------------------


def _name(column):
    return f"{column.class_.__tablename__}.{column.key}"


def rebase_unit(session, columns, unit_id, unit_path):
    """Rebase every copy in ``columns`` (path columns) that goes through ``unit_id`` on its current path:
    one prefix-replacing UPDATE per stale prefix and table (normally one: the event's old path).
    Returns {"table.column": rows changed}."""
    changed = {}
    for column in columns:
        # The copies through the unit, whatever the path above it: found by the /<id>/ segment.
        paths = session.scalars(select(column).distinct().where(column.contains(f"/{unit_id}/"))).all()
        count = 0
        # Deepest first: a stale prefix can extend another (the unit twice in a path, see ``through``).
        for prefix in sorted(stale_prefixes(paths, unit_id, unit_path), key=lambda p: (-len(p), p)):
            result = session.execute(
                update(column.class_)
                .where(in_subtree(column, prefix))
                .values({column.key: replace_prefix(column, prefix, unit_path)})
                .execution_options(synchronize_session=False)
            )
            count += result.rowcount
        changed[_name(column)] = count
    session.expire_all()
    return changed


def unit_moved(session, grid, columns, unit_id):
    """A ``unit_moved`` handler's whole work: under the copies lock, rebase every copy in ``columns``
    through the unit on the path the grid gives it now (nothing when the grid no longer knows it).
    Returns {"table.column": rows changed}."""
    hold(session)
    path = unit_path_now(grid, unit_id)
    if path is None:
        return {}
    return rebase_unit(session, columns, unit_id, path)


def follow(session, path_column, where, unit_path, unit_id_column=None, unit_id=None):
    """Move the copies ``where`` selects to the household's small grid (``unit_id``, ``unit_path``) unless
    their unit still contains it (a request at the community stays when the household moved within the
    community). One UPDATE; returns the rows changed."""
    values = {path_column.key: unit_path}
    if unit_id_column is not None:
        values[unit_id_column.key] = unit_id
    result = session.execute(
        update(path_column.class_)
        .where(where, ~literal(unit_path).startswith(path_column))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return result.rowcount
