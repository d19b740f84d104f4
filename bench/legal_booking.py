"""The legal service under load: ``find_slots`` latency over 200 lawyers x 30 days, and booking throughput.

    python -m bench.legal_booking [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--lawyers 200] [--requests 100] [--warmup 10] \\
        [--bookings 1000] [--concurrency 10] [--seed 42] [--profile]

Recreates two databases, ``grassroots_bench_legal_grid`` and ``grassroots_bench_legal``, starts grid and
legal each as its own process and seeds them through RPC (``bench.seed_legal``: 10 stations, --lawyers
lawyers, their plans and time off, 200 residents, 300 bookings). Then, from a standalone ClusterRpcProxy:

1. ``find_slots`` for the 30 days from tomorrow: "family" over every station (default limit, and 5000), a
   rarer specialty over every station, "family" at one station, and "family" by ``unit_id`` (a small grid:
   legal asks grid.ancestors); --requests sequential calls each after --warmup. Client p50/p99, the
   service's own time per call (its "call finished" lines), slots, reply size, CPU of each process.
2. ``book`` of --bookings distinct slots of a fresh "family" answer, residents cycling over the 200, first
   with --concurrency callers at once, then with one (sequential): bookings/s and per-call p50/p99.
3. The raw AMQP floor (a kombu echo of a booking's request and reply), and each figure's multiple of it.

Checked afterwards: the legal database and list_consultations show exactly the bookings made, one
consultation_booked event each, none overlapping another of the same lawyer or a time off.

With --profile legal then serves more "family" searches profiled (``bench.probe``: its CPU by function, its
SQL by statement), and the reply's JSON encoding and decoding is timed here. Written:
var/bench_legal_results.json and the services' logs, var/bench_legal_grid.log and var/bench_legal_legal.log.
"""

import bench.green  # noqa: F401  (first: eventlet's monkey patching)

# isort: split
import datetime as dt
import os
import random
import sys
import time
from dataclasses import dataclass, field

import eventlet
from kombu.utils import json as kombu_json
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy

from bench import harness
from bench.harness import one_row, stat_cells, summarise
from bench.seed_legal import EXISTING_BOOKINGS, ZONE, World, seed_district, seed_legal

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
GRID_DATABASE, LEGAL_DATABASE = "grassroots_bench_legal_grid", "grassroots_bench_legal"
RESULTS_FILE = "bench_legal_results.json"
DAYS = 30
RARE_SPECIALTY = "criminal_defence"
PROFILE_CALLS = 20
# A horizon covering the 30 days from tomorrow, the usual notice, no per-resident cap worth the name (200
# residents make thousands of bookings), and no reminders during the run (notices is not running).
LEGAL_SETTINGS = {
    "LEGAL_BOOKING_HORIZON_DAYS": "31",
    "LEGAL_MIN_NOTICE_MINUTES": "120",
    "LEGAL_MAX_UPCOMING_BOOKINGS": "100000",
    "LEGAL_REMINDER_INTERVAL": "3600",
}


@dataclass
class Timed:
    """One find_slots case, or one booking phase: its calls and what they cost."""

    label: str
    kwargs: dict = field(default_factory=dict)  # find_slots
    jobs: list = field(default_factory=list)  # book
    concurrency: int = 1
    samples: list = field(default_factory=list)
    service_ms: list = field(default_factory=list)
    answer: list = field(default_factory=list)
    booked: int = 0
    errors: dict = field(default_factory=dict)
    wall_s: float = 0.0
    cpu: dict = field(default_factory=dict)

    def figures(self):
        """What is printed and written of it."""
        found = {"client": summarise(self.samples), "service": summarise(self.service_ms), "cpu_s": self.cpu}
        if self.jobs:
            rate = round(harness.rate(self.booked, self.wall_s), 2)
            return {"calls": len(self.jobs), "ok": self.booked, "errors": self.errors, "book_per_s": rate, **found}
        return {
            "kwargs": self.kwargs,
            "slots": len(self.answer),
            "lawyers": len({slot["lawyer_id"] for slot in self.answer}),
            "stations": len({slot["station_id"] for slot in self.answer}),
            "reply_bytes": len(kombu_json.dumps({"result": self.answer, "error": None}).encode()),
            **found,
        }


def slot_cases(world, date_from, date_to):
    window = {"specialty": "family", "date_from": date_from.isoformat(), "date_to": date_to.isoformat()}
    community, small_grid = world.small_grids[0]
    station = next(sid for sid, c in world.stations if c == community)
    return [
        Timed("family, all stations (default limit)", window),
        Timed("family, all stations, limit 5000", {**window, "limit": 5000}),
        Timed(f"{RARE_SPECIALTY}, all stations", {**window, "specialty": RARE_SPECIALTY}),
        Timed("family, station_id", {**window, "station_id": station}),
        Timed("family, unit_id (small grid)", {**window, "unit_id": small_grid}),
    ]


def time_find_slots(legal, case, args, services):
    case.answer = legal.find_slots(**case.kwargs)
    harness.timed(lambda: legal.find_slots(**case.kwargs), 0, args.warmup)
    before = harness.cpu_now(services)
    case.samples = harness.timed(lambda: legal.find_slots(**case.kwargs), args.requests)
    case.cpu = harness.cpu_used(before, harness.cpu_now(services))


def run_book_phase(amqp_uri, token, phase, services):
    """``phase.concurrency`` callers, each with its own proxy, working through ``phase.jobs``."""
    jobs, ready = iter(phase.jobs), []

    def caller():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=60) as proxy:
            ready.append(1)
            while len(ready) < phase.concurrency:
                eventlet.sleep(0.01)
            for job in jobs:  # greenthreads: next() is never interleaved
                started = time.perf_counter()
                try:
                    proxy.legal.book(**job)
                    phase.booked += 1
                except RemoteError as exc:
                    phase.errors[exc.exc_type] = phase.errors.get(exc.exc_type, 0) + 1
                phase.samples.append((time.perf_counter() - started) * 1000)

    threads = [eventlet.spawn(caller) for _ in range(phase.concurrency)]
    while len(ready) < phase.concurrency:
        eventlet.sleep(0.01)
    before, started = harness.cpu_now(services), time.perf_counter()
    for thread in threads:
        thread.wait()
    phase.wall_s = time.perf_counter() - started
    phase.cpu = harness.cpu_used(before, harness.cpu_now(services))


OVERLAPS = """SELECT count(*) FROM consultations a JOIN consultations b ON a.lawyer_id = b.lawyer_id
              AND a.id < b.id WHERE a.status = 'booked' AND b.status = 'booked'
              AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at"""
IN_TIME_OFF = """SELECT count(*) FROM consultations c JOIN time_off t ON t.lawyer_id = c.lawyer_id
                 WHERE c.status = 'booked' AND c.starts_at < t.ends_at AND t.starts_at < c.ends_at"""


def verify(legal_url, legal, phases):
    """The bookings the database holds against the ones made: counts, overlaps, time off, list_consultations."""
    checks: dict = {"phases": {}}
    with harness.cursor(legal_url) as cur:
        for phase in phases:
            cur.execute(
                "SELECT count(*), count(DISTINCT (lawyer_id, starts_at)) FROM consultations "
                "WHERE status = 'booked' AND topic LIKE %s",
                (f"bench {phase.label} %",),
            )
            rows, distinct = one_row(cur)
            ok = rows == len(phase.jobs) == phase.booked == distinct
            checks["phases"][phase.label] = {"expected": len(phase.jobs), "in_db": rows, "distinct": distinct, "ok": ok}
        for name, query in (
            ("booked_total", "SELECT count(*) FROM consultations WHERE status = 'booked'"),
            ("overlapping_pairs", OVERLAPS),
            ("booked_in_time_off", IN_TIME_OFF),
            ("booked_events", "SELECT count(*) FROM outbox_events WHERE event_type = 'consultation_booked'"),
        ):
            cur.execute(query)
            checks[name] = one_row(cur)[0]
    checks["listed_by_rpc"], page, more = 0, 1, True
    while more:
        answer = legal.list_consultations(status="booked", page=page, page_size=500)
        checks["listed_by_rpc"], page, more = (
            checks["listed_by_rpc"] + len(answer["items"]),
            page + 1,
            answer["has_more"],
        )
    checks["expected_total"] = EXISTING_BOOKINGS + sum(len(p.jobs) for p in phases)
    counts = {checks[k] for k in ("booked_total", "expected_total", "listed_by_rpc", "booked_events")}
    no_clash = checks["overlapping_pairs"] == checks["booked_in_time_off"] == 0
    checks["ok"] = all(c["ok"] for c in checks["phases"].values()) and len(counts) == 1 and no_clash
    return checks


def attach_service_times(legal, cases, phases, args):
    """The legal log's lines in the order of the calls (sequential, or by phase): seeding's one find_slots
    and EXISTING_BOOKINGS books first, then per case the answer, the warm-up and the timed calls (then, with
    --profile, the profiled ones)."""
    finds = [r["duration_ms"] for r in legal.finished_calls("rpc", "find_slots")]
    books = [r["duration_ms"] for r in legal.finished_calls("rpc", "book")]
    expected = 1 + len(cases) * (1 + args.warmup + args.requests) + (PROFILE_CALLS if args.profile else 0)
    if (len(finds), len(books)) != (expected, EXISTING_BOOKINGS + sum(len(p.jobs) for p in phases)):
        print(f"  (legal log has {len(finds)} find_slots and {len(books)} book lines, not as called: no svc times)")
        return
    position = 1
    for case in cases:
        case.service_ms = finds[position + 1 + args.warmup : position + 1 + args.warmup + args.requests]
        position += 1 + args.warmup + args.requests
    position = EXISTING_BOOKINGS
    for phase in phases:
        phase.service_ms = books[position : position + len(phase.jobs)]
        position += len(phase.jobs)


def profile_find_slots(legal_service, legal, case):
    """--profile: the service profiled over more calls of ``case``, and the reply's JSON here."""
    with legal_service.profiled(PROFILE_CALLS) as found:
        harness.timed(lambda: legal.find_slots(**case.kwargs), PROFILE_CALLS)
    body = kombu_json.dumps({"result": case.answer, "error": None})
    found["json_encode_ms"] = summarise(harness.timed(lambda: kombu_json.dumps({"result": case.answer}), 5))
    found["json_decode_ms"] = summarise(harness.timed(lambda: kombu_json.loads(body), 5))
    return found


def report(args, world, results, setup_s, loads):
    first = results["find_slots"][next(iter(results["find_slots"]))]["kwargs"]
    print(
        f"\nLegal bench: {len(world.lawyers)} lawyers at {len(world.stations)} stations, {len(world.residents)} "
        f"residents, {EXISTING_BOOKINGS} bookings and {world.time_off} time-offs before timing; find_slots over "
        f"{first['date_from']} .. {first['date_to']} ({DAYS} days). Setup {setup_s:.0f} s.\nLawyers with family: "
        f"{world.count('family')}; with {RARE_SPECIALTY}: {world.count(RARE_SPECIALTY)}.\n"
    )
    times = [(name, 9) for name in ("p50", "p99", "mean", "svc p50", "svc p99")]

    def cells(found):
        return stat_cells(found["client"], "p50_ms", "p99_ms", "mean_ms") + stat_cells(
            found["service"], "p50_ms", "p99_ms"
        )

    harness.print_table(
        [("find_slots (ms)", 36), *times, ("slots", 7), ("lawyers", 8), ("stations", 8), ("reply", 9)],
        [
            [label, *cells(f), f["slots"], f["lawyers"], f["stations"], f"{f['reply_bytes'] / 1e6:.2f}MB"]
            for label, f in results["find_slots"].items()
        ],
    )
    print(
        f"({args.requests} sequential calls per case after {args.warmup} warm-up; svc = the legal service's own "
        "time per call from its log, reply serialisation and publishing included)\nCPU seconds used during the "
        "timed calls:"
    )
    for label, f in results["find_slots"].items():
        print(f"    {label:<36} {harness.cpu_text(f['cpu_s'])}")
    print()
    harness.print_table(
        [("book (distinct slots)", 36), ("calls", 7), ("ok", 6), ("failed", 7), ("book/s", 8), *times],
        [
            [label, f["calls"], f["ok"], sum(f["errors"].values()), f["book_per_s"], *cells(f)]
            for label, f in results["book"].items()
        ],
    )
    for label, f in results["book"].items():
        errors = f"errors {f['errors']}; " if f["errors"] else ""
        print(f"    {label}: {errors}CPU s {harness.cpu_text(f['cpu_s'])}")
    checks = results["verification"]
    print(
        f"\nVerification: {'OK' if checks['ok'] else 'FAILED'} - booked in DB {checks['booked_total']} (expected "
        f"{checks['expected_total']}), listed by list_consultations {checks['listed_by_rpc']}, consultation_booked "
        f"events {checks['booked_events']}, overlapping pairs per lawyer {checks['overlapping_pairs']}, booked "
        f"inside time off {checks['booked_in_time_off']}; "
        + "; ".join(
            f"{k}: {c['in_db']}/{c['expected']} in DB, {c['distinct']} distinct" for k, c in checks["phases"].items()
        )
        + "\n"
    )
    rows = [(f"find_slots {label}", f["client"]) for label, f in results["find_slots"].items()]
    harness.floor_lines(
        results["floor"], rows + [(f"book, {label}", f["client"]) for label, f in results["book"].items()]
    )
    profile = results["find_slots_profile"]
    if profile:
        harness.print_profile(f"legal, find_slots({next(iter(results['find_slots']))})", profile)
        encode, decode = profile["json_encode_ms"]["p50_ms"], profile["json_decode_ms"]["p50_ms"]
        print(f"  kombu JSON of its reply, in this process: encode {encode:.1f} ms, decode (client) {decode:.1f} ms")
    if results["service_problems"]:
        problems = results["service_problems"]
        print(f"\nService log warnings/errors ({len(problems)}):\n  " + "\n  ".join(problems[:10]))
    print("\n" + harness.load_line(loads))


def grid_rpc_calls(grid):
    """How many RPC calls the grid has answered so far (its request-duration histogram)."""
    return sum(figures["count"] for key, figures in grid.request_durations().items() if key.startswith("rpc:"))


def goals(results, legal_calls, grid_calls):
    """The legal rows of the goals table (bench.all): its lookups read its own model of grid facts (issue
    16: only a resident's first booking asks the grid), and every booking checked correct."""
    checks = results["verification"]
    wrong = (
        checks["overlapping_pairs"]
        + checks["booked_in_time_off"]
        + abs(checks["booked_total"] - checks["expected_total"])
    )
    return [
        harness.goal("legal: grid calls per find_slots/book call (timed)", grid_calls / max(1, legal_calls),
                     "<= 0.1 (a resident's first booking only)", bound=0.1, unit="calls"),
        harness.goal("legal: bookings wrong (overlap, time off, lost)", wrong, "0", bound=0, unit="bookings"),
    ]  # fmt: skip


def run(args):
    harness.warn_other_benches()
    grid_url, legal_url = (harness.libpq_url(args.postgres_url, name) for name in (GRID_DATABASE, LEGAL_DATABASE))
    existed = harness.claim_queues(args.amqp_uri, harness.rpc_queues("grid", "legal"))
    setup_started = time.monotonic()
    print(f"Legal bench: recreating {GRID_DATABASE} and {LEGAL_DATABASE}", flush=True)
    harness.fresh_database(grid_url, "grid")
    harness.fresh_database(legal_url, "legal")
    grid_env = {"GRID_DATABASE_URL": grid_url, "GRID_HOUSEKEEPING_INTERVAL": "3600"}
    legal_env = {"LEGAL_DATABASE_URL": legal_url, **LEGAL_SETTINGS}
    services = {
        "grid": harness.ServiceProcess("grid", args.amqp_uri, "bench_legal_grid.log", grid_env),
        "legal": harness.ServiceProcess("legal", args.amqp_uri, "bench_legal_legal.log", legal_env, probe=args.profile),
    }
    token, rng, world = harness.admin_token(ttl=3 * 3600), random.Random(args.seed), World()
    today = dt.datetime.now(ZONE).date()
    date_from, date_to = today + dt.timedelta(days=1), today + dt.timedelta(days=DAYS)
    loads, profile = [os.getloadavg()], None
    try:
        harness.start_services(services, args.amqp_uri)
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, context_data={"auth_token": token}, timeout=120) as proxy:
            seed_district(proxy.grid, rng, world)
            seed_legal(proxy.legal, rng, world, args.lawyers, date_from, date_to)
            setup_s = time.monotonic() - setup_started
            print(f"  seeded: {len(world.residents)} residents, {len(world.lawyers)} lawyers", flush=True)
            cases = slot_cases(world, date_from, date_to)
            grid_calls_before = grid_rpc_calls(services["grid"])
            for case in cases:
                time_find_slots(proxy.legal, case, args, services)
                print(f"  find_slots {case.label}: {len(case.answer):,} slots", flush=True)
            pool = cases[1].answer  # the limit-5000 "family" answer, after the existing bookings
            if len(pool) < 2 * args.bookings:
                raise SystemExit(f"only {len(pool)} free slots for 2 x {args.bookings} bookings: fewer --bookings")
            picked = random.Random(args.seed + 1).sample(pool, 2 * args.bookings)
            phases = [Timed(f"c{args.concurrency}", concurrency=args.concurrency), Timed("c1")]
            for index, phase in enumerate(phases):
                for n, slot in enumerate(picked[index * args.bookings : (index + 1) * args.bookings]):
                    phase.jobs.append(
                        {
                            **{key: slot[key] for key in ("lawyer_id", "station_id", "starts_at")},
                            "resident_id": world.residents[n % len(world.residents)],
                            "topic": f"bench {phase.label} {n}",
                            "idempotency_key": f"bench-{phase.label}-{n}",
                        }
                    )
                run_book_phase(args.amqp_uri, token, phase, services)
                print(f"  book {phase.label}: {phase.booked}/{len(phase.jobs)} in {phase.wall_s:.1f} s", flush=True)
            grid_calls = grid_rpc_calls(services["grid"]) - grid_calls_before
            eventlet.sleep(2.0)  # the outbox relay publishes the last events
            checks = verify(legal_url, proxy.legal, phases)
            if args.profile:
                profile = profile_find_slots(services["legal"], proxy.legal, cases[0])
    finally:
        harness.stop_services(services, args.amqp_uri, existed)
    attach_service_times(services["legal"], cases, phases, args)
    job = phases[-1].jobs[0]  # the floor carries a booking's request and its reply
    request, reply = harness.rpc_request(job, token), {"result": job, "error": None}
    floor = summarise(harness.measure_floor(args.amqp_uri, request, reply, args.requests, args.warmup))
    loads.append(os.getloadavg())
    settings = {k: v for k, v in vars(args).items() if k not in ("amqp_uri", "postgres_url")}
    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {**LEGAL_SETTINGS, **settings, "date_from": date_from, "date_to": date_to},
        "world": {"stations": len(world.stations), "lawyers": len(world.lawyers), "time_off": world.time_off},
        "environment": harness.environment(loads),
        "floor": floor,
        "find_slots": {case.label: case.figures() for case in cases},
        "book": {phase.label: phase.figures() for phase in phases},
        "verification": checks,
        "find_slots_profile": profile,
        "service_problems": services["grid"].problems() + services["legal"].problems(),
    }
    legal_calls = sum(len(case.samples) for case in cases) + sum(len(phase.jobs) for phase in phases)
    results["grid_calls"] = {"grid": grid_calls, "legal_calls": legal_calls}
    results["goals"] = goals(results, legal_calls, grid_calls)
    report(args, world, results, setup_s, loads)
    print(f"Results written to {harness.save_json(RESULTS_FILE, results)}")
    return checks["ok"]


def main(argv=None):
    parser = harness.parser("bench.legal_booking", __doc__, "then profile legal over more 'family' searches")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="the server the bench databases go on")
    parser.add_argument("--lawyers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100, help="timed find_slots calls per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed find_slots calls per case first")
    parser.add_argument("--bookings", type=int, default=1000, help="distinct slots booked per phase")
    parser.add_argument("--concurrency", type=int, default=10, help="callers at once in the concurrent phase")
    parser.add_argument("--seed", type=int, default=42)
    sizes = ("lawyers", "requests", "bookings", "concurrency")
    return 0 if run(harness.parse(parser, argv, positive=sizes, not_negative=("warmup",))) else 1


if __name__ == "__main__":
    sys.exit(main())
