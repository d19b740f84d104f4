"""Audience resolution: the grid is asked for residents page by page (keyset, ``PAGE_SIZE`` a page, as
columns: ``grid.find_resident_columns``), and each page becomes recipients and queued deliveries in
one go — on PostgreSQL one INSERT a table, each column one array, with no per-row object: a phone comes
as the grid's ciphertext (the services share the PII key) and is stored as it is, decrypted only by the
dispatcher that posts it.

Resolution is resumable: the notice keeps a cursor (audience unit, last resident id) that is
committed with each page (by the publishing timer, at each step ``resolve_pages`` yields), so the
dispatcher can start on the first pages while the rest resolve, and a restart continues where it
stopped.
"""

import datetime as dt
import json
import re
from collections import Counter
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, any_, bindparam, insert, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from services.notices.inbound import phone_hash
from services.notices.models import FACTS, ChatGroup, Delivery, Notice, Preference, Recipient
from services.notices.notices import target_paths
from services.notices.vocabulary import PERSONAL_CHANNELS, URGENT_SEVERITIES, VULNERABLE_TAGS
from shared.db import bulk_insert, locking, utcnow
from shared.paths import as_path, in_subtree

PAGE_SIZE = 5000
PHONE_CONTEXT = b"phone"  # the vault context of recipients' numbers (delivery.py decrypts them)
PHONE_CHANNELS = frozenset({"sms", "voice_call"})  # the channels that post to a phone number
_VULNERABLE = frozenset(VULNERABLE_TAGS)


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


def resolve_pages(uow, grid, vault, notice, timezone, max_pages=20, handoff=None):
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

    phones = bool(PHONE_CHANNELS & set(plan.channels))  # no numbers asked for a push-only notice

    def request(at):
        return grid.find_resident_columns_async(
            under=str(under[at["unit"]]),
            tags_any=notice.audience.get("tags_any") or None,
            tags_all=notice.audience.get("tags_all") or None,
            page_size=PAGE_SIZE,
            after=at["after"],
            phones=phones,
        )

    pending = request(cursor) if cursor["unit"] < len(under) else None
    try:
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
            add_columns(uow, notice, plan, page, handoff=handoff, vault=vault)
            notice.resolve_cursor = cursor = following
            yield  # the page and the cursor are committed here
            if handoff is not None:
                handoff.committed()  # its claims exist now: the dispatcher may post them
            if not _still_ours(uow.session, notice, cursor):  # lock it again before going on or publishing
                return False
        return cursor["unit"] >= len(under)
    finally:
        if handoff is not None:
            handoff.discard()  # claims of a page whose commit never came were never made


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
    """Recipients and their queued deliveries for grid residents as ``find_residents`` rows (a phone
    in clear, encrypted here; a masked one is no number to use)."""
    rows = []
    hashes: list[str | None] | None = [] if notice.requires_ack else None
    for resident in residents:
        phone = resident.get("phone")
        usable = bool(phone) and "*" not in phone
        rows.append(
            (
                int(resident["id"]),
                int(resident["household_id"]),
                as_path(resident["unit_path"]),
                resident.get("tags", []),
                vault.encrypt(phone, PHONE_CONTEXT).hex() if usable else None,
            )
        )
        if hashes is not None:
            hashes.append(phone_hash(vault, phone) if usable else None)
    return write_recipients(uow, notice, plan, rows, now, hashes=hashes)


def add_columns(uow, notice, plan, page, now=None, handoff=None, vault=None):
    """Recipients and their queued deliveries for one ``find_resident_columns`` page: its phones are
    the grid's ciphertext already (hex), stored as they are. For a notice that requires an
    acknowledgement each phone's blind index is stored too (``phone_hashes``: decrypted here for that,
    with ``vault``; the grid sends no hash), so that a reply naming only its phone finds its recipient."""
    # Ids as numbers (a few hundred small grids a page): the paths go into the INSERT's arrays unquoted.
    paths = {int(unit_id): as_path([int(i) for i in path]) for unit_id, path in page["paths"].items()}
    phones = page.get("phones_enc") or [None] * len(page["ids"])
    rows = [
        (resident_id, household_id, paths[unit_id], tags, phone)
        for resident_id, household_id, unit_id, tags, phone in zip(
            page["ids"], page["household_ids"], page["unit_ids"], page["tags"], phones, strict=True
        )
    ]
    hashes = phone_hashes(vault, phones) if vault is not None and notice.requires_ack else None
    return write_recipients(uow, notice, plan, rows, now, handoff=handoff, hashes=hashes)


def phone_hashes(vault, phones_hex):
    """The blind index (``inbound.phone_hash``) of each encrypted phone in hex (None stays None): a
    decryption and an HMAC a phone, some 10 µs — paid only for notices that require an acknowledgement."""
    decrypt, fromhex = vault.decrypt, bytes.fromhex
    return [phone_hash(vault, decrypt(fromhex(p), PHONE_CONTEXT)) if p else None for p in phones_hex]


def write_recipients(uow, notice, plan, residents, now=None, handoff=None, hashes=None):
    """Recipients and their deliveries for ``residents``: (resident id, household id, unit path, tags,
    encrypted phone in hex or None) tuples; ``hashes``, when given, each one's phone blind index (or
    None), in the same order. Residents the grid erased since the page was read are left out. On
    PostgreSQL in four statements whatever their number: their tombstones, their preferences, ids
    drawn from both sequences, and one INSERT of both tables (each column one array). With a
    ``handoff`` (``delivery.Handoff``) the deliveries due now that it grants are written already
    claimed and given to it (handed on to the dispatcher once the transaction commits); the others
    are queued."""
    session = uow.session
    residents, hashes = _without_erased(session, residents, hashes)
    if not residents:
        return 0
    now = now or utcnow()
    preferences = _preferences(session, [r[0] for r in residents])
    planned = []  # (resident's index, channel, due)
    if preferences:
        for index, resident in enumerate(residents):
            channels, due = plan.for_resident(preferences.get(resident[0]), now)
            planned += [(index, channel, due) for channel in channels]
    else:  # nobody on the page set a preference (most pages): the notice's channels, now, for everyone
        channels, due = plan.for_resident(None, now)
        planned = [(index, channel, due) for index in range(len(residents)) for channel in channels]
    granted = _reserve(handoff, planned, now)
    claimed_at, lease_end = handoff.lease_from(now) if any(granted.values()) else (None, None)
    postgres = session.bind.dialect.name == "postgresql"
    if postgres:
        recipient_ids, delivery_ids = _draw_ids(session, len(residents), len(planned))
    else:
        recipient_ids, delivery_ids = _insert_recipients(session, notice, residents, hashes), [None] * len(planned)
    left = dict(granted)
    rows = []  # (delivery id, recipient id, resident, channel, due, claimed)
    for delivery_id, (index, channel, due) in zip(delivery_ids, planned, strict=True):
        claimed = left.get(channel, 0) > 0 and due <= now
        if claimed:
            left[channel] -= 1
        rows.append((delivery_id, recipient_ids[index], residents[index], channel, due, claimed))
    if postgres:
        _insert_pg(session, notice, recipient_ids, residents, rows, now, lease_end, hashes)
    else:
        rows = _insert_deliveries(session, notice, rows, now, lease_end)
    if lease_end is not None:
        for channel, claims in _claims(notice, rows).items():
            handoff.add(channel, claims, (notice.title, notice.body, notice.severity), claimed_at, lease_end)
    notice.recipient_count = (notice.recipient_count or 0) + len(residents)
    return len(residents)


def _reserve(handoff, planned, now):
    """{channel: how many of its deliveries due now to write claimed}."""
    if handoff is None:
        return {}
    due_now = Counter(channel for _index, channel, due in planned if due <= now)
    return {channel: handoff.reserve(channel, count) for channel, count in due_now.items()}


def _preferences(session, resident_ids):
    """{resident id: Preference} for those of ``resident_ids`` who set one (one array parameter on
    PostgreSQL: thousands of ids, no expanding IN)."""
    where = _among(session, Preference.resident_id, resident_ids)
    return {p.resident_id: p for p in session.scalars(select(Preference).where(where))}


def _without_erased(session, residents, hashes):
    """``residents`` (and their ``hashes``) but those the grid erased: a page read from the grid before
    an erasure and written after ``resident_erased`` was applied here would store the phone again (one
    lookup of the tombstones' primary key a page). A page written while the erasure is applied — neither
    sees the other's uncommitted rows — is caught by the housekeeping sweep (``erasure.sweep_recent``)."""
    erased = FACTS.erased
    gone = set(session.scalars(select(erased.id).where(_among(session, erased.id, [r[0] for r in residents]))))
    if not gone:
        return residents, hashes
    keep = [i for i, resident in enumerate(residents) if resident[0] not in gone]
    return [residents[i] for i in keep], None if hashes is None else [hashes[i] for i in keep]


def _among(session, column, ids):
    """``column IN ids``: on PostgreSQL one array parameter (thousands of ids, no expanding IN)."""
    if session.bind.dialect.name == "postgresql":
        return column == any_(bindparam(None, ids, type_=ARRAY(BigInteger)))
    return column.in_(ids)


def _draw_ids(session, recipients, deliveries):
    """Ids for so many recipients and deliveries, from their sequences (one statement; the driver's
    cursor: thousands of rows)."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(_DRAW_IDS, (recipients, deliveries))
        found: dict[bool, list[int]] = {True: [], False: []}
        for is_recipient, drawn in cursor.fetchall():
            found[is_recipient].append(drawn)
        return found[True], found[False]
    finally:
        cursor.close()


def _insert_recipients(session, notice, residents, hashes=None):
    """SQLite: the recipients, inserted; their ids in ``residents``' order."""
    rows = [
        {
            "notice_id": notice.id,
            "resident_id": resident_id,
            "household_id": household_id,
            "unit_path": unit_path,
            "vulnerable_tags": [t for t in tags if t in _VULNERABLE],
            "vulnerable": bool(_VULNERABLE.intersection(tags)),
            "address_enc": bytes.fromhex(address) if address else None,
            "address_hash": hashes[index] if hashes else None,
        }
        for index, (resident_id, household_id, unit_path, tags, address) in enumerate(residents)
    ]
    inserted = bulk_insert(session, Recipient.__table__, rows, returning=("id", "resident_id"))
    by_resident = {resident_id: recipient_id for recipient_id, resident_id in inserted}
    return [by_resident[resident[0]] for resident in residents]


def _insert_deliveries(session, notice, rows, now, lease_end):
    """SQLite: the deliveries, inserted; ``rows`` with their ids."""
    values = [
        {
            "notice_id": notice.id,
            "recipient_id": recipient_id,
            "unit_path": resident[2],
            "channel": channel,
            "status": "sending" if claimed else "queued",
            "attempts": 1 if claimed else 0,
            "next_attempt_at": lease_end if claimed else due,
            "created_at": now,
        }
        for _id, recipient_id, resident, channel, due, claimed in rows
    ]
    inserted = bulk_insert(session, Delivery.__table__, values, returning=("id", "recipient_id", "channel"))
    found = {(recipient_id, channel): delivery_id for delivery_id, recipient_id, channel in inserted}
    return [(found[(row[1], row[3])], *row[1:]) for row in rows]


def _claims(notice, rows):
    """{channel: {delivery id: the Claim's fields}} of the ``rows`` written claimed."""
    claims: dict[str, dict[int, tuple]] = {}
    notice_id, fromhex = notice.id, bytes.fromhex
    for delivery_id, recipient_id, resident, channel, _due, claimed in rows:
        if claimed:
            resident_id, _household, unit_path, tags, address = resident
            if channel not in claims:
                claims[channel] = {}
            claims[channel][delivery_id] = (
                delivery_id,
                notice_id,
                recipient_id,
                unit_path,
                1,  # this claim's attempt
                fromhex(address) if address else None,
                resident_id,
                [t for t in tags if t in _VULNERABLE] if tags else None,  # None: no tags (most residents)
            )
    return claims


# The sequences looked up once a statement: ``nextval(pg_get_serial_sequence(...))`` looked them up (by
# name, from the catalog) for every id — 27 ms a page of 5,000 where this takes 3.5.
_DRAW_IDS = (
    "WITH seq AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence('recipients', 'id') AS regclass) AS r,"
    " CAST(pg_get_serial_sequence('deliveries', 'id') AS regclass) AS d)"
    " SELECT true, nextval(seq.r) FROM seq, generate_series(1, %s) UNION ALL"
    " SELECT false, nextval(seq.d) FROM seq, generate_series(1, %s)"
)
# One statement a page: each column one array parameter (a literal PostgreSQL parses in C), the rows made
# by unnest, the recipients in a data-modifying WITH. As fast as COPY here, and unlike psycopg2's COPY it
# waits cooperatively (COPY refuses eventlet's wait callback: the process would stop while the database
# works).
_INSERT = text(
    "WITH recipients_in AS (INSERT INTO recipients (id, notice_id, resident_id, household_id, unit_path,"
    " vulnerable_tags, vulnerable, address_enc, address_hash) SELECT id, :notice_id, resident_id, household_id,"
    " unit_path, CAST(tags AS json), tags <> '[]', decode(phone, 'hex'), phone_hash"
    " FROM unnest(CAST(:r_ids AS bigint[]),"
    " CAST(:r_residents AS bigint[]), CAST(:r_households AS bigint[]), CAST(:r_paths AS text[]),"
    " CAST(:r_tags AS text[]), CAST(:r_phones AS text[]), CAST(:r_hashes AS text[]))"
    " AS page(id, resident_id, household_id, unit_path, tags, phone, phone_hash))"
    " INSERT INTO deliveries (id, notice_id, recipient_id, unit_path, channel, status, attempts, next_attempt_at,"
    " created_at) SELECT id, :notice_id, recipient_id, unit_path, channel,"
    " CASE WHEN claimed THEN 'sending' ELSE 'queued' END, CASE WHEN claimed THEN 1 ELSE 0 END,"
    " CASE WHEN claimed THEN CAST(:lease_end AS timestamptz) ELSE due END, :now"
    " FROM unnest(CAST(:d_ids AS bigint[]), CAST(:d_recipients AS bigint[]), CAST(:d_paths AS text[]),"
    " CAST(:d_channels AS text[]), CAST(:d_claimed AS boolean[]), CAST(:d_due AS timestamptz[]))"
    " AS page(id, recipient_id, unit_path, channel, claimed, due)"
)


def _numbers(values):
    """An array literal of values made here that need no quoting (numbers, ISO times, t/f, vocabulary
    words, paths of numbers)."""
    return "{" + ",".join(map(str, values)) + "}"


_HEX_LIST = re.compile(r"[0-9a-fA-FNUL,]*")


def _hex_texts(values):
    """An array literal of hex strings (None is NULL), checked: they come from the grid."""
    body = ",".join("NULL" if v is None else v for v in values)
    if not _HEX_LIST.fullmatch(body) or body.count(",") != len(values) - 1:
        raise ValueError("a phone from the grid is not hex")
    return "{" + body + "}"


def _tags(residents):
    """The array literal of the residents' vulnerable tags, each a JSON list ("[]" needs no quotes)."""
    quoted = []
    for resident in residents:
        tags = [t for t in resident[3] if t in _VULNERABLE] if resident[3] else None
        quoted.append('"' + json.dumps(tags).replace('"', '\\"') + '"' if tags else "[]")  # vocabulary words
    return "{" + ",".join(quoted) + "}"


def _insert_pg(session, notice, recipient_ids, residents, rows, now, lease_end, hashes=None):
    stamp = now.isoformat()
    session.execute(
        _INSERT,
        {
            "notice_id": notice.id,
            "now": now,
            "lease_end": lease_end,
            "r_ids": _numbers(recipient_ids),
            "r_residents": _numbers([r[0] for r in residents]),
            "r_households": _numbers([r[1] for r in residents]),
            "r_paths": _numbers([r[2] for r in residents]),
            "r_tags": _tags(residents),
            "r_phones": _hex_texts([r[4] for r in residents]),
            # None: no hashes at all, an empty array (unnest pads the shorter arrays with NULL).
            "r_hashes": _hex_texts(hashes) if hashes else "{}",
            "d_ids": _numbers([row[0] for row in rows]),
            "d_recipients": _numbers([row[1] for row in rows]),
            "d_paths": _numbers([row[2][2] for row in rows]),
            "d_channels": _numbers([row[3] for row in rows]),
            "d_claimed": _numbers(["t" if row[5] else "f" for row in rows]),
            "d_due": _numbers([stamp if row[4] is now else row[4].isoformat() for row in rows]),
        },
    )


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
    # The encrypted numbers are carried over as they are (no need to decrypt them here).
    residents = [
        (
            r.resident_id,
            r.household_id,
            r.unit_path,
            r.vulnerable_tags,
            bytes(r.address_enc).hex() if r.address_enc else None,
        )
        for r in reached
    ]
    hashes = [r.address_hash for r in reached] if cancel_notice.requires_ack else None
    return write_recipients(uow, cancel_notice, plan, residents, hashes=hashes)
