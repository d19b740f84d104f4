"""What the benches share, one implementation of each.

* settings: the bench secrets (``pii_key``, ``jwt_secret``, ``admin_token``), var/ files, the common
  options (``parser``: --amqp-uri, --profile; ``parse`` checks the sizes);
* databases and seeding: URLs, ``cursor``, ``fresh_database``, COPY (``copy_rows``), ``person_name``;
* statistics: ``timed``, ``percentile``, ``summarise``, ``rate``;
* printing: ``print_table``, ``floor_lines``, ``load_line``, ``warn_other_benches``;
* the broker: ``claim_queues`` / ``release_queues``, and the raw AMQP request/reply floor (``measure_floor``);
* services: ``ServiceProcess`` (one service as deployed, its log, metrics, memory), ``start_services`` /
  ``stop_services``, ``cpu_now`` / ``cpu_used``;
* --profile: a service started with ``probe=True`` runs under ``bench.probe``; ``ServiceProcess.profiled``
  profiles it (cProfile, SQL per statement) while a block runs, ``print_profile`` prints what it found.

Waits use eventlet: the RPC benches import ``bench.green`` first. The seeder uses only the database part.
"""

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import pickle
import platform
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass

import eventlet
import eventlet.event
import psycopg2
import psycopg2.extensions
from kombu import Connection, Consumer, Producer, Queue
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import sql
from sqlalchemy.engine import make_url

from services.launch import run_argv
from services.registry import get as service_entry
from shared.auth import mint_token

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var")
DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
DEFAULT_GRID_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/grassroots_bench"
PII_KEY_ENV, DEFAULT_PII_KEY = "GRASSROOTS_PII_KEY", "bench-pii-key-0123456789abcdef"
JWT_SECRET_ENV, DEFAULT_JWT_SECRET = "GRASSROOTS_JWT_SECRET", "bench-jwt-secret-0123456789abcdef"
SERVICE_START_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- settings ----------------------------------------------------------------------------------------


def pii_key():
    """The PII key from the environment, defaulting (and exporting) the bench key: the seeders encrypt
    with it and the services, started from this environment, decrypt with it."""
    return os.environ.setdefault(PII_KEY_ENV, DEFAULT_PII_KEY)


def jwt_secret():
    return os.environ.setdefault(JWT_SECRET_ENV, DEFAULT_JWT_SECRET)


def admin_token(ttl=3600):
    return mint_token(jwt_secret(), "bench", ["admin"], ttl=ttl)


def var_path(name):
    os.makedirs(VAR, exist_ok=True)
    return os.path.join(VAR, name)


def save_json(name, data):
    """Write ``data`` as indented JSON to var/<name>; return the path."""
    path = var_path(name)
    with open(path, "w") as out:
        json.dump(data, out, indent=2, ensure_ascii=False, default=str)
    return path


def parser(module, doc, profile_help=None):
    """The options every RPC bench has: --amqp-uri, and --profile where the bench breaks its time down
    (off by default: then it prints only its figures)."""
    found = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    found.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", DEFAULT_AMQP_URI))
    if profile_help:
        found.add_argument("--profile", action="store_true", help=profile_help)
    return found


def add_database_args(parser, service, default_name):
    """--grid-database-url (the database bench.seed_grid seeded: read only) and --<service>-database-url
    (recreated for the run; by default ``default_name`` on the grid database's server)."""
    parser.add_argument("--grid-database-url", default=DEFAULT_GRID_DATABASE_URL, help="seeded by bench.seed_grid")
    parser.add_argument(
        f"--{service}-database-url",
        help=f"database to (re)create for {service} (default: {default_name} on the grid database's server)",
    )


def own_database(parser, args, service, default_name):
    """The --<service>-database-url to recreate (never the grid bench database)."""
    url = getattr(args, f"{service}_database_url") or libpq_url(args.grid_database_url, default_name)
    if database_name(url) == database_name(args.grid_database_url):
        parser.error(f"the {service} database must not be the grid database: it is dropped and recreated")
    return url


def parse(parser, argv, positive=(), not_negative=()):
    """The arguments, the sizes checked; from now on a SIGTERM runs the finally blocks (which stop the
    services) instead of ending the process where it stands."""
    args = parser.parse_args(argv)
    bad = [f"{name} must be positive" for name in positive if getattr(args, name) <= 0]
    bad += [f"{name} must not be negative" for name in not_negative if getattr(args, name) < 0]
    if bad:
        parser.error("; ".join("--" + problem.replace("_", "-") for problem in bad))
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    return args


# ---- databases and seeding -------------------------------------------------------------------------


def libpq_url(url, database=None):
    """A URL psycopg2 accepts (no SQLAlchemy driver suffix), optionally for another database."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def database_name(url):
    return make_url(url).database


@contextlib.contextmanager
def cursor(url):
    """A cursor on its own autocommit connection, closed after the block."""
    conn = psycopg2.connect(libpq_url(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def one_row(cur):
    """The next row of ``cur``'s result, for queries that always have one (a count, a seeded row)."""
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no row from {cur.query!r}")
    return row


def recreate_database(url):
    """Drop the database ``url`` names (closing its connections) and create it again, empty."""
    name = database_name(url)
    if not name or "bench" not in name:
        raise ValueError(f"{url}: the benches only recreate databases named *bench*")
    with cursor(libpq_url(url, "postgres")) as cur:  # CREATE/DROP DATABASE cannot run in a transaction
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def fresh_database(url, service):
    """An empty database for ``service`` at ``url``, migrated with the service's own migrations."""
    recreate_database(url)
    service_entry(service).migrate(url)


NULL = r"\N"  # COPY text format


def bytea(blob):
    # COPY text format unescapes one level of backslashes, so "\\x" reaches bytea input as "\x".
    return "\\\\x" + blob.hex()


def copy_cell(value):
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes):
        return bytea(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def copy_rows(cur, table, columns, rows):
    """COPY ``rows`` (tuples in ``columns`` order) into ``table``."""
    lines = "".join("\t".join(copy_cell(value) for value in row) + "\n" for row in rows)
    # eventlet.monkey_patch() made psycopg2 green, and COPY refuses a wait callback: plain for the load.
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    try:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.StringIO(lines))
    finally:
        psycopg2.extensions.set_wait_callback(callback)


def fix_sequences(cur, tables):
    """Ids were given explicitly: move each table's sequence past them so the service's inserts don't collide."""
    for table in tables:
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT coalesce(max(id), 1) FROM {table}))", (table,)
        )


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文志海燕鹏飞宇浩然晨阳雪梅琳丹"


def person_name(rng, given=(1, 2)):
    """A Chinese name: a surname and ``given`` (min, max) given-name characters."""
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(*given)))


# ---- statistics ----------------------------------------------------------------------------------------


def percentile(samples, q):
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(samples, digits=3):
    """n, p50, p99, mean, min and max of latencies in ms; None for no samples."""
    if not samples:
        return None
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), digits),
        "p99_ms": round(percentile(samples, 99), digits),
        "mean_ms": round(statistics.fmean(samples), digits),
        "min_ms": round(min(samples), digits),
        "max_ms": round(max(samples), digits),
    }


def timed(call, requests, warmup=0):
    """Run ``call`` ``warmup`` times untimed, then ``requests`` times; the latencies in ms."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def rate(count, seconds):
    return count / seconds if seconds > 0 else 0.0


# ---- printing ------------------------------------------------------------------------------------------


def print_table(columns, rows):
    """``columns``: (title, width) pairs; the first column is left-aligned, the others right-aligned unless
    their width is negative, and a last column of width 0 is free text. Cells: text, ints (with thousands
    separators), floats (2 decimals), None ("-")."""

    def text(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.2f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    def line(cells):
        parts = []
        for index, (value, (_title, width)) in enumerate(zip(cells, columns, strict=True)):
            value = text(value)
            left = index == 0 or width <= 0
            parts.append(value.ljust(abs(width)) if left else value.rjust(width))
        return " ".join(parts).rstrip()

    header = line([title for title, _width in columns])
    print(header)
    print("-" * len(header))
    for row in rows:
        print(line(row))


def stat_cells(stats, *keys):
    """The cells of ``keys`` of a ``summarise`` result (None for each when there were no samples)."""
    return [stats[key] if stats else None for key in keys]


def floor_lines(floor, rows):
    """Each (label, stats) of ``rows`` as a multiple of the raw AMQP floor's p50, measured in the same run."""
    print(f"Against the raw AMQP floor of this run (kombu echo, direct reply-to: p50 {floor['p50_ms']:.2f} ms):")
    for label, stats in rows:
        if stats:
            print(f"  {label:<56} p50 {stats['p50_ms']:8.2f} ms = {stats['p50_ms'] / floor['p50_ms']:5.1f}x floor")


def load_line(loads):
    return (
        f"Load average {loads[0][0]:.2f} before, {loads[-1][0]:.2f} after; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}."
    )


def environment(loads):
    """The machine beside a run's figures: CPUs, Python, and the load averages before and after it."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_before": loads[0],
        "load_avg_after": loads[-1],
    }


def warn_other_benches():
    """Say so when other bench processes run (not this one nor its parents): they share the CPUs."""
    ours, pid = set(), os.getpid()
    while pid > 1:
        ours.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if int(entry) not in ours and any(re.fullmatch(r"bench\.\w+", arg) for arg in argv):
            found.append(f"{entry} {' '.join(argv).strip()}")
    if found:
        print("WARNING: other bench processes are running (figures will be skewed):\n  " + "\n  ".join(found))


# ---- the broker ----------------------------------------------------------------------------------------


def queue_state(amqp_uri, queue):
    """(exists, consumer count) of a queue on this vhost."""
    with Connection(amqp_uri) as conn:
        try:
            _name, _messages, consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
            return True, consumers
        except conn.channel_errors:
            return False, 0


def rpc_queues(*services):
    """{RPC queue of each service: what another consumer of it would do to the run}, for ``claim_queues``."""
    return {
        f"rpc-{name}": f"another {name} service (e.g. `make run`) would take some of the calls and skew the run"
        for name in services
    }


def claim_queues(amqp_uri, queues):
    """Refuse to run (SystemExit) while something consumes one of ``queues`` ({name: the harm it would do});
    returns {name: whether it existed}, for ``release_queues``."""
    existed = {}
    for queue, harm in queues.items():
        exists, consumers = queue_state(amqp_uri, queue)
        if consumers:
            raise SystemExit(
                f"{consumers} consumer(s) already on '{queue}' at {amqp_uri}: {harm}.\n"
                "Stop it, or point --amqp-uri at another vhost."
            )
        existed[queue] = exists
    return existed


def release_queues(amqp_uri, existed, timeout=10.0):
    """Delete the queues the run created (those ``claim_queues`` found missing) once their consumers are gone."""
    for queue, was_there in existed.items():
        deadline = time.monotonic() + timeout
        while not was_there and time.monotonic() < deadline:
            exists, consumers = queue_state(amqp_uri, queue)
            if not exists:
                break
            if not consumers:
                with Connection(amqp_uri) as conn, contextlib.suppress(*conn.channel_errors):
                    conn.default_channel.queue_delete(queue=queue, if_unused=True)
                    break
            eventlet.sleep(0.2)  # the broker drops a stopped service's consumer shortly after


DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
TRANSIENT, PERSISTENT = 1, 2  # AMQP delivery modes


def rpc_request(kwargs, token=None):
    """A request as a nameko proxy sends it: the kwargs in the body, the token and call id stack in headers."""
    headers = {"nameko.call_id_stack": [f"standalone_rpc_proxy.call.{uuid.uuid4()}"]}
    if token:
        headers["nameko.auth_token"] = token
    return {"body": {"args": [], "kwargs": kwargs}, "headers": headers}


class EchoServer:
    """Answers every request on its queue with a fixed body: an RPC server that does no work, a greenthread
    of this process. With ``guaranteed`` it delivers as nameko does: publisher confirms, persistent
    messages, a durable queue."""

    def __init__(self, amqp_uri, reply_body, guaranteed):
        self.amqp_uri, self.reply_body, self.guaranteed = amqp_uri, reply_body, guaranteed
        self.queue_name = f"bench-echo-{uuid.uuid4().hex[:12]}"
        self.ready = eventlet.event.Event()
        self.running = False
        self.thread = None

    def __enter__(self):
        self.running = True
        self.thread = eventlet.spawn(self._run)
        self.ready.wait()
        return self

    def __exit__(self, *exc_info):
        self.running = False
        assert self.thread is not None  # __enter__ spawned it
        self.thread.wait()

    def _run(self):
        try:
            with amqp_connection(self.amqp_uri, self.guaranteed) as conn:
                channel = conn.channel()
                producer = Producer(channel)
                queue = Queue(self.queue_name, durable=self.guaranteed, auto_delete=True)

                def on_request(_body, message):
                    producer.publish(
                        self.reply_body,
                        exchange="",
                        routing_key=message.properties["reply_to"],
                        correlation_id=message.properties["correlation_id"],
                        delivery_mode=PERSISTENT if self.guaranteed else TRANSIENT,
                        serializer="json",
                    )
                    message.ack()

                with Consumer(channel, queues=[queue], callbacks=[on_request], accept=["json"]):
                    self.ready.send()
                    while self.running:
                        with contextlib.suppress(TimeoutError):
                            conn.drain_events(timeout=0.2)
        except BaseException as exc:
            if not self.ready.ready():
                self.ready.send_exception(exc)
            raise


def amqp_connection(amqp_uri, confirms):
    return Connection(amqp_uri, transport_options={"confirm_publish": True} if confirms else {})


def measure_floor(amqp_uri, request, reply_body, requests, warmup, guaranteed=False):
    """Round trips (ms) of a bare kombu request/reply carrying ``request`` and ``reply_body``: the transport
    floor an RPC is set against. Plain: transient messages, replies over direct reply-to. Guaranteed:
    nameko's settings, replies to a durable reply queue of the client's own, as nameko's proxies have."""
    with EchoServer(amqp_uri, reply_body, guaranteed) as server, amqp_connection(amqp_uri, guaranteed) as conn:
        channel = conn.channel()
        replies = {}

        def on_reply(body, message):
            replies[message.properties["correlation_id"]] = body
            if guaranteed:
                message.ack()

        if guaranteed:
            reply_queue = Queue(f"bench-echo-reply-{uuid.uuid4().hex[:12]}", durable=True, auto_delete=True)
        else:  # direct reply-to wants the consumer (no_ack) and the publish on the same channel
            reply_queue = Queue(DIRECT_REPLY_TO, no_declare=True)
        with Consumer(channel, queues=[reply_queue], callbacks=[on_reply], no_ack=not guaranteed, accept=["json"]):
            producer = Producer(channel)

            def call():
                correlation_id = uuid.uuid4().hex
                producer.publish(
                    request["body"],
                    exchange="",
                    routing_key=server.queue_name,
                    reply_to=reply_queue.name,
                    correlation_id=correlation_id,
                    headers=request["headers"],
                    serializer="json",
                    delivery_mode=PERSISTENT if guaranteed else TRANSIENT,
                )
                while correlation_id not in replies:
                    conn.drain_events(timeout=10)
                return replies.pop(correlation_id)

            return timed(call, requests, warmup)


# ---- services ------------------------------------------------------------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process, sig=signal.SIGTERM, timeout=20.0):
    """Send ``sig`` to a child still running and wait for it; kill it if it has not ended after ``timeout`` s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_log_time(stamp):
    """The services' log ``time`` field (UTC, millisecond resolution) as an aware datetime."""
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


class ServiceProcess:
    """One service (services/<name>) run as deployed (shared.runner), its output in var/<log_name>: its own
    interpreter and event loop, the bench's AMQP URI, JWT secret and PII key, an HTTP port of its own (for
    /readyz and /metrics), INFO logs (the "call finished" lines carry its own time per call), plus ``env``.
    With ``probe`` it runs under ``bench.probe`` (--profile: ``profiled``, ``collections``)."""

    def __init__(self, name, amqp_uri, log_name, env, probe=False):
        self.name = name
        self.port = free_port()
        self.log_path = var_path(log_name)
        self.probe = self.log_path.removesuffix(".log") if probe else None
        self.env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "AMQP_URI": amqp_uri,
            JWT_SECRET_ENV: jwt_secret(),
            PII_KEY_ENV: pii_key(),
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.port}",
            "LOG_LEVEL": "INFO",
            **({"BENCH_PROBE": self.probe} if probe else {}),
            **env,
        }
        self.process: subprocess.Popen | None = None

    @property
    def pid(self):
        assert self.process is not None, "start() first"
        return self.process.pid

    def start(self):
        argv = run_argv(self.name)  # python -m shared.runner ARGS
        if self.probe:
            argv = [argv[0], "-m", "bench.probe", *argv[3:]]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_alive(self):
        assert self.process is not None, "start() first"
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} service exited with {self.process.returncode}; see {self.log_path}")

    def stop(self):
        stop_process(self.process)  # the runner stops gracefully on SIGTERM

    def memory(self):
        """Peak and current RSS (KiB) of the service's python, from /proc (checked to be the service's)."""
        pid = self.pid
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        if not exe.startswith("python") or not {"shared.runner", "bench.probe"} & set(argv):
            raise RuntimeError(f"pid {pid} is {exe} {argv}, not the {self.name} service's python")
        status = {}
        with open(f"/proc/{pid}/status") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    status[key] = int(value.split()[0])  # "123456 kB"
        return {"pid": pid, "exe": exe, "peak_kib": status.get("VmHWM"), "rss_kib": status.get("VmRSS")}

    def log_records(self):
        """(record, line) for each line of the service's log; record is None where the line is not JSON."""
        with open(self.log_path) as log:
            for line in log:
                try:
                    yield json.loads(line), line
                except ValueError:
                    yield None, line  # not one of the service's JSON lines

    def finished_calls(self, entrypoint=None, method=None):
        """The records of its "call finished" lines (of ``entrypoint``, e.g. "rpc", and ``method``), in log order."""
        return [
            record
            for record, _line in self.log_records()
            if record is not None
            and record.get("message") == "call finished"
            and entrypoint in (None, record.get("entrypoint"))
            and method in (None, record.get("method"))
        ]

    def problems(self):
        """Warning and error lines it logged, and escaped tracebacks (the run is suspect if any)."""
        found = []
        for record, line in self.log_records():
            if record is None:
                if line.startswith("Traceback"):  # plain lines are otherwise start-up deprecation warnings
                    found.append(f"{self.name}: {line.strip()}")
            elif record.get("level") in ("warning", "error", "critical"):
                found.append(
                    f"{self.name} {record.get('level')}: {record.get('message')} "
                    f"{record.get('method') or ''} {record.get('error_type') or ''}".strip()
                )
        return found

    def request_durations(self):
        """{"entrypoint:method": {"count", "sum", "buckets"}} from its /metrics: every entrypoint call is
        in the request-duration histogram, timer ticks too (which are not logged at INFO)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        found: dict[str, dict] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "grassroots_request_duration_seconds":
                continue
            for sample in family.samples:
                entry = found.setdefault(
                    f"{sample.labels['entrypoint']}:{sample.labels['method']}",
                    {"count": 0.0, "sum": 0.0, "buckets": {}},
                )
                if sample.name.endswith("_count"):
                    entry["count"] = sample.value
                elif sample.name.endswith("_sum"):
                    entry["sum"] = sample.value
                elif sample.name.endswith("_bucket"):
                    entry["buckets"][sample.labels["le"]] = sample.value
        return found

    @contextlib.contextmanager
    def profiled(self, calls):
        """Profile the service (``probe``) while the block makes ``calls`` calls; the dict yielded is
        filled at the end with ``read_profile``'s figures per call."""
        assert self.probe, "start it with probe=True"
        for suffix in (".on", ".prof", ".sql"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.probe + suffix)
        os.kill(self.pid, signal.SIGUSR1)
        self._wait_for(self.probe + ".on")
        found: dict = {}
        yield found
        os.kill(self.pid, signal.SIGUSR2)
        self._wait_for(self.probe + ".sql")
        found.update(read_profile(self.probe, calls))

    def _wait_for(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {path} after {timeout:g} s; see {self.log_path}")
            eventlet.sleep(0.05)

    def collections(self, since, until):
        """(end time, generation, pause ms) of its slower garbage collections between two unix times (``probe``)."""
        found = []
        with open(f"{self.probe}.gc") as lines:
            for line in lines:
                at, generation, pause = line.split()
                if since <= float(at) <= until:
                    found.append((float(at), int(generation), float(pause)))
        return found


def gc_report(service, calls, since, until, slow_ms):
    """--profile: a service's full (gen-2) garbage collections between two unix times, and how many of its
    ``calls`` (its "call finished" records) over ``slow_ms`` had one inside."""
    collections = service.collections(since, until)
    full = [at for at, generation, _pause in collections if generation == 2]
    hit, clean = set(), []
    for index, call in enumerate(calls):
        end = parse_log_time(call["time"]).timestamp()
        if any(end - call["duration_ms"] / 1000 - 0.001 <= at <= end + 0.001 for at in full):
            hit.add(index)
        else:
            clean.append(call["duration_ms"])
    slow = {index for index, call in enumerate(calls) if call["duration_ms"] > slow_ms}
    return {
        "gen2_collections": len(full),
        "gen2_pause": summarise([pause for _at, generation, pause in collections if generation == 2]),
        "other_pauses_over_2ms": sum(1 for _at, generation, _p in collections if generation != 2),
        "calls_over_target": len(slow),
        "of_which_during_a_gen2_collection": len(hit & slow),
        "calls_without_gen2_collection": summarise(clean),
    }


def durations_delta(before, after):
    """What each entrypoint method added between two ``request_durations``: calls, seconds, and calls per
    bucket (cumulative: up to each bound, in seconds)."""
    delta = {}
    for key, now in after.items():
        then = before.get(key, {"count": 0.0, "sum": 0.0, "buckets": {}})
        calls = int(now["count"] - then["count"])
        if calls:
            delta[key] = {
                "calls": calls,
                "seconds": round(now["sum"] - then["sum"], 3),
                "calls_up_to_s": {le: int(n - then["buckets"].get(le, 0.0)) for le, n in now["buckets"].items()},
            }
    return delta


def start_services(services, amqp_uri, timeout=SERVICE_START_TIMEOUT):
    """Start every service of {name: ServiceProcess}; wait until each answers /readyz and is the one
    consumer of its RPC queue."""
    for service in services.values():
        service.start()
    deadline = time.monotonic() + timeout
    pending = dict(services)
    while pending:
        for name, service in list(pending.items()):
            service.check_alive()
            if service.ready():
                consumers = queue_state(amqp_uri, f"rpc-{name}")[1]
                if consumers > 1:
                    raise RuntimeError(f"{consumers} consumers on rpc-{name}: something else serves it")
                if consumers == 1:
                    del pending[name]
        if pending and time.monotonic() > deadline:
            logs = ", ".join(s.log_path for s in pending.values())
            raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}; see {logs}")
        eventlet.sleep(0.2)
    print("  services up: " + ", ".join(f"{n} pid {s.pid} (log {s.log_path})" for n, s in services.items()), flush=True)


def stop_services(services, amqp_uri, existed):
    """Stop every service, then delete the queues the run created (``existed`` from claim_queues)."""
    for service in services.values():
        service.stop()
    release_queues(amqp_uri, existed)


# ---- CPU from /proc --------------------------------------------------------------------------------------


@dataclass
class CpuSample:
    """CPU seconds (user + system) used so far by groups of processes."""

    at: float  # monotonic
    seconds: dict


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the command name may hold spaces; not after ")"
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_named(names):
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() in names:
                    found.append(int(entry))
        except OSError:
            pass
    return found


def cpu_now(services):
    """CPU used so far by each service, by PostgreSQL, by RabbitMQ and by this process. PostgreSQL and
    RabbitMQ are every process of that name on the machine: other users of them count too."""
    seconds = {name: process_cpu_seconds(service.pid) for name, service in services.items()}
    seconds["postgres"] = sum(process_cpu_seconds(pid) for pid in pids_named({"postgres"}))
    seconds["rabbitmq"] = sum(process_cpu_seconds(pid) for pid in pids_named({"beam.smp"}))
    seconds["bench"] = process_cpu_seconds(os.getpid())
    return CpuSample(time.monotonic(), seconds)


def cpu_used(before, after):
    """CPU seconds each process group used between two ``cpu_now`` samples, and the wall time."""
    used = {name: round(after.seconds[name] - before.seconds.get(name, 0.0), 2) for name in after.seconds}
    return {"wall_s": round(after.at - before.at, 2), **used}


def cpu_text(cpu):
    return ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "wall_s") + f" (wall {cpu['wall_s']:.1f} s)"


# ---- --profile -----------------------------------------------------------------------------------------


def read_profile(prefix, calls, top=15):
    """What ``bench.probe`` wrote, per call: CPU; the functions with the most CPU of their own; the project's
    own functions (services/, shared/) with the most CPU under them, its steps; SQL by statement (the SELECTs
    with their first parameters, for EXPLAIN)."""
    # Stats.stats ({(file, line, function): (cc, nc, tt, ct, callers)}) is what print_stats reads;
    # typeshed leaves it out as undocumented.
    entries = pstats.Stats(prefix + ".prof").stats  # type: ignore[attr-defined]
    with open(prefix + ".sql", "rb") as source:
        statements = pickle.load(source)
    per_call = max(calls, 1)

    def function(key):
        (filename, line, name), (_cc, count, own, cumulative, _callers) = key, entries[key]
        where = filename.split("site-packages/")[-1].replace(ROOT + "/", "")
        return {
            "function": f"{where}:{line}({name})",
            "calls_per_call": round(count / per_call, 2),
            "own_ms": round(own * 1000 / per_call, 3),
            "cumulative_ms": round(cumulative * 1000 / per_call, 3),
        }

    ours = [key for key in entries if key[0].startswith((os.path.join(ROOT, "services"), os.path.join(ROOT, "shared")))]
    sql_by_shape: dict[str, list] = {}
    for statement, (count, ms, _parameters) in statements.items():
        entry = sql_by_shape.setdefault(sql_shape(statement), [0, 0.0])
        entry[0], entry[1] = entry[0] + count, entry[1] + ms
    labels: defaultdict[str, int] = defaultdict(int)
    sql_by_label = {}
    for shape, (count, ms) in sorted(sql_by_shape.items(), key=lambda item: -item[1][1]):
        label = sql_label(shape)
        labels[label] += 1
        label += f" #{labels[label]}" if labels[label] > 1 else ""
        sql_by_label[label] = {"calls_per_call": round(count / per_call, 2), "ms": round(ms / per_call, 3)}
    return {
        "calls": calls,
        "cpu_ms": round(sum(entry[2] for entry in entries.values()) * 1000 / per_call, 3),
        "functions": [function(key) for key in sorted(entries, key=lambda key: -entries[key][2])[:top]],
        "own_code": [function(key) for key in sorted(ours, key=lambda key: -entries[key][3])[:top]],
        "sql": sql_by_label,
        "selects": [
            {"sql": statement, "parameters": parameters, "calls_per_call": round(count / per_call, 2)}
            for statement, (count, _ms, parameters) in statements.items()
            if parameters is not None
        ],
    }


def sql_shape(statement):
    """The statement with its expanded IN lists (one placeholder per value) collapsed: one shape per query."""
    return re.sub(r"\((?:%\(\w+\)s(?:, )?)+\)", "(...)", statement)


def sql_label(statement):
    """ "SELECT volunteers": the verb and the first table; the start of the statement where it names none."""
    verb = statement.lstrip().split(None, 1)[0].upper()
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", statement, re.I)
    return f"{verb} {table.group(1)}" if table else " ".join(statement.split())[:60]


def print_profile(title, profile):
    print(
        f"\n{title}: {profile['calls']} calls profiled; CPU {profile['cpu_ms']:.2f} ms per call (cProfile at least "
        "doubles it). ms per call (own / cumulative, calls per call), by CPU of their own:"
    )
    for heading, key in (("", "functions"), ("  The project's own functions, by CPU under them:\n", "own_code")):
        print(heading, end="")
        for item in profile[key]:
            print(
                f"  {item['function'][-84:]:<84} {item['own_ms']:7.3f} / {item['cumulative_ms']:7.3f}  "
                f"({item['calls_per_call']:g})"
            )
    if profile["sql"]:
        print("  SQL per call (time at the service's cursor, summed):")
        for label, info in profile["sql"].items():
            print(f"    {label:<82} {info['ms']:7.3f} ms  ({info['calls_per_call']:g})")


# ---- goals: one row per target, gathered by `make bench-all` (bench.all) ----------------------


def goal(case, figure, target, floor=None, ratio_target=None, unit="ms", bound=None, ratio_minimum=None):
    """One row of the goals table: ``figure`` (in ``unit``) measured for ``case``; with ``floor`` (the
    same unit, measured in the same run) the ratio ``figure / floor`` is judged against ``ratio_target``,
    and with ``bound`` the figure itself is judged against it (both must hold when both are given).
    ``ratio_minimum``: for a figure where more is better (a throughput against the floor's), the ratio
    must be at least that. ``target``: the words printed for the target, e.g. "p50 <= 2.5x floor".
    Returns a dict for the bench's results JSON under "goals"."""
    ratio = figure / floor if floor else None
    met = True
    if ratio_target is not None:
        met = met and ratio is not None and ratio <= ratio_target
    if ratio_minimum is not None:
        met = met and ratio is not None and ratio >= ratio_minimum
    if bound is not None:
        met = met and figure <= bound
    return {
        "case": case,
        "figure": round(float(figure), 3),
        "unit": unit,
        "floor": None if floor is None else round(float(floor), 3),
        "ratio": None if ratio is None else round(ratio, 2),
        "target": target,
        "verdict": "pass" if met else "MISS",
    }
