"""Matching latency of the volunteer service: create_request with 50,000 volunteers in the bench district.

    python -m bench.volunteer_matching [--grid-database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench] \\
        [--volunteer-database-url URL] [--amqp-uri amqp://guest:guest@localhost:5672/] [--volunteers 50000] \\
        [--requests 300] [--warmup 20] [--profile]

Needs the grid bench database seeded by ``python -m bench.seed_grid`` (and the same GRASSROOTS_PII_KEY); only
reads it. Recreates a volunteer database beside it (``grassroots_bench_volunteer``) with --volunteers
volunteers and their task history (``bench.seed_volunteer``, seed 42), starts grid and volunteer each as its
own process, and calls ``create_request`` sequentially for varied small grids and kinds: a third for a unit
only, a third for a resident of the grid, a third for a resident whose household has a volunteer in the grid
(the household exclusion must skip them). Each call validates, matches (the nearest scope with enough
eligible volunteers; the quarantine check), offers the request to the best volunteer and records the offer's
notification. The volunteer database holds the service's read model of grid facts, copied from the grid's
(shared.grid_facts: as after a resync), so the unit, resident, household and tags come from it, not the grid.
Each timed create_request is followed by a timed ``grid.get_unit`` of the same unit (the floor of goal 1).
Targets (the "goals" of the results): client p50 <= 3x grid.get_unit p50, client p99 <= 50 ms. Also: the
service's own time (its log), the grid calls each request made (the grid's log), and the multiple of the raw
AMQP floor of the same run.

Notices is not run: an offer's notification is a ``send_direct`` command that the request's transaction
records in the volunteer's outbox and its relay publishes after the commit, here to a queue this process
binds on ``notices.commands`` in place of notices' own. A notices consuming commands on the broker would act
on them (and ask the grid): the run refuses to start beside one.

Checked: every request ended offered (or unmatched); no offer to the requester's household, to a volunteer
quarantined in the grid or to one at their task limit; every offer to a volunteer who is a resident recorded
exactly one ``send_direct`` command for them (none for the other offers), published and received once.

With --profile both services run under ``bench.probe``: their full garbage collections during the timed calls
are reported, then more requests are profiled in both (CPU by function, SQL by statement), and
``matching.rank`` is timed alone on a small grid's, a community's and the district's candidates.
Written: var/bench_volunteer_results.json and the services' logs, var/bench_volunteer_<service>.log.
"""

import bench.green  # noqa: F401  (first: eventlet's monkey patching)

# isort: split
import datetime as dt
import gc
import os
import random
import sys
import time
from collections import defaultdict
from zoneinfo import ZoneInfo

from nameko.standalone.rpc import ClusterRpcProxy

from bench import harness
from bench.harness import one_row, summarise
from bench.seed_grid import seeded
from bench.seed_volunteer import seed
from bench.volunteer_checks import COMMANDS_EXCHANGE, CommandTap, verify, wait_commands_published
from services.notices.client import SEND_DIRECT, SERVICE as NOTICES
from services.volunteer import matching
from services.volunteer.vocabulary import REQUEST_KINDS
from shared.commands import command_queue_name

VOLUNTEER_DATABASE = "grassroots_bench_volunteer"
RESULTS_FILE = "bench_volunteer_results.json"
TARGET_P99_MS = 50.0
TARGET_UNIT_RATIO = 3.0  # create_request p50 over grid.get_unit p50, same run (issue 16, goal 1)
SEED = 42
PROFILE_REQUESTS = 50
ZONE = ZoneInfo("Asia/Shanghai")  # the volunteer service's TIMEZONE (its default)
NOTICES_COMMAND_QUEUE = command_queue_name(NOTICES, SEND_DIRECT)
POOL = """SELECT unit_path, id, household_id FROM (SELECT unit_path, id, household_id,
              row_number() OVER (PARTITION BY unit_path ORDER BY id) AS rn FROM residents WHERE unit_path LIKE %s) s
          WHERE rn <= 40 ORDER BY unit_path, id"""


def grid_facts(grid_url):
    """The bench district, its small grids and up to 40 residents of each (lowest ids: households are shuffled)."""
    with seeded(grid_url) as (cur, targets):
        cur.execute("SELECT path FROM units WHERE id = %s", (targets["district"],))
        district = one_row(cur)[0]
        cur.execute(
            "SELECT id, path FROM units WHERE level = 'grid_small' AND NOT closed AND path LIKE %s ORDER BY id",
            (district + "%",),
        )
        small_grids = cur.fetchall()
        pool = defaultdict(list)
        cur.execute(POOL, (district + "%",))
        for path, resident_id, household_id in cur.fetchall():
            pool[path].append((resident_id, household_id))
        cur.execute("SELECT count(*) FROM residents")
        return {"targets": targets, "small_grids": small_grids, "pool": pool, "residents": one_row(cur)[0]}


def make_specs(rng, count, grid_url, small_grids, volunteers, needed_by):
    """``count`` create_request calls over random small grids: unit only, a resident, a volunteer's household."""
    grids = [rng.choice(small_grids) for _ in range(count)]
    residents_of = defaultdict(list)
    with harness.cursor(grid_url) as cur:
        query = "SELECT unit_path, id, household_id FROM residents WHERE unit_path = ANY(%s) ORDER BY id"
        cur.execute(query, (sorted({path for _id, path in grids}),))
        for path, resident_id, household_id in cur.fetchall():
            residents_of[path].append((resident_id, household_id))
    linked = defaultdict(list)
    for volunteer in volunteers:
        if volunteer.resident_id is not None:
            linked[volunteer.home_path].append(volunteer)
    specs = []
    for i, (unit_id, path) in enumerate(grids):
        kind = rng.choice(REQUEST_KINDS)
        kwargs = {"unit_id": str(unit_id), "kind": kind, "details": f"bench request {i}", "urgency": "normal"}
        variant, people = ("unit", "resident", "volunteer_household")[i % 3], residents_of[path]
        if variant == "volunteer_household" and linked[path]:
            volunteer = rng.choice(linked[path])
            mates = [r for r, h in people if h == volunteer.household_id and r != volunteer.resident_id]
            kwargs["resident_id"] = str(rng.choice(mates) if mates else volunteer.resident_id)
        elif variant != "unit":
            variant, kwargs["resident_id"] = "resident", str(rng.choice(people)[0])
        specs.append({"variant": variant, "path": path, "kwargs": {**kwargs, "needed_by": needed_by}})
    return specs


def ranking_reference(volunteer_url, volunteers, grid_path, needed_by, zone):
    """--profile: ``matching.rank`` alone on the active volunteers of a small grid, its community and the district,
    with their current and recent tasks as the database holds them."""
    with harness.cursor(volunteer_url) as cur:
        cur.execute(
            "SELECT volunteer_id, count(*) FILTER (WHERE status = 'matched'), count(*) FILTER (WHERE matched_at >= "
            "now() - interval '30 days') FROM help_requests WHERE volunteer_id IS NOT NULL GROUP BY 1"
        )
        tasks = {row[0]: row[1:] for row in cur.fetchall()}
    candidates = [
        matching.Candidate(
            v.id, v.home_path, v.skills, v.availability, v.max_active_tasks, v.household_id, *tasks.get(v.id, (0, 0))
        )
        for v in volunteers
        if v.active
    ]
    scopes = matching.search_scopes(grid_path)
    found = {}
    for level, scope, repeats in (
        ("small grid", scopes[0], 200),
        ("community", scopes[3], 200),
        ("district", scopes[-1], 10),
    ):
        within = [c for c in candidates if c.home_path.startswith(scope)]
        rank = lambda within=within: matching.rank(within, grid_path, "groceries", needed_by, zone)  # noqa: E731
        found[level] = {"candidates": len(within), "rank": summarise(harness.timed(rank, repeats))}
    return found


def run(args):
    harness.warn_other_benches()
    facts = grid_facts(args.grid_database_url)
    harm = "a notices service would act on the offers' commands during the run (and ask the grid)"
    existed = harness.claim_queues(
        args.amqp_uri, {**harness.rpc_queues("grid", "volunteer"), NOTICES_COMMAND_QUEUE: harm}
    )
    if existed[NOTICES_COMMAND_QUEUE]:
        print(
            f"WARNING: '{NOTICES_COMMAND_QUEUE}' exists (left by a notices service): the run's offer commands stay "
            "in it, and the next notices started on this vhost will send them."
        )
    print(
        f"Volunteer matching bench: seeding {harness.database_name(args.volunteer_database_url)} with "
        f"{args.volunteers:,} volunteers over {len(facts['small_grids']):,} small grids of district "
        f"{facts['targets']['district']} ({harness.database_name(args.grid_database_url)}, {facts['residents']:,} "
        "residents)",
        flush=True,
    )
    rng = random.Random(SEED)
    volunteers, seed_s = seed(
        args.volunteer_database_url, rng, args.volunteers, facts["small_grids"], facts["pool"], args.grid_database_url
    )
    print(f"  seeded in {seed_s} s", flush=True)
    needed_by = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    count = args.warmup + args.requests + (PROFILE_REQUESTS if args.profile else 0)
    specs = make_specs(
        random.Random(SEED + 1), count, args.grid_database_url, facts["small_grids"], volunteers, needed_by.isoformat()
    )
    envs = {
        "grid": {
            "GRID_DATABASE_URL": args.grid_database_url,
            "GRID_HOUSEKEEPING_INTERVAL": "3600",
        },  # it would expire tags
        "volunteer": {
            "VOLUNTEER_DATABASE_URL": args.volunteer_database_url,
            "VOLUNTEER_OFFER_SWEEP_INTERVAL": "3600",
            "VOLUNTEER_SHIFT_CHECK_INTERVAL": "3600",
            "VOLUNTEER_GRID_FACTS_SYNC_INTERVAL": "3600",  # the seeded read model is in step: no resync
        },
    }
    services = {
        name: harness.ServiceProcess(name, args.amqp_uri, f"bench_volunteer_{name}.log", env, probe=args.profile)
        for name, env in envs.items()
    }
    tap, token, loads = CommandTap(args.amqp_uri), harness.admin_token(), [os.getloadavg()]
    latencies, unit_latencies, replies, profiles = [], [], [], {}
    try:
        tap.start()
        harness.start_services(services, args.amqp_uri)
        gc.collect()
        gc.freeze()  # this process holds the seed data: keep its own collections out of the client's times
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:

            def create(spec):
                try:
                    replies.append(proxy.volunteer.create_request(**spec["kwargs"]))
                except Exception as exc:
                    raise SystemExit(f"create_request failed: {exc!r}; see {services['volunteer'].log_path}") from exc

            def get_unit(spec):
                proxy.grid.get_unit(unit_id=spec["kwargs"]["unit_id"])

            for spec in specs[: args.warmup]:
                create(spec)
                get_unit(spec)
            since = time.time()
            # The floor of goal 1, interleaved call by call so both see the same machine: the grid's own
            # small read of the same unit, through the same proxy.
            for spec in specs[args.warmup : args.warmup + args.requests]:
                latencies += harness.timed(lambda spec=spec: create(spec), 1)
                unit_latencies += harness.timed(lambda spec=spec: get_unit(spec), 1)
            until = time.time()
            if args.profile:
                print(f"  timed; profiling {PROFILE_REQUESTS} more requests ...", flush=True)
                with (
                    services["volunteer"].profiled(PROFILE_REQUESTS) as profiles["volunteer"],
                    services["grid"].profiled(PROFILE_REQUESTS) as profiles["grid"],
                ):
                    for spec in specs[args.warmup + args.requests :]:
                        create(spec)
        left = wait_commands_published(args.volunteer_database_url)
        received = tap.drain()
        print(
            f"  {len(received)} offer commands received on {COMMANDS_EXCHANGE}"
            + (f"; {left} still unpublished after the wait" if left else ""),
            flush=True,
        )
        reply = {"result": replies[-1], "error": None}  # the floor carries a create_request and its reply
        floor = summarise(
            harness.measure_floor(
                args.amqp_uri, harness.rpc_request(specs[-1]["kwargs"], token), reply, args.requests, args.warmup
            )
        )
    finally:
        harness.stop_services(services, args.amqp_uri, existed)
        tap.stop()
    loads.append(os.getloadavg())
    checks = verify(
        args.volunteer_database_url, args.grid_database_url, [int(r["id"]) for r in replies], specs, received
    )
    created = services["volunteer"].finished_calls("rpc", "create_request")
    timed_calls = created[args.warmup : args.warmup + args.requests] if len(created) == len(specs) else []
    # The grid calls create_request made (not the bench's own get_unit, nor a handler's: events from other
    # grids on the same vhost reach the volunteer too); the readiness probes are HTTP.
    per_method = defaultdict(list)
    for record in services["grid"].finished_calls("rpc"):
        if any(call.startswith("volunteer.create_request.") for call in record.get("call_id_stack", [])):
            per_method[record.get("method")].append(record["duration_ms"])
    by_variant = defaultdict(list)
    for spec, ms in zip(specs[args.warmup :], latencies, strict=False):
        by_variant[spec["variant"]].append(ms)
    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "grid_database": harness.database_name(args.grid_database_url),
        "volunteer_database": harness.database_name(args.volunteer_database_url),
        "volunteers": args.volunteers,
        "seed": SEED,
        "seed_s": seed_s,
        "small_grids": len(facts["small_grids"]),
        "requests": args.requests,
        "warmup": args.warmup,
        "environment": harness.environment(loads),
        "floor": floor,
        "client": summarise(latencies),
        "grid_get_unit": summarise(unit_latencies),
        "by_variant": {variant: summarise(ms) for variant, ms in sorted(by_variant.items())},
        "service": summarise([record["duration_ms"] for record in timed_calls]),
        "grid_calls": {
            method: {"calls_per_request": round(len(ms) / len(specs), 2), "service_ms": summarise(ms)}
            for method, ms in sorted(per_method.items())
        },
        "checks": checks,
        "service_problems": [problem for service in services.values() for problem in service.problems()],
        "target_p99_ms": TARGET_P99_MS,
    }
    if args.profile:
        calls = {"volunteer": timed_calls, "grid": services["grid"].finished_calls("rpc")}
        results["gc"] = {
            name: harness.gc_report(services[name], calls[name], since, until, TARGET_P99_MS)
            for name in ("volunteer", "grid")
        }
        results["profiles"] = profiles
        grid_path = dict(facts["small_grids"])[facts["targets"]["small_grid"]]
        results["ranking"] = ranking_reference(args.volunteer_database_url, volunteers, grid_path, needed_by, ZONE)
    return report(results)


def report(results):
    client, target, unit = results["client"], TARGET_P99_MS, results["grid_get_unit"]
    results["goals"] = goals = [
        harness.goal(
            "volunteer.create_request p50",
            client["p50_ms"],
            f"p50 <= {TARGET_UNIT_RATIO:g}x grid.get_unit p50",
            floor=unit["p50_ms"],
            ratio_target=TARGET_UNIT_RATIO,
        ),
        harness.goal("volunteer.create_request p99", client["p99_ms"], f"p99 <= {target:g} ms", bound=target),
    ]
    results["pass"] = all(row["verdict"] == "pass" for row in goals)
    rows = [
        [
            f"client, {client['n']} sequential calls",
            client,
            f"{'PASS' if goals[1]['verdict'] == 'pass' else 'MISS'} (p99 <= {target:g}: "
            f"{client['p99_ms'] / target:.0%})",
        ],
        [
            f"  grid.get_unit alone, interleaved (n={unit['n']})",
            unit,
            f"{'PASS' if goals[0]['verdict'] == 'pass' else 'MISS'} (create_request p50 = {goals[0]['ratio']:g}x, "
            f"target <= {TARGET_UNIT_RATIO:g}x)",
        ],
    ]
    rows += [
        [f"  requests for {variant.replace('_', ' ')} (n={stats['n']})", stats, ""]
        for variant, stats in results["by_variant"].items()
    ]
    rows += [["service's own time (its log)", results["service"], ""]]
    rows += [
        [f"  grid.{method}: {info['calls_per_request']} per request (grid's time)", info["service_ms"], ""]
        for method, info in results["grid_calls"].items()
    ]
    for level, info in results.get("ranking", {}).items():
        rows.append([f"matching.rank alone, {level} ({info['candidates']:,} candidates)", info["rank"], ""])
    print()
    harness.print_table(
        [("matching, create_request (ms)", 52), ("p50", 8), ("p99", 8), ("mean", 8), ("max", 8), ("verdict", 0)],
        [
            [label, *harness.stat_cells(stats, "p50_ms", "p99_ms", "mean_ms", "max_ms"), verdict]
            for label, stats, verdict in rows
        ],
    )
    if not results["grid_calls"]:
        print("grid calls made by create_request: none (the volunteer's read model of grid facts answered them all)")
    print()
    harness.floor_lines(
        results["floor"],
        [("create_request, client", client), ("create_request, the service's own time", results["service"])],
    )
    checks, commands = results["checks"], results["checks"]["offer_commands"]
    print(
        f"\nChecks: statuses {checks['statuses']}; offers by distance {checks['offer_distance']}; "
        f"{checks['household_exclusion_cases']} requests from a volunteer's household, "
        f"{checks['requests_in_grids_with_a_quarantined_volunteer']} in grids with a quarantined volunteer; "
        f"{commands['linked_offers']} offers to volunteers who are residents: {commands['recorded']} send_direct "
        f"commands recorded in the outbox, {commands['published']} published, {commands['received']} received on "
        f"{COMMANDS_EXCHANGE}.\n  "
        + (
            "; ".join(checks["problems"])
            or "no offer to the requester's household, a quarantined volunteer or one at their task limit, "
            "one command per offer to a resident: OK"
        )
    )
    for name, info in results.get("gc", {}).items():
        pause = info["gen2_pause"] or {"p50_ms": 0, "max_ms": 0}
        clean = info["calls_without_gen2_collection"]
        print(
            f"{name} service during the timed calls: {info['gen2_collections']} full (gen-2) garbage collections, "
            f"pause p50 {pause['p50_ms']:.1f} ms, max {pause['max_ms']:.1f} ms; "
            + (
                f"{info['of_which_during_a_gen2_collection']} of its {info['calls_over_target']} calls over "
                f"{TARGET_P99_MS:g} ms had one inside; the calls without one: p50 {clean['p50_ms']:.2f}, p99 "
                f"{clean['p99_ms']:.2f} ms (n={clean['n']})."
                if name == "volunteer" and clean
                else f"{info['other_pauses_over_2ms']} younger collections over 2 ms."
            )
        )
    for name, profile in results.get("profiles", {}).items():
        harness.print_profile(f"{name}, per create_request", profile)
    problems = results["service_problems"]
    print(f"\nService logs: {len(problems)} warnings or errors" + (": " + "; ".join(problems[:5]) if problems else "."))
    env = results["environment"]
    print(harness.load_line([env["load_avg_before"], env["load_avg_after"]]))
    print(f"Results written to {harness.save_json(RESULTS_FILE, results)}")
    return results["pass"] and not checks["problems"]


def main(argv=None):
    parser = harness.parser("bench.volunteer_matching", __doc__, "also profile both services over more requests")
    harness.add_database_args(parser, "volunteer", VOLUNTEER_DATABASE)
    parser.add_argument("--volunteers", type=int, default=50_000, help="volunteers to seed")
    parser.add_argument("--requests", type=int, default=300, help="timed create_request calls")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    args = harness.parse(parser, argv, positive=("volunteers", "requests"), not_negative=("warmup",))
    args.volunteer_database_url = harness.own_database(parser, args, "volunteer", VOLUNTEER_DATABASE)
    return 0 if run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
