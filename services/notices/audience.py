"""Audience resolution: the grid is asked for residents page by page (keyset, 1,000 a page),
and each page becomes recipients and queued deliveries in one go.

Resolution is resumable: the notice keeps a cursor (audience unit, last resident id) that is
committed with each page (by the publishing timer, at each step ``resolve_pages`` yields), so the
dispatcher can start on the first pages while the rest resolve, and a restart continues where it
stopped.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import insert, or_, select

from services.notices.models import ChatGroup, Delivery, Notice, Preference, Recipient
from services.notices.notices import target_paths
from services.notices.vocabulary import PERSONAL_CHANNELS, URGENT_SEVERITIES, VULNERABLE_TAGS
from shared.db import bulk_insert, locking, utcnow
from shared.paths import as_path, in_subtree, path_ids

PAGE_SIZE = 1000
PHONE_CONTEXT = b"phone"  # the vault context of recipients' numbers (delivery.py decrypts them)


class DeliveryPlan:
    """Per-resident channel choice and timing: preferences narrow the channels; quiet hours hold
    minor/moderate notices until they end (severe/extreme go at once)."""

    def __init__(self, notice, timezone):
        self.notice = notice
        self.channels = [c for c in notice.channels if c in PERSONAL_CHANNELS]
        self.urgent = notice.severity in URGENT_SEVERITIES
        self.zone = ZoneInfo(timezone)

    def for_resident(self, preference, now):
        channels = self.channels
        if preference is not None:
            chosen = [c for c in channels if c in preference.channels]
            channels = chosen or channels  # a preference never silences a notice entirely
        due = now
        if not self.urgent and preference is not None and preference.quiet_start is not None:
            due = quiet_hours_end(now, preference.quiet_start, preference.quiet_end, self.zone) or now
        return channels, due


def quiet_hours_end(now, start, end, zone):
    """When the quiet window containing ``now`` ends (UTC), or None if ``now`` is outside it."""
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # overnight, e.g. 22:00-07:00
        inside = clock >= start or clock < end
        end_day = local.date() + dt.timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)


def resolve_pages(uow, grid, vault, notice, timezone, max_pages=20):
    """Resolve up to ``max_pages`` pages of the notice's audience: a generator that yields once each
    page is stored with the cursor, for the caller to commit it there (the timer does), so the
    dispatcher starts on it at once and a crash resumes from the cursor. The next page is requested
    from the grid while this one is stored. Returns True when the audience is complete.

    After each commit the notice is locked again; if another replica took it meanwhile (its cursor
    moved), this one stops and leaves the rest to it.
    """
    under = notice.audience["under"]
    plan = DeliveryPlan(notice, timezone)
    cursor = dict(notice.resolve_cursor or {"unit": 0, "after": None})

    def request(at):
        return grid.find_residents_async(
            under=str(under[at["unit"]]),
            tags_any=notice.audience.get("tags_any") or None,
            tags_all=notice.audience.get("tags_all") or None,
            page_size=PAGE_SIZE,
            after=at["after"],
        )

    pending = request(cursor) if cursor["unit"] < len(under) else None
    for pages in range(1, max_pages + 1):
        if pending is None:
            break
        page = pending.result()
        if page["has_more"]:
            following = {"unit": cursor["unit"], "after": page["next_after"]}
        else:
            following = {"unit": cursor["unit"] + 1, "after": None}
        more = following["unit"] < len(under) and pages < max_pages
        pending = request(following) if more else None
        add_recipients(uow, vault, notice, plan, page["items"])
        notice.resolve_cursor = cursor = following
        yield  # the page and the cursor are committed here
        if not _still_ours(uow.session, notice, cursor):  # lock it again before going on or publishing
            return False
    return cursor["unit"] >= len(under)


def _still_ours(session, notice, cursor):
    """Lock the notice again for the next page; False if another replica has moved on with it."""
    query = (
        select(Notice)
        .where(Notice.id == notice.id, Notice.status == "approved")
        .execution_options(populate_existing=True)
    )
    current = session.scalar(locking(query, session, skip_locked=True))
    return current is not None and current.resolve_cursor == cursor


def add_recipients(uow, vault, notice, plan, residents, now=None):
    """Recipients and their queued deliveries for one page of grid residents (3 statements)."""
    if not residents:
        return 0
    session = uow.session
    now = now or utcnow()
    ids = [int(r["id"]) for r in residents]
    preferences = {p.resident_id: p for p in session.scalars(select(Preference).where(Preference.resident_id.in_(ids)))}
    rows = []
    for resident in residents:
        tags = [t for t in resident.get("tags", []) if t in VULNERABLE_TAGS]
        phone = resident.get("phone")
        rows.append(
            {
                "notice_id": notice.id,
                "resident_id": int(resident["id"]),
                "household_id": int(resident["household_id"]),
                "unit_path": as_path(resident["unit_path"]),
                "vulnerable_tags": tags,
                "vulnerable": bool(tags),
                "address_enc": vault.encrypt(phone, PHONE_CONTEXT) if phone and "*" not in phone else None,
            }
        )
    inserted = bulk_insert(session, Recipient.__table__, rows, returning=("id", "resident_id", "unit_path"))
    deliveries = []
    for recipient_id, resident_id, unit_path in inserted:
        channels, due = plan.for_resident(preferences.get(resident_id), now)
        for channel in channels:
            deliveries.append(
                {
                    "notice_id": notice.id,
                    "recipient_id": recipient_id,
                    "unit_path": unit_path,
                    "channel": channel,
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": due,
                    "created_at": now,
                }
            )
    bulk_insert(session, Delivery.__table__, deliveries)
    notice.recipient_count = (notice.recipient_count or 0) + len(inserted)
    return len(inserted)


def add_chat_groups(session, notice, now):
    """One delivery per small grid's chat group under the audience. Only for audiences without
    tag filters: a group message reaches everyone in the group."""
    if "chat_group" not in notice.channels or notice.audience.get("tags_any") or notice.audience.get("tags_all"):
        return 0
    paths = target_paths(session, notice)
    groups = (
        session.scalars(select(ChatGroup).where(or_(*[in_subtree(ChatGroup.unit_path, path) for path in paths]))).all()
        if paths
        else []
    )
    rows = [
        {
            "notice_id": notice.id,
            "recipient_id": None,
            "unit_path": group.unit_path,
            "channel": "chat_group",
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for group in groups
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def copy_reached_recipients(uow, cancel_notice, original_id, timezone):
    """A cancel goes to everyone the original reached (a delivery sent or delivered)."""
    session = uow.session
    reached = session.scalars(
        select(Recipient).where(
            Recipient.notice_id == original_id,
            Recipient.id.in_(
                select(Delivery.recipient_id).where(
                    Delivery.notice_id == original_id, Delivery.status.in_(("sent", "delivered"))
                )
            ),
        )
    ).all()
    plan = DeliveryPlan(cancel_notice, timezone)
    residents = [
        {
            "id": r.resident_id,
            "household_id": r.household_id,
            "unit_path": path_ids(r.unit_path),
            "tags": r.vulnerable_tags,
            "phone": None,
        }
        for r in reached
    ]
    added = add_recipients(uow, None, cancel_notice, plan, residents)
    # Carry the encrypted numbers over as they are (no need to decrypt them here).
    by_resident = {r.resident_id: r.address_enc for r in reached}
    for recipient in session.scalars(select(Recipient).where(Recipient.notice_id == cancel_notice.id)):
        recipient.address_enc = by_resident.get(recipient.resident_id)
    return added
