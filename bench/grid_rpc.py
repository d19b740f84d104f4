"""Latency of the grid service's RPC against the raw AMQP request/reply floor.

    python -m bench.grid_rpc --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--requests 300] [--warmup 30] [--callers 10] \\
        [--concurrent-calls 300] [--profile]

Needs a database seeded by ``python -m bench.seed_grid`` (and the same GRASSROOTS_PII_KEY). Starts the grid
service as its own process, as deployed, and times sequential calls from a standalone ClusterRpcProxy in
this process: ``get_unit`` of a small grid (target: p50 at most 2.5x the floor) and counts and finds under a
street and a community (target: p99 <= 50 ms), each answer first checked against the database.

Beside it runs the suite's no-op RPC service (``bench.rpc_floor``'s ``NoopServiceRpc``, its own process):
its sequential p50, then the throughput of ``--callers`` concurrent callers (each its own proxy, each
making ``--concurrent-calls`` calls) of ``get_unit`` and of the no-op, in two alternating rounds (target:
``get_unit`` at least 70% of the no-op's calls per second).

In the same run it times a bare kombu echo carrying the same request and reply: the transport floor, over
RabbitMQ direct reply-to with transient messages (the get_unit target is set against it), in turns with
``get_unit`` and the no-op RPC so that the three meet the same load; and for reference, after the services
stopped, the same echo with nameko's delivery settings (publisher confirms, persistent messages).

Printed: client p50/p99/mean per case, the service's own time per call (its "call finished" log lines,
publishing the reply included), PASS/MISS per target. With --profile the grid then serves more calls of
each case profiled (``bench.probe``): its CPU by function, its SQL by statement, and the EXPLAIN ANALYZE of
each count/find query. Written: var/bench_grid_results.json and the service's log, var/bench_grid_service.log.
"""

import bench.green  # noqa: F401  (first: eventlet's monkey patching)

# isort: split
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field

import eventlet
import eventlet.event
from nameko.standalone.rpc import ClusterRpcProxy

from bench import harness
from bench.harness import stat_cells, summarise
from bench.rpc_floor import NoopServiceRpc, start_noop, wait_until_answered
from bench.seed_grid import seeded

RESULTS_FILE = "bench_grid_results.json"
SERVICE_LOG = "bench_grid_service.log"
QUERY_TARGET_MS = 50.0  # p99 target of every count/find call
FLOOR_RATIO_TARGET = 2.5  # get_unit p50 may be at most this multiple of the floor p50 (issue 16)
THROUGHPUT_TARGET = 0.7  # get_unit calls/s with concurrent callers, at least this fraction of the no-op's
THROUGHPUT_ROUNDS = 3  # get_unit and no-op alternate, so that a change in the machine's load hits both
LATENCY_ROUNDS = 5  # get_unit, the no-op and the floor take turns, each a share of --requests a turn
FLOOR_WARMUP = 10  # the floor's echo is set up afresh each turn: this many untimed round trips first
PROFILE_CALLS = 100  # calls per case under --profile


@dataclass
class Case:
    label: str
    method: str
    kwargs: dict
    expected: int | None = None  # the answer computed straight from the database
    answer: str = ""
    samples: list = field(default_factory=list)
    service_ms: list = field(default_factory=list)  # the service's own time for each timed call
    profile: dict = field(default_factory=dict)
    plans: list = field(default_factory=list)

    @property
    def target(self):
        """ "floor": p50 against the AMQP floor; "query": p99 against QUERY_TARGET_MS."""
        return "floor" if self.method == "get_unit" else "query"


def bench_cases(targets):
    street, community, elderly = targets["street"], targets["community"], {"tags_any": ["elderly_alone"]}
    page = {"page_size": 100}
    # fmt: off
    return [
        Case("get_unit(small grid)", "get_unit", {"unit_id": targets["small_grid"]}),
        Case("count_residents(street, elderly_alone)", "count_residents", {"under": street, **elderly}),
        Case("count_residents(community, elderly_alone)", "count_residents", {"under": community, **elderly}),
        Case("count_residents(street)", "count_residents", {"under": street}),
        Case("find_residents(street, elderly_alone, 100)", "find_residents", {"under": street, **elderly, **page}),
        Case("find_residents(community, elderly_alone, 100)", "find_residents",
             {"under": community, **elderly, **page}),
    ]
    # fmt: on


def expected_answers(cur, cases):
    """What each count/find call should return, computed directly in SQL."""
    for case in cases:
        if case.method == "get_unit":
            continue
        cur.execute("SELECT path FROM units WHERE id = %s", (case.kwargs["under"],))
        prefix = harness.one_row(cur)[0] + "%"
        if case.kwargs.get("tags_any"):
            cur.execute(
                "SELECT count(DISTINCT resident_id) FROM resident_tags WHERE tag = ANY(%s) AND unit_path LIKE %s",
                (case.kwargs["tags_any"], prefix),
            )
        else:
            cur.execute("SELECT count(*) FROM residents WHERE unit_path LIKE %s", (prefix,))
        total = harness.one_row(cur)[0]
        case.expected = total if case.method == "count_residents" else min(total, case.kwargs["page_size"])


def describe(case, answer):
    """A short note on the answer, flagged if it disagrees with the database."""
    if case.method == "get_unit":
        return f"{answer['level']} {answer['id']}"
    got = answer["count"] if case.method == "count_residents" else len(answer["items"])
    note = f"count {got:,}" if case.method == "count_residents" else f"{got} rows"
    return note if got == case.expected else f"{note} (DB says {case.expected:,}!)"


def attach_service_times(cases, calls, requests, warmup, later_calls=0):
    """Give each case the service's own durations of its timed calls. The calls are sequential, so the log
    holds them in the order made: the first call, then per case one answer check, the warm-up and the timed
    calls (then the profiled ones, and ``later_calls`` more: the concurrent phase's). The log line is written
    after the reply is sent, so matching by time would be off by one at the edges; by order it is exact."""
    expected = 1 + len(cases) * (1 + warmup + requests) + sum(case.profile.get("calls", 0) for case in cases)
    if len(calls) != expected + later_calls:
        print(f"  (service log has {len(calls)} RPC calls, expected {expected + later_calls}: no service-side times)")
        return
    position = 1
    for case in cases:
        position += 1 + warmup
        timed_calls = calls[position : position + requests]
        position += requests
        if {record.get("method") for record in timed_calls} == {case.method}:
            case.service_ms = [record["duration_ms"] for record in timed_calls]


def throughput(amqp_uri, token, call, callers, calls_each, processes):
    """Calls per second of ``callers`` callers at once, each with its own proxy (connected and warmed
    with one call first) making ``calls_each`` calls of ``call(proxy)``; from the start signal until
    the last caller is done. With the CPU seconds ``processes`` ({name: anything with a pid}), RabbitMQ,
    PostgreSQL and this process used meanwhile."""
    ready, go = [], eventlet.event.Event()

    def caller():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
            call(proxy)
            ready.append(True)
            go.wait()
            for _ in range(calls_each):
                call(proxy)

    threads = [eventlet.spawn(caller) for _ in range(callers)]
    while len(ready) < callers:
        for thread in threads:
            if thread.dead:
                thread.wait()  # raises what ended it
        eventlet.sleep(0.01)
    before, started = harness.cpu_now(processes), time.perf_counter()
    go.send(True)
    for thread in threads:
        thread.wait()
    seconds = round(time.perf_counter() - started, 3)
    cpu = harness.cpu_used(before, harness.cpu_now(processes))
    return {"callers": callers, "calls": callers * calls_each, "seconds": seconds, "cpu_s": cpu}


def same_moments(args, call, noop, request, reply):
    """get_unit, the no-op RPC and the raw floor, timed in LATENCY_ROUNDS rounds of a share of
    ``--requests`` each, one after the other, so that all three meet the same load on a shared machine
    (the grid's log still holds its warm-up and timed calls in a row: the others are not its calls)."""
    harness.timed(call, 0, args.warmup)
    harness.timed(noop, 0, args.warmup)
    unit, nothing, floor = [], [], []
    for index in range(LATENCY_ROUNDS):
        share = args.requests // LATENCY_ROUNDS + (index < args.requests % LATENCY_ROUNDS)
        unit += harness.timed(call, share)
        nothing += harness.timed(noop, share)
        floor += harness.measure_floor(args.amqp_uri, request, reply, share, min(args.warmup, FLOOR_WARMUP))
    return unit, nothing, floor


def per_second(rounds, process):
    """The rounds' calls per second, and CPU per call (ms) of ``process`` (the service called) and of the
    bench's callers."""
    calls, seconds = sum(r["calls"] for r in rounds), sum(r["seconds"] for r in rounds)
    cpu_ms = {
        name: round(sum(r["cpu_s"][name] for r in rounds) * 1000 / calls, 3) for name in (process, "bench", "rabbitmq")
    }
    return {"calls": calls, "seconds": round(seconds, 3), "per_s": round(harness.rate(calls, seconds), 1),
            "cpu_ms_per_call": cpu_ms}  # fmt: skip


def explain(cur, selects):
    """EXPLAIN (ANALYZE, BUFFERS) of each SELECT the service ran for every call (not its background work),
    with the parameters of its first run."""
    plans = []
    for select in selects:
        if select["calls_per_call"] >= 1:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + select["sql"], select["parameters"])
            plan = "\n".join(row[0] for row in cur.fetchall())
            plans.append({"sql": cur.mogrify(select["sql"], select["parameters"]).decode(), "plan": plan})
    return plans


def run(args):
    harness.warn_other_benches()
    with seeded(args.database_url) as (cur, targets):
        cur.execute("SELECT count(*) FROM residents")
        resident_count = harness.one_row(cur)[0]
        cases = bench_cases(targets)
        expected_answers(cur, cases)
    existed = harness.claim_queues(args.amqp_uri, harness.rpc_queues("grid", NoopServiceRpc.name))
    token = harness.admin_token()
    # max_workers as deployed (services/grid/config.yml), the no-op's nameko default: 10 each
    env = {"GRID_DATABASE_URL": args.database_url, "GRID_HOUSEKEEPING_INTERVAL": "3600"}
    service = harness.ServiceProcess("grid", args.amqp_uri, SERVICE_LOG, env, probe=args.profile)
    noop = None
    loads = [os.getloadavg()]
    print(
        f"Grid RPC bench: {harness.database_name(args.database_url)} ({resident_count:,} residents), "
        f"{args.requests} sequential requests per case after {args.warmup} warm-up; then {args.callers} concurrent "
        f"callers x {args.concurrent_calls} calls, get_unit and the no-op RPC alternating, {THROUGHPUT_ROUNDS} rounds",
        flush=True,
    )
    rounds: dict = {"get_unit": [], "noop": []}
    try:
        noop = start_noop(args.amqp_uri, (NoopServiceRpc,))
        harness.start_services({"grid": service}, args.amqp_uri)
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
            wait_until_answered(proxy, noop, (NoopServiceRpc,))
            proxy.grid.get_unit(unit_id=targets["district"])  # the first call attach_service_times expects
            for case in cases:
                method = getattr(proxy.grid, case.method)

                def call(method=method, kwargs=case.kwargs):
                    return method(**kwargs)

                try:
                    answer = call()
                except Exception as exc:
                    raise SystemExit(
                        f"{case.label} failed: {exc!r}; see {service.log_path} (a database seeded with another "
                        "GRASSROOTS_PII_KEY cannot be read)"
                    ) from exc
                case.answer = describe(case, answer)
                if case.method == "get_unit":
                    # The floor carries what a get_unit call carries: its kwargs and headers, and its reply.
                    request = harness.rpc_request(case.kwargs, token)
                    unit_reply = {"result": answer, "error": None}
                    case.samples, noop_samples, floor_samples = same_moments(
                        args, call, proxy.bench_noop_service.ping, request, unit_reply
                    )
                else:
                    case.samples = harness.timed(call, args.requests, args.warmup)
                print(f"  {case.label:<48} done", flush=True)
            for case in cases if args.profile else ():
                with service.profiled(PROFILE_CALLS) as case.profile:
                    harness.timed(lambda case=case: getattr(proxy.grid, case.method)(**case.kwargs), PROFILE_CALLS)
        callers = {
            "get_unit": lambda proxy: proxy.grid.get_unit(**cases[0].kwargs),
            "noop": lambda proxy: proxy.bench_noop_service.ping(),
        }
        processes = {"grid": service, "noop": noop}
        for _ in range(THROUGHPUT_ROUNDS):
            for name, each in callers.items():
                found = throughput(args.amqp_uri, token, each, args.callers, args.concurrent_calls, processes)
                rounds[name].append(found)
        print(f"  {f'{args.callers} concurrent callers':<48} done", flush=True)
    finally:
        harness.stop_process(noop)
        harness.stop_services({"grid": service}, args.amqp_uri, existed)  # and leave the broker as found
    concurrent_calls = sum(r["calls"] + r["callers"] for r in rounds["get_unit"])  # with each caller's first
    attach_service_times(cases, service.finished_calls("rpc"), args.requests, args.warmup, concurrent_calls)
    floor = summarise(floor_samples)
    guaranteed = summarise(  # for reference: after the services stopped
        harness.measure_floor(args.amqp_uri, request, unit_reply, args.requests, args.warmup, guaranteed=True)
    )
    loads.append(os.getloadavg())
    if args.profile:
        with harness.cursor(args.database_url) as cur:
            for case in cases:
                case.plans = explain(cur, case.profile["selects"]) if case.target == "query" else []
    measured = {
        "floor": floor,
        "guaranteed": guaranteed,
        "noop": summarise(noop_samples),
        "throughput": {
            name: {**per_second(found, "grid" if name == "get_unit" else "noop"), "rounds": found}
            for name, found in rounds.items()
        },
    }
    return report(args, targets, resident_count, cases, measured, loads)


def report(args, targets, resident_count, cases, measured, loads):
    floor, guaranteed, noop, speed = measured["floor"], measured["guaranteed"], measured["noop"], measured["throughput"]
    rows, checks = [], []
    for case in cases:
        stats = summarise(case.samples)
        if case.target == "floor":
            limit, value = FLOOR_RATIO_TARGET * floor["p50_ms"], stats["p50_ms"]
            target = f"p50 <= {FLOOR_RATIO_TARGET:g}x floor = {limit:.2f}"
            verdict = f"({value / floor['p50_ms']:.2f}x floor, {value / noop['p50_ms']:.2f}x no-op)"
            check = {
                "metric": "p50_ms",
                "limit_ms": round(limit, 3),
                "ratio_to_floor": round(value / floor["p50_ms"], 2),
                "ratio_to_noop": round(value / noop["p50_ms"], 2),
            }
        else:
            limit, value = QUERY_TARGET_MS, stats["p99_ms"]
            target, verdict = f"p99 <= {QUERY_TARGET_MS:g}", f"({value / QUERY_TARGET_MS:.0%} of target)"
            check = {"metric": "p99_ms", "limit_ms": QUERY_TARGET_MS}
        passed = value <= limit
        checks.append({"case": case.label, **check, "value": value, "pass": passed})
        verdict = f"{'PASS' if passed else 'MISS'} {verdict}"
        cells = stat_cells(stats, "p50_ms", "p99_ms", "mean_ms") + stat_cells(summarise(case.service_ms), "p50_ms")
        rows.append([case.label, *cells, case.answer, target, verdict])
    unit_rate, noop_rate = speed["get_unit"]["per_s"], speed["noop"]["per_s"]
    rate_ratio = unit_rate / noop_rate if noop_rate else 0.0
    rate_passed = rate_ratio >= THROUGHPUT_TARGET
    checks.append(
        {"case": f"get_unit throughput, {args.callers} callers", "metric": "calls_per_s", "value": unit_rate,
         "noop_calls_per_s": noop_rate, "ratio_to_noop": round(rate_ratio, 2), "minimum_ratio": THROUGHPUT_TARGET,
         "pass": rate_passed}
    )  # fmt: skip
    print()
    floors = [
        ["AMQP floor: kombu echo, direct reply-to", *stat_cells(floor, "p50_ms", "p99_ms", "mean_ms"), None, "", "",
         "1.00x floor"],
        ["  same, nameko delivery (confirm+persist)", *stat_cells(guaranteed, "p50_ms", "p99_ms", "mean_ms"), None, "",
         "", f"{guaranteed['p50_ms'] / floor['p50_ms']:.2f}x floor"],
        ["no-op RPC, suite @rpc (own process)", *stat_cells(noop, "p50_ms", "p99_ms", "mean_ms"), None, "", "",
         f"{noop['p50_ms'] / floor['p50_ms']:.2f}x floor"],
    ]  # fmt: skip
    harness.print_table(
        [("case (times in ms)", 48), ("p50", 8), ("p99", 8), ("mean", 8), ("svc p50", 8), ("answer", -16),
         ("target", -26), ("verdict", 0)],
        [*floors, *rows],
    )  # fmt: skip
    print()
    harness.print_table(
        [(f"{args.callers} concurrent callers", 48), ("calls", 8), ("seconds", 8), ("calls/s", 9), ("svc cpu", 8),
         ("callers", 8), ("target", -26), ("verdict", 0)],
        [["no-op RPC, suite @rpc", speed["noop"]["calls"], speed["noop"]["seconds"], noop_rate,
          speed["noop"]["cpu_ms_per_call"]["noop"], speed["noop"]["cpu_ms_per_call"]["bench"], "", "1.00x no-op"],
         ["get_unit(small grid)", speed["get_unit"]["calls"], speed["get_unit"]["seconds"], unit_rate,
          speed["get_unit"]["cpu_ms_per_call"]["grid"], speed["get_unit"]["cpu_ms_per_call"]["bench"],
          f">= {THROUGHPUT_TARGET:g}x no-op", f"{'PASS' if rate_passed else 'MISS'} ({rate_ratio:.2f}x no-op)"]],
    )  # fmt: skip
    print("svc cpu, callers: CPU ms per call of the service called and of the bench's callers (this process).")
    print(
        f"\n{sum(c['pass'] for c in checks)}/{len(checks)} targets met. svc p50 = the service's own time per call "
        f"(its log; includes publishing the reply).\n{harness.load_line(loads)}"
    )
    for case in cases if args.profile else ():
        harness.print_profile(f"grid, {case.label}", case.profile)
        for item in case.plans:
            print(f"  EXPLAIN ANALYZE -- {item['sql']}\n{item['plan']}")
    unit_p50 = summarise(cases[0].samples)["p50_ms"]
    goals = [
        harness.goal(
            "grid.get_unit p50",
            unit_p50,
            f"p50 <= {FLOOR_RATIO_TARGET:g}x raw AMQP floor",
            floor=floor["p50_ms"],
            ratio_target=FLOOR_RATIO_TARGET,
        ),
        harness.goal(
            f"get_unit throughput, {args.callers} callers",
            unit_rate,
            f">= {THROUGHPUT_TARGET:g}x the no-op RPC's calls/s",
            floor=noop_rate,
            unit="calls/s",
            ratio_minimum=THROUGHPUT_TARGET,
        ),
    ]
    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": harness.database_name(args.database_url),
        "residents": resident_count,
        "targets": targets,
        "requests": args.requests,
        "warmup": args.warmup,
        "environment": harness.environment(loads),
        "floor": floor,
        "floor_nameko_delivery": guaranteed,
        "noop": noop,
        "throughput": speed,
        "cases": {
            case.label: {
                "method": case.method,
                "kwargs": case.kwargs,
                "answer": case.answer,
                **summarise(case.samples),
                "service": summarise(case.service_ms),
            }
            for case in cases
        },
        "checks": checks,
        "goals": goals,
        "profiles": {case.label: case.profile for case in cases if case.profile},
        "plans": {case.label: case.plans for case in cases if case.plans},
    }
    print(f"Results written to {harness.save_json(RESULTS_FILE, results)}")
    return results


def main(argv=None):
    parser = harness.parser("bench.grid_rpc", __doc__, "then profile the grid over more calls of each case")
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL of a database seeded by bench.seed_grid")
    parser.add_argument("--requests", type=int, default=300, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per case first")
    parser.add_argument("--callers", type=int, default=10, help="concurrent callers in the throughput phase")
    parser.add_argument("--concurrent-calls", type=int, default=300, help="calls per caller per round")
    sizes = ("requests", "callers", "concurrent_calls")
    run(harness.parse(parser, argv, positive=sizes, not_negative=("warmup",)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
