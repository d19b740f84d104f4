"""Fan-out of one notice to a whole street (~100,000 residents) through the notices service.

    python -m bench.notices_fanout [--grid-database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench] \\
        [--notices-database-url URL] [--amqp-uri amqp://guest:guest@localhost:5672/] [--dispatch-batch 5000] \\
        [--poll-interval 0.05] [--timeout 180] [--profile] [--cprofile]

Needs the grid bench database seeded by ``python -m bench.seed_grid`` (and the same GRASSROOTS_PII_KEY): the
audience is its first street (100,320 residents of the 1,000,000 seeded by default). Recreates a notices
database beside it (``grassroots_bench_notices``), starts grid and notices each as its own process, creates
one moderate SMS notice addressed to the street, approves it, and watches the notices database until every
resident under the street has a recipient row and an SMS delivery the stub adapter accepted (``sent``):
exactly as many of each as the grid database holds residents there.

Timed from approve_notice's return (and from create_notice's call): when the audience was resolved
(``published``), when the first and the last delivery were handed to the adapter. Also: each service's peak
RSS (VmHWM) and the CPU each process used meanwhile.

The floor, measured in the same run before the services start: the time PostgreSQL alone takes to COPY the
audience's rows (the columns resolution needs) out of the grid database and as many delivery rows into a
scratch table shaped like notices' ``deliveries`` (its indexes included), the better of two tries. Goals
(``bench.harness.goal``, under "goals" in the results): every delivery handed to the adapter within 4x that
floor, and at most 8 CPU-seconds for grid, notices and PostgreSQL together.

With --profile, where the time went, from what the services record anyway: the stamps notices writes (one
deliveries' ``created_at`` per resolved page, one ``sent_at`` per dispatch batch), the grid's call log, and
both services' request-duration metrics (timer ticks are not logged at INFO). With --cprofile, notices runs
under ``bench.probe`` and its CPU by function and time per SQL statement are printed (slower: a run to read,
not to take figures from).

Written: var/bench_notices_results.json and the services' logs, var/bench_notices_<service>.log.
"""

import bench.green  # noqa: F401  (first: eventlet's monkey patching)

# isort: split
import contextlib
import datetime as dt
import io
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import eventlet
import psycopg2.extensions
from nameko.standalone.rpc import ClusterRpcProxy

from bench import harness
from bench.harness import one_row, summarise
from bench.seed_grid import seeded
from services.notices.client import SEND_DIRECT
from shared.commands import command_queue_name

NOTICES_DATABASE = "grassroots_bench_notices"
RESULTS_FILE = "bench_notices_results.json"
FLOOR_RATIO = 4.0  # every delivery handed to its adapter within this many times the COPY floor
CPU_BOUND = 8.0  # CPU-seconds of grid, notices and PostgreSQL together for the whole fan-out
FLOOR_TRIES = 2
AUDIENCE_METHOD = "find_resident_columns"  # the grid method audience resolution pages with
PUBLISH_INTERVAL = DISPATCH_INTERVAL = 0.05  # the notices timers of the run (services/notices/config.yml)
SMS_RATE = 1_000_000  # far above what is reachable: the limiter must not be what is measured
# Each poll asks only cheap questions: counting 100,000 rows 20 times a second would take more than half a
# core from the work watched (PostgreSQL's CPU is in the goal). recipient_count is committed with the
# recipient rows; "any unfinished" repeats the claimable partial index's predicate, so it stops at the
# index's first entry (asking for 'queued' alone would walk past every 'sending' one; naming the notice
# too would walk its sent ones), and the database holds only this notice. "Any sent" is asked only until
# the first one is seen.
POLL = """SELECT status, recipient_count, EXISTS (SELECT 1 FROM deliveries WHERE status IN ('queued', 'sending')),
                 %(sent)s OR EXISTS (SELECT 1 FROM deliveries WHERE status = 'sent' AND NOT %(sent)s)
            FROM notices WHERE id = %(id)s"""
COUNTS = """SELECT (SELECT count(*) FROM recipients WHERE notice_id = %(id)s),
                   (SELECT count(*) FROM deliveries WHERE notice_id = %(id)s),
                   (SELECT count(*) FROM deliveries WHERE notice_id = %(id)s AND status = 'sent')"""


@dataclass
class Run:
    expected: int
    notice_id: int = 0
    t_create: float = 0.0  # monotonic: create_notice called
    t_approved: float = 0.0  # monotonic: approve_notice returned
    t_published: float | None = None  # first poll that saw the notice published
    t_first_sent: float | None = None  # first poll that saw a delivery sent
    t_done: float | None = None  # the poll that saw everything sent (confirmed by exact counts)
    t_last: float = 0.0  # the last poll
    counts: tuple = (0, 0, 0)  # recipients, deliveries, sent: exact counts at the end
    polls: list = field(default_factory=list)  # (s since approval, status, recipient_count, any unfinished, any sent)
    poll_ms: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def elapsed(self):
        """Seconds from approval to completion (or to the last poll, if it never completed)."""
        return (self.t_done or self.t_last) - self.t_approved

    def since_approval(self, moment):
        return moment - self.t_approved if moment else None


def street_facts(grid_url):
    """The bench street and how many residents live under it, straight from the grid database."""
    with seeded(grid_url) as (cur, targets):
        cur.execute("SELECT path FROM units WHERE id = %s", (targets["street"],))
        path = one_row(cur)[0]
        cur.execute("SELECT count(*) FROM residents WHERE unit_path LIKE %s", (path + "%",))
        expected = one_row(cur)[0]
        cur.execute("SELECT count(*) FROM residents")
        return {"street": targets["street"], "path": path, "expected": expected, "residents": one_row(cur)[0]}


# What resolving the audience reads from the grid: each resident's ids, path, encrypted phone and tags.
FLOOR_OUT = """COPY (SELECT r.id, r.household_id, r.unit_path, r.phone_enc,
                       (SELECT array_agg(t.tag) FROM resident_tags t WHERE t.resident_id = r.id)
                  FROM residents r WHERE r.unit_path >= %(path)s AND r.unit_path < %(end)s) TO STDOUT"""
FLOOR_TABLE = "bench_floor_deliveries"
FLOOR_COLUMNS = "id, notice_id, recipient_id, unit_path, channel, status, attempts, next_attempt_at, created_at"


def plain_copy(cur, statement, stream):
    """COPY on ``cur`` with eventlet's wait callback lifted (psycopg2 refuses COPY under one); wall seconds."""
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        started = time.perf_counter()
        cur.copy_expert(statement, stream)
        return time.perf_counter() - started
    finally:
        psycopg2.extensions.set_wait_callback(callback)


def copy_floor(grid_url, notices_url, path, expected):
    """The floor: COPY the audience's rows out of the grid database, and as many delivery rows into a
    scratch table like notices' deliveries (same columns and indexes), timed apart; the better of
    FLOOR_TRIES. Seconds: {"out_s", "in_s", "floor_s"}."""
    outs, ins = [], []
    with harness.cursor(grid_url) as grid, harness.cursor(notices_url) as notices:
        now = dt.datetime.now(dt.UTC).isoformat()
        for _ in range(FLOOR_TRIES):
            out = io.StringIO()
            query = grid.mogrify(FLOOR_OUT, {"path": path, "end": path[:-1] + "0"}).decode()
            outs.append(plain_copy(grid, query, out))
            rows = [line.split("\t", 3) for line in out.getvalue().splitlines()]
            if len(rows) != expected:
                raise RuntimeError(f"the floor's COPY out gave {len(rows):,} rows, not {expected:,}")
            lines = "".join(
                f"{n}\t1\t{n}\t{unit_path}\tsms\tqueued\t0\t{now}\t{now}\n"
                for n, (_id, _household, unit_path, _rest) in enumerate(rows, 1)
            )
            notices.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
            notices.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE deliveries INCLUDING ALL)")
            try:
                ins.append(plain_copy(notices, f"COPY {FLOOR_TABLE} ({FLOOR_COLUMNS}) FROM STDIN", io.StringIO(lines)))
            finally:
                notices.execute(f"DROP TABLE {FLOOR_TABLE}")
    out_s, in_s = min(outs), min(ins)
    return {"out_s": round(out_s, 3), "in_s": round(in_s, 3), "floor_s": round(out_s + in_s, 3)}


def fan_out(run, services, args, street, profile):
    """Create and approve the notice, then watch it until every delivery is sent (or ``args.timeout``)."""
    metrics_before = {name: service.request_durations() for name, service in services.items()} if profile else {}
    with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, context_data={"auth_token": harness.admin_token()}) as proxy:
        run.t_create = time.monotonic()
        notice = proxy.notices.create_notice(
            title="Bench: water supply interruption",
            body="Water is off 09:00-17:00 tomorrow on the whole street.",
            category="policy",
            severity="moderate",
            urgency="expected",
            audience={"under": [street]},
            channels=["sms"],
        )
        run.notice_id = int(notice["id"])
        approved = proxy.notices.approve_notice(notice_id=notice["id"])
        run.t_approved = time.monotonic()
    if approved["status"] != "approved":
        raise RuntimeError(f"notice {notice['id']} is {approved['status']} after approval")
    cpu_before = harness.cpu_now(services)
    with harness.cursor(args.notices_database_url) as cur:
        while True:
            started = time.monotonic()
            cur.execute(POLL, {"id": run.notice_id, "sent": run.t_first_sent is not None})
            status, recipients, any_unfinished, any_sent = one_row(cur)
            run.t_last, since = started, started - run.t_approved
            run.poll_ms.append((time.monotonic() - started) * 1000)
            run.polls.append((round(since, 3), status, recipients, any_unfinished, any_sent))
            if run.t_published is None and status == "published":
                run.t_published = started
            if run.t_first_sent is None and any_sent:
                run.t_first_sent = started
            if (status == "published" and recipients == run.expected and not any_unfinished) or since > args.timeout:
                cur.execute(COUNTS, {"id": run.notice_id})
                run.counts = one_row(cur)
                if run.counts == (run.expected,) * 3:
                    run.t_done = started
                    break
                if since > args.timeout:
                    break  # else published, nothing unfinished, not all sent: some failed; watch until the timeout
            for service in services.values():
                service.check_alive()
            eventlet.sleep(max(0.005, args.poll_interval - (time.monotonic() - started)))  # never back to back
    # Memory and CPU first: the metrics scrape below is work the fan-out did not do.
    run.cpu = harness.cpu_used(cpu_before, harness.cpu_now(services))
    run.memory = {name: service.memory() for name, service in services.items()}
    if profile:
        run.metrics = {
            name: harness.durations_delta(metrics_before[name], service.request_durations())
            for name, service in services.items()
        }


def seconds_after(later, earlier):
    return round((later - earlier).total_seconds(), 3) if later and earlier else None


def gaps_ms(stamps):
    return [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(stamps)]


def breakdown(run, notices_url, grid, floor):
    """Where the time went, printed: the stamps notices wrote, the grid's call log, both services' metrics."""
    with harness.cursor(notices_url) as cur:
        cur.execute("SELECT approved_at, published_at FROM notices WHERE id = %s", (run.notice_id,))
        approved, published = one_row(cur)
        # add_recipients takes ``now`` once per page, dispatch_due once per tick (its batch).
        cur.execute("SELECT created_at FROM deliveries WHERE notice_id = %s GROUP BY 1 ORDER BY 1", (run.notice_id,))
        pages = [row[0] for row in cur.fetchall()]
        cur.execute(
            "SELECT sent_at, count(*) FROM deliveries WHERE notice_id = %s AND sent_at IS NOT NULL "
            "GROUP BY 1 ORDER BY 1",
            (run.notice_id,),
        )
        batches = cur.fetchall()
    calls = grid.finished_calls("rpc", AUDIENCE_METHOD)
    grid_ms = [r["duration_ms"] for r in calls if harness.parse_log_time(r["time"]) >= approved]
    # A page's stamp is taken right after its grid call returned: the gap between stamps is one page's cost.
    page, grid_page = summarise(gaps_ms(pages)), summarise(grid_ms)
    publish, dispatch = (run.metrics["notices"].get(f"timer:{name}") for name in ("publish_due", "dispatch"))
    batch_gap, sizes = summarise(gaps_ms([stamp for stamp, _n in batches])), [n for _stamp, n in batches]
    first_page, last_page = (pages[i] if pages else None for i in (0, -1))
    first, last = (seconds_after(batches[i][0], approved) if batches else None for i in (0, -1))
    print("\nWhere the time went (the services' own stamps, the grid's call log, both services' metrics):")
    print(
        f"  resolution: {len(pages)} pages; approve -> first page {fmt_s(seconds_after(first_page, approved))}, first "
        f"-> last page {fmt_s(seconds_after(last_page, first_page))}; published "
        f"{fmt_s(seconds_after(published, approved))} after approve (service stamps)"
    )
    for label, stats in (("one page, stamp to stamp:     ", page), (f"grid {AUDIENCE_METHOD} (its log):", grid_page)):
        if stats:
            print(
                f"    {label} mean {stats['mean_ms']:6.1f} ms, p50 {stats['p50_ms']:6.1f}, p99 {stats['p99_ms']:6.1f}"
                f", max {stats['max_ms']:6.1f}; {stats['n']} of them, "
                f"{stats['mean_ms'] * stats['n'] / 1000:.2f} s in all"
            )
    if page and grid_page:  # beyond the grid's own handling: transport, decoding, encrypting the phones, inserts
        print(f"    notices side (page - grid):    mean {page['mean_ms'] - grid_page['mean_ms']:6.1f} ms")
    if publish:
        print(f"    publish_due timer: {publish['calls']} ticks, {publish['seconds']:.2f} s busy")
    print(f"  dispatch: {len(batches)} batches; first starts {fmt_s(first)}, last starts {fmt_s(last)} after approve")
    if batch_gap:  # ticks run back to back while there is a backlog: the gap between batch starts is one busy tick
        print(
            f"    batch size mean {statistics.fmean(sizes):,.0f}, max {max(sizes):,}; batch start to next: mean "
            f"{batch_gap['mean_ms']:.0f} ms, p50 {batch_gap['p50_ms']:.0f}, max {batch_gap['max_ms']:.0f}"
        )
    slow = dispatch["calls"] - dispatch["calls_up_to_s"]["0.5"] if dispatch else None
    if dispatch:
        busy = f"{dispatch['seconds']:.2f} s busy"
        print(f"    dispatch timer: {dispatch['calls']} ticks, {busy}, {slow} of them over 0.5 s")
    cpu = run.cpu
    print(
        f"  CPU-s: grid {cpu['grid']:.2f} + notices {cpu['notices']:.2f} + PostgreSQL {cpu['postgres']:.2f} = "
        f"{service_cpu(run):.2f} ({service_cpu(run) * 1e6 / max(1, run.expected):.0f} us a delivery); "
        f"wall {run.elapsed:.2f} s = {run.elapsed / floor['floor_s']:.2f}x the COPY floor ({floor['floor_s']:.3f} s)"
    )
    return {
        "pages": len(pages),
        "page_gap": page,
        "grid_find_residents": grid_page,
        "approve_to_published_s": seconds_after(published, approved),
        "batch_sizes": sizes,
        "batch_gap": batch_gap,
        "dispatch_ticks_over_0.5_s": slow,
    }


def fmt_s(value):
    return f"{value:.2f} s" if value is not None else "-"


def service_cpu(run):
    """CPU-seconds of grid, notices and PostgreSQL together during the fan-out."""
    return sum(run.cpu[name] for name in ("grid", "notices", "postgres"))


def goals(run, floor):
    """The two goal rows (``bench.harness.goal``); an incomplete run misses both."""
    rows = [
        harness.goal(
            f"notices fan-out {run.expected:,}: all handed to adapters",
            run.elapsed,
            f"<= {FLOOR_RATIO:g}x COPY floor",
            floor=floor["floor_s"],
            ratio_target=FLOOR_RATIO,
            unit="s",
        ),
        harness.goal(
            "notices fan-out CPU-s (grid+notices+PostgreSQL)",
            service_cpu(run),
            f"<= {CPU_BOUND:g} CPU-s",
            bound=CPU_BOUND,
            unit="CPU-s",
        ),
    ]
    return rows if run.t_done else [{**row, "verdict": "MISS"} for row in rows]


def report(run, facts, args, problems, loads, floor, rows_goals):
    recipients, deliveries, sent = run.counts
    rate = harness.rate(sent, run.elapsed)
    memory, cpu, to_end = run.memory, run.cpu, (run.t_done or run.t_last) - run.t_create
    print(
        f"\nNotices fan-out: 1 notice -> street {facts['street']} ({facts['expected']:,} of {facts['residents']:,} "
        f"residents), channel sms -> stub adapter\n  publish/dispatch interval {PUBLISH_INTERVAL:g}/"
        f"{DISPATCH_INTERVAL:g} s, dispatch batch {args.dispatch_batch:,}, sms rate {SMS_RATE:,}/s, poll every "
        f"{args.poll_interval:g} s; {os.cpu_count()} CPUs\n"
    )
    rows = [
        ["recipients / deliveries / sent", f"{recipients:,} / {deliveries:,} / {sent:,} (expected {run.expected:,})"],
        ["audience resolved (published)", f"{fmt_s(run.since_approval(run.t_published))} after approve"],
        ["first delivery handed to the stub adapter", f"{fmt_s(run.since_approval(run.t_first_sent))} after approve"],
        ["all handed to the stub adapters", f"{fmt_s(run.elapsed)} after approve ({fmt_s(to_end)} after create)"],
        ["deliveries/s (sent / time from approve)", f"{rate:,.0f}"],
        *[
            [f"peak RSS {name} (VmHWM)", f"{memory[name]['peak_kib'] / 1024:.1f} MiB (pid {memory[name]['pid']})"]
            for name in ("notices", "grid")
        ],
        [
            "CPU s notices / grid / postgres / rabbitmq / bench",
            " / ".join(f"{cpu[name]:.1f}" for name in ("notices", "grid", "postgres", "rabbitmq", "bench"))
            + f" in {cpu['wall_s']:.1f} s",
        ],
        [
            "floor: COPY audience out + deliveries in (PostgreSQL)",
            f"{floor['floor_s']:.3f} s ({floor['out_s']:.3f} out + {floor['in_s']:.3f} in)",
        ],
        *[
            [
                f"goal: {row['case']}",
                f"{row['figure']:g} {row['unit']}"
                + (f" = {row['ratio']:.2f}x floor" if row["ratio"] is not None else "")
                + f" (target {row['target']}): {row['verdict']}",
            ]
            for row in rows_goals
        ],
    ]
    if not run.t_done:
        rows.append(["incomplete", f"after {run.elapsed:.0f} s: {sent:,} of {run.expected:,} sent"])
    harness.print_table([("metric", 52), ("value", 0)], rows)
    poll = summarise(run.poll_ms)
    print(f"  watcher: {poll['n']} polls, query mean {poll['mean_ms']:.2f} ms, max {poll['max_ms']:.1f} ms")
    if problems:
        print(f"  WARNING: the services logged {len(problems)} warning/error lines, first: {problems[0]}")
    print("  " + harness.load_line(loads))
    return rate


def run_bench(args):
    harness.warn_other_benches()
    facts = street_facts(args.grid_database_url)
    # notices declares its durable command queue; one this run creates goes with it, or it would keep the
    # commands of a later run without notices (bench.volunteer_matching's offers) for the next notices here.
    queues = {**harness.rpc_queues("grid", "notices"), command_queue_name("notices", SEND_DIRECT): "a notices service"}
    existed = harness.claim_queues(args.amqp_uri, queues)
    print(f"Notices fan-out bench: recreating {harness.database_name(args.notices_database_url)}", flush=True)
    harness.fresh_database(args.notices_database_url, "notices")
    envs = {
        # Housekeeping would expire tags in the shared bench database; keep it out of the run.
        "grid": {"GRID_DATABASE_URL": args.grid_database_url, "GRID_HOUSEKEEPING_INTERVAL": "3600"},
        "notices": {
            "NOTICES_DATABASE_URL": args.notices_database_url,
            "NOTICES_SMS_GATEWAY_URL": "stub",
            "NOTICES_SMS_RATE": str(SMS_RATE),
            "NOTICES_PUBLISH_INTERVAL": str(PUBLISH_INTERVAL),
            "NOTICES_DISPATCH_INTERVAL": str(DISPATCH_INTERVAL),
            "NOTICES_DISPATCH_BATCH": str(args.dispatch_batch),
        },
    }
    services = {
        n: harness.ServiceProcess(
            n, args.amqp_uri, f"bench_notices_{n}.log", env, probe=args.cprofile and n == "notices"
        )
        for n, env in envs.items()
    }
    run = Run(expected=facts["expected"])
    loads = [os.getloadavg()]
    print("  the floor: COPY the audience out of grid's database, deliveries into a scratch table ...", flush=True)
    floor = copy_floor(args.grid_database_url, args.notices_database_url, facts["path"], facts["expected"])
    try:
        harness.start_services(services, args.amqp_uri)
        eventlet.sleep(1.0)  # let start-up work (first timer ticks, pool connections) settle
        print(f"  fanning out to {facts['expected']:,} residents of street {facts['street']} ...", flush=True)
        # --cprofile: notices' own CPU by function (cProfile slows it: not a run to take figures from).
        profiling: contextlib.AbstractContextManager[dict] = (
            services["notices"].profiled(1) if args.cprofile else contextlib.nullcontext({})
        )
        with profiling as cprofile:
            fan_out(run, services, args, facts["street"], args.profile)
    finally:
        harness.stop_services(services, args.amqp_uri, existed)
    loads.append(os.getloadavg())
    problems = services["grid"].problems() + services["notices"].problems()
    rows_goals = goals(run, floor)
    rate = report(run, facts, args, problems, loads, floor, rows_goals)
    analysis = breakdown(run, args.notices_database_url, services["grid"], floor) if args.profile else None
    if args.cprofile:
        harness.print_profile("notices, the whole fan-out under cProfile", cprofile)
    passed = run.t_done is not None and all(row["verdict"] == "pass" for row in rows_goals)
    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "grid_database": facts,
        "settings": {
            "dispatch_batch": args.dispatch_batch,
            "poll_interval": args.poll_interval,
            "publish_interval": PUBLISH_INTERVAL,
            "dispatch_interval": DISPATCH_INTERVAL,
            "sms_rate": SMS_RATE,
        },
        "environment": harness.environment(loads),
        "notice_id": run.notice_id,
        "expected": run.expected,
        "complete": run.t_done is not None,
        **dict(zip(("recipients", "deliveries", "sent"), run.counts, strict=True)),
        "create_to_approved_s": round(run.t_approved - run.t_create, 3),
        "resolved_s": run.since_approval(run.t_published),
        "first_sent_s": run.since_approval(run.t_first_sent),
        "all_sent_s": round(run.elapsed, 3),
        "all_sent_from_create_s": round((run.t_done or run.t_last) - run.t_create, 3),
        "deliveries_per_s": round(rate, 1),
        "floor": floor,
        "goals": rows_goals,
        "pass": passed,
        "memory": run.memory,
        "cpu_seconds": run.cpu,
        "service_metrics": run.metrics,
        "breakdown": analysis,
        "watcher_query": summarise(run.poll_ms),
        "polls": run.polls,
        "service_problems": problems[:50],
    }
    print(f"Results written to {harness.save_json(RESULTS_FILE, results)}")
    return passed


def main(argv=None):
    parser = harness.parser(
        "bench.notices_fanout", __doc__, "also say where the time went (the services' stamps, log, metrics)"
    )
    harness.add_database_args(parser, "notices", NOTICES_DATABASE)
    parser.add_argument("--dispatch-batch", type=int, default=5000, help="NOTICES_DISPATCH_BATCH: deliveries per tick")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up this many seconds after approval")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="profile notices (cProfile, SQL per statement): slower, for reading only",
    )
    args = harness.parse(parser, argv, positive=("dispatch_batch", "poll_interval", "timeout"))
    args.notices_database_url = harness.own_database(parser, args, "notices", NOTICES_DATABASE)
    return 0 if run_bench(args) else 1


if __name__ == "__main__":
    sys.exit(main())
