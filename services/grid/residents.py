"""Households, residents and their tags; audience queries over a subtree."""

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update

from services.grid import retention
from services.grid.events import path_out
from services.grid.models import Household, Resident, ResidentTag
from services.grid.units import RowView, reachable_unit
from shared import paths as tree
from shared.db import fetch, locking, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ValidationError
from shared.pii import mask_id_number, mask_phone
from shared.validation import page_of

ID_INDEX = b"id_number"


def load_household(session, caller, household_id, lock=False):
    household = fetch(session, Household, household_id, "household", lock=lock)
    caller.require_reach(tree.path_ids(household.unit_path), "household")
    return household


def _open_small_grid(session, caller, unit_id):
    unit = reachable_unit(session, caller, unit_id)
    if unit.level != "grid_small":
        raise ValidationError({"unit_id": [f"Must be a grid_small unit, not {unit.level}."]})
    if unit.closed:
        raise Conflict(f"unit {unit.id} is closed and takes no new households")
    return unit


def register_household(uow, caller, unit_id, address):
    session = uow.session
    unit = _open_small_grid(session, caller, unit_id)
    household = Household(unit_id=unit.id, unit_path=unit.path, created_at=utcnow(), **address)
    session.add(household)
    session.flush()
    return household


def household_view(session, caller, household_id):
    """The household with its members' ids, in id order (for services acting on a whole household)."""
    household = load_household(session, caller, household_id)
    members = session.scalars(
        select(Resident.id)
        .where(Resident.household_id == household.id, Resident.erased_at.is_(None))
        .order_by(Resident.id)
    ).all()
    return RowView(household, resident_ids=list(members))


def move_household(uow, caller, household_id, unit_id):
    session = uow.session
    household = load_household(session, caller, household_id)
    unit = _open_small_grid(session, caller, unit_id)
    old_path = household.unit_path
    household.unit_id, household.unit_path = unit.id, unit.path
    members = select(Resident.id).where(Resident.household_id == household.id)
    for model, where in (
        (Resident, Resident.household_id == household.id),
        (ResidentTag, ResidentTag.resident_id.in_(members)),
    ):
        session.execute(
            update(model).where(where).values(unit_path=unit.path).execution_options(synchronize_session=False)
        )
    session.flush()
    uow.emit(
        "household_moved",
        f"household/{household.id}",
        {
            "household_id": str(household.id),
            "unit_id": str(unit.id),
            "unit_path": path_out(unit.path),
            "old_unit_path": path_out(old_path),
        },
    )
    return household


def register_resident(uow, caller, vault, household_id, name, id_number, phone, birth_date):
    """The new resident as ``caller`` may see it (a ResidentView).

    The household row is locked as an erasure locks it (services/grid/erasure.py): a registration
    racing the erasure of the household's last resident lands either before it (the household is then
    not emptied) or after it (a newcomer in the emptied household, as if registered later)."""
    session = uow.session
    household = load_household(session, caller, household_id, lock=True)
    id_hash = vault.blind_index(id_number, ID_INDEX)
    if session.scalar(select(Resident.id).where(Resident.id_number_hash == id_hash)) is not None:
        raise Conflict("a resident with this id_number is already registered")
    resident = Resident(
        household_id=household.id,
        unit_path=household.unit_path,
        name=name,
        id_number_enc=vault.encrypt(id_number, ID_INDEX),
        id_number_hash=id_hash,
        phone_enc=vault.encrypt(phone, b"phone"),
        birth_date=birth_date,
        created_at=utcnow(),
    )
    session.add(resident)
    session.flush()
    return view_resident(resident, [], vault, caller.pii)


def load_resident(session, caller, resident_id):
    resident = fetch(session, Resident, resident_id, "resident")
    if caller.roles == {"resident"}:
        # A resident may look only at themselves.
        if caller.sub != str(resident.id):
            raise Forbidden("residents may only read their own record")
    else:
        caller.require_reach(tree.path_ids(resident.unit_path), "resident")
    return resident


@dataclass
class ResidentView:
    """A resident as one caller may see it: ID and phone masked unless the caller has ``pii``."""

    id: int
    household_id: int
    unit_id: int
    unit_path: str
    name: str
    id_number: str
    phone: str
    birth_date: object
    tags: list


def view_resident(resident, tags, vault, reveal, with_id_number=True):
    phone = vault.decrypt(resident.phone_enc, b"phone")
    id_number = vault.decrypt(resident.id_number_enc, ID_INDEX) if with_id_number else ""
    return ResidentView(
        id=resident.id,
        household_id=resident.household_id,
        unit_id=tree.path_ids(resident.unit_path)[-1],
        unit_path=resident.unit_path,
        name=resident.name,
        id_number=id_number if reveal else mask_id_number(id_number),
        phone=phone if reveal else mask_phone(phone),
        birth_date=resident.birth_date,
        tags=tags,
    )


def get_resident(session, caller, vault, resident_id):
    resident = load_resident(session, caller, resident_id)
    tags = session.scalars(
        select(ResidentTag).where(ResidentTag.resident_id == resident.id).order_by(ResidentTag.tag)
    ).all()
    return view_resident(resident, tags, vault, caller.pii)


def tag_event(resident, tag):
    return {
        "resident_id": str(resident.id),
        "household_id": str(resident.household_id),
        "unit_id": str(tree.path_ids(resident.unit_path)[-1]),
        "unit_path": path_out(resident.unit_path),
        "tag": tag,
    }


@dataclass
class TagSet:
    """A tag as it now stands on a resident; ``created``: the resident did not carry it before."""

    resident_id: int
    tag: str
    until: dt.datetime | None
    note: str | None
    created: bool


def tag_resident(uow, caller, resident_id, tag, until, note):
    """Tag the resident, or update ``until``/``note`` of the tag they carry (announced only when new)."""
    session = uow.session
    resident = load_resident(session, caller, resident_id)
    if resident.erased_at is not None:
        raise Conflict(f"resident {resident.id} was erased and takes no tags")
    if until is not None and until <= utcnow():
        raise ValidationError({"until": ["Must be in the future."]})
    existing = session.get(ResidentTag, (resident.id, tag))
    if existing is not None:
        existing.until, existing.note = until, note
        return TagSet(resident.id, tag, until, note, created=False)
    row = ResidentTag(
        resident_id=resident.id, tag=tag, unit_path=resident.unit_path, until=until, note=note, tagged_at=utcnow()
    )
    session.add(row)
    session.flush()
    uow.emit(
        "resident_tagged",
        f"resident/{resident.id}",
        {**tag_event(resident, tag), "until": until.isoformat() if until else None},
    )
    return TagSet(resident.id, tag, until, note, created=True)


def untag_resident(uow, caller, resident_id, tag, reason="untagged", lifecycle=None):
    """Take the tag off the resident, keeping its release until the tag's retention ends
    (services/grid/retention.py); returns the removed tag's row."""
    session = uow.session
    resident = load_resident(session, caller, resident_id)
    existing = session.get(ResidentTag, (resident.id, tag))
    if existing is None:
        raise NotFound(f"resident {resident.id} is not tagged {tag}")
    session.delete(existing)
    retention.record_release(session, lifecycle, resident.id, tag, resident.unit_path, reason, utcnow())
    session.flush()
    uow.emit("resident_untagged", f"resident/{resident.id}", {**tag_event(resident, tag), "reason": reason})
    return existing


def expire_tags(uow, now, limit=500, lifecycle=None):
    """Remove tags whose ``until`` has passed, announcing each and keeping its release until the tag's
    retention ends; returns how many."""
    session = uow.session
    query = select(ResidentTag).where(ResidentTag.until <= now).limit(limit)
    expired = session.scalars(locking(query, session, skip_locked=True)).all()
    _release_expired(uow, expired, now, lifecycle)
    return len(expired)


def expire_aged_tags(uow, now, lifecycle, limit=500):
    """Remove tags set without ``until`` that are older than their policy's ``max_age`` (reason
    ``expired``, as ``expire_tags``); returns how many."""
    session = uow.session
    aged: list = []
    for policy in retention.policies_view(lifecycle):
        if policy.max_age is None or len(aged) >= limit:
            continue
        cutoff = now - dt.timedelta(seconds=policy.max_age)
        query = (
            select(ResidentTag)
            .where(ResidentTag.tag == policy.tag, ResidentTag.until.is_(None), ResidentTag.tagged_at <= cutoff)
            .limit(limit - len(aged))
        )
        aged.extend(session.scalars(locking(query, session, skip_locked=True)).all())
    _release_expired(uow, aged, now, lifecycle)
    return len(aged)


def _release_expired(uow, rows, now, lifecycle):
    session = uow.session
    for row in rows:
        resident = session.get(Resident, row.resident_id)
        session.delete(row)
        retention.record_release(session, lifecycle, resident.id, row.tag, resident.unit_path, "expired", now)
        uow.emit("resident_untagged", f"resident/{resident.id}", {**tag_event(resident, row.tag), "reason": "expired"})
    session.flush()


def _matching_ids(path, tags_any, tags_all):
    """A subquery of resident ids under ``path`` matching the tag filters, or None for no tag filter.

    Driven from the (tag, unit_path) index so only tagged rows are read.
    """
    if not tags_any and not tags_all:
        return None
    in_scope = tree.in_subtree(ResidentTag.unit_path, path)
    if tags_all:
        query = (
            select(ResidentTag.resident_id)
            .where(in_scope, ResidentTag.tag.in_(tags_all))
            .group_by(ResidentTag.resident_id)
            .having(func.count() == len(set(tags_all)))
        )
        if tags_any:
            any_tag = select(ResidentTag.resident_id).where(in_scope, ResidentTag.tag.in_(tags_any))
            query = query.where(ResidentTag.resident_id.in_(any_tag))
        return query
    return select(ResidentTag.resident_id).where(in_scope, ResidentTag.tag.in_(tags_any)).distinct()


def count_residents(session, caller, under, tags_any, tags_all):
    root = reachable_unit(session, caller, under)
    matching = _matching_ids(root.path, tags_any, tags_all)
    if matching is None:
        # As find_residents counts them: an erased resident is left out (a tag filter does by itself).
        query = (
            select(func.count())
            .select_from(Resident)
            .where(tree.in_subtree(Resident.unit_path, root.path), Resident.erased_at.is_(None))
        )
    else:
        query = select(func.count()).select_from(matching.subquery())
    return session.scalar(query)


def find_residents(session, caller, vault, under, tags_any, tags_all, page, page_size, after=None):
    """One page of resident summaries in id order, by ``page`` or (``after``) by keyset; ``next_after``
    is the ``after`` of the next page (None on the last)."""
    root = reachable_unit(session, caller, under)
    matching = _matching_ids(root.path, tags_any, tags_all)
    query = select(Resident)
    if matching is None:
        # An erased resident has no tags, so a tag filter leaves them out by itself.
        query = query.where(tree.in_subtree(Resident.unit_path, root.path), Resident.erased_at.is_(None))
    else:
        query = query.where(Resident.id.in_(matching))
    query = query.where(Resident.id > after) if after is not None else query.offset((page - 1) * page_size)
    rows = session.scalars(query.order_by(Resident.id).limit(page_size + 1)).all()
    rows, has_more = rows[:page_size], len(rows) > page_size
    found = page_of(_summaries(session, caller, vault, rows), page, page_size, has_more)
    return {**found, "next_after": rows[-1].id if has_more else None}


def resident_columns(session, caller, under, tags_any, tags_all, page_size, after=None, phones=False):
    """One keyset page of the residents under ``under`` (tag filters as ``find_residents``) as columns,
    for long walks (a notice's audience): no ORM objects, nothing decrypted. Phones only when asked for
    and the caller has ``pii``: the stored ciphertext, in hex — the services share the PII key, so a
    number stays encrypted on the wire and at rest, and only the channel that posts it decrypts it."""
    root = reachable_unit(session, caller, under)
    matching = _matching_ids(root.path, tags_any, tags_all)
    with_phones = bool(phones and caller.pii)
    columns: list = [Resident.id, Resident.household_id, Resident.unit_path]
    if with_phones:  # the database writes the hex (SQLite's is upper case: fromhex reads both)
        postgres = session.bind.dialect.name == "postgresql"
        columns.append(func.encode(Resident.phone_enc, "hex") if postgres else func.hex(Resident.phone_enc))
    query = select(*columns)
    if matching is None:
        # An erased resident is no one's audience (a tag filter leaves them out by itself: no tags).
        query = query.where(tree.in_subtree(Resident.unit_path, root.path), Resident.erased_at.is_(None))
    else:
        query = query.where(Resident.id.in_(matching))
    if after is not None:
        query = query.where(Resident.id > after)
    # Core rows on the session's connection: no ORM loading for thousands of plain tuples.
    connection = session.connection()
    rows = connection.execute(query.order_by(Resident.id).limit(page_size + 1)).all()
    rows, has_more = rows[:page_size], len(rows) > page_size
    ids = [row[0] for row in rows]
    tags: dict[int, list[str]] = {}
    if ids:
        # The page's id range under the root: one range of the (resident_id, tag) key, no list of ids.
        for resident_id, tag in connection.execute(
            select(ResidentTag.resident_id, ResidentTag.tag)
            .where(ResidentTag.resident_id.between(ids[0], ids[-1]), tree.in_subtree(ResidentTag.unit_path, root.path))
            .order_by(ResidentTag.resident_id, ResidentTag.tag)
        ):
            tags.setdefault(resident_id, []).append(tag)
    unit_of = {path: tree.path_ids(path)[-1] for path in {row[2] for row in rows}}  # a few hundred paths a page
    return {
        "ids": ids,
        "household_ids": [row[1] for row in rows],
        "unit_ids": [unit_of[row[2]] for row in rows],
        "paths": {str(unit_id): [str(i) for i in tree.path_ids(path)] for path, unit_id in unit_of.items()},
        "tags": [tags.get(i, []) for i in ids],
        "phones_enc": [row[3] for row in rows] if with_phones else None,
        "has_more": has_more,
        "next_after": ids[-1] if has_more else None,
        "scope_path": root.path,  # not in the reply: what the access log records of a read with phones
    }


def _summaries(session, caller, vault, rows):
    tags: dict[int, list[str]] = {}
    if rows:
        for resident_id, tag in session.execute(
            select(ResidentTag.resident_id, ResidentTag.tag)
            .where(ResidentTag.resident_id.in_([r.id for r in rows]))
            .order_by(ResidentTag.tag)
        ):
            tags.setdefault(resident_id, []).append(tag)
    return [view_resident(r, tags.get(r.id, []), vault, caller.pii, with_id_number=False) for r in rows]


def get_residents(session, caller, vault, resident_ids):
    """Several residents in one call (what send_direct needs); ids not found are listed apart."""
    rows = session.scalars(select(Resident).where(Resident.id.in_(resident_ids)).order_by(Resident.id)).all()
    for resident in rows:
        caller.require_reach(tree.path_ids(resident.unit_path), "resident")
    found = {r.id for r in rows}
    return {"items": _summaries(session, caller, vault, rows), "missing": [i for i in resident_ids if i not in found]}
