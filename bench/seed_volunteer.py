"""The volunteer bench's database (``bench.volunteer_matching``), bulk-loaded with COPY from its seed:

* volunteers spread over the bench district's small grids (50,000 over 4,800: ~10 each), with 1-3 skills,
  1-4 weekly availability windows, max_active_tasks 1-3, ~70% linked to a resident of their small grid
  (and that resident's household), ~20% party members, ~90% active, phone numbers encrypted as
  ``people.register_volunteer`` stores them;
* task history, in proportion: matched requests (current load), completed ones in the last 30 days
  (fairness) and older ones, each with its accepted offer;
* the service's read model of grid facts (shared.grid_facts: ``grid_units``, ``grid_households``,
  ``grid_residents`` with their quarantine tag) copied from the grid bench database, as a deployment whose
  resync has run has it, and its ``grid_facts_sync`` rows marked passed.
"""

import datetime as dt
import io
import time
from collections import Counter, namedtuple

import psycopg2.extensions

from bench import harness
from services.volunteer.people import PHONE_CONTEXT
from services.volunteer.vocabulary import REQUEST_KINDS, SKILLS
from shared.grid_facts import KINDS
from shared.pii import PiiVault

LINKED_SHARE, PARTY_SHARE, ACTIVE_SHARE = 0.70, 0.20, 0.90
# Existing requests per 50,000 volunteers, each with its accepted offer.
HISTORY = {"matched": 400, "recent_done": 1200, "old_done": 400}
Volunteer = namedtuple(
    "Volunteer",
    "id name phone_enc home_unit_id home_path skills availability max_active_tasks resident_id household_id "
    "party_member active created_at",
)
VOLUNTEER_COLUMNS = Volunteer._fields
REQUEST_COLUMNS = (  # noqa: SIM905
    "id unit_id unit_path kind details urgency needed_by household_id resident_id status volunteer_id created_by "
    "created_at matched_at completed_at note rating"
).split()
OFFER_COLUMNS = ["id", "request_id", "volunteer_id", "status", "offered_at", "expires_at", "responded_at"]


def make_volunteers(rng, count, small_grids, pool, vault, now):
    """``count`` volunteers over ``small_grids`` ((id, path)); ``pool``: {path: [(resident id, household id)]}."""
    pools = {path: list(residents) for path, residents in pool.items()}
    rows = []
    for volunteer_id in range(1, count + 1):
        unit_id, path = rng.choice(small_grids)
        resident_id = household_id = None
        if rng.random() < LINKED_SHARE and pools.get(path):
            resident_id, household_id = pools[path].pop(rng.randrange(len(pools[path])))
        windows = []
        for _ in range(rng.randint(1, 4)):
            start = rng.randint(6, 20)
            windows.append(
                {
                    "weekday": rng.randrange(7),
                    "start": f"{start:02d}:{rng.choice((0, 30)):02d}",
                    "end": f"{min(start + rng.randint(2, 4), 23):02d}:00",
                }
            )
        phone = f"1{rng.choice('3578')}{rng.randrange(10**9):09d}"
        rows.append(
            Volunteer(
                volunteer_id,
                harness.person_name(rng),
                vault.encrypt(phone, PHONE_CONTEXT),
                unit_id,
                path,
                rng.sample(SKILLS, rng.randint(1, 3)),
                windows,
                rng.randint(1, 3),
                resident_id,
                household_id,
                rng.random() < PARTY_SHARE,
                rng.random() < ACTIVE_SHARE,
                now - dt.timedelta(days=rng.uniform(1, 400)),
            )
        )
    return rows


def make_history(rng, volunteers, now):
    """Existing requests with their accepted offers: current load, recent and older completed tasks."""
    active = [v for v in volunteers if v.active]
    load: Counter[int] = Counter()
    requests: list[tuple] = []
    offers: list[tuple] = []
    for status, per_50k in HISTORY.items():
        for _ in range(max(1, per_50k * len(volunteers) // 50_000)):
            volunteer = rng.choice(active)
            if status == "matched":
                while load[volunteer.id] >= volunteer.max_active_tasks:  # never past the volunteer's limit
                    volunteer = rng.choice(active)
                load[volunteer.id] += 1
                matched = now - dt.timedelta(hours=rng.uniform(1, 72))
            elif status == "recent_done":
                matched = now - dt.timedelta(days=rng.uniform(0.5, 29.5))
            else:
                matched = now - dt.timedelta(days=rng.uniform(31, 180))
            request_id = len(requests) + 1
            created = matched - dt.timedelta(minutes=rng.uniform(1, 30))
            done = None if status == "matched" else matched + dt.timedelta(hours=rng.uniform(1, 6))
            final = "matched" if status == "matched" else rng.choice(("completed", "confirmed"))
            rating = rng.randint(3, 5) if final == "confirmed" else None
            requests.append(
                (
                    request_id,
                    volunteer.home_unit_id,
                    volunteer.home_path,
                    rng.choice(REQUEST_KINDS),
                    "history",
                    "normal",
                    matched + dt.timedelta(hours=2),
                    None,
                    None,
                    final,
                    volunteer.id,
                    "bench",
                    created,
                    matched,
                    done,
                    None if done is None else "done",
                    rating,
                )
            )
            expires = created + dt.timedelta(minutes=10)
            offers.append((request_id, request_id, volunteer.id, "accepted", created, expires, matched))
    return requests, offers


# What the grid holds, in the read model's columns (COPY out of the grid database, into the volunteer's).
GRID_FACTS = {
    "grid_units (id, path, level, closed)": "SELECT id, path, level, closed FROM units",
    "grid_households (id, unit_id, unit_path, address)": "SELECT id, unit_id, unit_path, json_build_object("
    "'compound', compound, 'building', building, 'entrance', entrance, 'room', room) FROM households",
    "grid_residents (id, household_id, tags)": "SELECT r.id, r.household_id, CASE WHEN t.resident_id IS NULL THEN "
    "'[]' ELSE '[\"quarantined\"]' END FROM residents r LEFT JOIN resident_tags t ON t.resident_id = r.id AND "
    "t.tag = 'quarantined'",
}


def copy_grid_facts(url, grid_url):
    """The read model as the grid has it now (the bench grid database is only read)."""
    with harness.cursor(grid_url) as source, harness.cursor(url) as target:
        # eventlet made psycopg2 green, and COPY refuses a wait callback: plain for the load.
        callback = psycopg2.extensions.get_wait_callback()
        psycopg2.extensions.set_wait_callback(None)
        try:
            target.execute("BEGIN")
            for table, query in GRID_FACTS.items():
                data = io.StringIO()
                source.copy_expert(f"COPY ({query}) TO STDOUT", data)
                data.seek(0)
                target.copy_expert(f"COPY {table} FROM STDIN", data)
            target.execute(
                "INSERT INTO grid_facts_sync (kind, next_id, started_at, passed_at, refreshed, changed) "
                "SELECT kind, NULL, now(), now(), 0, 0 FROM unnest(%s) AS kind",
                (list(KINDS),),
            )
            target.execute("COMMIT")
        finally:
            psycopg2.extensions.set_wait_callback(callback)


def seed(url, rng, count, small_grids, pool, grid_url=None):
    """The volunteer database at ``url``, recreated and loaded (with the read model copied from ``grid_url``
    when given); returns (volunteers, seconds)."""
    started = time.perf_counter()
    harness.fresh_database(url, "volunteer")
    now = dt.datetime.now(dt.UTC)
    volunteers = make_volunteers(rng, count, small_grids, pool, PiiVault(harness.pii_key()), now)
    requests, offers = make_history(rng, volunteers, now)
    with harness.cursor(url) as cur:
        cur.execute("BEGIN")
        harness.copy_rows(cur, "volunteers", VOLUNTEER_COLUMNS, volunteers)
        harness.copy_rows(cur, "help_requests", REQUEST_COLUMNS, requests)
        harness.copy_rows(cur, "offers", OFFER_COLUMNS, offers)
        harness.fix_sequences(cur, ("volunteers", "help_requests", "offers"))
        cur.execute("COMMIT")
    if grid_url is not None:
        copy_grid_facts(url, grid_url)
    with harness.cursor(url) as cur:
        cur.execute("VACUUM ANALYZE")
    return volunteers, round(time.perf_counter() - started, 1)
