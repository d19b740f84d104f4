"""Seed a large, deterministic district straight into PostgreSQL for the grid benchmarks.

    python -m bench.seed_grid --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench \\
        [--residents 1000000] [--seed 42]

Drops and recreates the database, migrates it with the grid's own migrations,
then bulk-loads with COPY:

* 1 district → 10 streets → 10 communities each → 4 large → 3 medium → 4 small
  grids (4,800 small grids), with the materialised ``path`` the service keeps;
* ~2.6 residents per household, the residents split evenly over the small grids;
* residents with valid PRC ID numbers and mobile numbers, stored exactly as
  ``services.grid.residents.register_resident`` stores them (AES-GCM ciphertext
  plus the HMAC blind index), so the service can read them back;
* tags in ``resident_tags`` at roughly the rates in ``TAG_RATES``.

Households are registered in a shuffled order across the whole district (as
they would be over months of door-to-door work), so ids and heap order are not
clustered by grid: a subtree query reads rows scattered over the table, as it
would in production.

Everything except the ciphertexts (random nonces) and quarantine end dates is a
function of ``--seed``. The PII key comes from GRASSROOTS_PII_KEY (default: the
bench key in ``bench.harness``); the RPC bench must run with the same key.
"""

import argparse
import contextlib
import datetime as dt
import io
import queue
import random
import sys
import threading
import time
from collections import namedtuple

import psycopg2
from tqdm import tqdm

from bench.harness import (
    NULL,
    bytea,
    database_name,
    fix_sequences,
    libpq_url,
    parse,
    person_name,
    pii_key,
    recreate_database,
    save_json,
)
from services.grid.idnumbers import make_id_number
from services.grid.residents import ID_INDEX
from services.registry import get as service_entry
from shared.paths import child_path
from shared.pii import PiiVault

PHONE_CONTEXT = b"phone"  # the encryption context residents.py uses for phone numbers
DISTRICT_CODE = "BENCH-DISTRICT"
SUMMARY_FILE = "bench_grid.json"

# Below the district: (level, children per parent, name prefix).
SHAPE = (
    ("street", 10, "Street"),
    ("community", 10, "Community"),
    ("grid_large", 4, "Large grid"),
    ("grid_medium", 3, "Medium grid"),
    ("grid_small", 4, "Small grid"),
)
PARTY_ORGS = {"district": "综合党委", "street": "综合党委", "community": "党总支"}

# Household sizes and their weights: a mean of ~2.6 people per household.
HOUSEHOLD_SIZES = (1, 2, 3, 4, 5, 6)
HOUSEHOLD_WEIGHTS = (0.22, 0.30, 0.25, 0.14, 0.06, 0.03)

# Share of all residents carrying each tag. ``elderly_alone`` is given only to
# residents aged 65+, at the rate that yields this share overall.
TAG_RATES = {
    "elderly_alone": 0.06,
    "chronic_illness": 0.12,
    "quarantined": 0.01,
    "disabled": 0.03,
    "low_income": 0.05,
    "party_member": 0.08,
}
QUARANTINE_DAYS = 30

# Households are registered evenly over two years from REGISTRATION_START;
# ages are uniform over 0..MAX_AGE years at that date.
REGISTRATION_START = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
REGISTRATION_SPAN = dt.timedelta(days=730)
MAX_AGE = 95
ELDERLY_AGE = 65
ELDERLY_SHARE = (MAX_AGE - ELDERLY_AGE) / MAX_AGE
ELDERLY_ALONE_RATE = TAG_RATES["elderly_alone"] / ELDERLY_SHARE

# Six-digit administrative region codes (Jinan, Shandong); one ID number is
# region + birth date + a 3-digit sequence, so a (region, date) pair has 999 slots.
REGIONS = tuple(f"3701{n:02d}" for n in (2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 24, 26))
COMPOUNDS = "阳光花园 幸福小区 和谐家园 锦绣苑 翠湖小区 泉城新居 明湖花园 文化东路宿舍 山大南路小区 舜耕苑".split()  # noqa: SIM905

COPY_CHUNK_ROWS = 50_000  # residents per COPY round (households and tags ride along)
COPY_READ_SIZE = 1 << 16
# Tables loaded in bulk: their secondary indexes, unique and foreign-key
# constraints are dropped for the load and rebuilt afterwards (much faster than
# maintaining them row by row); primary keys stay.
BULK_TABLES = ("households", "residents", "resident_tags")

UnitRow = namedtuple("UnitRow", "id parent_id level name path label")

UNIT_COLUMNS = ["id", "parent_id", "level", "name", "code", "path", "closed", "party_org_name", "created_at"]
HOUSEHOLD_COLUMNS = ["id", "unit_id", "unit_path", "compound", "building", "entrance", "room", "created_at"]
RESIDENT_COLUMNS = (
    "id household_id unit_path name id_number_enc id_number_hash phone_enc birth_date created_at".split()  # noqa: SIM905
)
TAG_COLUMNS = ["resident_id", "tag", "unit_path", "until", "note", "tagged_at"]


# ---- database lifecycle ---------------------------------------------------


def drop_bulk_constraints(cur):
    """Drop secondary indexes, unique and foreign keys of BULK_TABLES; return the statements rebuilding them."""
    cur.execute(
        """
        SELECT pg_get_indexdef(i.indexrelid), quote_ident(ic.relname)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = ANY(%s::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
        """,
        (list(BULK_TABLES),),
    )
    indexes = cur.fetchall()
    cur.execute(
        """
        SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid), contype
        FROM pg_constraint
        WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('u', 'f')
        ORDER BY contype  -- 'f' before 'u': foreign keys go first
        """,
        (list(BULK_TABLES),),
    )
    constraints = cur.fetchall()
    for table, name, _definition, _kind in constraints:
        cur.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for _definition, name in indexes:
        cur.execute(f"DROP INDEX {name}")
    rebuild = [definition for definition, _name in indexes]
    # Unique constraints before the foreign keys that might rely on them.
    rebuild += [
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
        for table, name, definition, kind in sorted(constraints, key=lambda c: c[3] != "u")
    ]
    return rebuild


# ---- COPY plumbing --------------------------------------------------------


class CopyStream:
    """Runs COPY chunks on a background thread.

    psycopg2 releases the GIL while PostgreSQL ingests a chunk, so Python builds
    (and encrypts) the next chunk meanwhile: the two cores both stay busy.
    """

    def __init__(self, conn):
        self.cursor = conn.cursor()
        self.chunks: queue.Queue[tuple[str, tuple[str, ...], bytes] | None] = queue.Queue(maxsize=2)
        self.error = None
        self.thread = threading.Thread(target=self._run, name="copy-stream", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.chunks.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks on a dead consumer
            table, columns, data = item
            try:
                statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                self.cursor.copy_expert(statement, io.BytesIO(data), size=COPY_READ_SIZE)
            except BaseException as exc:  # re-raised on the producer's side
                self.error = exc

    def put(self, table, columns, lines):
        if self.error is not None:
            raise self.error
        if lines:
            self.chunks.put((table, columns, ("\n".join(lines) + "\n").encode()))

    def close(self):
        self.chunks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


# ---- the district ---------------------------------------------------------


def build_units():
    """Every unit, district first, breadth-first; ids are 1..n in that order."""
    district = UnitRow(1, None, "district", "Bench District", child_path("/", 1), "")
    units, parents, next_id = [district], [district], 2
    for level, fanout, prefix in SHAPE:
        children = []
        for parent in parents:
            for n in range(1, fanout + 1):
                label = f"{parent.label}.{n}" if parent.label else str(n)
                children.append(
                    UnitRow(next_id, parent.id, level, f"{prefix} {label}", child_path(parent.path, next_id), label)
                )
                next_id += 1
        units += children
        parents = children
    return units


def unit_lines(units):
    created = REGISTRATION_START.isoformat()
    lines = []
    for unit in units:
        code = DISTRICT_CODE if unit.level == "district" else NULL
        party = PARTY_ORGS.get(unit.level)
        party = f"{unit.name} {party}" if party else NULL
        parent = NULL if unit.parent_id is None else str(unit.parent_id)
        lines.append("\t".join((str(unit.id), parent, unit.level, unit.name, code, unit.path, "f", party, created)))
    return lines


def plan_households(rng, small_grids, residents):
    """(small grid, household size) for every household, in registration order.

    Each small grid gets an even share of the residents; the plan is shuffled so
    registrations interleave across the district.
    """
    plan = []
    share, extra = divmod(residents, len(small_grids))
    for index, grid in enumerate(small_grids):
        quota = share + (1 if index < extra else 0)
        while quota > 0:
            size = min(quota, rng.choices(HOUSEHOLD_SIZES, HOUSEHOLD_WEIGHTS)[0])
            plan.append((grid, size))
            quota -= size
    rng.shuffle(plan)
    return plan


class IdNumbers:
    """Valid, unique ID numbers: each (region, birth date) pair hands out sequences 001..999 once."""

    def __init__(self):
        self.next_sequence = {}

    def issue(self, region_index, birth, age_days):
        for attempt in range(len(REGIONS)):
            region = (region_index + attempt) % len(REGIONS)
            key = region * 100_000 + age_days
            sequence = self.next_sequence.get(key, 1)
            if sequence <= 999:
                self.next_sequence[key] = sequence + 1
                return make_id_number(REGIONS[region], birth, sequence)
        raise RuntimeError(f"no ID number left for birth date {birth}")


def load_people(stream, rng, vault, small_grids, residents, chunk_rows):
    """Stream households, residents and tags into the database; returns the row counts."""
    plan = plan_households(rng, small_grids, residents)
    ids = IdNumbers()
    step = REGISTRATION_SPAN / max(len(plan), 1)
    reference = REGISTRATION_START.date()
    max_age_days = MAX_AGE * 365
    elderly_days = ELDERLY_AGE * 365
    quarantine_until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=QUARANTINE_DAYS)).isoformat()
    other_tags = [(tag, rate) for tag, rate in TAG_RATES.items() if tag != "elderly_alone"]
    # Local names: this loop runs a million times.
    random_, randrange, choice = rng.random, rng.randrange, rng.choice
    encrypt, blind_index = vault.encrypt, vault.blind_index
    n_regions = len(REGIONS)

    households: list[str] = []  # COPY text lines
    people: list[str] = []
    tags: list[str] = []
    counts = {"households": 0, "residents": 0, "resident_tags": 0}

    def flush():
        stream.put("households", HOUSEHOLD_COLUMNS, households)
        stream.put("residents", RESIDENT_COLUMNS, people)
        stream.put("resident_tags", TAG_COLUMNS, tags)
        counts["households"] += len(households)
        counts["residents"] += len(people)
        counts["resident_tags"] += len(tags)
        households.clear()
        people.clear()
        tags.clear()

    resident_id = 0
    with tqdm(total=residents, unit="res", unit_scale=True, desc="residents", smoothing=0.1) as bar:
        for household_id, (grid, size) in enumerate(plan, start=1):
            created = (REGISTRATION_START + step * (household_id - 1)).isoformat()
            path = grid.path
            households.append(
                f"{household_id}\t{grid.id}\t{path}\t{choice(COMPOUNDS)}\t{randrange(1, 31)}\t{randrange(1, 7)}\t"
                f"{randrange(1, 19)}0{randrange(1, 5)}\t{created}"
            )
            for _ in range(size):
                resident_id += 1
                age_days = randrange(1, max_age_days)
                birth = reference - dt.timedelta(days=age_days)
                id_number = ids.issue(randrange(n_regions), birth, age_days)
                phone = f"13{randrange(10**9):09d}"
                people.append(
                    f"{resident_id}\t{household_id}\t{path}\t{person_name(rng)}\t"
                    f"{bytea(encrypt(id_number, ID_INDEX))}\t{blind_index(id_number, ID_INDEX)}\t"
                    f"{bytea(encrypt(phone, PHONE_CONTEXT))}\t{birth.isoformat()}\t{created}"
                )
                rid = str(resident_id)
                if age_days >= elderly_days and random_() < ELDERLY_ALONE_RATE:
                    tags.append("\t".join((rid, "elderly_alone", path, NULL, NULL, created)))
                for tag, rate in other_tags:
                    if random_() < rate:
                        until = quarantine_until if tag == "quarantined" else NULL
                        tags.append("\t".join((rid, tag, path, until, NULL, created)))
            bar.update(size)
            if len(people) >= chunk_rows:
                flush()
        flush()
    return counts


# ---- reporting ------------------------------------------------------------


def bench_targets(cur):
    """The units the benches address: the bench district, its first street, that street's first community
    and that community's first small grid (LookupError when there is no bench district)."""
    cur.execute("SELECT id FROM units WHERE code = %s", (DISTRICT_CODE,))
    row = cur.fetchone()
    if row is None:
        raise LookupError("no bench district")
    district_id = row[0]
    cur.execute("SELECT min(id) FROM units WHERE parent_id = %s AND level = 'street'", (district_id,))
    street_id = cur.fetchone()[0]
    cur.execute("SELECT min(id), min(path) FROM units WHERE parent_id = %s AND level = 'community'", (street_id,))
    community_id, community_path = cur.fetchone()
    cur.execute("SELECT min(id) FROM units WHERE level = 'grid_small' AND path LIKE %s", (community_path + "%",))
    small_grid_id = cur.fetchone()[0]
    return {"district": district_id, "street": street_id, "community": community_id, "small_grid": small_grid_id}


@contextlib.contextmanager
def seeded(url):
    """(cursor, bench_targets) on the seeded bench database, read-only use; SystemExit saying how to seed it
    when it is missing or holds no bench district."""
    seed_first = f"Seed it first: python -m bench.seed_grid --database-url {url}"
    try:
        conn = psycopg2.connect(libpq_url(url))
    except psycopg2.OperationalError as exc:
        raise SystemExit(f"cannot open the grid bench database ({str(exc).strip()}).\n{seed_first}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            try:
                targets = bench_targets(cur)
            except (LookupError, psycopg2.Error):
                raise SystemExit(f"{database_name(url)} holds no bench district. {seed_first}") from None
            yield cur, targets
    finally:
        conn.close()


def table_counts(cur):
    counts = {}
    for table in ("units", "households", "residents", "resident_tags"):
        cur.execute(f"SELECT count(*) FROM {table}")
        counts[table] = cur.fetchone()[0]
    cur.execute("SELECT tag, count(*) FROM resident_tags GROUP BY tag ORDER BY tag")
    counts["tags"] = dict(cur.fetchall())
    cur.execute("SELECT level, count(*) FROM units GROUP BY level")
    counts["units_by_level"] = dict(cur.fetchall())
    return counts


# ---- main -----------------------------------------------------------------


def seed(url, residents, seed_value, chunk_rows=COPY_CHUNK_ROWS):
    started = time.perf_counter()
    phases = {}

    def phase(name, since):
        now = time.perf_counter()
        phases[name] = round(now - since, 1)
        print(f"  {name:<22} {now - since:7.1f} s", flush=True)
        return now

    rng = random.Random(seed_value)
    vault = PiiVault(pii_key())
    name = database_name(url)
    print(f"Seeding {name}: {residents:,} residents, seed {seed_value}", flush=True)

    mark = time.perf_counter()
    recreate_database(url)
    service_entry("grid").migrate(url)
    mark = phase("create + migrate", mark)

    units = build_units()
    small_grids = [unit for unit in units if unit.level == "grid_small"]
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn.cursor() as cur:
            # One transaction, committed synchronously: VACUUM only marks pages
            # all-visible once the inserting commit is flushed to WAL.
            cur.execute("SET maintenance_work_mem = '512MB'")
            rebuild = drop_bulk_constraints(cur)
        stream = CopyStream(conn)
        try:
            stream.put("units", UNIT_COLUMNS, unit_lines(units))
            loaded = load_people(stream, rng, vault, small_grids, residents, chunk_rows)
        finally:
            stream.close()
        mark = phase("generate + COPY", mark)

        with conn.cursor() as cur:
            for statement in rebuild:
                cur.execute(statement)
            fix_sequences(cur, ("units", "households", "residents"))
        conn.commit()
        mark = phase("indexes + constraints", mark)

        conn.autocommit = True  # VACUUM refuses to run in a transaction
        with conn.cursor() as cur:
            # VACUUM as well as ANALYZE: it sets the visibility map, as autovacuum
            # would soon after a load, so index-only scans behave as in steady state.
            cur.execute("VACUUM (ANALYZE)")
        mark = phase("vacuum + analyze", mark)

        with conn.cursor() as cur:
            counts = table_counts(cur)
            targets = bench_targets(cur)
    finally:
        conn.close()

    elapsed = time.perf_counter() - started
    assert counts["residents"] == loaded["residents"] == residents, (counts, loaded)
    print(f"Done in {elapsed:.1f} s", flush=True)
    print(
        f"  units          {counts['units']:>10,}  "
        + ", ".join(
            f"{level} {counts['units_by_level'].get(level, 0):,}"
            for level in ["district"] + [level for level, *_ in SHAPE]
        )
    )
    print(
        f"  households     {counts['households']:>10,}  "
        f"({counts['residents'] / max(counts['households'], 1):.2f} residents per household)"
    )
    print(f"  residents      {counts['residents']:>10,}")
    print(
        f"  resident_tags  {counts['resident_tags']:>10,}  "
        + ", ".join(f"{tag} {n:,} ({n / residents:.1%})" for tag, n in counts["tags"].items())
    )
    print(f"  bench targets  {targets}")

    summary = {
        "database": name,
        "residents": residents,
        "seed": seed_value,
        "elapsed_s": round(elapsed, 1),
        "phases_s": phases,
        "counts": counts,
        "targets": targets,
    }
    print(f"  summary        {save_json(SUMMARY_FILE, summary)}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.seed_grid", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        required=True,
        help="PostgreSQL URL of the bench database (its name must hold 'bench': it is dropped and recreated)",
    )
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--chunk-rows", type=int, default=COPY_CHUNK_ROWS, help="residents per COPY round")
    args = parse(parser, argv, positive=("residents", "chunk_rows"))
    if "bench" not in (database_name(args.database_url) or ""):
        parser.error("--database-url must name a database whose name holds 'bench': it is dropped and recreated")
    seed(args.database_url, args.residents, args.seed, args.chunk_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
