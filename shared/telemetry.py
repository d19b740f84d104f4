"""RED metrics for every entrypoint, domain gauges read at scrape time, and one
structured log line per call.

Each container gets its own Prometheus registry, so several services can share
a process (tests) without clashing metric names.
"""

import logging
import time

from nameko.extensions import DependencyProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from shared import logs
from shared.errors import CLIENT_ERRORS

log = logging.getLogger("grassroots.calls")

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SqlGauge:
    """A gauge whose samples are the rows of a query: label columns first, the value last."""

    def __init__(self, name, documentation, sql, labels=()):
        self.name = name
        self.documentation = documentation
        self.sql = sql
        self.labels = tuple(labels)


class SqlGaugeCollector(Collector):
    def __init__(self, database, gauges):
        self.database = database
        self.gauges = gauges

    def collect(self):
        try:
            with self.database.engine.connect() as conn:
                for gauge in self.gauges:
                    family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
                    for row in conn.execute(text(gauge.sql)):
                        *label_values, value = row
                        family.add_metric([str(v) for v in label_values], float(value or 0))
                    yield family
        except Exception:
            # A scrape must still return the RED metrics when the database is down.
            log.warning("domain gauges unavailable", exc_info=True)


def entrypoint_kind(entrypoint):
    """A short, stable label: rpc, event, timer, http (else the class name)."""
    kind = _kinds.get(type(entrypoint))
    if kind is None:
        kind = _kinds[type(entrypoint)] = _kind_of(entrypoint)
    return kind


_kinds: dict = {}  # entrypoint class: its label (looked up on every call)


def _kind_of(entrypoint):
    declared = getattr(entrypoint, "telemetry_kind", None)  # an entrypoint of ours that is one of these
    if declared is not None:
        return declared
    from nameko.events import EventHandler
    from nameko.rpc import Rpc
    from nameko.timer import Timer
    from nameko.web.handlers import HttpRequestHandler

    for base, kind in ((Rpc, "rpc"), (EventHandler, "event"), (Timer, "timer"), (HttpRequestHandler, "http")):
        if isinstance(entrypoint, base):
            return kind
    return type(entrypoint).__name__


def outcome_of(exc_info):
    if exc_info is None:
        return "success"
    if issubclass(exc_info[0], CLIENT_ERRORS):
        return "client_error"
    return "error"


class CounterSpec:
    """A domain counter a service declares (``Telemetry(counters=...)``), exported from 0 for each of
    ``start_labels`` (tuples of label values) and increased with ``Telemetry.count``."""

    def __init__(self, name, documentation, labels=(), start_labels=()):
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.start_labels = tuple(tuple(v) for v in start_labels)


class Telemetry(DependencyProvider):
    def __init__(self, gauges=(), database_attr="db", counters=()):
        self.gauges = list(gauges)
        self.database_attr = database_attr
        self.counter_specs = list(counters)

    def setup(self):
        service = self.container.service_name
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "grassroots_requests_total",
            "Entrypoint calls handled, by outcome (success, client_error, error).",
            ["service", "entrypoint", "method", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "grassroots_request_duration_seconds",
            "Time spent handling an entrypoint call.",
            ["service", "entrypoint", "method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "grassroots_requests_in_flight",
            "Entrypoint calls being handled now.",
            ["service"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "grassroots_dead_letters_total",
            "Event messages dead-lettered after failing their retries, or rejected as malformed; "
            "RPC requests that could not be answered (handler=rpc).",
            ["service", "handler"],
            registry=self.registry,
        )
        self.counters = {}
        for spec in self.counter_specs:
            counter = Counter(spec.name, spec.documentation, list(spec.labels), registry=self.registry)
            for values in spec.start_labels:
                counter.labels(*values)
            self.counters[spec.name] = counter
        self.service = service
        self._started = {}
        self._children: dict = {}  # (metric, labels): its labelled child, looked up once
        database = next((d for d in self.container.dependencies if d.attr_name == self.database_attr), None)
        if database is not None:
            gauges = list(self.gauges)
            if getattr(database, "outbox_model", None) is not None:
                gauges.append(
                    SqlGauge(
                        "grassroots_outbox_pending",
                        "Committed events not yet published to the broker.",
                        "SELECT count(*) FROM outbox_events WHERE published_at IS NULL",
                    )
                )
            self.registry.register(SqlGaugeCollector(database, gauges))

    def start(self):
        # Export each event handler's dead-letter counter at 0, so that the first dead letter is an
        # increase() alerts can see rather than a series appearing at 1.
        for entrypoint in self.container.entrypoints:
            if hasattr(entrypoint, "dead_letter"):
                self.dead_letters.labels(self.service, entrypoint.method_name)
            elif hasattr(getattr(entrypoint, "rpc_consumer", None), "dead_letter"):
                # shared.rpc: RPC requests that could not be answered, under one label
                self.dead_letters.labels(self.service, "rpc")

    def get_dependency(self, worker_ctx):
        return self

    def render(self):
        return generate_latest(self.registry)

    def _child(self, metric, *labels):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count(self, name, *labels, amount=1):
        """Increase the declared counter ``name`` (``CounterSpec``) by ``amount`` (nothing for 0)."""
        if amount:
            counter = self.counters[name]
            (counter.labels(*labels) if labels else counter).inc(amount)

    def count_dead_letter(self, handler):
        self.dead_letters.labels(self.service, handler).inc()

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()
        self._child(self.in_flight, self.service).inc()
        logs.bind_call(self.service, worker_ctx.call_id, worker_ctx.call_id_stack)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(worker_ctx, None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        entrypoint = entrypoint_kind(worker_ctx.entrypoint)
        method = worker_ctx.entrypoint.method_name
        outcome = outcome_of(exc_info)
        self._child(self.in_flight, self.service).dec()
        self._child(self.requests, self.service, entrypoint, method, outcome).inc()
        self._child(self.duration, self.service, entrypoint, method).observe(elapsed)
        # Timer ticks and health probes succeed every few seconds: keep them out of INFO logs.
        quiet = outcome == "success" and entrypoint in ("timer", "http")
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "call finished",
            extra={
                "entrypoint": entrypoint,
                "method": method,
                "outcome": outcome,
                "duration_ms": round(elapsed * 1000, 2),
                "error_type": exc_info[0].__name__ if exc_info else None,
            },
        )

    def worker_teardown(self, worker_ctx):
        if self._started.pop(worker_ctx, None) is not None:  # worker_result never ran
            self._child(self.in_flight, self.service).dec()
        logs.unbind_call()
