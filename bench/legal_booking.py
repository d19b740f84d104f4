"""The legal service under load: ``find_slots`` latency over 200 lawyers x 30 days, and booking throughput.

    python -m bench.legal_booking [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--lawyers 200] [--requests 100] [--warmup 10] \\
        [--bookings 1000] [--concurrency 10] [--seed 42] [--no-profile]

Recreates two PostgreSQL databases beside the other bench databases,
``grassroots_bench_legal_grid`` and ``grassroots_bench_legal``, migrates them,
and starts the grid and the legal service each as its own ``nameko run``
process (as deployed). Everything is then seeded through RPC with an admin
token, deterministically from ``--seed``:

* grid: a district, a street, 5 communities, each with a large, a medium and two
  small grids, and 200 residents (100 households of two) with valid ID numbers;
* legal: 10 stations (two per community), ``--lawyers`` lawyers with 1-3
  specialties ("family" for ~90% of them, so a "family" search sees nearly all),
  each serving 1 or 2 stations. One station: Mon-Fri 09:00-12:00 and
  14:00-17:30 (some also Saturday mornings); two stations: Mon/Wed/Fri (+Sat) at
  the first and Tue/Thu at the second, so a lawyer's plans never overlap. Slots
  of 30 or 45 minutes with a 0/5/10 minute buffer. 20% of the lawyers take a day
  off, 5% a three-day leave, and a few hundred bookings exist before timing.

Timed, from a standalone ClusterRpcProxy in this process:

1. ``find_slots`` for the 30 days from tomorrow: "family" over every station,
   a rarer specialty over every station, "family" at one station, and "family"
   by ``unit_id`` (a small grid: the legal service asks grid.ancestors);
   ``--requests`` sequential calls each after ``--warmup`` untimed ones. Client
   p50/p99 and the service's own time per call (its "call finished" log lines,
   which include serialising and publishing the reply), slots returned and the
   size of the reply.
2. ``book`` of ``--bookings`` distinct slots taken from a fresh "family" answer,
   residents cycling over the 200, first with ``--concurrency`` callers at once,
   then with one (sequential). Bookings/s and per-call p50/p99. Afterwards the
   legal database (and list_consultations) must show exactly the bookings made,
   none overlapping another of the same lawyer or a time off.
3. Unless ``--no-profile``: with the services stopped, the domain function
   ``bookings.find_slots`` run in this process against the bench database, split
   into its steps (SQL, slot generation, sort, JSON encode/decode as kombu does)
   and profiled with cProfile: where a find_slots call spends its time.

No targets are set; figures are printed, with the machine's CPUs and load.
Written: var/bench_legal_results.json and the services' logs,
var/bench_legal_grid.log and var/bench_legal_legal.log.
"""

import warnings

# eventlet warns on import that it is deprecated (a plain Warning subclass); we know.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

# Before anything imports socket, threading or time: nameko's standalone proxy needs the green versions.
eventlet.monkey_patch()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import psycopg2  # noqa: E402
from kombu.utils import json as kombu_json  # noqa: E402
from nameko.exceptions import RemoteError  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import jwt_secret, save_json  # noqa: E402
from bench.db import libpq_url, one_row, recreate_database  # noqa: E402
from bench.harness import (  # noqa: E402
    ServiceProcess,
    claim_rpc_queues,
    cpu_now,
    cpu_used,
    environment,
    print_header,
    start_services,
    stop_services,
    summarise,
)
from services.grid.idnumbers import make_id_number  # noqa: E402
from services.legal.vocabulary import SPECIALTIES  # noqa: E402
from services.registry import get as service_entry  # noqa: E402
from shared.auth import mint_token  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
GRID_DATABASE = "grassroots_bench_legal_grid"
LEGAL_DATABASE = "grassroots_bench_legal"
RESULTS_FILE = "bench_legal_results.json"
ZONE = ZoneInfo("Asia/Shanghai")  # the legal service's TIMEZONE (its default)
DAYS = 30

# The service's booking rules for the run: a horizon covering the 30 days from tomorrow, the usual notice,
# and no per-resident cap worth the name (200 residents make thousands of bookings).
LEGAL_SETTINGS = {
    "LEGAL_BOOKING_HORIZON_DAYS": "31",
    "LEGAL_MIN_NOTICE_MINUTES": "120",
    "LEGAL_MAX_UPCOMING_BOOKINGS": "100000",
    "LEGAL_REMINDER_INTERVAL": "3600",  # no reminders during the run (notices is not running)
}

COMMUNITIES = 5
STATIONS_PER_COMMUNITY = 2
RESIDENTS = 200
RESIDENTS_PER_HOUSEHOLD = 2
EXISTING_BOOKINGS = 300
FAMILY_SHARE = 0.9
DAY_OFF_SHARE = 0.2
LEAVE_SHARE = 0.05
RARE_SPECIALTY = "criminal_defence"
OTHER_SPECIALTIES = [s for s in SPECIALTIES if s != "family"]

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文志海燕鹏飞宇浩然晨阳雪梅琳丹"
FIRMS = ("泉城律师事务所", "明湖律师事务所", "舜耕律师事务所", "历下律师事务所", "济南法援中心")
REGIONS = ("370102", "370103", "370104", "370105", "370112")


# ---- the services under test ----------------------------------------------


def legal_service(name, amqp_uri, env):
    """``nameko run`` of one service, its output in var/bench_legal_<name>.log."""
    return ServiceProcess(
        name,
        amqp_uri,
        f"bench_legal_{name}.log",
        {
            "LOG_LEVEL": "INFO",  # the "call finished" lines carry the service's own time per call
            **env,
        },
    )


def rpc_calls(service):
    """(method, outcome, duration_ms) of every RPC call the service logged, in the order logged."""
    return [
        (record.get("method"), record.get("outcome"), record["duration_ms"]) for record in service.finished_calls("rpc")
    ]


def service_problems(service):
    """Warning and error lines the service logged."""
    return service.problems(
        lambda record: (
            f"{service.name} {record.get('level')}: {record.get('message')} "
            f"{record.get('method') or ''} {record.get('error_type') or ''}".strip()
        )
    )


def stats_ms(samples):
    """Latency figures of ``samples`` (ms), to 0.01 ms; None for no samples."""
    return summarise(samples, digits=2)


def cpu_window(before, after):
    """CPU seconds per process group between two cpu_now() samples, and the wall time."""
    return {"wall_s": round(after.at - before.at, 2), **cpu_used(before, after)}


# ---- databases --------------------------------------------------------------


def database_url(base_url, name):
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


# ---- seeding through RPC ----------------------------------------------------


@dataclass
class World:
    district: str = ""
    street: str = ""
    communities: list = field(default_factory=list)
    small_grids: list = field(default_factory=list)  # (community id, small grid id)
    residents: list = field(default_factory=list)
    stations: list = field(default_factory=list)  # (station id, community id)
    lawyers: list = field(default_factory=list)  # {"id", "specialties", "stations", "slot", "buffer"}
    time_off: list = field(default_factory=list)  # (lawyer id, starts_at, ends_at) local ISO
    existing_bookings: int = 0


def seed_grid(grid, rng, world):
    district = grid.create_unit(
        parent_id=None, level="district", name="律所测试区 Legal bench district", code="BENCH-LEGAL-DISTRICT"
    )
    street = grid.create_unit(parent_id=district["id"], level="street", name="法援街道 Legal bench street")
    world.district, world.street = district["id"], street["id"]
    for c in range(COMMUNITIES):
        community = grid.create_unit(parent_id=street["id"], level="community", name=f"法援社区 {c + 1}")
        world.communities.append(community["id"])
        large = grid.create_unit(parent_id=community["id"], level="grid_large", name=f"大网格 {c + 1}-1")
        medium = grid.create_unit(parent_id=large["id"], level="grid_medium", name=f"中网格 {c + 1}-1-1")
        for s in range(2):
            small = grid.create_unit(parent_id=medium["id"], level="grid_small", name=f"小网格 {c + 1}-1-1-{s + 1}")
            world.small_grids.append((community["id"], small["id"]))
    sequence = 0
    for h in range(RESIDENTS // RESIDENTS_PER_HOUSEHOLD):
        _community, unit_id = world.small_grids[h % len(world.small_grids)]
        household = grid.register_household(
            unit_id=unit_id,
            address={
                "compound": "法援小区",
                "building": str(1 + h // 20),
                "entrance": str(1 + h % 4),
                "room": f"{101 + h}",
            },
        )
        for _ in range(RESIDENTS_PER_HOUSEHOLD):
            sequence += 1
            birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 65))
            id_number = make_id_number(rng.choice(REGIONS), birth, sequence % 1000)
            resident = grid.register_resident(
                household_id=household["id"],
                name=rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                id_number=id_number,
                phone="139" + f"{rng.randrange(10**8):08d}",
                birth_date=birth.isoformat(),
            )
            world.residents.append(resident["id"])


def weekly_plans(rng, station_count):
    """One weekly plan per station; a lawyer at two stations splits the week, so plans never overlap."""
    saturday = rng.random() < 0.3
    morning, afternoon = ("09:00", "12:00"), ("14:00", "17:30")

    def days(weekdays):
        return [{"weekday": d, "start": s, "end": e} for d in weekdays for s, e in (morning, afternoon)]

    extra = [{"weekday": 5, "start": "09:00", "end": "12:00"}] if saturday else []
    if station_count == 1:
        return [days(range(5)) + extra]
    return [days((0, 2, 4)) + extra, days((1, 3))]


def seed_legal(legal, rng, world, lawyer_count, date_from, date_to):
    for index, community in enumerate(world.communities):
        for s in range(STATIONS_PER_COMMUNITY):
            station = legal.create_station(
                unit_id=community, name=f"法律服务站 {index + 1}-{s + 1}", address=f"法援路{index * 10 + s + 1}号"
            )
            world.stations.append((station["id"], community))
    station_ids = [sid for sid, _ in world.stations]
    for i in range(lawyer_count):
        count = rng.choice((1, 2, 3))
        if rng.random() < FAMILY_SHARE:
            specialties = ["family"] + rng.sample(OTHER_SPECIALTIES, count - 1)
        else:
            specialties = rng.sample(OTHER_SPECIALTIES, count)
        stations = rng.sample(station_ids, rng.choice((1, 2)))
        lawyer = legal.register_lawyer(
            name=rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN) + "律师",
            firm=rng.choice(FIRMS),
            license_no=f"BENCH-L{i + 1:05d}",
            specialties=specialties,
            station_ids=stations,
        )
        slot, buffer = rng.choice((30, 45)), rng.choice((0, 5, 10))
        for station_id, weekly in zip(stations, weekly_plans(rng, len(stations)), strict=True):
            legal.set_schedule(
                lawyer_id=lawyer["id"], station_id=station_id, weekly=weekly, slot_minutes=slot, buffer_minutes=buffer
            )
        world.lawyers.append(
            {"id": lawyer["id"], "specialties": specialties, "stations": stations, "slot": slot, "buffer": buffer}
        )
    # Time off: a day off for some, a three-day leave for a few (local days inside the searched range).
    span = (date_to - date_from).days + 1
    for lawyer in world.lawyers:
        roll = rng.random()
        if roll < DAY_OFF_SHARE + LEAVE_SHARE:
            length = 1 if roll < DAY_OFF_SHARE else 3
            first = date_from + dt.timedelta(days=rng.randrange(span - length + 1))
            starts = dt.datetime.combine(first, dt.time(0), tzinfo=ZONE)
            ends = starts + dt.timedelta(days=length)
            legal.add_time_off(
                lawyer_id=lawyer["id"],
                starts_at=starts.isoformat(),
                ends_at=ends.isoformat(),
                reason="年假" if length > 1 else "事假",
            )
            world.time_off.append((lawyer["id"], starts.isoformat(), ends.isoformat()))


def book_existing(legal, rng, world, date_from, date_to):
    """A few hundred bookings made before timing, spread over the range (busy intervals for find_slots)."""
    answer = legal.find_slots(
        specialty="family", date_from=date_from.isoformat(), date_to=date_to.isoformat(), limit=5000
    )
    for n, slot in enumerate(rng.sample(answer, EXISTING_BOOKINGS)):
        legal.book(
            lawyer_id=slot["lawyer_id"],
            station_id=slot["station_id"],
            starts_at=slot["starts_at"],
            resident_id=world.residents[n % len(world.residents)],
            topic=f"bench existing {n}",
            mode=rng.choice(("in_person", "phone", "video")),
        )
    world.existing_bookings = EXISTING_BOOKINGS


# ---- find_slots ---------------------------------------------------------------


@dataclass
class SlotCase:
    label: str
    kwargs: dict
    samples: list = field(default_factory=list)
    service_ms: list = field(default_factory=list)
    slots: int = 0
    lawyers: int = 0
    stations: int = 0
    reply_bytes: int = 0
    cpu: dict = field(default_factory=dict)


def slot_cases(world, date_from, date_to):
    window = {"date_from": date_from.isoformat(), "date_to": date_to.isoformat()}
    community, small_grid = world.small_grids[0]
    station = next(sid for sid, c in world.stations if c == community)
    return [
        SlotCase("family, all stations (default limit)", {"specialty": "family", **window}),
        SlotCase("family, all stations, limit 5000", {"specialty": "family", "limit": 5000, **window}),
        SlotCase(f"{RARE_SPECIALTY}, all stations", {"specialty": RARE_SPECIALTY, **window}),
        SlotCase("family, station_id", {"specialty": "family", "station_id": station, **window}),
        SlotCase("family, unit_id (small grid)", {"specialty": "family", "unit_id": small_grid, **window}),
    ]


def time_find_slots(legal, case, requests, warmup, services, log_calls):
    answer = legal.find_slots(**case.kwargs)
    log_calls.append(None)
    case.slots = len(answer)
    case.lawyers = len({s["lawyer_id"] for s in answer})
    case.stations = len({s["station_id"] for s in answer})
    case.reply_bytes = len(kombu_json.dumps({"result": answer, "error": None}).encode())
    for _ in range(warmup):
        legal.find_slots(**case.kwargs)
        log_calls.append(None)
    before = cpu_now(services)
    for _ in range(requests):
        started = time.perf_counter()
        legal.find_slots(**case.kwargs)
        case.samples.append((time.perf_counter() - started) * 1000)
        log_calls.append(case.label)
    case.cpu = cpu_window(before, cpu_now(services))
    return answer


# ---- booking --------------------------------------------------------------------


@dataclass
class BookPhase:
    label: str
    concurrency: int
    jobs: list
    samples: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    booked_ids: list = field(default_factory=list)
    wall_s: float = 0.0
    service_ms: list = field(default_factory=list)
    cpu: dict = field(default_factory=dict)


def run_book_phase(amqp_uri, token, phase, services):
    """``phase.concurrency`` callers, each with its own proxy, working through ``phase.jobs``."""
    jobs = iter(phase.jobs)

    def caller():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=60) as proxy:
            legal = proxy.legal
            ready.append(1)
            while len(ready) < phase.concurrency:
                eventlet.sleep(0.01)
            for job in jobs:  # greenthreads: next() is never interleaved
                started = time.perf_counter()
                try:
                    result = legal.book(**job)
                except RemoteError as exc:
                    phase.errors[exc.exc_type] = phase.errors.get(exc.exc_type, 0) + 1
                else:
                    phase.booked_ids.append(result["id"])
                phase.samples.append((time.perf_counter() - started) * 1000)

    ready: list[int] = []
    threads = [eventlet.spawn(caller) for _ in range(phase.concurrency)]
    while len(ready) < phase.concurrency:
        eventlet.sleep(0.01)
    before = cpu_now(services)
    started = time.perf_counter()
    for thread in threads:
        thread.wait()
    phase.wall_s = time.perf_counter() - started
    phase.cpu = cpu_window(before, cpu_now(services))


def verify(legal_url, legal, phases, existing):
    """The bookings the database holds against the ones made: counts, overlaps, time off, list_consultations."""
    conn = psycopg2.connect(libpq_url(legal_url))
    checks = {}
    try:
        with conn.cursor() as cur:
            for phase in phases:
                cur.execute(
                    "SELECT count(*), count(DISTINCT (lawyer_id, starts_at)) FROM consultations "
                    "WHERE status = 'booked' AND topic LIKE %s",
                    (f"bench {phase.label} %",),
                )
                rows, distinct = one_row(cur)
                checks[phase.label] = {
                    "expected": len(phase.jobs),
                    "succeeded": len(phase.booked_ids),
                    "in_database": rows,
                    "distinct_slots": distinct,
                    "ok": rows == len(phase.jobs) == len(phase.booked_ids) == distinct,
                }
            cur.execute("SELECT count(*) FROM consultations WHERE status = 'booked'")
            total = one_row(cur)[0]
            cur.execute("""SELECT count(*) FROM consultations a JOIN consultations b
                           ON a.lawyer_id = b.lawyer_id AND a.id < b.id
                           WHERE a.status = 'booked' AND b.status = 'booked'
                             AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at""")
            overlapping = one_row(cur)[0]
            cur.execute("""SELECT count(*) FROM consultations c JOIN time_off t ON t.lawyer_id = c.lawyer_id
                           WHERE c.status = 'booked' AND c.starts_at < t.ends_at AND t.starts_at < c.ends_at""")
            in_time_off = one_row(cur)[0]
            cur.execute("SELECT count(*) FROM outbox_events WHERE event_type = 'consultation_booked'")
            events = one_row(cur)[0]
    finally:
        conn.close()
    listed, page = 0, 1
    while True:
        answer = legal.list_consultations(status="booked", page=page, page_size=500)
        listed += len(answer["items"])
        if not answer["has_more"]:
            break
        page += 1
    expected_total = existing + sum(len(p.jobs) for p in phases)
    return {
        "phases": checks,
        "booked_total": total,
        "expected_total": expected_total,
        "listed_by_rpc": listed,
        "overlapping_pairs": overlapping,
        "booked_in_time_off": in_time_off,
        "booked_events": events,
        "ok": (
            all(c["ok"] for c in checks.values())
            and total == expected_total == listed == events
            and overlapping == 0
            and in_time_off == 0
        ),
    }


# ---- service-side times ------------------------------------------------------------


def attach_service_times(legal_calls, cases, phases, log_calls):
    """Match the legal log's find_slots lines to the calls made (sequential: by order); book lines by phase."""
    finds = [ms for method, _outcome, ms in legal_calls if method == "find_slots"]
    if len(finds) == len(log_calls):
        by_label = {case.label: case for case in cases}
        for label, ms in zip(log_calls, finds, strict=True):
            if label in by_label:
                by_label[label].service_ms.append(ms)
    else:
        print(f"  (legal log has {len(finds)} find_slots lines, expected {len(log_calls)}: no service-side times)")
    books = [ms for method, _outcome, ms in legal_calls if method == "book"]
    position = EXISTING_BOOKINGS
    if len(books) == EXISTING_BOOKINGS + sum(len(p.jobs) for p in phases):
        for phase in phases:
            phase.service_ms = books[position : position + len(phase.jobs)]
            position += len(phase.jobs)
    else:
        print(f"  (legal log has {len(books)} book lines, expected more: no service-side book times)")


# ---- in-process breakdown of find_slots -----------------------------------------------


def breakdown(legal_url, kwargs, repeats=5):
    """bookings.find_slots's steps, run in this process against the bench database (services stopped)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from services.legal import bookings, slots
    from services.legal.models import Station
    from shared.db import make_engine, utcnow

    config = {
        "TIMEZONE": "Asia/Shanghai",
        "MIN_NOTICE_MINUTES": LEGAL_SETTINGS["LEGAL_MIN_NOTICE_MINUTES"],
        "BOOKING_HORIZON_DAYS": LEGAL_SETTINGS["LEGAL_BOOKING_HORIZON_DAYS"],
    }
    policy = bookings.Policy(config)
    date_from = dt.date.fromisoformat(kwargs["date_from"])
    date_to = dt.date.fromisoformat(kwargs["date_to"])
    engine = make_engine(legal_url, pool_size=1)
    steps: dict[str, list[float]] = {
        name: []
        for name in (
            "stations_sql",
            "plans_sql",
            "busy_sql",
            "generate",
            "sort",
            "total_domain",
            "json_encode",
            "json_decode",
        )
    }
    profile_text = ""
    try:
        for attempt in range(repeats + 1):
            with Session(engine) as session:
                t0 = time.perf_counter()
                station_ids = session.scalars(select(Station.id)).all()
                t1 = time.perf_counter()
                plans = bookings._plans(session, kwargs["specialty"], station_ids)
                t2 = time.perf_counter()
                earliest, latest = policy.window(utcnow())
                range_start = dt.datetime.combine(date_from, dt.time(0), tzinfo=policy.zone)
                range_end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(0), tzinfo=policy.zone)
                busy = bookings._busy(session, {plan.lawyer_id for plan, _ in plans}, range_start, range_end)
                t3 = time.perf_counter()
                found = []
                for plan, lawyer in plans:
                    for start, end in slots.open_slots(
                        plan, busy[plan.lawyer_id], date_from, date_to, policy.zone, earliest, latest
                    ):
                        found.append(
                            {
                                "lawyer_id": str(lawyer.id),
                                "lawyer_name": lawyer.name,
                                "station_id": str(plan.station_id),
                                "starts_at": start.isoformat(),
                                "ends_at": end.isoformat(),
                            }
                        )
                t4 = time.perf_counter()
                found.sort(key=lambda slot: (slot["starts_at"], int(slot["lawyer_id"])))
                t5 = time.perf_counter()
            body = kombu_json.dumps({"result": found, "error": None})
            t6 = time.perf_counter()
            kombu_json.loads(body)
            t7 = time.perf_counter()
            if attempt == 0:
                continue  # warm-up
            for name, (a, b) in {
                "stations_sql": (t0, t1),
                "plans_sql": (t1, t2),
                "busy_sql": (t2, t3),
                "generate": (t3, t4),
                "sort": (t4, t5),
                "total_domain": (t0, t5),
                "json_encode": (t5, t6),
                "json_decode": (t6, t7),
            }.items():
                steps[name].append((b - a) * 1000)
        slot_count, plan_count = len(found), len(plans)
        busy_intervals = sum(len(b.intervals) for b in busy.values())

        class NoGrid:
            pass

        profiler = cProfile.Profile()
        with Session(engine) as session:
            profiler.enable()
            result = bookings.find_slots(session, NoGrid(), policy, kwargs["specialty"], date_from, date_to, None, None)
            kombu_json.dumps({"result": result, "error": None})
            profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        profile_text = out.getvalue()
    finally:
        engine.dispose()
    medians = {name: round(statistics.median(values), 1) for name, values in steps.items()}
    return {
        "kwargs": kwargs,
        "slots": slot_count,
        "plans": plan_count,
        "busy_intervals": busy_intervals,
        "median_ms": medians,
        "repeats": repeats,
        "cprofile_tottime": profile_text,
    }


# ---- report ---------------------------------------------------------------------------


def other_benches():
    """Command lines of other bench runs on the machine (their load would distort the figures)."""
    mine = {os.getpid(), os.getppid()}
    found: list[str] = []
    try:
        out = subprocess.run(["pgrep", "-af", r"bench\."], capture_output=True, text=True).stdout
    except OSError:
        return found
    for line in out.splitlines():
        pid, _, cmd = line.partition(" ")
        if int(pid) not in mine and "pgrep" not in cmd and "legal_booking" not in cmd:
            found.append(line)
    return found


def cell(stats, key, width=9):
    return f"{stats[key]:{width}.1f}" if stats else f"{'-':>{width}}"


def report(args, world, cases, phases, checks, profile, problems, loads, setup_s, date_from, date_to):
    print()
    print(
        f"Legal bench: {len(world.lawyers)} lawyers at {len(world.stations)} stations, "
        f"{len(world.residents)} residents, {world.existing_bookings} bookings and {len(world.time_off)} "
        f"time-offs before timing; find_slots over {date_from} .. {date_to} ({DAYS} days). Setup {setup_s:.0f} s."
    )
    family = sum("family" in lawyer["specialties"] for lawyer in world.lawyers)
    rare = sum(RARE_SPECIALTY in lawyer["specialties"] for lawyer in world.lawyers)
    print(f"Lawyers with family: {family}; with {RARE_SPECIALTY}: {rare}.")
    print()
    print_header(
        f"{'find_slots (ms)':<36} {'p50':>9} {'p99':>9} {'mean':>9} {'svc p50':>9} {'svc p99':>9} "
        f"{'slots':>7} {'lawyers':>8} {'stations':>8} {'reply':>9}"
    )
    for case in cases:
        stats, service = stats_ms(case.samples), stats_ms(case.service_ms)
        print(
            f"{case.label:<36} {cell(stats, 'p50_ms')} {cell(stats, 'p99_ms')} {cell(stats, 'mean_ms')} "
            f"{cell(service, 'p50_ms')} {cell(service, 'p99_ms')} {case.slots:>7,} {case.lawyers:>8} "
            f"{case.stations:>8} {case.reply_bytes / 1e6:>7.2f}MB"
        )
    print(
        f"({args.requests} sequential calls per case after {args.warmup} warm-up; svc = the legal service's own "
        f"time per call from its log, reply serialisation and publishing included)"
    )
    print("CPU seconds used during the timed calls:")
    for case in cases:
        print(
            f"    {case.label:<32} "
            + ", ".join(f"{k} {v:.1f}" for k, v in case.cpu.items() if k != "wall_s")
            + f" (wall {case.cpu['wall_s']:.1f} s)"
        )
    print()
    print_header(
        f"{'book (distinct slots)':<36} {'calls':>7} {'ok':>6} {'failed':>7} {'book/s':>8} {'p50':>9} "
        f"{'p99':>9} {'mean':>9} {'svc p50':>9} {'svc p99':>9}"
    )
    for phase in phases:
        stats, service = stats_ms(phase.samples), stats_ms(phase.service_ms)
        rate = len(phase.booked_ids) / phase.wall_s if phase.wall_s else 0.0
        failed = sum(phase.errors.values())
        print(
            f"{phase.label:<36} {len(phase.jobs):>7} {len(phase.booked_ids):>6} {failed:>7} {rate:>8.1f} "
            f"{cell(stats, 'p50_ms')} {cell(stats, 'p99_ms')} {cell(stats, 'mean_ms')} "
            f"{cell(service, 'p50_ms')} {cell(service, 'p99_ms')}"
        )
        if phase.errors:
            print(f"    errors: {phase.errors}")
        print(
            "    CPU s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in phase.cpu.items() if k != "wall_s")
            + f" (wall {phase.cpu['wall_s']:.1f} s)"
        )
    print()
    print(
        f"Verification: {'OK' if checks['ok'] else 'FAILED'} - booked in DB {checks['booked_total']} "
        f"(expected {checks['expected_total']}), listed by list_consultations {checks['listed_by_rpc']}, "
        f"consultation_booked events {checks['booked_events']}, overlapping pairs per lawyer "
        f"{checks['overlapping_pairs']}, booked inside time off {checks['booked_in_time_off']}; "
        + "; ".join(
            f"{label}: {c['in_database']}/{c['expected']} in DB, {c['distinct_slots']} distinct"
            for label, c in checks["phases"].items()
        )
    )
    if profile:
        m = profile["median_ms"]
        print()
        print(
            f"In-process breakdown of bookings.find_slots({profile['kwargs']['specialty']}, all stations): "
            f"{profile['plans']} plans, {profile['busy_intervals']} busy intervals, {profile['slots']:,} slots; "
            f"median of {profile['repeats']} (ms):"
        )
        print(
            f"  stations SQL {m['stations_sql']}, plans SQL+filter {m['plans_sql']}, busy SQL {m['busy_sql']}, "
            f"slot generation+dicts {m['generate']}, sort {m['sort']} => domain {m['total_domain']}; "
            f"kombu JSON encode {m['json_encode']}, decode (client) {m['json_decode']}"
        )
        print("  cProfile (tottime) of one domain call + encode:")
        lines = [line for line in profile["cprofile_tottime"].splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        for line in lines[start : start + 15]:
            print("   " + line)
    if problems:
        print()
        print(f"Service log warnings/errors ({len(problems)}):")
        for line in problems[:10]:
            print("  " + line)
    print()
    print(
        f"Load average {loads[0][0]:.2f} before, {loads[1][0]:.2f} after; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}."
    )


def write_results(args, world, cases, phases, checks, profile, problems, loads, setup_s, date_from, date_to):
    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "databases": {"grid": GRID_DATABASE, "legal": LEGAL_DATABASE},
        "settings": {
            **LEGAL_SETTINGS,
            "lawyers": args.lawyers,
            "requests": args.requests,
            "warmup": args.warmup,
            "bookings": args.bookings,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "date_from": date_from.isoformat(),
            "date_to": date_to.isoformat(),
        },
        "world": {
            "stations": len(world.stations),
            "lawyers": len(world.lawyers),
            "residents": len(world.residents),
            "time_off": len(world.time_off),
            "existing_bookings": world.existing_bookings,
            "lawyers_with_family": sum("family" in x["specialties"] for x in world.lawyers),
            f"lawyers_with_{RARE_SPECIALTY}": sum(RARE_SPECIALTY in x["specialties"] for x in world.lawyers),
            "lawyers_at_two_stations": sum(len(x["stations"]) == 2 for x in world.lawyers),
            "setup_s": round(setup_s, 1),
        },
        "environment": environment(loads),
        "find_slots": {
            case.label: {
                "kwargs": case.kwargs,
                "slots": case.slots,
                "lawyers": case.lawyers,
                "stations": case.stations,
                "reply_bytes": case.reply_bytes,
                "client": stats_ms(case.samples),
                "service": stats_ms(case.service_ms),
                "cpu_s": case.cpu,
            }
            for case in cases
        },
        "book": {
            phase.label: {
                "concurrency": phase.concurrency,
                "calls": len(phase.jobs),
                "succeeded": len(phase.booked_ids),
                "errors": phase.errors,
                "wall_s": round(phase.wall_s, 3),
                "bookings_per_s": round(len(phase.booked_ids) / phase.wall_s, 2) if phase.wall_s else None,
                "client": stats_ms(phase.samples),
                "service": stats_ms(phase.service_ms),
                "cpu_s": phase.cpu,
            }
            for phase in phases
        },
        "verification": checks,
        "find_slots_breakdown": profile,
        "service_problems": problems,
    }
    print(f"Results written to {save_json(RESULTS_FILE, results)}")
    return results


# ---- main -------------------------------------------------------------------------------


def run(args):
    secret = jwt_secret()
    grid_url = database_url(args.postgres_url, GRID_DATABASE)
    legal_url = database_url(args.postgres_url, LEGAL_DATABASE)
    amqp_uri = args.amqp_uri

    others = other_benches()
    if others:
        print("Warning: other bench processes are running; figures will be distorted:\n  " + "\n  ".join(others))
    queues = claim_rpc_queues(amqp_uri, ("grid", "legal"))

    setup_started = time.monotonic()
    print(f"Legal bench: recreating {GRID_DATABASE} and {LEGAL_DATABASE}", flush=True)
    for service, url in (("grid", grid_url), ("legal", legal_url)):
        recreate_database(url)
        service_entry(service).migrate(url)

    services = {
        "grid": legal_service("grid", amqp_uri, {"GRID_DATABASE_URL": grid_url, "GRID_HOUSEKEEPING_INTERVAL": "3600"}),
        "legal": legal_service("legal", amqp_uri, {"LEGAL_DATABASE_URL": legal_url, **LEGAL_SETTINGS}),
    }
    token = mint_token(secret, "bench", ["admin"], ttl=3 * 3600)
    rng = random.Random(args.seed)
    world = World()
    today = dt.datetime.now(ZONE).date()
    date_from, date_to = today + dt.timedelta(days=1), today + dt.timedelta(days=DAYS)
    cases: list[SlotCase] = []
    phases: list[BookPhase] = []
    log_calls: list[str | None] = []  # the label of each find_slots call the service logs, in order
    load_before = os.getloadavg()
    try:
        start_services(services, amqp_uri)
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=120) as proxy:
            grid, legal = proxy.grid, proxy.legal
            seed_grid(grid, rng, world)
            print(
                f"  grid seeded: {len(world.communities)} communities, {len(world.small_grids)} small grids, "
                f"{len(world.residents)} residents",
                flush=True,
            )
            seed_legal(legal, rng, world, args.lawyers, date_from, date_to)
            book_existing(legal, rng, world, date_from, date_to)
            log_calls.append(None)  # book_existing's find_slots
            print(
                f"  legal seeded: {len(world.stations)} stations, {len(world.lawyers)} lawyers, "
                f"{len(world.time_off)} time-offs, {world.existing_bookings} bookings",
                flush=True,
            )
            setup_s = time.monotonic() - setup_started
            eventlet.sleep(1.0)  # let the outbox relay publish the seeding's events

            cases = slot_cases(world, date_from, date_to)
            pool: list[dict] = []
            for case in cases:
                answer = time_find_slots(legal, case, args.requests, args.warmup, services, log_calls)
                if case.label == "family, all stations, limit 5000":
                    pool = answer
                print(
                    f"  find_slots {case.label}: {case.slots:,} slots, p50 {stats_ms(case.samples)['p50_ms']:.1f} ms",
                    flush=True,
                )

            # Booking: distinct slots from the "family" answer (taken after the existing bookings).
            picked = random.Random(args.seed + 1).sample(pool, 2 * args.bookings)
            for index, (label, concurrency) in enumerate(((f"c{args.concurrency}", args.concurrency), ("c1", 1))):
                chunk = picked[index * args.bookings : (index + 1) * args.bookings]
                jobs = [
                    {
                        "lawyer_id": s["lawyer_id"],
                        "station_id": s["station_id"],
                        "starts_at": s["starts_at"],
                        "resident_id": world.residents[n % len(world.residents)],
                        "topic": f"bench {label} {n}",
                        "idempotency_key": f"bench-{label}-{n}",
                    }
                    for n, s in enumerate(chunk)
                ]
                phase = BookPhase(f"{label}", concurrency, jobs)
                phases.append(phase)
                run_book_phase(amqp_uri, token, phase, services)
                print(
                    f"  book {label}: {len(phase.booked_ids)}/{len(jobs)} in {phase.wall_s:.1f} s "
                    f"({len(phase.booked_ids) / phase.wall_s:.1f}/s)",
                    flush=True,
                )
            eventlet.sleep(2.0)  # the outbox relay publishes the last events
            checks = verify(legal_url, legal, phases, world.existing_bookings)
    finally:
        stop_services(services, amqp_uri, queues)
    load_after = os.getloadavg()

    attach_service_times(rpc_calls(services["legal"]), cases, phases, log_calls)
    problems = service_problems(services["grid"]) + service_problems(services["legal"])
    profile = None
    if not args.no_profile:
        print("  profiling find_slots in-process ...", flush=True)
        profile = breakdown(legal_url, cases[0].kwargs)
    loads = (load_before, load_after)
    report(args, world, cases, phases, checks, profile, problems, loads, setup_s, date_from, date_to)
    return write_results(args, world, cases, phases, checks, profile, problems, loads, setup_s, date_from, date_to)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.legal_booking", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="any database URL of the PostgreSQL server; the bench databases are made beside it",
    )
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--lawyers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100, help="timed find_slots calls per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed find_slots calls per case first")
    parser.add_argument("--bookings", type=int, default=1000, help="distinct slots booked per phase")
    parser.add_argument("--concurrency", type=int, default=10, help="callers at once in the concurrent phase")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process find_slots breakdown")
    args = parser.parse_args(argv)
    if min(args.lawyers, args.requests, args.bookings, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--lawyers, --requests, --bookings and --concurrency must be positive, --warmup not negative")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
