"""Fan-out of one notice to a whole street (~100,000 residents) through the notices service.

    python -m bench.notices_fanout [--grid-database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench] \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--dispatch-batch 5000]

Needs the grid bench database seeded by ``python -m bench.seed_grid`` (and the
same GRASSROOTS_PII_KEY). Recreates a notices database beside it
(``grassroots_bench_notices``), starts the grid and the notices service each as
its own ``nameko run`` process, creates one moderate SMS notice addressed to the
bench street, approves it, and watches the notices database until every
resident under the street has a recipient row and an SMS delivery that the
stub adapter accepted (status ``sent``).

Timed from approve_notice's return (and, for reference, from create_notice's
call): when the audience was fully resolved (``published``) and when the last
delivery was handed to the adapter. Target: all handed over within 10 s
(>= 10,000 deliveries/s). Also reported: each service's peak RSS (VmHWM), the
CPU each process used during the fan-out, and a breakdown of where the time
went: grid page calls from the grid's log, the page and batch stamps the
notices service writes (deliveries' created_at and sent_at), and its timer
ticks from its /metrics (successful ticks are not logged at INFO).

With ``--py-spy PATH`` (a py-spy binary; not a project dependency) both services
are also sampled during the fan-out and the hottest lines printed; a profiled
run is somewhat slower.

Written: var/bench_notices_results.json and the services' logs,
var/bench_notices_grid.log and var/bench_notices_notices.log (and with
--py-spy, var/bench_notices_profile_<service>.txt in py-spy's raw format).
"""

import warnings

# eventlet warns on import that it is deprecated (a plain Warning subclass); we know.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

# Before anything imports socket, threading or time: nameko's standalone proxy needs the green versions.
eventlet.monkey_patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psycopg2  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import jwt_secret, save_json, var_path  # noqa: E402
from bench.db import libpq_url, one_row, recreate_database  # noqa: E402
from bench.harness import (  # noqa: E402
    ServiceProcess,
    claim_rpc_queues,
    cpu_now,
    cpu_used,
    delete_unused_queue,
    environment,
    percentile,
    rpc_queue_state,
    start_services,
    stop_process,
    stop_services,
)
from bench.seed_grid import bench_targets  # noqa: E402
from services.notices.client import SEND_DIRECT  # noqa: E402
from services.registry import get as service_entry  # noqa: E402
from shared.auth import mint_token  # noqa: E402
from shared.commands import command_queue_name  # noqa: E402

DEFAULT_GRID_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/grassroots_bench"
NOTICES_DATABASE = "grassroots_bench_notices"
RESULTS_FILE = "bench_notices_results.json"
TARGET_S = 10.0  # every delivery handed to its adapter within this many seconds of approval

# Service settings of the run (env vars of `nameko run`; see services/notices/config.yml).
PUBLISH_INTERVAL = 0.05
DISPATCH_INTERVAL = 0.05
DEFAULT_DISPATCH_BATCH = 5000
SMS_RATE = 1_000_000  # far above what is reachable: the limiter must not be what is measured


# ---- small helpers --------------------------------------------------------


def summarise_ms(samples):
    if not samples:
        return None
    return {
        "n": len(samples),
        "sum_ms": round(sum(samples), 1),
        "mean_ms": round(statistics.fmean(samples), 2),
        "p50_ms": round(percentile(samples, 50), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "max_ms": round(max(samples), 2),
    }


def parse_log_time(stamp):
    """The services' log ``time`` field (UTC, millisecond resolution) as an aware datetime."""
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def mib(kib):
    return kib / 1024 if kib is not None else None


# ---- the services under test ----------------------------------------------


def notices_service(name, amqp_uri, env):
    """``nameko run`` of one service, its output in var/bench_notices_<name>.log."""
    return ServiceProcess(
        name,
        amqp_uri,
        f"bench_notices_{name}.log",
        {
            "LOG_LEVEL": "INFO",  # the breakdown reads the "call finished" lines
            **env,
        },
    )


def logged_calls(service):
    """Every "call finished" line the service logged: (end time, entrypoint, method, duration_ms)."""
    return [
        (parse_log_time(record["time"]), record.get("entrypoint"), record.get("method"), record["duration_ms"])
        for record in service.finished_calls()
    ]


def describe_problem(record):
    """One warning or error line of a service's log, for ``ServiceProcess.problems``."""
    return f"{record.get('level')}: {record.get('message')} {record.get('error_type') or ''}"


# ---- databases --------------------------------------------------------------


def grid_facts(grid_url):
    """The bench street and how many residents live under it, straight from the grid database."""
    try:
        conn = psycopg2.connect(libpq_url(grid_url))
    except psycopg2.OperationalError as exc:
        raise SystemExit(
            f"cannot open the grid bench database ({exc.pgerror or str(exc).strip()}).\n"
            f"Seed it first: python -m bench.seed_grid --database-url {grid_url}"
        ) from None
    try:
        with conn.cursor() as cur:
            try:
                targets = bench_targets(cur)
            except (RuntimeError, psycopg2.Error):
                raise SystemExit(
                    f"{make_url(grid_url).database} holds no bench district. Seed it first: "
                    f"python -m bench.seed_grid --database-url {grid_url}"
                ) from None
            street = targets["street"]
            cur.execute("SELECT path FROM units WHERE id = %s", (street,))
            path = one_row(cur)[0]
            cur.execute("SELECT count(*) FROM residents WHERE unit_path LIKE %s", (path + "%",))
            expected = one_row(cur)[0]
            cur.execute("SELECT count(*) FROM residents")
            total = one_row(cur)[0]
    finally:
        conn.close()
    return {"street": street, "path": path, "expected": expected, "residents": total}


@dataclass
class Progress:
    at: float  # monotonic, seconds: when the poll started
    status: str
    recipients: int
    any_queued: bool
    any_sent: bool


@dataclass
class Counts:
    recipients: int
    deliveries: int
    sent: int


class Watcher:
    """Watches one notice's progress in the notices database (its own autocommit connection).

    Counting 100,000 rows three times takes ~30 ms of PostgreSQL CPU; at 20 polls
    a second that is more than half a core of this 2-core machine, taken from the
    work being watched. So each poll only asks cheap questions: the notice's status
    and ``recipient_count`` (committed in the same transaction as the recipient
    rows) and whether any delivery is still queued / already sent (EXISTS on the
    (status, next_attempt_at) index, which stops at the first live entry; the
    database holds only this notice). When a poll finds the notice published with
    every recipient and nothing queued, the exact counts confirm it; the clock
    stops at that poll.
    """

    POLL = """
        SELECT status, recipient_count,
               EXISTS (SELECT 1 FROM deliveries WHERE status = 'queued'),
               EXISTS (SELECT 1 FROM deliveries WHERE status = 'sent')
        FROM notices WHERE id = %s
    """
    COUNTS = """
        SELECT (SELECT count(*) FROM recipients WHERE notice_id = %(id)s),
               (SELECT count(*) FROM deliveries WHERE notice_id = %(id)s),
               (SELECT count(*) FROM deliveries WHERE notice_id = %(id)s AND status = 'sent')
    """

    def __init__(self, url, notice_id):
        self.conn = psycopg2.connect(libpq_url(url))
        self.conn.autocommit = True
        self.notice_id = notice_id
        self.query_ms = []

    def poll(self):
        started = time.monotonic()
        with self.conn.cursor() as cur:
            cur.execute(self.POLL, (self.notice_id,))
            status, recipients, any_queued, any_sent = one_row(cur)
        self.query_ms.append((time.monotonic() - started) * 1000)
        return Progress(started, status, recipients, any_queued, any_sent)

    def counts(self):
        with self.conn.cursor() as cur:
            cur.execute(self.COUNTS, {"id": self.notice_id})
            return Counts(*one_row(cur))

    def close(self):
        self.conn.close()


# ---- service metrics ----------------------------------------------------------


def scrape_durations(port):
    """{(entrypoint, method): {"count", "sum", "buckets"}} from a service's /metrics.

    Timer ticks are not in the INFO log (only failures are), but every entrypoint
    call is counted in the request-duration histogram.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[tuple[str, str], dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "grassroots_request_duration_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels["entrypoint"], sample.labels["method"])
            entry = found.setdefault(key, {"count": 0.0, "sum": 0.0, "buckets": {}})
            if sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
            elif sample.name.endswith("_bucket"):
                entry["buckets"][sample.labels["le"]] = sample.value
    return found


def duration_delta(before, after):
    """What each entrypoint method added between two scrapes: calls, seconds, calls per bucket."""
    delta = {}
    for key, now in after.items():
        then = before.get(key, {"count": 0.0, "sum": 0.0, "buckets": {}})
        calls = int(now["count"] - then["count"])
        if calls:
            cumulative = {le: int(n - then["buckets"].get(le, 0.0)) for le, n in now["buckets"].items()}
            delta[f"{key[0]}:{key[1]}"] = {
                "calls": calls,
                "seconds": round(now["sum"] - then["sum"], 3),
                "calls_up_to_s": cumulative,
            }
    return delta


# ---- the run --------------------------------------------------------------


@dataclass
class Run:
    expected: int
    settings: dict
    notice_id: int = 0
    t_create: float = 0.0  # monotonic: create_notice called
    t_approved: float = 0.0  # monotonic: approve_notice returned
    t_published: float | None = None  # first poll that saw the notice published
    t_first_sent: float | None = None  # first poll that saw a delivery sent
    t_done: float | None = None  # the poll that saw everything sent (confirmed by exact counts)
    t_last: float = 0.0  # the last poll
    counts: Counts | None = None  # exact counts at the end
    polls: list = field(default_factory=list)  # (s since approval, status, recipient_count, any queued, any sent)
    poll_ms: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def complete(self):
        return self.t_done is not None

    @property
    def elapsed(self):
        """Seconds from approval to completion (or to the last poll, if it never completed)."""
        return (self.t_done or self.t_last) - self.t_approved


def fan_out(run, services, amqp_uri, notices_url, street, token, poll_interval, timeout):
    """Create and approve the notice, then watch it until every delivery is sent (or ``timeout``)."""
    metrics_before = {name: scrape_durations(service.port) for name, service in services.items()}
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
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

    cpu_before = cpu_now(services)
    watcher = Watcher(notices_url, run.notice_id)
    try:
        while True:
            progress = watcher.poll()
            run.t_last = progress.at
            since = progress.at - run.t_approved
            run.polls.append(
                (round(since, 3), progress.status, progress.recipients, progress.any_queued, progress.any_sent)
            )
            if run.t_published is None and progress.status == "published":
                run.t_published = progress.at
            if run.t_first_sent is None and progress.any_sent:
                run.t_first_sent = progress.at
            if progress.status == "published" and progress.recipients == run.expected and not progress.any_queued:
                run.counts = watcher.counts()
                if run.counts.sent == run.counts.deliveries == run.counts.recipients == run.expected:
                    run.t_done = progress.at
                    break
                # Published and nothing queued, yet not all sent: some failed. Keep watching until timeout.
            if since > timeout:
                run.counts = watcher.counts()
                break
            for service in services.values():
                service.check_alive()
            # Every ~poll_interval from the start of the last poll, never back to back.
            eventlet.sleep(max(0.005, poll_interval - (time.monotonic() - progress.at)))
    finally:
        run.poll_ms = watcher.query_ms
        watcher.close()
    # Memory and CPU first: the metrics scrape below is work the fan-out did not do.
    cpu_after = cpu_now(services)
    run.cpu = {"window_s": round(cpu_after.at - cpu_before.at, 3), **cpu_used(cpu_before, cpu_after)}
    run.memory = {name: service.memory() for name, service in services.items()}
    run.metrics = {
        name: duration_delta(metrics_before[name], scrape_durations(service.port)) for name, service in services.items()
    }


# ---- where the time went ----------------------------------------------------


def service_stamps(notices_url, notice_id):
    """Stamps the notices service itself wrote: one ``created_at`` per resolved page (add_recipients
    takes ``now`` once per page) and one ``sent_at`` per dispatch batch (dispatch_due's ``now``, taken
    when its tick starts)."""
    conn = psycopg2.connect(libpq_url(notices_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT created_at, approved_at, published_at, recipient_count FROM notices WHERE id = %s", (notice_id,)
            )
            created_at, approved_at, published_at, recipient_count = one_row(cur)
            cur.execute(
                "SELECT created_at, count(*) FROM deliveries WHERE notice_id = %s "
                "GROUP BY created_at ORDER BY created_at",
                (notice_id,),
            )
            pages = cur.fetchall()
            cur.execute(
                "SELECT sent_at, count(*) FROM deliveries WHERE notice_id = %s AND sent_at IS NOT NULL "
                "GROUP BY sent_at ORDER BY sent_at",
                (notice_id,),
            )
            batches = cur.fetchall()
            cur.execute("SELECT status, count(*) FROM deliveries WHERE notice_id = %s GROUP BY status", (notice_id,))
            statuses = dict(cur.fetchall())
            cur.execute("SELECT pg_total_relation_size('recipients'), pg_total_relation_size('deliveries')")
            sizes = one_row(cur)
    finally:
        conn.close()
    return {
        "created_at": created_at,
        "approved_at": approved_at,
        "published_at": published_at,
        "recipient_count": recipient_count,
        "pages": pages,
        "batches": batches,
        "statuses": statuses,
        "table_bytes": {"recipients": sizes[0], "deliveries": sizes[1]},
    }


def seconds_after(later, earlier):
    return round((later - earlier).total_seconds(), 3) if later and earlier else None


def gaps_ms(stamps):
    return [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(stamps)]


def slow_calls(metric, over_s):
    """How many calls of a duration-histogram delta took longer than ``over_s`` (a bucket bound)."""
    buckets = metric["calls_up_to_s"]
    key = next((le for le in buckets if le != "+Inf" and math.isclose(float(le), over_s)), None)
    return metric["calls"] - buckets[key] if key else None


def breakdown(stamps, grid_calls, metrics):
    """Join the service stamps, the grid's log and both services' metrics into the figures reported."""
    approved = stamps["approved_at"]
    page_stamps = [stamp for stamp, _count in stamps["pages"]]
    page_gaps = gaps_ms(page_stamps)
    grid_ms = [
        ms
        for end, entrypoint, method, ms in grid_calls
        if entrypoint == "rpc" and method == "find_residents" and end >= approved
    ]
    publish = metrics["notices"].get("timer:publish_due")
    resolution = {
        "pages": len(page_stamps),
        "approve_to_first_page_s": seconds_after(page_stamps[0], approved) if page_stamps else None,
        "first_to_last_page_s": seconds_after(page_stamps[-1], page_stamps[0]) if page_stamps else None,
        "approve_to_published_s": seconds_after(stamps["published_at"], approved),
        # A page's stamp is taken when its rows are built, right after its grid call
        # returned; the gap between stamps is one page's whole cost.
        "page_gap": summarise_ms(page_gaps),
        "grid_find_residents": summarise_ms(grid_ms),
        "publish_due_timer": publish,
    }
    if page_gaps and grid_ms:
        # Beyond the grid's own handling: RPC transport, decoding the reply, encrypting the
        # phone numbers, the inserts and commits, and sharing the process with the dispatcher.
        resolution["notices_side_per_page_ms"] = round(statistics.fmean(page_gaps) - statistics.fmean(grid_ms), 1)

    batch_stamps = [stamp for stamp, _count in stamps["batches"]]
    dispatch_timer = metrics["notices"].get("timer:dispatch")
    dispatch = {
        "batches": len(batch_stamps),
        "approve_to_first_batch_s": seconds_after(batch_stamps[0], approved) if batch_stamps else None,
        "approve_to_last_batch_s": seconds_after(batch_stamps[-1], approved) if batch_stamps else None,
        "batch_sizes": [count for _stamp, count in stamps["batches"]],
        # Ticks run back to back while there is a backlog, so the gap between batch
        # starts is about one busy tick (batch query, decrypt, adapter, update, commit).
        "batch_gap": summarise_ms(gaps_ms(batch_stamps)),
        "dispatch_timer": dispatch_timer,
        "ticks_over_0.5_s": slow_calls(dispatch_timer, 0.5) if dispatch_timer else None,
    }
    # Cumulative deliveries created (per page stamp) and sent (per batch stamp), for plotting.
    timeline: dict[str, list[tuple[float, int]]] = {"created": [], "sent": []}
    for key, rows in (("created", stamps["pages"]), ("sent", stamps["batches"])):
        total = 0
        for stamp, count in rows:
            total += count
            timeline[key].append((seconds_after(stamp, approved), total))
    return {"resolution": resolution, "dispatch": dispatch, "timeline": timeline}


class Profiler:
    """``py-spy record`` of one service for the fan-out (optional: --py-spy PATH).

    Samples every stack, idle ones too (the eventlet hub waiting on sockets), in
    py-spy's "raw" collapsed format: one line per distinct stack and its count.
    Non-blocking sampling, so the service is never paused; py-spy itself takes some
    CPU, so a profiled run is slower than an unprofiled one.
    """

    def __init__(self, py_spy, service, rate=100):
        self.service = service.name
        self.path = var_path(f"bench_notices_profile_{service.name}.txt")
        self.process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(service.process.pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--idle",
                "--nonblocking",
                "--output",
                self.path,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self):
        stop_process(self.process, signal.SIGINT, timeout=30)  # py-spy writes its output on Ctrl-C

    def summary(self, top=12):
        """Share of samples idle; inclusive share of the project's own functions; top leaf functions."""
        stacks = []
        try:
            with open(self.path) as raw:
                for line in raw:
                    stack, _, samples = line.rstrip("\n").rpartition(" ")
                    if stack:
                        stacks.append((stack.split(";"), int(samples)))
        except OSError:
            return None
        total = sum(count for _frames, count in stacks)
        if not total:
            return None
        idle = 0
        inclusive: dict[str, int] = {}
        leaves: dict[str, int] = {}
        for frames, count in stacks:
            if "(eventlet/hubs/" in frames[-1]:  # the hub polling its sockets: nothing to run
                idle += count
                continue
            # Per line of the project's own code (which call in a function is the costly one).
            for frame in {f for f in frames if f.split("(", 1)[-1].startswith(("services/", "shared/"))}:
                inclusive[frame] = inclusive.get(frame, 0) + count
            leaf = frames[-1].rsplit(":", 1)[0] + ")"  # library leaves per function
            leaves[leaf] = leaves.get(leaf, 0) + count

        def ranked(counts):
            return [(name, round(100 * n / total, 1)) for name, n in sorted(counts.items(), key=lambda i: -i[1])[:top]]

        return {
            "samples": total,
            "busy_pct": round(100 * (total - idle) / total, 1),
            "project_inclusive_pct": ranked(inclusive),
            "leaf_self_pct": ranked(leaves),
            "raw": self.path,
        }


# ---- report -----------------------------------------------------------------


def fmt_s(value):
    return f"{value:.2f} s" if value is not None else "-"


def print_summary(run, facts, analysis, profiles, problems, loads):
    settings, memory, cpu, counts = run.settings, run.memory, run.cpu, run.counts
    elapsed = run.elapsed
    rate = counts.sent / elapsed if elapsed > 0 else 0.0
    resolved = run.t_published - run.t_approved if run.t_published else None
    first_sent = run.t_first_sent - run.t_approved if run.t_first_sent else None
    if run.complete:
        verdict = f"{'PASS' if elapsed <= TARGET_S else 'MISS'} ({elapsed / TARGET_S:.2f}x of {TARGET_S:g} s)"
    else:
        verdict = f"MISS (incomplete after {elapsed:.0f} s: {counts.sent:,} of {run.expected:,} sent)"

    print(
        f"\nNotices fan-out: 1 notice -> street {facts['street']} ({facts['expected']:,} of "
        f"{facts['residents']:,} residents), channel sms -> stub adapter"
    )
    print(
        f"  publish/dispatch interval {settings['publish_interval']:g}/{settings['dispatch_interval']:g} s, "
        f"dispatch batch {settings['dispatch_batch']:,}, sms rate {settings['sms_rate']:,}/s, "
        f"poll every {settings['poll_interval']:g} s; {os.cpu_count()} CPUs"
    )
    rows = [
        (
            "recipients / deliveries / sent",
            f"{counts.recipients:,} / {counts.deliveries:,} / {counts.sent:,} (expected {run.expected:,})",
        ),
        (
            "audience resolved (published)",
            f"{fmt_s(resolved)} after approve (service stamps: "
            f"{fmt_s(analysis['resolution']['approve_to_published_s'])})",
        ),
        ("first delivery handed to the stub adapter", f"{fmt_s(first_sent)} after approve"),
        (
            "all handed to the stub adapters",
            f"{fmt_s(elapsed)} after approve ({fmt_s((run.t_done or run.t_last) - run.t_create)} after create)",
        ),
        ("deliveries/s (sent / time from approve)", f"{rate:,.0f}"),
        ("peak RSS notices (VmHWM)", f"{mib(memory['notices']['peak_kib']):.1f} MiB (pid {memory['notices']['pid']})"),
        ("peak RSS grid (VmHWM)", f"{mib(memory['grid']['peak_kib']):.1f} MiB (pid {memory['grid']['pid']})"),
        (
            "CPU s notices / grid / postgres / rabbitmq / bench",
            f"{cpu['notices']:.1f} / {cpu['grid']:.1f} / {cpu['postgres']:.1f} / {cpu['rabbitmq']:.1f} / "
            f"{cpu['bench']:.1f} in {cpu['window_s']:.1f} s",
        ),
        (f"target: all sent <= {TARGET_S:g} s (>= {run.expected / TARGET_S:,.0f}/s)", verdict),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 50}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")

    res, dis = analysis["resolution"], analysis["dispatch"]
    print("\nWhere the time went (the services' own stamps, the grid's call log, both services' metrics):")
    print(
        f"  resolution: {res['pages']} pages; approve -> first page {fmt_s(res['approve_to_first_page_s'])}, "
        f"first -> last page {fmt_s(res['first_to_last_page_s'])}"
    )
    gap, grid_page, publish = res["page_gap"], res["grid_find_residents"], res["publish_due_timer"]
    if gap:
        print(
            f"    one page, stamp to stamp:      mean {gap['mean_ms']:6.1f} ms, p50 {gap['p50_ms']:6.1f}, "
            f"p99 {gap['p99_ms']:6.1f}, max {gap['max_ms']:6.1f}"
        )
    if grid_page:
        print(
            f"    grid find_residents (its log): mean {grid_page['mean_ms']:6.1f} ms, "
            f"p50 {grid_page['p50_ms']:6.1f}, "
            f"p99 {grid_page['p99_ms']:6.1f}, max {grid_page['max_ms']:6.1f}; {grid_page['n']} calls, "
            f"{grid_page['sum_ms'] / 1000:.2f} s in all"
        )
    if "notices_side_per_page_ms" in res:
        print(f"    notices side (page - grid):    mean {res['notices_side_per_page_ms']:6.1f} ms")
    if publish:
        print(f"    publish_due timer: {publish['calls']} ticks, {publish['seconds']:.2f} s busy")
    print(
        f"  dispatch: {dis['batches']} batches; first starts {fmt_s(dis['approve_to_first_batch_s'])}, "
        f"last starts {fmt_s(dis['approve_to_last_batch_s'])} after approve"
    )
    if dis["batch_sizes"]:
        sizes = dis["batch_sizes"]
        batch_gap = dis["batch_gap"]
        gap_text = (
            (
                f"; batch start to next: mean {batch_gap['mean_ms']:.0f} ms, p50 {batch_gap['p50_ms']:.0f}, "
                f"max {batch_gap['max_ms']:.0f}"
            )
            if batch_gap
            else ""
        )
        print(f"    batch size mean {statistics.fmean(sizes):,.0f}, max {max(sizes):,}{gap_text}")
    timer = dis["dispatch_timer"]
    if timer:
        print(
            f"    dispatch timer: {timer['calls']} ticks, {timer['seconds']:.2f} s busy, "
            f"{dis['ticks_over_0.5_s']} of them over 0.5 s"
        )
    for name, profile in profiles.items():
        if not profile:
            print(f"  profile of {name}: no samples")
            continue
        print(
            f"  profile of {name} (py-spy, {profile['samples']:,} samples, busy {profile['busy_pct']:.0f}%; "
            f"% of all samples):"
        )
        print(
            "    own code, inclusive: "
            + "; ".join(f"{frame} {pct}%" for frame, pct in profile["project_inclusive_pct"])
        )
        print("    leaf functions:      " + "; ".join(f"{frame} {pct}%" for frame, pct in profile["leaf_self_pct"]))
    poll = summarise_ms(run.poll_ms)
    print(f"  watcher: {poll['n']} polls, query mean {poll['mean_ms']:.2f} ms, max {poll['max_ms']:.1f} ms")
    if problems:
        print(f"  WARNING: the services logged {len(problems)} warning/error lines, first: {problems[0]}")
    print(f"  load average {loads[0][0]:.2f} before, {loads[1][0]:.2f} after")
    return {"rate": rate, "resolved": resolved, "first_sent": first_sent, "pass": run.complete and elapsed <= TARGET_S}


def write_results(run, facts, stamps, analysis, profiles, summary, problems, loads):
    counts = run.counts

    def rounded(value):
        return round(value, 3) if value is not None else None

    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "grid_database": facts,
        "settings": run.settings,
        "environment": environment(loads),
        "notice_id": run.notice_id,
        "expected": run.expected,
        "complete": run.complete,
        "recipients": counts.recipients,
        "deliveries": counts.deliveries,
        "sent": counts.sent,
        "create_to_approved_s": rounded(run.t_approved - run.t_create),
        "resolved_s": rounded(summary["resolved"]),
        "first_sent_s": rounded(summary["first_sent"]),
        "all_sent_s": rounded(run.elapsed),
        "all_sent_from_create_s": rounded((run.t_done or run.t_last) - run.t_create),
        "deliveries_per_s": round(summary["rate"], 1),
        "target_s": TARGET_S,
        "pass": summary["pass"],
        "ratio_to_target": rounded(run.elapsed / TARGET_S),
        "memory": run.memory,
        "cpu_seconds": run.cpu,
        "service_metrics": run.metrics,
        "service_stamps": {
            "approved_at": stamps["approved_at"],
            "published_at": stamps["published_at"],
            "recipient_count": stamps["recipient_count"],
            "delivery_statuses": stamps["statuses"],
            "table_bytes": stamps["table_bytes"],
        },
        "breakdown": analysis,
        "profiles": profiles,
        "watcher_query": summarise_ms(run.poll_ms),
        "polls": run.polls,
        "service_problems": problems[:50],
        "logs": {"grid": var_path("bench_notices_grid.log"), "notices": var_path("bench_notices_notices.log")},
    }
    print(f"Results written to {save_json(RESULTS_FILE, results, default=str)}")
    return results


# ---- main -----------------------------------------------------------------


def run_bench(grid_url, notices_url, amqp_uri, dispatch_batch, poll_interval, timeout, py_spy=None):
    secret = jwt_secret()
    facts = grid_facts(grid_url)
    queues = claim_rpc_queues(amqp_uri, ("grid", "notices"))
    # notices declares its durable command queue; one this run creates goes with it, or it would keep the
    # commands of a later run without notices (bench.volunteer_matching's offers) for the next notices here.
    command_queue = command_queue_name("notices", SEND_DIRECT)
    had_command_queue = rpc_queue_state(amqp_uri, command_queue)[0]

    print(f"Notices fan-out bench: recreating {make_url(notices_url).database}", flush=True)
    recreate_database(notices_url)
    service_entry("notices").migrate(notices_url)

    settings = {
        "publish_interval": PUBLISH_INTERVAL,
        "dispatch_interval": DISPATCH_INTERVAL,
        "dispatch_batch": dispatch_batch,
        "sms_rate": SMS_RATE,
        "poll_interval": poll_interval,
    }
    services = {
        "grid": notices_service(
            "grid",
            amqp_uri,
            {
                "GRID_DATABASE_URL": grid_url,
                # Housekeeping would expire tags in the shared bench database; keep it out of the run.
                "GRID_HOUSEKEEPING_INTERVAL": "3600",
            },
        ),
        "notices": notices_service(
            "notices",
            amqp_uri,
            {
                "NOTICES_DATABASE_URL": notices_url,
                "NOTICES_SMS_GATEWAY_URL": "stub",
                "NOTICES_SMS_RATE": str(SMS_RATE),
                "NOTICES_PUBLISH_INTERVAL": str(PUBLISH_INTERVAL),
                "NOTICES_DISPATCH_INTERVAL": str(DISPATCH_INTERVAL),
                "NOTICES_DISPATCH_BATCH": str(dispatch_batch),
            },
        ),
    }
    run = Run(expected=facts["expected"], settings=settings)
    token = mint_token(secret, "bench", ["admin"], ttl=3600)
    profilers = []
    load_before = os.getloadavg()
    try:
        start_services(services, amqp_uri)
        eventlet.sleep(1.0)  # let start-up work (first timer ticks, pool connections) settle
        if py_spy:
            profilers = [Profiler(py_spy, service) for service in services.values()]
            eventlet.sleep(1.0)  # py-spy attaching
        print(f"  fanning out to {facts['expected']:,} residents of street {facts['street']} ...", flush=True)
        fan_out(run, services, amqp_uri, notices_url, facts["street"], token, poll_interval, timeout)
    finally:
        for profiler in profilers:
            profiler.stop()
        stop_services(services, amqp_uri, queues)
        if not had_command_queue:
            delete_unused_queue(amqp_uri, command_queue)
    load_after = os.getloadavg()

    stamps = service_stamps(notices_url, run.notice_id)
    analysis = breakdown(stamps, logged_calls(services["grid"]), run.metrics)
    problems = services["grid"].problems(describe_problem) + services["notices"].problems(describe_problem)
    profiles = {profiler.service: profiler.summary() for profiler in profilers}
    summary = print_summary(run, facts, analysis, profiles, problems, (load_before, load_after))
    return write_results(run, facts, stamps, analysis, profiles, summary, problems, (load_before, load_after))


def main(argv=None):
    # A plain SIGTERM would end this process without its finally blocks, leaving the services running.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    parser = argparse.ArgumentParser(prog="python -m bench.notices_fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid-database-url",
        default=DEFAULT_GRID_DATABASE_URL,
        help="PostgreSQL URL of the database seeded by bench.seed_grid",
    )
    parser.add_argument(
        "--notices-database-url",
        help=f"database to (re)create for the notices service (default: {NOTICES_DATABASE} "
        "on the grid database's server)",
    )
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument(
        "--dispatch-batch",
        type=int,
        default=DEFAULT_DISPATCH_BATCH,
        help="NOTICES_DISPATCH_BATCH: deliveries per channel per dispatcher tick",
    )
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up this many seconds after approval")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile both services during the fan-out with this py-spy binary (slows the run)",
    )
    args = parser.parse_args(argv)
    notices_url = args.notices_database_url or libpq_url(args.grid_database_url, NOTICES_DATABASE)
    if make_url(notices_url).database == make_url(args.grid_database_url).database:
        parser.error("the notices database must not be the grid database: it is dropped and recreated")
    if args.dispatch_batch < 1 or args.poll_interval <= 0 or args.timeout <= 0:
        parser.error("--dispatch-batch, --poll-interval and --timeout must be positive")
    results = run_bench(
        args.grid_database_url,
        notices_url,
        args.amqp_uri,
        args.dispatch_batch,
        args.poll_interval,
        args.timeout,
        args.py_spy,
    )
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
