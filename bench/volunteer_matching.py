"""Matching latency of the volunteer service: create_request with 50,000 volunteers in the bench district.

    python -m bench.volunteer_matching [--grid-database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench] \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--requests 300] [--warmup 20]

Needs the grid bench database seeded by ``python -m bench.seed_grid`` (and the
same GRASSROOTS_PII_KEY); only reads it. Recreates a volunteer database beside
it (``grassroots_bench_volunteer``), migrates it with the volunteer
migrations and bulk-loads (seed 42):

* 50,000 volunteers spread over the district's 4,800 small grids (~10 each),
  with 1-3 skills, 1-4 weekly availability windows, max_active_tasks 1-3,
  ~70% linked to a resident of their small grid (and that resident's
  household), ~20% party members, ~90% active, phone numbers encrypted as
  ``people.register_volunteer`` stores them;
* task history: matched requests (current load), completed ones in the last
  30 days (fairness) and older ones, each with its accepted offer.

Then starts the grid (on the grid bench database) and volunteer services, each
as its own ``nameko run`` process, and calls ``create_request`` sequentially
for varied small grids and kinds: a third for a unit only, a third for a
resident of the grid, a third for a resident whose household has a volunteer
in the grid (the household exclusion must skip them). Each call ranks the
candidates of the request's community (wider only if it has nobody) and offers
the request to the best one: that is the matching path timed. Target: client
p99 <= 50 ms.

The notices service is not run, and need not be: an offer's notification is a
``send_direct`` command that the request's transaction records in the
volunteer's outbox (``services.notices.client``) and the volunteer's relay
publishes to ``notices.commands`` after the commit. This process binds a queue
of its own there (exclusive: gone with it) in place of notices' command queue,
so the relay publishes as it would beside a running notices (routed, not
returned and retried). The checks read the commands back from the outbox and
from that queue. A notices service consuming commands on the broker would act
on them (and ask the grid): the run refuses to start beside one.

Also reported: the service's own time per call (its "call finished" log
lines), the grid calls each request made (the grid's log), a breakdown of one
request into its parts (the domain code run in this process against the same
database and services, its SQL, RPC calls and ranking timed), and the pure
ranking (``matching.rank``) on a community's and on the whole district's
candidates. Checked: every request ended offered (or unmatched), no offer went
to the requester's household, to a volunteer quarantined in the grid, or to one
at their task limit; every offer to a volunteer who is a resident recorded
exactly one ``send_direct`` command for them (one per offer's origin, none for
the other offers), and the relay published it to the bench's queue.

Written: var/bench_volunteer_results.json and the services' logs,
var/bench_volunteer_grid.log and var/bench_volunteer_volunteer.log.
"""

import warnings

# eventlet warns on import that it is deprecated (a plain Warning subclass); we know.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

# Before anything imports socket, threading or time: nameko and kombu need the green versions.
eventlet.monkey_patch()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402
from kombu import Connection, Exchange, Queue  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench import ROOT, jwt_secret, pii_key, save_json, var_path  # noqa: E402
from bench.db import libpq_url, one_row, recreate_database  # noqa: E402
from bench.harness import (  # noqa: E402
    ServiceProcess,
    claim_rpc_queues,
    environment,
    print_header,
    release_rpc_queues,
    rpc_queue_state,
    start_services,
    stop_services,
    summarise,
)
from bench.seed_grid import bench_targets  # noqa: E402
from services.grid.client import Grid  # noqa: E402
from services.notices.client import SEND_DIRECT, SERVICE as NOTICES, Notices  # noqa: E402
from services.registry import get as service_entry  # noqa: E402
from services.volunteer import matching, requests as volunteer_requests, schemas  # noqa: E402
from services.volunteer.models import OutboxEvent  # noqa: E402
from services.volunteer.vocabulary import REQUEST_KINDS, SKILLS  # noqa: E402
from shared.auth import Caller, mint_token  # noqa: E402
from shared.commands import command_exchange_name, command_queue_name  # noqa: E402
from shared.db import UnitOfWork, make_engine, make_green  # noqa: E402
from shared.pii import PiiVault  # noqa: E402
from shared.validation import load  # noqa: E402

DEFAULT_GRID_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/grassroots_bench"
VOLUNTEER_DATABASE = "grassroots_bench_volunteer"
RESULTS_FILE = "bench_volunteer_results.json"
TARGET_P99_MS = 50.0
SEED = 42
VOLUNTEERS = 50_000
LINKED_SHARE, PARTY_SHARE, ACTIVE_SHARE = 0.70, 0.20, 0.90
HISTORY = {"matched": 400, "recent_done": 1200, "old_done": 400}  # existing requests, each with its accepted offer
BREAKDOWN_REQUESTS = 100  # in-process requests for the breakdown
PROFILE_REQUESTS = 50  # and then under cProfile
PHONE_CONTEXT = b"phone"  # as services/volunteer/people.py
NULL = r"\N"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文志海燕鹏飞宇浩然晨阳雪梅琳丹"
VOLUNTEER_COLUMNS = (
    "id",
    "name",
    "phone_enc",
    "home_unit_id",
    "home_path",
    "skills",
    "availability",
    "max_active_tasks",
    "resident_id",
    "household_id",
    "party_member",
    "active",
    "created_at",
)
REQUEST_COLUMNS = (
    "id",
    "unit_id",
    "unit_path",
    "kind",
    "details",
    "urgency",
    "needed_by",
    "household_id",
    "resident_id",
    "status",
    "volunteer_id",
    "created_by",
    "created_at",
    "matched_at",
    "completed_at",
    "note",
    "rating",
)
OFFER_COLUMNS = ("id", "request_id", "volunteer_id", "status", "offered_at", "expires_at", "responded_at")


def now_utc():
    return dt.datetime.now(dt.UTC)


def cell(value):
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()  # COPY text unescapes one level: "\x..." reaches bytea input
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def copy_rows(cur, table, columns, rows):
    buffer = io.StringIO("".join("\t".join(cell(v) for v in row) + "\n" for row in rows))
    # eventlet.monkey_patch() made psycopg2 green, and COPY refuses a wait callback: plain for the load.
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        psycopg2.extensions.set_wait_callback(callback)


# ---- the grid bench database (read only) ----------------------------------


def grid_facts(grid_url):
    """The bench district, its small grids and up to 40 residents of each (lowest ids: households are shuffled)."""
    conn = psycopg2.connect(libpq_url(grid_url))
    try:
        with conn.cursor() as cur:
            targets = bench_targets(cur)
            cur.execute("SELECT path FROM units WHERE id = %s", (targets["district"],))
            district_path = one_row(cur)[0]
            cur.execute(
                "SELECT id, path FROM units WHERE level = 'grid_small' AND NOT closed AND path LIKE %s ORDER BY id",
                (district_path + "%",),
            )
            small_grids = cur.fetchall()
            cur.execute(
                """SELECT unit_path, id, household_id FROM (
                             SELECT unit_path, id, household_id,
                                    row_number() OVER (PARTITION BY unit_path ORDER BY id) AS rn
                             FROM residents WHERE unit_path LIKE %s) s
                           WHERE rn <= 40 ORDER BY unit_path, id""",
                (district_path + "%",),
            )
            pool = defaultdict(list)
            for path, resident_id, household_id in cur:
                pool[path].append((resident_id, household_id))
            cur.execute("SELECT count(*) FROM residents")
            residents = one_row(cur)[0]
    finally:
        conn.close()
    return {
        "targets": targets,
        "district_path": district_path,
        "small_grids": small_grids,
        "pool": pool,
        "residents": residents,
    }


def grid_residents(grid_url, paths):
    """{path: [(resident_id, household_id)]} of every resident of the small grids ``paths``."""
    conn = psycopg2.connect(libpq_url(grid_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT unit_path, id, household_id FROM residents WHERE unit_path = ANY(%s) ORDER BY id",
                (sorted(set(paths)),),
            )
            found = defaultdict(list)
            for path, resident_id, household_id in cur:
                found[path].append((resident_id, household_id))
            return found
    finally:
        conn.close()


def quarantined_among(grid_url, resident_ids):
    """The residents of ``resident_ids`` tagged quarantined now."""
    if not resident_ids:
        return set()
    conn = psycopg2.connect(libpq_url(grid_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT resident_id FROM resident_tags WHERE tag = 'quarantined' AND resident_id = ANY(%s) "
                "AND (until IS NULL OR until > now())",
                (list(resident_ids),),
            )
            return {row[0] for row in cur}
    finally:
        conn.close()


# ---- seeding the volunteer database ---------------------------------------


def make_volunteers(rng, facts, vault, now):
    grids = facts["small_grids"]
    pools = {path: list(residents) for path, residents in facts["pool"].items()}
    rows = []
    for volunteer_id in range(1, VOLUNTEERS + 1):
        unit_id, path = rng.choice(grids)
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
            (
                volunteer_id,
                rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2))),
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
    """Existing requests (with their accepted offers): current load, recent and older completed tasks."""
    active = [v for v in volunteers if v[11]]
    load: Counter[int] = Counter()
    requests_: list[tuple] = []
    offers: list[tuple] = []
    for status, count in HISTORY.items():
        for _ in range(count):
            volunteer = rng.choice(active)
            if status == "matched":
                while load[volunteer[0]] >= volunteer[7]:  # never past the volunteer's limit
                    volunteer = rng.choice(active)
                load[volunteer[0]] += 1
                matched = now - dt.timedelta(hours=rng.uniform(1, 72))
            elif status == "recent_done":
                matched = now - dt.timedelta(days=rng.uniform(0.5, 29.5))
            else:
                matched = now - dt.timedelta(days=rng.uniform(31, 180))
            request_id = len(requests_) + 1
            created = matched - dt.timedelta(minutes=rng.uniform(1, 30))
            done = None if status == "matched" else matched + dt.timedelta(hours=rng.uniform(1, 6))
            final = "matched" if status == "matched" else rng.choice(("completed", "confirmed"))
            requests_.append(
                (
                    request_id,
                    volunteer[3],
                    volunteer[4],
                    rng.choice(REQUEST_KINDS),
                    "history",
                    "normal",
                    matched + dt.timedelta(hours=2),
                    None,
                    None,
                    final,
                    volunteer[0],
                    "bench",
                    created,
                    matched,
                    done,
                    None if done is None else "done",
                    rng.randint(3, 5) if final == "confirmed" else None,
                )
            )
            offers.append(
                (request_id, request_id, volunteer[0], "accepted", created, created + dt.timedelta(minutes=10), matched)
            )
    return requests_, offers


def seed(volunteer_url, facts, rng):
    started = time.perf_counter()
    recreate_database(volunteer_url)
    service_entry("volunteer").migrate(volunteer_url)
    now = now_utc()
    volunteers = make_volunteers(rng, facts, PiiVault(pii_key()), now)
    history, offers = make_history(rng, volunteers, now)
    conn = psycopg2.connect(libpq_url(volunteer_url))
    try:
        with conn, conn.cursor() as cur:
            copy_rows(cur, "volunteers", VOLUNTEER_COLUMNS, volunteers)
            copy_rows(cur, "help_requests", REQUEST_COLUMNS, history)
            copy_rows(cur, "offers", OFFER_COLUMNS, offers)
            for table in ("volunteers", "help_requests", "offers"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
    finally:
        conn.close()
    return volunteers, round(time.perf_counter() - started, 1)


# ---- the requests ---------------------------------------------------------


def make_specs(rng, grids, volunteers, residents_of, needed_by):
    """create_request calls for the small grids ``grids``: unit only, a resident, a volunteer's household."""
    linked = defaultdict(list)
    for v in volunteers:
        if v[8] is not None:
            linked[v[4]].append(v)
    specs = []
    for i, (unit_id, path) in enumerate(grids):
        kwargs = {
            "unit_id": str(unit_id),
            "kind": rng.choice(REQUEST_KINDS),
            "details": f"bench request {i}",
            "urgency": "normal",
            "needed_by": needed_by,
        }
        variant = ("unit", "resident", "volunteer_household")[i % 3]
        people = residents_of[path]
        if variant == "resident":
            kwargs["resident_id"] = str(rng.choice(people)[0])
        elif variant == "volunteer_household":
            if linked[path]:
                volunteer = rng.choice(linked[path])
                mates = [r for r, h in people if h == volunteer[9] and r != volunteer[8]]
                kwargs["resident_id"] = str(rng.choice(mates) if mates else volunteer[8])
            else:
                variant, kwargs["resident_id"] = "resident", str(rng.choice(people)[0])
        specs.append({"variant": variant, "path": path, "kwargs": kwargs})
    return specs


# The service runner as ServiceProcess starts it, with a hook logging the interpreter's slower garbage collections
# (every gen-2 one, any other over 2 ms) to BENCH_GC_LOG: "<unix time at the end> <generation> <pause ms>".
GC_HOOK = """
import gc, os, time
log = open(os.environ["BENCH_GC_LOG"], "w", buffering=1)
started = [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    pause = (time.perf_counter() - started[0]) * 1000
    if info["generation"] == 2 or pause > 2:
        log.write(f"{time.time():.4f} {info['generation']} {pause:.2f}\\n")
gc.callbacks.append(watch)
import sys
from shared.runner import main
sys.exit(main(sys.argv[1:]))
"""


class GcWatchedService(ServiceProcess):
    """A ServiceProcess whose interpreter logs its slower garbage collections (GC_HOOK)."""

    def __init__(self, name, amqp_uri, log_name, env):
        super().__init__(name, amqp_uri, log_name, env)
        self.gc_log = var_path(log_name.replace(".log", ".gc"))
        self.env["BENCH_GC_LOG"] = self.gc_log

    def start(self):
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", GC_HOOK, *self.argv()[3:]],  # argv: python -m shared.runner ARGS
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def collections(self, since, until):
        """(end time, generation, pause ms) of the logged collections between two unix times."""
        found = []
        with open(self.gc_log) as lines:
            for line in lines:
                at, generation, pause = line.split()
                if since <= float(at) <= until:
                    found.append((float(at), int(generation), float(pause)))
        return found


def gc_report(service, calls, since, until, target_ms):
    """The service's gen-2 collections in the timed window, and how many slow calls one fell into."""
    collections = service.collections(since, until)
    full = [pause for _at, generation, pause in collections if generation == 2]
    hit, clean = set(), []
    for index, call in enumerate(calls):
        end = dt.datetime.fromisoformat(call["time"].replace("Z", "+00:00")).timestamp()
        begin = end - call["duration_ms"] / 1000
        if any(begin - 0.001 <= at <= end + 0.001 and generation == 2 for at, generation, _p in collections):
            hit.add(index)
        else:
            clean.append(call["duration_ms"])
    slow = [index for index, call in enumerate(calls) if call["duration_ms"] > target_ms]
    return {
        "gen2_collections": len(full),
        "gen2_pause": summarise(full),
        "other_pauses_over_2ms": sum(1 for _at, generation, _p in collections if generation != 2),
        "calls_over_target": len(slow),
        "of_which_during_a_gen2_collection": len(hit.intersection(slow)),
        "calls_without_gen2_collection": summarise(clean),
    }


NOTICES_COMMAND_QUEUE = command_queue_name(NOTICES, SEND_DIRECT)


def refuse_beside_notices(amqp_uri):
    """SystemExit while a notices service consumes its commands here: it would act on the offers'
    commands (and ask the grid) during the run. Warns when its queue is there without a consumer:
    the run's commands are left in it for the next notices started on this vhost."""
    exists, consumers = rpc_queue_state(amqp_uri, NOTICES_COMMAND_QUEUE)
    if consumers:
        raise SystemExit(
            f"{consumers} consumer(s) on '{NOTICES_COMMAND_QUEUE}' at {amqp_uri}: a notices service would act on "
            "the offers' commands during the run. Stop it, or point --amqp-uri at another vhost."
        )
    if exists:
        print(
            f"WARNING: '{NOTICES_COMMAND_QUEUE}' exists at {amqp_uri} (left by a notices service): the run's "
            "offer commands stay in it, and the next notices started on this vhost will send them.",
            flush=True,
        )


class CommandTap:
    """A queue of this process on ``notices.commands`` for ``send_direct``, in place of notices' own:
    the volunteer's relay publishes the offer commands to it as to a running notices (a command no
    queue takes is returned and retried later), and ``drain`` reads back what arrived."""

    def __init__(self, amqp_uri):
        self.connection = Connection(amqp_uri)
        exchange = Exchange(command_exchange_name(NOTICES), type="topic", durable=True)  # as the relay declares it
        self.queue = Queue(
            f"bench-volunteer-{uuid.uuid4().hex[:12]}",
            exchange=exchange,
            routing_key=SEND_DIRECT,
            exclusive=True,  # deleted with this connection, whatever happens to the run
        )

    def start(self):
        self.queue(self.connection.default_channel).declare()

    def drain(self):
        """The origins of the commands that arrived so far, taken off the queue."""
        bound = self.queue(self.connection.default_channel)
        origins = []
        while (message := bound.get(no_ack=True)) is not None:
            origins.append(message.payload["data"]["origin"])
        return origins

    def stop(self):
        self.connection.release()


# ---- in-process breakdown and pure ranking --------------------------------


class Stopwatch:
    def __init__(self):
        self.ms = defaultdict(float)
        self.count: Counter[str] = Counter()

    def add(self, label, ms):
        self.ms[label] += ms
        self.count[label] += 1

    def wrap(self, label, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(label(args, kwargs) if callable(label) else label, (time.perf_counter() - started) * 1000)

        return timed


class TimedProxy:
    """A ClusterRpcProxy service proxy whose calls are timed into a Stopwatch (label from ``where()``);
    what services.grid.client.Grid wraps in the breakdown."""

    def __init__(self, proxy, service, watch, where):
        self._proxy, self._service, self._watch, self._where = proxy, service, watch, where

    def __getattr__(self, method):
        return _TimedMethod(
            getattr(self._proxy, method), lambda: f"rpc {self._service}.{method}{self._where()}", self._watch
        )


class _TimedMethod:
    """One method of a TimedProxy. A call is timed whole; a ``call_async`` (the typed clients' ``*_async``)
    for the time the caller spends in it, sending and then waiting in ``result()``: the parts that do not
    overlap the other steps."""

    def __init__(self, method, label, watch):
        self._method, self._label, self._watch = method, label, watch

    def __call__(self, *args, **kwargs):
        return self._watch.wrap(lambda _a, _k: self._label(), self._method)(*args, **kwargs)

    def call_async(self, *args, **kwargs):
        started = time.perf_counter()
        reply = self._method.call_async(*args, **kwargs)
        return _TimedReply(reply, self._label() + " (async: send + wait)", time.perf_counter() - started, self._watch)


class _TimedReply:
    def __init__(self, reply, label, sent_s, watch):
        self._reply, self._label, self._sent_s, self._watch = reply, label, sent_s, watch

    def result(self):
        started = time.perf_counter()
        try:
            return self._reply.result()
        finally:
            self._watch.add(self._label, (self._sent_s + time.perf_counter() - started) * 1000)


class _Provider:
    """What a UnitOfWork needs of the Database dependency, for the domain code run in this process."""

    outbox_model = OutboxEvent

    def __init__(self, engine):
        self.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)

    def acquire_serial(self):
        return False

    def notify_committed(self):
        pass


def sql_label(statement):
    verb = statement.lstrip().split(None, 1)[0].upper()
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", statement, re.I)
    label = f"sql {verb} {table.group(1) if table else '?'}"
    if verb == "SELECT" and "help_requests" in label:
        label += " (load)" if "status IN" in statement else " (recent)" if "matched_at" in statement else ""
    return label


def breakdown(volunteer_url, amqp_uri, specs, profile_specs, policy):
    """Run create_request's domain code here, as the service does: ``specs`` timing its parts, then
    ``profile_specs`` under cProfile for the Python hot spots."""
    make_green()
    engine = make_engine(volunteer_url, pool_size=2)
    watch = Stopwatch()
    inside = {"quarantine": False}

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, _cursor, _statement, _parameters, _context, _executemany):
        conn.info["bench_started"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, _cursor, statement, _parameters, _context, _executemany):
        watch.add(sql_label(statement), (time.perf_counter() - conn.info.pop("bench_started")) * 1000)

    originals = (volunteer_requests._candidates, volunteer_requests._drop_quarantined, matching.rank)

    def drop_quarantined(*args, **kwargs):
        inside["quarantine"] = True
        try:
            return originals[1](*args, **kwargs)
        finally:
            inside["quarantine"] = False

    volunteer_requests._candidates = watch.wrap("candidates (3 SELECTs + Candidate rows)", originals[0])
    volunteer_requests._drop_quarantined = watch.wrap("quarantine check (grid.get_residents batches)", drop_quarantined)
    matching.rank = watch.wrap("matching.rank (pure Python)", originals[2])
    token = mint_token(jwt_secret(), "service:volunteer", ["service"], ttl=3600)
    caller = Caller(sub="bench", roles=frozenset({"admin"}))
    schema = schemas.CreateRequest()
    totals = []
    # CPU time only (process_time): a green thread waiting on the database or the broker costs nothing here.
    profiler = cProfile.Profile(time.process_time)
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
            where = lambda: " (quarantine)" if inside["quarantine"] else ""  # noqa: E731
            grid = Grid(TimedProxy(proxy.grid, "grid", watch, where))  # the typed client, as the service has it
            # The offer's notification: a command row added to the unit of work (inserted at its commit).
            notices = SimpleNamespace(
                send_direct=watch.wrap("record offer command (notices.send_direct: outbox row)", Notices().send_direct)
            )

            def one(spec):
                args = watch.wrap("validate (schema load)", load)(schema, dict(spec["kwargs"]))
                uow = UnitOfWork(_Provider(engine), "volunteer")
                request = volunteer_requests.create_request(uow, caller, grid, notices, policy, **args)
                watch.wrap("commit", uow.commit)()
                watch.wrap("dump", schemas.REQUEST.dump)(request)
                uow.close()

            for spec in specs:
                started = time.perf_counter()
                one(spec)
                totals.append((time.perf_counter() - started) * 1000)
            timed = defaultdict(float, watch.ms), Counter(watch.count)  # the profiled pass (slower) kept apart
            profiler.enable()
            for spec in profile_specs:
                one(spec)
            profiler.disable()
            watch.ms, watch.count = timed
    finally:
        volunteer_requests._candidates, volunteer_requests._drop_quarantined, matching.rank = originals
        engine.dispose()
    n = len(specs)
    total = summarise(totals)

    def part(label):
        return {"per_request_ms": round(watch.ms[label] / n, 3), "calls_per_request": round(watch.count[label] / n, 2)}

    # Top level: the wrapped steps of one request, which do not overlap. The quarantine check holds its grid
    # calls; SQL runs inside several steps (autoflush) and outside them, so it is listed apart.
    top = [label for label in watch.ms if not label.startswith("sql ") and not label.endswith("(quarantine)")]
    steps = {label: part(label) for label in sorted(top, key=lambda label: -watch.ms[label])}
    steps["remainder (ORM, SQL outside the steps above, BEGIN/pre-ping)"] = {
        "per_request_ms": round(total["mean_ms"] - sum(watch.ms[label] for label in top) / n, 3),
        "calls_per_request": 1,
    }
    nested = {label: part(label) for label in watch.ms if label.endswith("(quarantine)")}
    sql = {
        label: part(label) for label in sorted(watch.ms, key=lambda label: -watch.ms[label]) if label.startswith("sql ")
    }
    return {
        "requests": n,
        "total": total,
        "steps": steps,
        "inside_quarantine_check": nested,
        "sql": sql,
        "cpu_hotspots": hotspots(profiler, len(profile_specs)),
    }


def hotspots(profiler, n, top=15):
    """The functions with the most CPU time of their own, per request (ms), with their callers' share dropped."""
    # Stats.stats ({(file, line, function): (cc, nc, tt, ct, callers)}) is what print_stats reads;
    # typeshed leaves it out as undocumented.
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values())
    rows = sorted(entries.items(), key=lambda item: -item[1][2])[:top]
    out = {"cpu_ms_per_request": round(total * 1000 / n, 3), "functions": []}
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in rows:
        where = filename.split("site-packages/")[-1].replace(ROOT + "/", "")
        out["functions"].append(
            {
                "function": f"{where}:{line}({name})",
                "calls_per_request": round(calls / n, 1),
                "own_ms": round(own * 1000 / n, 3),
                "cumulative_ms": round(cumulative * 1000 / n, 3),
            }
        )
    return out


def ranking_reference(volunteer_url, facts, policy, needed_by):
    """matching.rank alone on a community's and on the district's active volunteers, loaded as the service does."""
    engine = make_engine(volunteer_url, pool_size=1)
    found = {}
    grid_path = dict(facts["small_grids"])[facts["targets"]["small_grid"]]
    now = now_utc()
    try:
        with sessionmaker(bind=engine)() as session:
            for scope, repeats in ((matching.search_scopes(grid_path)[0], 200), (facts["district_path"], 10)):
                started = time.perf_counter()
                candidates, _residents = volunteer_requests._candidates(session, scope, now, policy)
                load_ms = (time.perf_counter() - started) * 1000
                samples = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    matching.rank(candidates, grid_path, "groceries", needed_by, policy.zone, None, ())
                    samples.append((time.perf_counter() - started) * 1000)
                level = "community" if scope != facts["district_path"] else "district"
                found[level] = {
                    "candidates": len(candidates),
                    "load_candidates_ms": round(load_ms, 2),
                    "rank": summarise(samples),
                }
    finally:
        engine.dispose()
    return found


# ---- checks ---------------------------------------------------------------


def verify(volunteer_url, grid_url, request_ids, specs, received):
    """The checks of the run's requests (``received``: the commands' origins the CommandTap got)."""
    conn = psycopg2.connect(libpq_url(volunteer_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT r.id, r.status, r.unit_path, r.household_id, o.volunteer_id, o.status,
                                  v.household_id, v.resident_id, v.home_path, v.active, v.max_active_tasks,
                                  (SELECT count(*) FROM help_requests m WHERE m.volunteer_id = v.id
                                     AND m.status = 'matched'),
                                  o.id
                           FROM help_requests r LEFT JOIN offers o ON o.request_id = r.id
                           LEFT JOIN volunteers v ON v.id = o.volunteer_id
                           WHERE r.id = ANY(%s) ORDER BY r.id""",
                (request_ids,),
            )
            rows = cur.fetchall()
            cur.execute("SELECT resident_id, home_path FROM volunteers WHERE resident_id IS NOT NULL AND active")
            linked_active = cur.fetchall()
            cur.execute(
                """SELECT payload->'data'->>'origin', payload->'data'->'resident_ids', published_at IS NOT NULL
                           FROM outbox_events WHERE destination = %s AND event_type = %s""",
                (command_exchange_name(NOTICES), SEND_DIRECT),
            )
            commands = cur.fetchall()
    finally:
        conn.close()
    statuses = Counter(row[1] for row in rows)
    offered = [row for row in rows if row[4] is not None]
    quarantined = quarantined_among(grid_url, {row[7] for row in offered if row[7]})
    quarantined_volunteers = quarantined_among(grid_url, [resident for resident, _path in linked_active])
    grids_with_quarantined = {path for resident, path in linked_active if resident in quarantined_volunteers}
    problems = []
    for (
        request_id,
        status,
        _path,
        household,
        volunteer,
        offer_status,
        v_household,
        v_resident,
        _home,
        active,
        limit,
        load_now,
        _offer,
    ) in rows:
        if status not in ("offered", "unmatched"):
            problems.append(f"request {request_id} ended {status}")
        if status == "offered" and offer_status != "pending":
            problems.append(f"request {request_id} offered without a pending offer")
        if volunteer is None:
            continue
        if household is not None and v_household == household:
            problems.append(f"request {request_id} offered to volunteer {volunteer} of the requester's household")
        if v_resident in quarantined:
            problems.append(f"request {request_id} offered to quarantined volunteer {volunteer}")
        if not active or load_now >= limit:
            problems.append(
                f"request {request_id} offered to volunteer {volunteer} (active={active}, {load_now}/{limit} tasks)"
            )
    depth_names = {
        6: "same small grid",
        5: "same medium grid",
        4: "same large grid",
        3: "same community",
        2: "same street",
        1: "same district",
    }
    distance = Counter(depth_names.get(matching.shared_depth(row[8], row[2]), "?") for row in offered)
    offers_per_request = Counter(row[0] for row in offered)
    if any(n > 1 for n in offers_per_request.values()):
        problems.append("more than one offer for a request (OFFER_FANOUT is 1)")
    household_cases = [
        rid for rid, spec in zip(request_ids, specs, strict=True) if spec["variant"] == "volunteer_household"
    ]
    quarantine_cases = sum(1 for spec in specs if spec["path"] in grids_with_quarantined)
    notices = check_commands([(row[12], row[7]) for row in offered], commands, received)
    problems += notices.pop("problems")
    return {
        "statuses": dict(statuses),
        "offer_distance": dict(distance),
        "problems": problems,
        "household_exclusion_cases": len(household_cases),
        "requests_in_grids_with_a_quarantined_volunteer": quarantine_cases,
        "offer_commands": notices,
    }


def check_commands(offers, commands, received):
    """Problems with the offers' notifications: each (offer id, volunteer's resident id or None) of
    ``offers`` must have exactly one ``send_direct`` command to that resident in the volunteer's
    outbox when the volunteer is a resident (none otherwise), published, and received once by the
    bench's queue. ``commands``: (origin, resident_ids, published) of every such outbox row, this
    run's breakdown included (an origin is unique across them all); ``received``: origins that arrived."""
    by_origin = defaultdict(list)
    for origin, resident_ids, published in commands:
        by_origin[origin].append((resident_ids, published))
    arrived = Counter(received)
    found: Counter[str] = Counter()
    for offer_id, resident_id in offers:
        rows = by_origin.get(f"volunteer:offer/{offer_id}", [])
        if resident_id is None:
            found["for a volunteer who is no resident"] += bool(rows)
            continue
        found["expected"] += 1
        if not rows:
            found["missing"] += 1
            continue
        found["recorded"] += 1
        found["not to the volunteer"] += any(ids != [str(resident_id)] for ids, _published in rows)
        if all(published for _ids, published in rows):
            found["published"] += 1
            found["received"] += arrived[f"volunteer:offer/{offer_id}"] == 1
    repeated = sorted(origin for origin, rows in by_origin.items() if len(rows) > 1)
    problems = []
    if not found["expected"]:
        problems.append("no offer to a volunteer who is a resident: the offer commands went unchecked")
    if found["missing"]:
        problems.append(f"{found['missing']} linked volunteers offered but not notified (no send_direct command)")
    if repeated:
        problems.append(f"{len(repeated)} origins with more than one send_direct command (e.g. {repeated[0]})")
    for what in ("not to the volunteer", "for a volunteer who is no resident"):
        if found[what]:
            problems.append(f"{found[what]} offer commands {what}")
    if found["published"] < found["recorded"]:
        problems.append(f"{found['recorded'] - found['published']} offer commands left unpublished in the outbox")
    if found["received"] < found["published"]:
        problems.append(
            f"{found['published'] - found['received']} published offer commands not received once on notices.commands"
        )
    return {
        "linked_offers": found["expected"],
        "recorded": found["recorded"],
        "published": found["published"],
        "received": found["received"],
        "all_commands_in_outbox": len(commands),
        "problems": problems,
    }


def wait_commands_published(volunteer_url, timeout=30.0):
    """Wait until the volunteer's relay has published every command in its outbox (or ``timeout``
    seconds have passed); returns how many are still unpublished."""
    conn = psycopg2.connect(libpq_url(volunteer_url))
    conn.autocommit = True
    deadline = time.monotonic() + timeout
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) FROM outbox_events WHERE destination IS NOT NULL AND published_at IS NULL")
                left = one_row(cur)[0]
                if not left or time.monotonic() > deadline:
                    return left
                eventlet.sleep(0.2)
    finally:
        conn.close()


def other_benches():
    """Other bench scripts running now (they would share the CPUs); not this one nor its parents."""
    ours, pid = set(), os.getpid()
    while pid > 1:
        ours.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if int(entry) not in ours and any(re.fullmatch(r"bench\.\w+", a) for a in argv):
            found.append(f"{entry} {' '.join(argv).strip()}")
    return found


# ---- main -----------------------------------------------------------------


def run(grid_url, volunteer_url, amqp_uri, requests, warmup):
    busy = other_benches()
    if busy:
        print("WARNING: other bench processes running (figures will be skewed):\n  " + "\n  ".join(busy))
    rng = random.Random(SEED)
    facts = grid_facts(grid_url)
    existed = claim_rpc_queues(amqp_uri, ["grid", "volunteer"])
    refuse_beside_notices(amqp_uri)
    print(
        f"Volunteer matching bench: seeding {make_url(volunteer_url).database} with {VOLUNTEERS:,} volunteers "
        f"over {len(facts['small_grids']):,} small grids of district {facts['targets']['district']} "
        f"({make_url(grid_url).database}, {facts['residents']:,} residents)",
        flush=True,
    )
    volunteers, seed_s = seed(volunteer_url, facts, rng)
    print(f"  seeded in {seed_s} s", flush=True)

    needed_by = (now_utc() + dt.timedelta(hours=2)).isoformat()
    spec_rng = random.Random(SEED + 1)
    grids = [
        spec_rng.choice(facts["small_grids"]) for _ in range(warmup + requests + BREAKDOWN_REQUESTS + PROFILE_REQUESTS)
    ]
    residents_of = grid_residents(grid_url, [path for _id, path in grids])
    specs = make_specs(spec_rng, grids, volunteers, residents_of, needed_by)
    timed_specs, extra_specs = specs[: warmup + requests], specs[warmup + requests :]
    extra_specs, profile_specs = extra_specs[:BREAKDOWN_REQUESTS], extra_specs[BREAKDOWN_REQUESTS:]

    services = {
        "grid": GcWatchedService(
            "grid",
            amqp_uri,
            "bench_volunteer_grid.log",
            {
                "GRID_DATABASE_URL": grid_url,
                "GRID_HOUSEKEEPING_INTERVAL": "3600",  # would expire tags in the shared grid bench database
            },
        ),
        "volunteer": GcWatchedService(
            "volunteer",
            amqp_uri,
            "bench_volunteer_volunteer.log",
            {
                "VOLUNTEER_DATABASE_URL": volunteer_url,
                "VOLUNTEER_OFFER_SWEEP_INTERVAL": "3600",
                "VOLUNTEER_SHIFT_CHECK_INTERVAL": "3600",
            },
        ),
    }
    tap = CommandTap(amqp_uri)
    token = mint_token(jwt_secret(), "bench", ["admin"], ttl=3600)
    policy = volunteer_requests.Policy({})
    loads = [os.getloadavg()]
    latencies, results = [], []
    try:
        tap.start()
        start_services(services, amqp_uri)
        # This process holds the seed data: keep its own collections (the client's time) out of the figures.
        gc.collect()
        gc.freeze()
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
            create = proxy.volunteer.create_request
            for i, spec in enumerate(timed_specs):
                started = time.perf_counter()
                try:
                    result = create(**spec["kwargs"])
                except Exception as exc:
                    raise SystemExit(f"create_request failed: {exc!r}; see {services['volunteer'].log_path}") from exc
                if i >= warmup:
                    latencies.append((time.perf_counter() - started) * 1000)
                results.append(result)
                if i + 1 == warmup:
                    window_start = time.time()
                    print(f"  {warmup} warm-up requests done; timing {requests} ...", flush=True)
            window_end = time.time()
            if not warmup:
                window_start = window_end - sum(latencies) / 1000
        eventlet.sleep(0.5)  # the services log each call after replying
        grid_calls = services["grid"].finished_calls("rpc")
        volunteer_calls = [
            r for r in services["volunteer"].finished_calls("rpc") if r.get("method") == "create_request"
        ]
        print(f"  timed; breaking {len(extra_specs)} more requests down in this process ...", flush=True)
        parts = breakdown(volunteer_url, amqp_uri, extra_specs, profile_specs, policy)
        # The breakdown's commands wait for the relay's next poll (nothing woke it in that process).
        left = wait_commands_published(volunteer_url)
        received = tap.drain()
        print(
            f"  {len(received)} offer commands received on {command_exchange_name(NOTICES)}"
            + (f"; {left} still unpublished after the wait" if left else ""),
            flush=True,
        )
    finally:
        stop_services(services, amqp_uri, {})
        tap.stop()
        release_rpc_queues(amqp_uri, existed)
    loads.append(os.getloadavg())
    ranking = ranking_reference(volunteer_url, facts, policy, dt.datetime.fromisoformat(needed_by))
    request_ids = [int(r["id"]) for r in results]
    checks = verify(volunteer_url, grid_url, request_ids, timed_specs, received)
    service_ms = (
        [r["duration_ms"] for r in volunteer_calls[warmup : warmup + requests]]
        if len(volunteer_calls) == warmup + requests
        else []
    )
    per_method = defaultdict(list)  # readiness probes are HTTP: every grid RPC came from a create_request
    for record in grid_calls:
        per_method[record.get("method")].append(record["duration_ms"])
    grid_summary = {
        method: {"calls_per_request": round(len(ms) / len(timed_specs), 2), "service_ms": summarise(ms)}
        for method, ms in sorted(per_method.items())
    }
    by_variant = defaultdict(list)
    for spec, ms in zip(timed_specs[warmup:], latencies, strict=True):
        by_variant[spec["variant"]].append(ms)
    return report(
        {
            "at": now_utc().isoformat(timespec="seconds"),
            "grid_database": make_url(grid_url).database,
            "volunteer_database": make_url(volunteer_url).database,
            "volunteers": VOLUNTEERS,
            "history": HISTORY,
            "seed": SEED,
            "seed_s": seed_s,
            "small_grids": len(facts["small_grids"]),
            "requests": requests,
            "warmup": warmup,
            "environment": environment(loads),
            "client": summarise(latencies),
            "by_variant": {variant: summarise(ms) for variant, ms in sorted(by_variant.items())},
            "service": summarise(service_ms),
            "grid_calls": grid_summary,
            "gc": {
                name: gc_report(service, calls, window_start, window_end, TARGET_P99_MS)
                for name, service, calls in (
                    ("volunteer", services["volunteer"], volunteer_calls[warmup:]),
                    ("grid", services["grid"], grid_calls),
                )
            },
            "breakdown": parts,
            "ranking": ranking,
            "checks": checks,
            "service_problems": [
                problem
                for service in services.values()
                for problem in service.problems(
                    lambda record: f"{record.get('service')}: {record.get('level')} {record.get('message')}"
                )
            ],
            "target_p99_ms": TARGET_P99_MS,
        }
    )


def report(results):
    client, service = results["client"], results["service"]
    passed = client["p99_ms"] <= TARGET_P99_MS
    results["pass"] = passed

    def row(label, stats, verdict=""):
        if not stats:
            print(f"{label:<52} {'-':>8}")
            return
        print(
            f"{label:<52} {stats['p50_ms']:8.2f} {stats['p99_ms']:8.2f} {stats['mean_ms']:8.2f} "
            f"{stats['max_ms']:8.2f}  {verdict}"
        )

    print()
    print_header(f"{'matching, create_request (ms)':<52} {'p50':>8} {'p99':>8} {'mean':>8} {'max':>8}  verdict")
    row(
        f"client, {client['n']} sequential calls",
        client,
        f"{'PASS' if passed else 'MISS'} (p99 <= {TARGET_P99_MS:g}: {client['p99_ms'] / TARGET_P99_MS:.0%})",
    )
    for variant, stats in results["by_variant"].items():
        row(f"  requests for {variant.replace('_', ' ')} (n={stats['n']})", stats)
    row("service's own time (its log)", service)
    for method, info in results["grid_calls"].items():
        row(f"  grid.{method}: {info['calls_per_request']} per request (grid's time)", info["service_ms"])
    for level, info in results["ranking"].items():
        row(
            f"matching.rank alone, {level} ({info['candidates']:,} candidates)",
            info["rank"],
            f"(loading them once, cold: {info['load_candidates_ms']:.0f} ms)",
        )

    for name, info in results["gc"].items():
        pause = info["gen2_pause"] or {"p50_ms": 0, "max_ms": 0}
        print(
            f"{name} service during the timed calls: {info['gen2_collections']} full (gen-2) garbage collections, "
            f"pause p50 {pause['p50_ms']:.1f} ms, max {pause['max_ms']:.1f} ms; "
            + (
                f"{info['of_which_during_a_gen2_collection']} of its {info['calls_over_target']} calls over "
                f"{TARGET_P99_MS:g} ms had one inside; the calls without one: p50 "
                f"{info['calls_without_gen2_collection']['p50_ms']:.2f}, p99 "
                f"{info['calls_without_gen2_collection']['p99_ms']:.2f} ms "
                f"(n={info['calls_without_gen2_collection']['n']})."
                if name == "volunteer"
                else f"{info['other_pauses_over_2ms']} younger collections over 2 ms."
            )
        )
    parts = results["breakdown"]
    print(
        f"\nWhere the time goes: {parts['requests']} more requests run in this process (mean total "
        f"{parts['total']['mean_ms']:.2f} ms, p99 {parts['total']['p99_ms']:.2f}); per request:"
    )
    for label, info in parts["steps"].items():
        print(f"  {label:<62} {info['per_request_ms']:7.2f} ms  ({info['calls_per_request']:g} calls)")
        if label.startswith("quarantine check"):
            for inner, detail in parts["inside_quarantine_check"].items():
                print(f"    {inner:<60} {detail['per_request_ms']:7.2f} ms  ({detail['calls_per_request']:g} calls)")
    print("  SQL statements, wherever they ran (client-side time per statement, summed):")
    for label, info in parts["sql"].items():
        print(f"    {label:<60} {info['per_request_ms']:7.2f} ms  ({info['calls_per_request']:g} calls)")
    cpu = parts["cpu_hotspots"]
    print(
        f"  Profiled pass ({PROFILE_REQUESTS} more, cProfile roughly doubles the time): CPU of this process per "
        f"request {cpu['cpu_ms_per_request']:.2f} ms; most own CPU (ms per request, own / cumulative):"
    )
    for item in cpu["functions"]:
        print(
            f"    {item['function'][-72:]:<72} {item['own_ms']:6.2f} / {item['cumulative_ms']:6.2f}  "
            f"({item['calls_per_request']:g} calls)"
        )

    checks = results["checks"]
    commands = checks["offer_commands"]
    print(
        f"\nChecks: statuses {checks['statuses']}; offers by distance {checks['offer_distance']}; "
        f"{checks['household_exclusion_cases']} requests from a volunteer's household, "
        f"{checks['requests_in_grids_with_a_quarantined_volunteer']} in grids with a quarantined volunteer; "
        f"{commands['linked_offers']} offers to volunteers who are residents: {commands['recorded']} send_direct "
        f"commands recorded in the outbox, {commands['published']} published, {commands['received']} received on "
        f"{command_exchange_name(NOTICES)}."
    )
    print(
        "  "
        + (
            "; ".join(checks["problems"])
            if checks["problems"]
            else "no offer to the requester's household, a quarantined volunteer or one at their task limit, "
            "one command per offer to a resident: OK"
        )
    )
    problems = results["service_problems"]
    print(f"Service logs: {len(problems)} warnings or errors" + (": " + "; ".join(problems[:5]) if problems else "."))
    env = results["environment"]
    print(
        f"Load average {env['load_avg_before'][0]:.2f} before, {env['load_avg_after'][0]:.2f} after; "
        f"{env['cpus']} CPUs."
    )
    print(f"Results written to {save_json(RESULTS_FILE, results)}")
    return results


def main(argv=None):
    # A plain SIGTERM would end this process without its finally blocks, leaving the services running.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    parser = argparse.ArgumentParser(prog="python -m bench.volunteer_matching", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid-database-url",
        default=DEFAULT_GRID_DATABASE_URL,
        help="PostgreSQL URL of the database seeded by bench.seed_grid (read only)",
    )
    parser.add_argument(
        "--volunteer-database-url",
        help=f"database to (re)create for the volunteer service (default: {VOLUNTEER_DATABASE} "
        "on the grid database's server)",
    )
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--requests", type=int, default=300, help="timed create_request calls")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    args = parser.parse_args(argv)
    volunteer_url = args.volunteer_database_url or libpq_url(args.grid_database_url, VOLUNTEER_DATABASE)
    if make_url(volunteer_url).database == make_url(args.grid_database_url).database:
        parser.error("the volunteer database must not be the grid database: it is dropped and recreated")
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be positive and --warmup not negative")
    results = run(args.grid_database_url, volunteer_url, args.amqp_uri, args.requests, args.warmup)
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
