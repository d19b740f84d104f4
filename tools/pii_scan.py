"""How we check that erasing a resident leaves nothing behind: scan every service's database for
what we knew about them.

    python -m tools.pii_scan --name 张桂兰 --phone 13800000001 --id-number 370102195001010011 \\
        --address "Sunny Garden" --address 3 --address 501          # exit 1 on any hit
    python -m tools.pii_scan --needles needles.json [--database grid=postgresql://…]
    python -m tools.pii_scan --capture 17 --needles needles.json   # before erasing resident 17

The needles — the resident's name, phone, ID number and address — must be taken *before* the
erasure (afterwards no service can give them any more): ``--capture`` reads them from the grid over RPC
(a ``pii`` admin token signed with ``GRASSROOTS_JWT_SECRET``, else var/dev.env's; the read is in the
resident's access log) into a file only its owner may read; erase, wait for every service to apply
``resident_erased``, then scan with it. A needles file is JSON:
``{"name": "…", "phone": "…", "id_number": "…", "address": ["Sunny Garden", "3", "501"]}``.

What is scanned: every row of every table of every service database (grid, notices, legal,
volunteer; by default the URLs ``make run`` uses: ``<SERVICE>_DATABASE_URL``, else ``var/<service>.db``):

- text and varchar cells, case-insensitively and width-insensitively (NFKC: full-width digits match);
  a cell holding JSON is also read as JSON, so ``"\\u5f20"`` escapes are matched as the characters;
- JSON cells, every string in them (keys too), as above;
- binary cells (``bytea``/BLOB) and hex strings that look like ciphertext: decrypted with the suite's
  PiiVault (``GRASSROOTS_PII_KEY``, else ``var/dev.env``) under every context the services encrypt with
  (``CONTEXTS``), and the plaintext matched as above. A binary cell no context opens is reported as
  *unreadable*: it could hide anything, so it fails the scan as a hit does;
- the blind indexes of the phone and ID number (the keyed hashes kept beside their ciphertexts, which
  still single the person out for whoever holds the key), anywhere in a text or JSON cell.

A needle matches a cell when all its parts are in it: the address is one needle of several parts
(compound, building, room), so a neighbour in the same compound is no hit, the erased resident's
household address is. An address kept in columns of its own matches when each part is the whole of
one text cell of the row (reported as ``compound+building+room``). A phone also matches written with
spaces or dashes between its digits. A common name also matches namesakes: a row holding only the
name is marked so (judge it by its key: another resident's row is no leak). ``--capture`` leaves the
address out when others still live in the household: it stays theirs, and the erasure keeps it.

Rows under a legal hold (legal keeps them, as PIPL art. 47 allows while another law requires it) are
reported apart, as *kept under legal hold*, and do not fail the scan (``--no-holds`` counts them as
hits). Output names each hit as service, table, column and primary key, and the needle by kind and in
masked form: neither the needles nor what was found is ever printed.

Exit status: 0 clean, 1 a hit or an unreadable cell, 2 bad usage.
"""

import argparse
import binascii
import contextlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import MetaData, create_engine, or_, select, types as sqltypes

from services import registry
from shared.db import normalise_url
from shared.pii import KEY_ENV, PiiVault, mask_id_number, mask_phone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_ENV = os.path.join(ROOT, "var", "dev.env")

# Every context the services encrypt personal data under (grep `vault.encrypt(`): grid's phones and ID
# numbers, notices' recipient addresses, volunteer's phones, legal's consultation summaries, and every
# service's remembered replies of write requests (shared.idempotency). A new context goes here; until it
# does, its cells are reported unreadable (the scan fails loudly, it never passes them unread).
CONTEXTS: tuple[bytes, ...] = (
    b"phone",
    b"id_number",
    b"consultation summary",
    b"idempotent-reply",
    b"",
)
# The blind indexes (shared.pii.PiiVault.blind_index) kept beside ciphertexts, by kind: a keyed hash of a
# phone or ID number still finds the person for whoever holds the key, so it must go with the rest.
INDEX_KINDS: dict[str, tuple[bytes, ...]] = {"phone": (b"phone",), "id_number": (b"id_number",)}
ERASED = "[erased]"  # what the grid writes over an erased resident's name
MIN_PART = 2  # shorter needle parts would match nearly everywhere
MIN_CIPHERTEXT = 12 + 16  # nonce + GCM tag: anything shorter is not one of ours
HEX = re.compile(r"^(?:[0-9a-fA-F]{2}){28,}$")
# Column types that cannot hold a name, phone or address: not read at all.
SKIPPED_TYPES: tuple[type, ...] = (sqltypes.Integer, sqltypes.Numeric, sqltypes.Float, sqltypes.DateTime)
SKIPPED_TYPES += (sqltypes.Date, sqltypes.Time, sqltypes.Boolean, sqltypes.Interval)


# ---- needles ---------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Width- and case-insensitive form: NFKC: full-width digits match ASCII ones, then casefold."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class Needle:
    """What to look for: every part must be in one cell. ``kind``: name, phone, id_number, address."""

    kind: str
    parts: tuple[str, ...]
    patterns: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        patterns = []
        for part in self.parts:
            folded = normalise(part)
            if self.kind == "phone" and folded.isdigit():
                # 138 0000 0001, 138-0000-0001, +86 13800000001: a separator allowed between digits
                patterns.append(re.compile(r"[\s\-]?".join(re.escape(c) for c in folded)))
            else:
                patterns.append(re.compile(re.escape(folded)))
        object.__setattr__(self, "patterns", tuple(patterns))

    def found_in(self, folded: str) -> bool:
        return all(p.search(folded) for p in self.patterns)

    @property
    def masked(self) -> str:
        """The needle as it may be printed: ``name 张**``, ``phone 138****0001``, ``address Su**, *, 5**``."""
        if self.kind == "phone":
            shown = [mask_phone(p) for p in self.parts]
        elif self.kind == "id_number":
            shown = [mask_id_number(p) for p in self.parts]
        else:
            shown = [(p[:1] if len(p) > 2 else "") + "*" * (len(p) - (1 if len(p) > 2 else 0)) for p in self.parts]
        return f"{self.kind} {', '.join(shown)}"


def needles(name=None, phone=None, id_number=None, address: Iterable[str] = ()) -> list[Needle]:
    """The needles for one resident; ValueError naming the field for a part too short to mean anything."""
    found = []
    for kind, value in (("name", name), ("phone", phone), ("id_number", id_number)):
        if value:
            value = value.strip()
            if len(value) < MIN_PART:
                raise ValueError(f"{kind}: too short to search for")
            found.append(Needle(kind, (value,)))
    parts = tuple(p.strip() for p in address if p and p.strip())
    if parts:
        if not any(len(p) >= 4 for p in parts):
            raise ValueError("address: give at least one distinctive part (4+ characters, e.g. the compound)")
        found.append(Needle("address", parts))
    if not found:
        raise ValueError("no needles: give at least one of name, phone, id_number, address")
    return found


def needles_from_file(path) -> list[Needle]:
    with open(path, encoding="utf-8") as source:
        data = json.load(source)
    unknown = set(data) - {"name", "phone", "id_number", "address"}
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))}: not a needle (name, phone, id_number, address)")
    address = data.get("address") or []
    if isinstance(address, Mapping):
        address = list(address.values())
    elif isinstance(address, str):
        address = [address]
    return needles(data.get("name"), data.get("phone"), data.get("id_number"), address)


# ---- what a scan reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One cell where a needle was found (``needle`` None: a binary cell no context decrypts)."""

    service: str
    table: str
    column: str
    key: tuple[tuple[str, Any], ...]  # the row's primary key: ((column, value), …)
    needle: Needle | None
    how: str  # text, json, encrypted:<context>, hex-encrypted:<context>, blind-index:<kind>, binary, columns, …
    held: bool = False
    name_only: bool = False  # the name is all the row has of the needles: perhaps a namesake

    def line(self) -> str:
        key = ", ".join(f"{name}={value}" for name, value in self.key) or "no key"
        what = self.needle.masked if self.needle else "a value no context decrypts"
        note = "; only the name in this row: a namesake?" if self.name_only else ""
        return f"{self.service}.{self.table}.{self.column} [{key}]: {what} ({self.how}{note})"


@dataclass
class Report:
    hits: list[Hit] = field(default_factory=list)  # outside legal holds: each one fails the scan
    held: list[Hit] = field(default_factory=list)  # in rows under a legal hold: kept, as the law allows
    unreadable: list[Hit] = field(default_factory=list)
    cells: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # "service.table" → rows read

    @property
    def clean(self) -> bool:
        return not self.hits and not self.unreadable

    def where(self) -> set[tuple[str, str, str]]:
        """(service, table, column) of every hit outside holds: what a test asserts on."""
        return {(h.service, h.table, h.column) for h in self.hits}

    def lines(self) -> list[str]:
        out = [f"scanned {len(self.tables)} tables, {sum(self.tables.values())} rows, {self.cells} cells"]
        out += [f"HIT  {h.line()}" for h in self.hits]
        out += [f"UNREADABLE  {h.line()}" for h in self.unreadable]
        out += [f"HELD {h.line()} — kept under legal hold" for h in self.held]
        out.append(
            "clean: nothing found outside legal holds"
            if self.clean
            else f"NOT CLEAN: {len(self.hits)} hits, {len(self.unreadable)} unreadable cells"
        )
        return out


# ---- legal holds --------------------------------------------------------------------------------------

# A row is held when it says so (a true boolean, or a set timestamp, in one of these columns), or when it
# belongs to a held row: its foreign key points at a held row of another table (a held case's parties and
# sessions). Read from the database, not from legal's models, so a scan needs no service code to run.
# (legal: ``consultations`` and ``mediation_cases`` carry ``legal_hold_at``, set while held; their sessions
# and summary reads refer to them.)
HOLD_FLAGS = ("legal_hold_at", "legal_hold")

HoldPredicate = Callable[[str, str, Mapping[str, Any]], bool]


def no_holds(service, table, row):
    return False


class LegalHolds:
    """The default hold predicate: rows of the legal database flagged held, and rows referring to them."""

    def __init__(self, service="legal"):
        self.service = service
        self.held_keys: dict[str, set] = {}  # table → primary keys of rows flagged held
        self.key_column: dict[str, str] = {}  # table → its (one-column) primary key
        self.references: dict[str, list[tuple[str, str]]] = {}  # table → [(fk column, referred table)]

    def load(self, service, metadata, connection):
        if service != self.service:
            return
        for table in metadata.tables.values():
            flags = [c for c in table.columns if c.name in HOLD_FLAGS]
            pk = list(table.primary_key.columns)
            if flags and len(pk) == 1:
                tests = [
                    column.is_(True) if isinstance(column.type, sqltypes.Boolean) else column.isnot(None)
                    for column in flags
                ]
                held = connection.execute(select(pk[0]).where(or_(*tests))).scalars()
                self.held_keys[table.name] = set(held)
                self.key_column[table.name] = pk[0].name
            for fk in table.foreign_keys:
                self.references.setdefault(table.name, []).append((fk.parent.name, fk.column.table.name))

    def __call__(self, service, table, row):
        if service != self.service:
            return False
        if table in self.held_keys and row.get(self.key_column[table]) in self.held_keys[table]:
            return True
        return any(
            row.get(column) in self.held_keys.get(referred, ()) for column, referred in self.references.get(table, ())
        )


# ---- scanning ----------------------------------------------------------------------------------------


def default_urls() -> dict[str, str]:
    """Each service's database as ``make run`` configures it (relative SQLite paths from the repo root)."""
    urls = {}
    for name in registry.NAMES:
        url = os.environ.get(f"{name.upper()}_DATABASE_URL") or f"sqlite:///var/{name}.db"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + os.path.join(ROOT, url[len("sqlite:///") :])
        urls[name] = url
    return urls


def default_vault() -> PiiVault:
    """The suite's vault: ``GRASSROOTS_PII_KEY``, else the key ``make run`` wrote to var/dev.env."""
    secret = os.environ.get(KEY_ENV, "")
    if not secret and os.path.exists(DEV_ENV):
        with open(DEV_ENV) as source:
            for line in source:
                key, _, value = line.strip().partition("=")
                if key == KEY_ENV:
                    secret = value
    return PiiVault(secret)


class Scanner:
    def __init__(self, found: list[Needle], vault: PiiVault, contexts: Iterable[bytes] = CONTEXTS):
        self.needles = found
        self.vault = vault
        self.contexts = tuple(contexts)
        # (needle, its blind index under one kind): matched as its own hex string anywhere
        self.indexes = [
            (needle, kind, vault.blind_index(needle.parts[0], kind))
            for needle in found
            for kind in INDEX_KINDS.get(needle.kind, ())
        ]

    def text_hits(self, value: str) -> list[Needle]:
        forms = [normalise(value)]
        stripped = value.strip()
        if stripped[:1] in '{["':
            with contextlib.suppress(ValueError):
                forms.append(normalise(json.dumps(json.loads(stripped), ensure_ascii=False)))
        return [n for n in self.needles if any(n.found_in(form) for form in forms)]

    def decrypt(self, blob: bytes) -> tuple[str, bytes] | None:
        """(plaintext, context) if one of the contexts opens ``blob``."""
        if len(blob) < MIN_CIPHERTEXT:
            return None
        for context in self.contexts:
            try:
                return self.vault.decrypt(blob, context), context
            except (InvalidTag, UnicodeDecodeError, ValueError):
                continue
        return None

    def cell(self, value) -> tuple[list[tuple[Needle, str]], bool]:
        """The needles found in one cell, each with how; and whether it was an unreadable binary."""
        if isinstance(value, memoryview):
            value = value.tobytes()
        if isinstance(value, bytes | bytearray):
            opened = self.decrypt(bytes(value))
            if opened is not None:
                plaintext, context = opened
                how = f"encrypted:{context.decode() or 'none'}"
                hits = [(n, how) for n in self.text_hits(plaintext)]
                return hits + self.hex_hits(plaintext) + self.index_hits(plaintext), False
            try:  # not one of ours: maybe stored in the clear
                found = self.text_hits(bytes(value).decode("utf-8"))
                return [(n, "binary") for n in found], False
            except UnicodeDecodeError:
                return [], True
        if isinstance(value, str):
            hits = [(n, "text") for n in self.text_hits(value)]
            return hits + self.hex_hits(value) + self.index_hits(value), False
        if isinstance(value, dict | list):
            dumped = json.dumps(value, ensure_ascii=False, default=str)
            return [(n, "json") for n in self.text_hits(dumped)] + self.hex_hits(value) + self.index_hits(dumped), False
        return [], False

    def index_hits(self, text: str) -> list[tuple[Needle, str]]:
        folded = text.casefold()
        return [(n, f"blind-index:{kind.decode()}") for n, kind, digest in self.indexes if digest in folded]

    def hex_hits(self, value) -> list[tuple[Needle, str]]:
        """Needles in ciphertexts kept as hex strings (alone in a cell or as strings inside JSON)."""
        found: list[tuple[Needle, str]] = []
        for text in _strings(value):
            if HEX.match(text):
                opened = self.decrypt(binascii.unhexlify(text))
                if opened is not None:
                    plaintext, context = opened
                    found += [(n, f"hex-encrypted:{context.decode() or 'none'}") for n in self.text_hits(plaintext)]
        return found


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def scan(
    urls: Mapping[str, str],
    found: list[Needle],
    vault: PiiVault | None = None,
    held: HoldPredicate | None = None,
    contexts: Iterable[bytes] = CONTEXTS,
) -> Report:
    """Scan every table of each ``{service: database URL}`` for the needles. ``held(service, table, row)``
    says whether a row is under a legal hold (default: LegalHolds, read from the legal database)."""
    scanner = Scanner(found, vault or default_vault(), contexts)
    holds = LegalHolds() if held is None else held
    report = Report()
    for service, url in urls.items():
        engine = create_engine(normalise_url(url))
        try:
            metadata = MetaData()
            metadata.reflect(bind=engine)
            with engine.connect() as connection:
                if isinstance(holds, LegalHolds):
                    holds.load(service, metadata, connection)
                for table in metadata.sorted_tables:
                    _scan_table(service, table, connection, scanner, holds, report)
        finally:
            engine.dispose()
    return report


def _scan_table(service, table, connection, scanner, holds, report):
    pk = [c.name for c in table.primary_key.columns]
    columns = [c for c in table.columns if not isinstance(c.type, SKIPPED_TYPES)]
    report.tables[f"{service}.{table.name}"] = 0
    if not columns:
        return
    several = [n for n in scanner.needles if len(n.parts) > 1]
    rows = connection.execution_options(stream_results=True, yield_per=500).execute(select(table))
    for number, row in enumerate(rows.mappings(), 1):
        report.tables[f"{service}.{table.name}"] += 1
        # a key is printed: one that holds a needle itself is shown masked
        key = tuple((name, "***" if scanner.cell(row[name])[0] else row[name]) for name in pk) or (("row", number),)
        found: list[tuple[str, Needle, str]] = []
        cells: dict[str, str] = {}  # column → its whole text, normalised: for needles spread over columns
        for column in columns:
            value = row[column.name]
            if value is None or isinstance(value, bool | int | float):
                continue
            report.cells += 1
            hits, unreadable = scanner.cell(value)
            if unreadable:
                report.unreadable.append(Hit(service, table.name, column.name, key, None, "unreadable"))
            found += [(column.name, needle, how) for needle, how in hits]
            if isinstance(value, str):
                cells[column.name] = normalise(value).strip()
        for needle in several:
            # an address kept in columns of its own (compound, building, room): each part the whole of a cell
            if any(n == needle for _, n, _ in found):
                continue
            holders = [
                next((c for c, text in cells.items() if text == normalise(p).strip()), None) for p in needle.parts
            ]
            if all(holders):
                found.append(("+".join(dict.fromkeys(h for h in holders if h)), needle, "columns"))
        if not found:
            continue
        row_held = bool(holds(service, table.name, row))
        name_only = {needle.kind for _, needle, _ in found} == {"name"}
        for column_name, needle, how in dict.fromkeys(found):  # one line per needle and way found
            hit = Hit(service, table.name, column_name, key, needle, how, held=row_held, name_only=name_only)
            (report.held if row_held else report.hits).append(hit)


# ---- capturing the needles before an erasure ----------------------------------------------------------


def capture(resident_id, path, amqp_uri=None):
    """Read resident ``resident_id``'s name, phone, ID number and household address from the grid and write
    them as a needles file (mode 0600); (the needles, for printing in masked form, and how many others
    live in the household: then the address is left out — it stays theirs, and the erasure keeps it)."""
    from shared.auth import mint_token
    from tools.cli.connect import rpc_proxy
    from tools.cli.tokens import signing_secret

    amqp_uri = amqp_uri or os.environ.get("AMQP_URI") or "amqp://guest:guest@localhost:5672/"
    token = mint_token(signing_secret(), "pii-scan", ["admin"], pii=True, ttl=300)
    with rpc_proxy(amqp_uri, token) as rpc:
        resident = rpc.grid.get_resident(resident_id=str(resident_id))
        household = rpc.grid.get_household(household_id=resident["household_id"])
        others = [r for r in household.get("resident_ids", []) if r != resident["id"]]
        living = (
            [r for r in rpc.grid.get_residents(resident_ids=others)["items"] if r["name"] != ERASED] if others else []
        )
    address = household.get("address") or {}
    data = {"name": resident["name"], "phone": resident["phone"], "id_number": resident["id_number"]}
    if not living:
        data["address"] = [address[k] for k in ("compound", "building", "entrance", "room") if address.get(k)]
    found = needles(**data)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(data, out, ensure_ascii=False)
    return found, len(living)


# ---- command line --------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.pii_scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name")
    parser.add_argument("--phone")
    parser.add_argument("--id-number")
    parser.add_argument("--address", action="append", default=[], help="one part of the address; repeat")
    parser.add_argument("--needles", metavar="FILE", help="a JSON file of the needles (instead of the options)")
    parser.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="a service's database (repeat; default: every service as `make run` configures it)",
    )
    parser.add_argument("--no-holds", action="store_true", help="count rows under a legal hold as hits too")
    parser.add_argument(
        "--capture",
        metavar="RESIDENT_ID",
        help="before an erasure: read the resident's needles from the grid (RPC) into the --needles file",
    )
    args = parser.parse_args(argv)
    if args.capture:
        if not args.needles:
            parser.error("--capture needs --needles FILE to write them to")
        from tools.cli import CliError

        try:
            found, others = capture(args.capture, args.needles)
        except CliError as exc:
            parser.error(str(exc))
        print(f"needles of resident {args.capture} written to {args.needles}: " + "; ".join(n.masked for n in found))
        if others:
            print(f"address left out: {others} other residents live in the household (the erasure keeps it)")
        return 0
    try:
        found = (
            needles_from_file(args.needles)
            if args.needles
            else needles(args.name, args.phone, args.id_number, args.address)
        )
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    urls = default_urls()
    if args.database:
        urls = {}
        for item in args.database:
            service, _, url = item.partition("=")
            if not url:
                parser.error(f"--database {service}: give SERVICE=URL")
            urls[service] = url
    try:
        vault = default_vault()
    except RuntimeError as exc:
        parser.error(str(exc))
    report = scan(urls, found, vault, held=no_holds if args.no_holds else None)
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
