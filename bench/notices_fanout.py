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
went (grid page calls from the grid's log, page and batch stamps the notices
service writes, dispatcher ticks from its log).

Written: var/bench_notices_results.json and the services' logs,
var/bench_notices_grid.log and var/bench_notices_notices.log.
"""
import warnings

# eventlet warns on import that it is deprecated (a plain Warning subclass); we know.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

# Before anything imports socket, threading or time: nameko's standalone proxy needs the green versions.
eventlet.monkey_patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psycopg2  # noqa: E402
from kombu import Connection  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from psycopg2 import sql  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import ROOT, jwt_secret, pii_key, var_path  # noqa: E402
from bench.seed_grid import bench_targets, libpq_url  # noqa: E402
from shared.auth import mint_token  # noqa: E402
from shared.migrate import upgrade  # noqa: E402

DEFAULT_GRID_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/grassroots_bench"
NOTICES_DATABASE = "grassroots_bench_notices"
RESULTS_FILE = "bench_notices_results.json"
TARGET_S = 10.0  # every delivery handed to its adapter within this many seconds of approval
SERVICE_START_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Service settings of the run (env vars of `nameko run`; see services/notices/config.yml).
PUBLISH_INTERVAL = 0.05
DISPATCH_INTERVAL = 0.05
DEFAULT_DISPATCH_BATCH = 5000
SMS_RATE = 1_000_000  # far above what is reachable: the limiter must not be what is measured


# ---- small helpers --------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(samples, q):
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise_ms(samples):
    if not samples:
        return None
    return {"n": len(samples), "sum_ms": round(sum(samples), 1), "mean_ms": round(statistics.fmean(samples), 2),
            "p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2),
            "max_ms": round(max(samples), 2)}


def parse_log_time(stamp):
    """The services' log ``time`` field (UTC, millisecond resolution) as an aware datetime."""
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def mib(kib):
    return kib / 1024 if kib is not None else None


# ---- the broker -----------------------------------------------------------


def rpc_queue_state(amqp_uri, queue):
    """(exists, consumer count) of a service's RPC queue on this vhost."""
    with Connection(amqp_uri) as conn:
        try:
            _name, _messages, consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
            return True, consumers
        except conn.channel_errors:
            return False, 0


def delete_unused_queue(amqp_uri, queue, timeout=10.0):
    """Delete an RPC queue once the broker has dropped our service's consumer (leave the broker as found)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exists, consumers = rpc_queue_state(amqp_uri, queue)
        if not exists:
            return
        if not consumers:
            with Connection(amqp_uri) as conn:
                try:
                    conn.default_channel.queue_delete(queue=queue, if_unused=True)
                    return
                except conn.channel_errors:
                    pass  # a consumer came back between the check and the delete
        eventlet.sleep(0.2)


# ---- the services under test ----------------------------------------------


@dataclass
class CpuSample:
    """CPU seconds (user + system) used so far by groups of processes."""

    at: float
    seconds: dict


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may contain spaces; the fields after its ")" are fixed.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_named(names):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() in names:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def cpu_sample(services):
    """CPU used so far by each service, by PostgreSQL, by RabbitMQ and by this process.

    PostgreSQL and RabbitMQ are every process of that name on the machine: other
    users of them count too (the report says so).
    """
    seconds = {name: process_cpu_seconds(service.process.pid) for name, service in services.items()}
    seconds["postgres"] = sum(process_cpu_seconds(pid) for pid in pids_named({"postgres"}))
    seconds["rabbitmq"] = sum(process_cpu_seconds(pid) for pid in pids_named({"beam.smp"}))
    seconds["bench"] = process_cpu_seconds(os.getpid())
    return CpuSample(time.monotonic(), seconds)


class ServiceProcess:
    """``nameko run`` of one service, its output in var/bench_notices_<name>.log."""

    def __init__(self, name, env):
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
            "LOG_LEVEL": "INFO",  # the breakdown reads the "call finished" lines
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.port}",
            **env,
        }
        self.log_path = var_path(f"bench_notices_{name}.log")
        self.process = None

    @property
    def rpc_queue(self):
        return f"rpc-{self.name}"

    def start(self):
        command = [os.path.join(ROOT, ".venv", "bin", "nameko"), "run",
                   "--config", f"services/{self.name}/config.yml", f"services.{self.name}.service"]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} service exited with {self.process.returncode}; see {self.log_path}")

    def memory(self):
        """Peak and current RSS (KiB) of the service process, from /proc.

        ``nameko`` is a script whose shebang names the venv's python, so the pid
        Popen returns is the interpreter itself; checked here rather than assumed.
        """
        pid = self.process.pid
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        if not exe.startswith("python") or not any(arg.endswith("nameko") for arg in argv):
            raise RuntimeError(f"pid {pid} is {exe} {argv}, not the {self.name} service's python")
        status = {}
        with open(f"/proc/{pid}/status") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    status[key] = int(value.split()[0])  # "123456 kB"
        return {"pid": pid, "exe": exe, "peak_kib": status.get("VmHWM"), "rss_kib": status.get("VmRSS")}

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # nameko run stops gracefully on SIGTERM
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def calls(self):
        """Every "call finished" line the service logged: (end time, entrypoint, method, duration_ms)."""
        calls = []
        with open(self.log_path) as log:
            for line in log:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # not one of the service's JSON lines
                if record.get("message") == "call finished":
                    calls.append((parse_log_time(record["time"]), record.get("entrypoint"), record.get("method"),
                                  record["duration_ms"]))
        return calls

    def problems(self):
        """Warning and error lines the service logged (the run is suspect if there are any)."""
        found = []
        with open(self.log_path) as log:
            for line in log:
                try:
                    record = json.loads(line)
                except ValueError:
                    if line.strip():
                        found.append(line.strip()[:300])
                    continue
                if record.get("level") in ("warning", "error", "critical"):
                    found.append(f"{record.get('level')}: {record.get('message')} {record.get('error_type') or ''}")
        return found


def wait_ready(services, amqp_uri, timeout=SERVICE_START_TIMEOUT):
    """Wait until every service answers /readyz with 200 and consumes its RPC queue (and only it does)."""
    deadline = time.monotonic() + timeout
    pending = dict(services)
    while pending:
        for name, service in list(pending.items()):
            service.check_alive()
            if service.ready():
                _exists, consumers = rpc_queue_state(amqp_uri, service.rpc_queue)
                if consumers == 1:
                    del pending[name]
                elif consumers > 1:
                    raise RuntimeError(f"{consumers} consumers on {service.rpc_queue}: something else serves it")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}; "
                               f"see {', '.join(s.log_path for s in pending.values())}")
        eventlet.sleep(0.2)


# ---- databases --------------------------------------------------------------


def grid_facts(grid_url):
    """The bench street and how many residents live under it, straight from the grid database."""
    try:
        conn = psycopg2.connect(libpq_url(grid_url))
    except psycopg2.OperationalError as exc:
        raise SystemExit(f"cannot open the grid bench database ({exc.pgerror or str(exc).strip()}).\n"
                         f"Seed it first: python -m bench.seed_grid --database-url {grid_url}") from None
    try:
        with conn.cursor() as cur:
            try:
                targets = bench_targets(cur)
            except (RuntimeError, psycopg2.Error):
                raise SystemExit(f"{make_url(grid_url).database} holds no bench district. Seed it first: "
                                 f"python -m bench.seed_grid --database-url {grid_url}") from None
            street = targets["street"]
            cur.execute("SELECT path FROM units WHERE id = %s", (street,))
            path = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM residents WHERE unit_path LIKE %s", (path + "%",))
            expected = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM residents")
            total = cur.fetchone()[0]
    finally:
        conn.close()
    return {"street": street, "path": path, "expected": expected, "residents": total}


def recreate_database(url):
    name = make_url(url).database
    conn = psycopg2.connect(libpq_url(url, "postgres"))
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


@dataclass
class Progress:
    at: float  # monotonic, seconds
    status: str
    recipients: int
    deliveries: int
    sent: int


class Watcher:
    """Polls the notices database for one notice's progress (its own autocommit connection).

    One statement per poll; its own cost is recorded, since on a 2-core machine
    the watching competes with the work watched.
    """

    QUERY = """
        SELECT n.status,
               (SELECT count(*) FROM recipients WHERE notice_id = n.id),
               (SELECT count(*) FROM deliveries WHERE notice_id = n.id),
               (SELECT count(*) FROM deliveries WHERE notice_id = n.id AND status = 'sent')
        FROM notices n WHERE n.id = %s
    """

    def __init__(self, url, notice_id):
        self.conn = psycopg2.connect(libpq_url(url))
        self.conn.autocommit = True
        self.notice_id = notice_id
        self.query_ms = []

    def poll(self):
        started = time.monotonic()
        with self.conn.cursor() as cur:
            cur.execute(self.QUERY, (self.notice_id,))
            status, recipients, deliveries, sent = cur.fetchone()
        self.query_ms.append((time.monotonic() - started) * 1000)
        return Progress(started, status, recipients, deliveries, sent)

    def close(self):
        self.conn.close()


# ---- the run --------------------------------------------------------------


@dataclass
class Run:
    expected: int
    settings: dict
    notice_id: int = 0
    t_create: float = 0.0  # monotonic: create_notice called
    t_approved: float = 0.0  # monotonic: approve_notice returned
    t_published: float | None = None  # first poll that saw the notice published
    t_first_sent: float | None = None
    t_done: float | None = None
    wall_approved: dt.datetime | None = None
    last: Progress | None = None
    samples: list = field(default_factory=list)  # (seconds since approval, recipients, deliveries, sent)
    memory: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    poll_ms: list = field(default_factory=list)


def fan_out(run, services, amqp_uri, notices_url, street, token, poll_interval, timeout):
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
        run.t_create = time.monotonic()
        notice = proxy.notices.create_notice(
            title="Bench: water supply interruption", body="Water is off 09:00-17:00 tomorrow on the whole street.",
            category="policy", severity="moderate", urgency="expected",
            audience={"under": [street]}, channels=["sms"])
        run.notice_id = int(notice["id"])
        approved = proxy.notices.approve_notice(notice_id=notice["id"])
        run.t_approved = time.monotonic()
        run.wall_approved = dt.datetime.now(dt.timezone.utc)
        if approved["status"] != "approved":
            raise RuntimeError(f"notice {notice['id']} is {approved['status']} after approval")

    cpu_before = cpu_sample(services)
    watcher = Watcher(notices_url, run.notice_id)
    try:
        while True:
            progress = watcher.poll()
            run.last = progress
            since = progress.at - run.t_approved
            run.samples.append((round(since, 3), progress.recipients, progress.deliveries, progress.sent))
            if run.t_published is None and progress.status == "published":
                run.t_published = progress.at
            if run.t_first_sent is None and progress.sent:
                run.t_first_sent = progress.at
            if progress.sent == progress.deliveries == progress.recipients == run.expected:
                run.t_done = progress.at
                break
            if since > timeout:
                break
            for service in services.values():
                service.check_alive()
            # Poll every ~poll_interval from the start of the last poll, never back to back.
            eventlet.sleep(max(0.005, poll_interval - (time.monotonic() - progress.at)))
    finally:
        run.poll_ms = watcher.query_ms
        watcher.close()
    cpu_after = cpu_sample(services)
    run.cpu = {"window_s": round(cpu_after.at - cpu_before.at, 3),
               **{name: round(cpu_after.seconds[name] - cpu_before.seconds[name], 2) for name in cpu_after.seconds}}
    run.memory = {name: service.memory() for name, service in services.items()}


# ---- where the time went ----------------------------------------------------


def db_breakdown(notices_url, notice_id):
    """Stamps the notices service itself wrote: one ``created_at`` per resolved page (add_recipients
    takes ``now`` once per page) and one ``sent_at`` per dispatch batch (dispatch_due's ``now``)."""
    conn = psycopg2.connect(libpq_url(notices_url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT created_at, approved_at, published_at, recipient_count FROM notices WHERE id = %s",
                        (notice_id,))
            created_at, approved_at, published_at, recipient_count = cur.fetchone()
            cur.execute("SELECT created_at, count(*) FROM deliveries WHERE notice_id = %s "
                        "GROUP BY created_at ORDER BY created_at", (notice_id,))
            pages = cur.fetchall()
            cur.execute("SELECT sent_at, count(*) FROM deliveries WHERE notice_id = %s AND sent_at IS NOT NULL "
                        "GROUP BY sent_at ORDER BY sent_at", (notice_id,))
            batches = cur.fetchall()
            cur.execute("SELECT status, count(*) FROM deliveries WHERE notice_id = %s GROUP BY status", (notice_id,))
            statuses = dict(cur.fetchall())
            cur.execute("SELECT pg_total_relation_size('recipients'), pg_total_relation_size('deliveries')")
            sizes = cur.fetchone()
    finally:
        conn.close()
    return {"created_at": created_at, "approved_at": approved_at, "published_at": published_at,
            "recipient_count": recipient_count, "pages": pages, "batches": batches, "statuses": statuses,
            "table_bytes": {"recipients": sizes[0], "deliveries": sizes[1]}}


def seconds_between(later, earlier):
    return round((later - earlier).total_seconds(), 3) if later and earlier else None


def breakdown(db, grid_calls, notices_calls, end_wall):
    """Join the service stamps and log lines into the resolution and dispatch figures."""
    approved = db["approved_at"]
    in_window = [c for c in grid_calls if approved <= c[0] <= end_wall + dt.timedelta(seconds=1)]
    pages_ms = [c[3] for c in in_window if c[1] == "rpc" and c[2] == "find_residents"]

    # Resolution: page stamps are taken when each page's rows are built, i.e. right
    # after its grid call returned; the gap between stamps is one page's full cost.
    page_stamps = [stamp for stamp, _count in db["pages"]]
    gaps_ms = [(b - a).total_seconds() * 1000 for a, b in zip(page_stamps, page_stamps[1:])]
    publish_ticks = [c for c in notices_calls if c[1] == "timer" and c[2] == "publish_due" and c[0] >= approved]
    busy_publish = [c for c in publish_ticks if c[3] > 100]  # idle ticks are a query or two: ~1-5 ms
    resolution = {
        "approve_to_first_page_s": seconds_between(page_stamps[0], approved) if page_stamps else None,
        "first_to_last_page_s": seconds_between(page_stamps[-1], page_stamps[0]) if page_stamps else None,
        "approve_to_published_s": seconds_between(db["published_at"], approved),
        "pages": len(page_stamps),
        "page_gap": summarise_ms(gaps_ms),
        "grid_find_residents": summarise_ms(pages_ms),
        "publish_due_ticks_ms": [c[3] for c in busy_publish],
    }
    if gaps_ms and pages_ms:
        # What a page costs beyond the grid's own handling of it: the RPC transport, decoding
        # the reply, encrypting phone numbers, the inserts, and sharing the CPU with the dispatcher.
        resolution["notices_side_per_page_ms"] = round(statistics.fmean(gaps_ms) - statistics.fmean(pages_ms), 2)

    # Dispatch: each batch's sent_at is the start of its dispatch tick; the tick's log line
    # ends it (start = logged end - duration). Match each batch to the tick that started nearest.
    dispatch_ticks = [c for c in notices_calls if c[1] == "timer" and c[2] == "dispatch" and c[0] >= approved]
    batches = []
    for sent_at, count in db["batches"]:
        tick = min(dispatch_ticks, key=lambda c: abs((c[0] - dt.timedelta(milliseconds=c[3]) - sent_at)
                                                     .total_seconds()), default=None)
        tick_ms = tick[3] if tick else None
        batches.append({"at_s": seconds_between(sent_at, approved), "size": count, "tick_ms": tick_ms,
                        "per_s": round(count / tick_ms * 1000) if tick_ms else None})
    batch_ms = [b["tick_ms"] for b in batches if b["tick_ms"]]
    dispatch = {
        "batches": len(batches),
        "approve_to_first_batch_s": batches[0]["at_s"] if batches else None,
        "approve_to_last_batch_start_s": batches[-1]["at_s"] if batches else None,
        "batch_size": summarise_ms([b["size"] for b in batches]),  # (counts, despite the key names)
        "busy_tick": summarise_ms(batch_ms),
        "busy_ticks_total_s": round(sum(batch_ms) / 1000, 3),
        "idle_ticks": len(dispatch_ticks) - len(batch_ms),
        "batch_list": batches,
    }
    return {"resolution": resolution, "dispatch": dispatch}


# ---- report -----------------------------------------------------------------


def fmt_s(value):
    return f"{value:.2f} s" if value is not None else "-"


def report(run, facts, db, analysis, problems, loads):
    done = run.t_done is not None
    elapsed = (run.t_done if done else run.last.at) - run.t_approved
    from_create = (run.t_done if done else run.last.at) - run.t_create
    rate = run.last.sent / elapsed if elapsed > 0 else 0.0
    resolved = (run.t_published - run.t_approved) if run.t_published else None
    first_sent = (run.t_first_sent - run.t_approved) if run.t_first_sent else None
    passed = done and elapsed <= TARGET_S
    verdict = (f"{'PASS' if passed else 'MISS'} ({elapsed / TARGET_S:.2f}x of {TARGET_S:g} s)" if done
               else f"MISS (incomplete after {elapsed:.0f} s: {run.last.sent:,} of {run.expected:,} sent)")
    memory = run.memory
    cpu = run.cpu
    settings = run.settings

    print(f"\nNotices fan-out: 1 notice -> street {facts['street']} ({facts['expected']:,} of "
          f"{facts['residents']:,} residents), channel sms -> stub adapter")
    print(f"  publish/dispatch interval {settings['publish_interval']:g}/{settings['dispatch_interval']:g} s, "
          f"dispatch batch {settings['dispatch_batch']:,}, sms rate {settings['sms_rate']:,}/s; "
          f"{os.cpu_count()} CPUs")
    rows = [
        ("recipients / deliveries / sent",
         f"{run.last.recipients:,} / {run.last.deliveries:,} / {run.last.sent:,} (expected {run.expected:,})"),
        ("audience resolved (poll saw 'published')", fmt_s(resolved)),
        ("  service stamps: approved_at -> published_at", fmt_s(analysis["resolution"]["approve_to_published_s"])),
        ("first delivery handed to the stub adapter", fmt_s(first_sent)),
        ("all handed to the stub adapters", f"{fmt_s(elapsed)} after approve ({fmt_s(from_create)} after create)"),
        ("deliveries/s (sent / time from approve)", f"{rate:,.0f}"),
        ("peak RSS notices (VmHWM)", f"{mib(memory['notices']['peak_kib']):.1f} MiB (pid {memory['notices']['pid']})"),
        ("peak RSS grid (VmHWM)", f"{mib(memory['grid']['peak_kib']):.1f} MiB (pid {memory['grid']['pid']})"),
        ("CPU s during fan-out (notices/grid/pg/mq/bench)",
         f"{cpu['notices']:.1f} / {cpu['grid']:.1f} / {cpu['postgres']:.1f} / {cpu['rabbitmq']:.1f} / "
         f"{cpu['bench']:.1f} in {cpu['window_s']:.1f} s wall"),
        (f"target: all sent <= {TARGET_S:g} s (>= {run.expected / TARGET_S:,.0f}/s)", verdict),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")

    res, dis = analysis["resolution"], analysis["dispatch"]
    print("\nWhere the time went (service stamps and logs):")
    gap, grid_page = res["page_gap"], res["grid_find_residents"]
    print(f"  resolution: {res['pages']} pages; approve -> first page {fmt_s(res['approve_to_first_page_s'])}, "
          f"first -> last page {fmt_s(res['first_to_last_page_s'])}")
    if gap:
        print(f"    per page (gap between page stamps): mean {gap['mean_ms']:.1f} ms, p50 {gap['p50_ms']:.1f}, "
              f"p99 {gap['p99_ms']:.1f}, max {gap['max_ms']:.1f}")
    if grid_page:
        print(f"    grid find_residents (its own log): mean {grid_page['mean_ms']:.1f} ms, p50 "
              f"{grid_page['p50_ms']:.1f}, p99 {grid_page['p99_ms']:.1f}; {grid_page['n']} calls, "
              f"{grid_page['sum_ms'] / 1000:.2f} s in all")
    if "notices_side_per_page_ms" in res:
        print(f"    notices side per page (gap - grid time): {res['notices_side_per_page_ms']:.1f} ms")
    if res["publish_due_ticks_ms"]:
        print(f"    publish_due ticks doing work: {', '.join(f'{ms / 1000:.2f} s' for ms in res['publish_due_ticks_ms'])}")
    busy = dis["busy_tick"]
    print(f"  dispatch: {dis['batches']} batches; first starts {fmt_s(dis['approve_to_first_batch_s'])}, last starts "
          f"{fmt_s(dis['approve_to_last_batch_start_s'])} after approve")
    if busy:
        sizes = dis["batch_size"]
        print(f"    batch size mean {sizes['mean_ms']:,.0f} (max {sizes['max_ms']:,.0f}); tick with a batch: mean "
              f"{busy['mean_ms']:.0f} ms, p50 {busy['p50_ms']:.0f}, max {busy['max_ms']:.0f}; "
              f"{dis['busy_ticks_total_s']:.2f} s busy in all ({dis['idle_ticks']} idle ticks)")
        print(f"    per batch (s after approve: size @ deliveries/s within the tick): " + ", ".join(
            f"{b['at_s']:.2f}: {b['size']:,} @ {b['per_s']:,}" if b["per_s"] else f"{b['at_s']:.2f}: {b['size']:,}"
            for b in dis["batch_list"]))
    poll = summarise_ms(run.poll_ms)
    if poll:
        print(f"  watcher: {poll['n']} polls, query mean {poll['mean_ms']:.1f} ms, max {poll['max_ms']:.1f} ms")
    if problems:
        print(f"  WARNING: the services logged {len(problems)} warning/error lines, e.g. {problems[0]}")
    print(f"  load average {loads[0][0]:.2f} before, {loads[1][0]:.2f} after")

    results = {
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "grid_database": facts,
        "settings": settings,
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_before": loads[0], "load_avg_after": loads[1]},
        "notice_id": run.notice_id,
        "expected": run.expected,
        "complete": done,
        "recipients": run.last.recipients,
        "deliveries": run.last.deliveries,
        "sent": run.last.sent,
        "create_to_approved_s": round(run.t_approved - run.t_create, 3),
        "resolved_s": round(resolved, 3) if resolved is not None else None,
        "first_sent_s": round(first_sent, 3) if first_sent is not None else None,
        "all_sent_s": round(elapsed, 3),
        "all_sent_from_create_s": round(from_create, 3),
        "deliveries_per_s": round(rate, 1),
        "target_s": TARGET_S,
        "pass": passed,
        "ratio_to_target": round(elapsed / TARGET_S, 3),
        "memory": memory,
        "cpu_seconds": cpu,
        "service_stamps": {
            "approved_at": db["approved_at"].isoformat() if db["approved_at"] else None,
            "published_at": db["published_at"].isoformat() if db["published_at"] else None,
            "recipient_count": db["recipient_count"],
            "delivery_statuses": db["statuses"],
            "table_bytes": db["table_bytes"],
        },
        "breakdown": analysis,
        "watcher_query": poll,
        "progress": run.samples,
        "service_problems": problems[:50],
        "logs": {"grid": var_path("bench_notices_grid.log"), "notices": var_path("bench_notices_notices.log")},
    }
    with open(var_path(RESULTS_FILE), "w") as out:
        json.dump(results, out, indent=2, ensure_ascii=False, default=str)
    print(f"Results written to {var_path(RESULTS_FILE)}")
    return results


# ---- main -----------------------------------------------------------------


def run_bench(grid_url, notices_url, amqp_uri, dispatch_batch, poll_interval, timeout):
    secret, key = jwt_secret(), pii_key()
    facts = grid_facts(grid_url)

    queues = {}
    for name in ("grid", "notices"):
        exists, consumers = rpc_queue_state(amqp_uri, f"rpc-{name}")
        if consumers:
            raise SystemExit(
                f"{consumers} consumer(s) already on 'rpc-{name}' at {amqp_uri}: another {name} service (e.g. "
                "`make run` / `python -m shared.suite run`) would take some of the calls and skew the run.\n"
                "Stop it, or point --amqp-uri at another vhost.")
        queues[name] = exists

    print(f"Notices fan-out bench: recreating {make_url(notices_url).database}", flush=True)
    recreate_database(notices_url)
    upgrade("notices", notices_url)

    settings = {"publish_interval": PUBLISH_INTERVAL, "dispatch_interval": DISPATCH_INTERVAL,
                "dispatch_batch": dispatch_batch, "sms_rate": SMS_RATE, "poll_interval": poll_interval}
    common = {"AMQP_URI": amqp_uri, "GRASSROOTS_JWT_SECRET": secret, "GRASSROOTS_PII_KEY": key}
    services = {
        "grid": ServiceProcess("grid", {
            **common, "GRID_DATABASE_URL": grid_url,
            # Housekeeping would expire tags in the shared bench database; keep it out of the run.
            "GRID_HOUSEKEEPING_INTERVAL": "3600",
        }),
        "notices": ServiceProcess("notices", {
            **common, "NOTICES_DATABASE_URL": notices_url,
            "NOTICES_SMS_GATEWAY_URL": "stub",
            "NOTICES_SMS_RATE": str(SMS_RATE),
            "NOTICES_PUBLISH_INTERVAL": str(PUBLISH_INTERVAL),
            "NOTICES_DISPATCH_INTERVAL": str(DISPATCH_INTERVAL),
            "NOTICES_DISPATCH_BATCH": str(dispatch_batch),
        }),
    }
    run = Run(expected=facts["expected"], settings=settings)
    token = mint_token(secret, "bench", ["admin"], ttl=3600)
    load_before = os.getloadavg()
    try:
        for service in services.values():
            service.start()
        wait_ready(services, amqp_uri)
        print("  services up: " + ", ".join(f"{name} pid {s.process.pid} (log {s.log_path})"
                                            for name, s in services.items()), flush=True)
        eventlet.sleep(1.0)  # let start-up work (first timer ticks, pool connections) settle
        print(f"  fanning out to {facts['expected']:,} residents of street {facts['street']} ...", flush=True)
        fan_out(run, services, amqp_uri, notices_url, facts["street"], token, poll_interval, timeout)
    finally:
        for service in services.values():
            service.stop()
        for name, existed in queues.items():
            if not existed:
                delete_unused_queue(amqp_uri, f"rpc-{name}")
    load_after = os.getloadavg()

    db = db_breakdown(notices_url, run.notice_id)
    end_wall = run.wall_approved + dt.timedelta(seconds=(run.t_done or run.last.at) - run.t_approved)
    analysis = breakdown(db, services["grid"].calls(), services["notices"].calls(), end_wall)
    problems = services["grid"].problems() + services["notices"].problems()
    return report(run, facts, db, analysis, problems, (load_before, load_after))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.notices_fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid-database-url", default=DEFAULT_GRID_DATABASE_URL,
                        help="PostgreSQL URL of the database seeded by bench.seed_grid")
    parser.add_argument("--notices-database-url",
                        help=f"database to (re)create for the notices service (default: {NOTICES_DATABASE} "
                             "on the grid database's server)")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--dispatch-batch", type=int, default=DEFAULT_DISPATCH_BATCH,
                        help="NOTICES_DISPATCH_BATCH: deliveries per channel per dispatcher tick")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up this many seconds after approval")
    args = parser.parse_args(argv)
    notices_url = args.notices_database_url or libpq_url(args.grid_database_url, NOTICES_DATABASE)
    if make_url(notices_url).database == make_url(args.grid_database_url).database:
        parser.error("the notices database must not be the grid database: it is dropped and recreated")
    if args.dispatch_batch < 1 or args.poll_interval <= 0 or args.timeout <= 0:
        parser.error("--dispatch-batch, --poll-interval and --timeout must be positive")
    results = run_bench(args.grid_database_url, notices_url, args.amqp_uri, args.dispatch_batch,
                        args.poll_interval, args.timeout)
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
