"""Latency of the grid service's RPC against the raw AMQP request/reply floor.

    python -m bench.grid_rpc --database-url postgresql://postgres@127.0.0.1:5432/grassroots_bench \\
        [--amqp-uri amqp://guest:guest@localhost:5672/] [--requests 300] [--warmup 30] [--explain]

Needs a database seeded by ``python -m bench.seed_grid`` (and the same
GRASSROOTS_PII_KEY). Starts the grid service as its own process with
``nameko run`` (as deployed: its own interpreter and event loop), waits until
it answers, then times sequential calls from a standalone ClusterRpcProxy in
this process.

In the same run it times a bare kombu echo with payloads of the same size: the
transport floor, over RabbitMQ direct reply-to with transient messages (the
figure the get_unit target is set against), and for reference the same echo
with the delivery settings nameko uses for RPC (publisher confirms, persistent
messages, durable queues).

Printed: client-side p50/p99/mean per call, the service's own time per call
(its "call finished" log lines, which include publishing the reply), and
PASS/MISS per target. Written: var/bench_grid_results.json (with the EXPLAIN
ANALYZE of every count/find query) and the service's log,
var/bench_grid_service.log. Plans are printed for queries that miss their
target, or for all with --explain.
"""

import warnings

# eventlet warns on import that it is deprecated (a plain Warning subclass); we know.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)

import eventlet  # noqa: E402

# Before anything imports socket, threading or time: nameko and kombu need the green versions.
eventlet.monkey_patch()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import eventlet.event  # noqa: E402
import psycopg2  # noqa: E402
from kombu import Connection, Consumer, Producer, Queue  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import jwt_secret, pii_key, save_json  # noqa: E402
from bench.db import libpq_url, one_row  # noqa: E402
from bench.harness import (  # noqa: E402
    ServiceProcess,
    claim_rpc_queues,
    environment,
    print_header,
    stop_services,
    summarise,
    timed,
    wait_ready,
)
from bench.seed_grid import bench_targets  # noqa: E402
from shared.auth import mint_token  # noqa: E402

RESULTS_FILE = "bench_grid_results.json"
SERVICE_LOG = "bench_grid_service.log"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
QUERY_TARGET_MS = 50.0  # p99 target of every count/find call
FLOOR_RATIO_TARGET = 2.0  # get_unit p50 may be at most this multiple of the floor p50
TRANSIENT, PERSISTENT = 1, 2  # AMQP delivery modes


@dataclass
class Case:
    label: str
    method: str
    kwargs: dict
    target: str  # "floor": p50 against the AMQP floor; "query": p99 against QUERY_TARGET_MS
    expected: int | None = None  # the answer computed straight from the database, for a sanity check
    answer: str = ""
    samples: list = field(default_factory=list)
    service_ms: list = field(default_factory=list)  # the service's own time for each timed call


def bench_cases(targets):
    elderly = ["elderly_alone"]
    street, community = targets["street"], targets["community"]
    return [
        Case("get_unit(small grid)", "get_unit", {"unit_id": targets["small_grid"]}, "floor"),
        Case(
            "count_residents(street, elderly_alone)", "count_residents", {"under": street, "tags_any": elderly}, "query"
        ),
        Case(
            "count_residents(community, elderly_alone)",
            "count_residents",
            {"under": community, "tags_any": elderly},
            "query",
        ),
        Case("count_residents(street)", "count_residents", {"under": street}, "query"),
        Case(
            "find_residents(street, elderly_alone, 100)",
            "find_residents",
            {"under": street, "tags_any": elderly, "page_size": 100},
            "query",
        ),
        Case(
            "find_residents(community, elderly_alone, 100)",
            "find_residents",
            {"under": community, "tags_any": elderly, "page_size": 100},
            "query",
        ),
    ]


# ---- the AMQP floor -------------------------------------------------------


class EchoServer:
    """Answers every request on its queue with a fixed body: an RPC server that does no work.

    A greenthread of this process, like the ClusterRpcProxy's client side; the
    request queue sits on the default exchange. With ``guaranteed`` it delivers
    like nameko: publisher confirms, persistent messages, a durable queue.
    """

    def __init__(self, amqp_uri, reply_body, guaranteed):
        self.amqp_uri = amqp_uri
        self.reply_body = reply_body
        self.guaranteed = guaranteed
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
                delivery_mode = PERSISTENT if self.guaranteed else TRANSIENT

                def on_request(_body, message):
                    producer.publish(
                        self.reply_body,
                        exchange="",
                        routing_key=message.properties["reply_to"],
                        correlation_id=message.properties["correlation_id"],
                        delivery_mode=delivery_mode,
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
    """Round trips of a bare kombu request/reply.

    Plain: transient messages, replies over direct reply-to (no reply queue to
    declare or route through). Guaranteed: nameko's settings, replies to a
    durable reply queue of the client's own, as nameko's proxies have.
    """
    with EchoServer(amqp_uri, reply_body, guaranteed) as server, amqp_connection(amqp_uri, guaranteed) as conn:
        channel = conn.channel()
        replies = {}

        def on_reply(body, message):
            replies[message.properties["correlation_id"]] = body
            if guaranteed:
                message.ack()

        if guaranteed:
            reply_queue = Queue(f"bench-echo-reply-{uuid.uuid4().hex[:12]}", durable=True, auto_delete=True)
        else:
            # Direct reply-to wants the consumer (no_ack) and the publish on the same channel.
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


# ---- the service under test -----------------------------------------------


def grid_service(amqp_uri, database_url):
    """``nameko run`` of the grid service against the bench database, its output in var/."""
    return ServiceProcess(
        "grid",
        amqp_uri,
        SERVICE_LOG,
        {
            "GRID_DATABASE_URL": database_url,
            "GRID_MAX_WORKERS": "10",
            "GRID_HOUSEKEEPING_INTERVAL": "60",
        },
    )


def rpc_durations(service):
    """(method, duration_ms) of every RPC call the service logged, in the order handled."""
    return [(record.get("method"), record["duration_ms"]) for record in service.finished_calls("rpc")]


def attach_service_times(cases, calls, requests, warmup):
    """Give each case the service's own durations for its timed calls.

    The calls are sequential, so the log holds them in the order made: the
    readiness probe, then per case one answer check, the warm-up and the timed
    calls, then one last get_unit. The log line is written after the reply is
    sent, so matching by time would be off by one at the edges; by order it is exact.
    """
    expected = 1 + len(cases) * (1 + warmup + requests) + 1
    if len(calls) != expected:
        print(f"  (service log has {len(calls)} RPC calls, expected {expected}: no service-side times)")
        return
    position = 1
    for case in cases:
        position += 1 + warmup
        timed_calls = calls[position : position + requests]
        position += requests
        if {method for method, _ms in timed_calls} == {case.method}:
            case.service_ms = [ms for _method, ms in timed_calls]


# ---- checks against the database -----------------------------------------


def expected_answers(database_url, cases):
    """What each count/find call should return, computed directly in SQL."""
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn.cursor() as cur:
            for case in cases:
                if case.method == "get_unit":
                    continue
                cur.execute("SELECT path FROM units WHERE id = %s", (case.kwargs["under"],))
                prefix = one_row(cur)[0] + "%"
                if case.kwargs.get("tags_any"):
                    cur.execute(
                        "SELECT count(DISTINCT resident_id) FROM resident_tags "
                        "WHERE tag = ANY(%s) AND unit_path LIKE %s",
                        (case.kwargs["tags_any"], prefix),
                    )
                else:
                    cur.execute("SELECT count(*) FROM residents WHERE unit_path LIKE %s", (prefix,))
                total = one_row(cur)[0]
                case.expected = total if case.method == "count_residents" else min(total, case.kwargs["page_size"])
    finally:
        conn.close()


def describe(case, answer):
    """A short note on the answer, flagged if it disagrees with the database."""
    if case.method == "get_unit":
        return f"{answer['level']} {answer['id']}"
    got = answer["count"] if case.method == "count_residents" else len(answer["items"])
    note = f"count {got:,}" if case.method == "count_residents" else f"{got} rows"
    return note if got == case.expected else f"{note} (DB says {case.expected:,}!)"


def explain(database_url, case):
    """EXPLAIN (ANALYZE, BUFFERS) of each statement the service's domain code runs for ``case``.

    The domain function runs in-process against the bench database; its SQL is
    captured as issued and then explained with the same parameters.
    """
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from services.grid import residents
    from shared.auth import Caller
    from shared.db import make_engine
    from shared.pii import PiiVault

    engine = make_engine(database_url, pool_size=1)
    statements = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        statements.append((statement, parameters))

    caller = Caller(sub="bench", roles=frozenset({"admin"}))
    args = {
        "under": case.kwargs["under"],
        "tags_any": case.kwargs.get("tags_any"),
        "tags_all": case.kwargs.get("tags_all"),
    }
    plans = []
    try:
        with Session(engine) as session:
            if case.method == "count_residents":
                residents.count_residents(session, caller, **args)
            else:
                residents.find_residents(
                    session, caller, PiiVault(pii_key()), page=1, page_size=case.kwargs["page_size"], **args
                )
            cursor = session.connection().connection.cursor()  # raw DBAPI: not captured again
            for statement, parameters in list(statements):
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                plans.append({"sql": cursor.mogrify(statement, parameters).decode(), "plan": plan})
    finally:
        engine.dispose()
    return plans


# ---- main -----------------------------------------------------------------


def run(database_url, amqp_uri, requests, warmup, explain_all=False):
    secret = jwt_secret()
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn.cursor() as cur:
            targets = bench_targets(cur)
            cur.execute("SELECT count(*) FROM residents")
            resident_count = one_row(cur)[0]
    finally:
        conn.close()
    cases = bench_cases(targets)
    expected_answers(database_url, cases)

    existed = claim_rpc_queues(amqp_uri, ["grid"])
    token = mint_token(secret, "bench", ["admin"], ttl=3600)
    service = grid_service(amqp_uri, database_url)
    load_before = os.getloadavg()
    print(
        f"Grid RPC bench: {make_url(database_url).database} ({resident_count:,} residents), "
        f"{requests} sequential requests per case after {warmup} warm-up",
        flush=True,
    )
    service.start()
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
            grid = proxy.grid
            wait_ready({"grid": service}, amqp_uri)
            grid.get_unit(unit_id=targets["district"])  # the readiness probe attach_service_times expects first
            print(f"  grid service up (pid {service.process.pid}, log {service.log_path})", flush=True)
            for case in cases:
                method = getattr(grid, case.method)
                try:
                    case.answer = describe(case, method(**case.kwargs))
                except Exception as exc:
                    raise SystemExit(
                        f"{case.label} failed: {exc!r}; see {service.log_path} (a database seeded "
                        "with another GRASSROOTS_PII_KEY cannot be read)"
                    ) from exc
                case.samples = timed(lambda method=method, kwargs=case.kwargs: method(**kwargs), requests, warmup)
                print(f"  {case.label:<48} done", flush=True)
            unit_reply = {"result": grid.get_unit(unit_id=targets["small_grid"]), "error": None}
    finally:
        stop_services({"grid": service}, amqp_uri, existed)  # and leave the broker as we found it
    attach_service_times(cases, rpc_durations(service), requests, warmup)

    # The floor carries what a get_unit call carries: the same kwargs in the
    # body, the token and call id stack in headers as nameko sends them, the same reply.
    request = {
        "body": {"args": [], "kwargs": cases[0].kwargs},
        "headers": {"nameko.auth_token": token, "nameko.call_id_stack": [f"standalone_rpc_proxy.call.{uuid.uuid4()}"]},
    }
    floors = {
        "plain": measure_floor(amqp_uri, request, unit_reply, requests, warmup),
        "guaranteed": measure_floor(amqp_uri, request, unit_reply, requests, warmup, guaranteed=True),
    }
    load_after = os.getloadavg()
    return report(
        database_url, targets, resident_count, cases, floors, requests, warmup, (load_before, load_after), explain_all
    )


def report(database_url, targets, resident_count, cases, floors, requests, warmup, loads, explain_all):
    floor = summarise(floors["plain"])
    guaranteed_floor = summarise(floors["guaranteed"])
    rows, checks = [], []
    for case in cases:
        stats = summarise(case.samples)
        service = summarise(case.service_ms)
        if case.target == "floor":
            limit = FLOOR_RATIO_TARGET * floor["p50_ms"]
            ratio = stats["p50_ms"] / floor["p50_ms"]
            passed = stats["p50_ms"] <= limit
            target = f"p50 <= {FLOOR_RATIO_TARGET:g}x floor = {limit:.2f}"
            verdict = f"{'PASS' if passed else 'MISS'} ({ratio:.1f}x floor)"
            checks.append(
                {
                    "case": case.label,
                    "metric": "p50_ms",
                    "value": stats["p50_ms"],
                    "limit_ms": round(limit, 3),
                    "ratio_to_floor": round(ratio, 2),
                    "pass": passed,
                }
            )
        else:
            passed = stats["p99_ms"] <= QUERY_TARGET_MS
            target = f"p99 <= {QUERY_TARGET_MS:g}"
            verdict = f"{'PASS' if passed else 'MISS'} ({stats['p99_ms'] / QUERY_TARGET_MS:.0%} of target)"
            checks.append(
                {
                    "case": case.label,
                    "metric": "p99_ms",
                    "value": stats["p99_ms"],
                    "limit_ms": QUERY_TARGET_MS,
                    "pass": passed,
                }
            )
        rows.append((case, stats, service, target, verdict, passed))

    def cell(stats, key):
        return f"{stats[key]:8.2f}" if stats else f"{'-':>8}"

    print()
    print_header(
        f"{'case (times in ms)':<48} {'p50':>8} {'p99':>8} {'mean':>8} {'svc p50':>8}  "
        f"{'answer':<16} {'target':<26} verdict"
    )
    for label, stats in (
        ("AMQP floor: kombu echo, direct reply-to", floor),
        ("  same, nameko delivery (confirm+persist)", guaranteed_floor),
    ):
        print(f"{label:<48} {cell(stats, 'p50_ms')} {cell(stats, 'p99_ms')} {cell(stats, 'mean_ms')}")
    for case, stats, service, target, verdict, _passed in rows:
        print(
            f"{case.label:<48} {cell(stats, 'p50_ms')} {cell(stats, 'p99_ms')} {cell(stats, 'mean_ms')} "
            f"{cell(service, 'p50_ms')}  {case.answer:<16} {target:<26} {verdict}"
        )
    print(
        f"\n{sum(c['pass'] for c in checks)}/{len(checks)} targets met. svc p50 = the service's own time per "
        f"call (its log; includes publishing the reply).\nLoad average {loads[0][0]:.2f} before, "
        f"{loads[1][0]:.2f} after; {os.cpu_count()} CPUs."
    )

    plans = {}
    for case, _stats, _service, _target, _verdict, passed in rows:
        if case.target == "query":
            plans[case.label] = explain(database_url, case)
            if explain_all or not passed:
                print(f"\n== EXPLAIN ANALYZE: {case.label} ({'PASS' if passed else 'MISS'})")
                for item in plans[case.label]:
                    print(f"-- {item['sql']}\n{item['plan']}\n")

    results = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": make_url(database_url).database,
        "residents": resident_count,
        "targets": targets,
        "requests": requests,
        "warmup": warmup,
        "environment": environment(loads),
        "floor": floor,
        "floor_nameko_delivery": guaranteed_floor,
        "cases": {
            case.label: {
                "method": case.method,
                "kwargs": case.kwargs,
                "answer": case.answer,
                **stats,
                "service": service,
            }
            for case, stats, service, *_ in rows
        },
        "checks": checks,
        "plans": plans,
    }
    print(f"Results written to {save_json(RESULTS_FILE, results)}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.grid_rpc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL of a database seeded by bench.seed_grid")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--requests", type=int, default=300, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per case first")
    parser.add_argument("--explain", action="store_true", help="print every query plan, not only the misses")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be positive and --warmup not negative")
    run(args.database_url, args.amqp_uri, args.requests, args.warmup, args.explain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
