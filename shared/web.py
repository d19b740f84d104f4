"""HTTP endpoints every service serves: /metrics, /healthz, /readyz.

/healthz says the process runs and serves HTTP; it depends on nothing else, so a broker or database
outage never makes Kubernetes restart a pod that would come back by itself. /readyz says whether
the service can do its work now: its queue consumers consume on a live connection (shared.reconnect),
the broker answers, and the database answers.

The broker check (``BrokerProbe``) keeps one AMQP connection for the life of the service and asks
the broker one round trip on it per probe (``basic.qos`` on its own channel: no queue, no
permission, no side effect), instead of a new connection and login every 10 s per pod. When that
connection is gone (the broker restarted, a node went away, the vhost was deleted), the probe drops
it and logs in again, in the same probe: the answer is about the broker now, never about a stale
connection. The whole probe is bounded (``READY_TIMEOUT``) and green (eventlet sockets), so an
unreachable broker neither hangs the probe nor stalls the service.
"""

import contextlib
import json
from typing import Any

import eventlet
from eventlet.semaphore import Semaphore
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response

from shared import reconnect

reconnect.install()  # /readyz reads the consumers' state, which shared.reconnect keeps

READY_TIMEOUT = 2.0  # seconds for the broker's answer, a new login to any of its failover addresses included


def broker_reachable(amqp_uri, timeout=READY_TIMEOUT):
    """True when an AMQP login at ``amqp_uri`` (or one of its ``;``-separated failover addresses)
    and a round trip on it succeed within ``timeout`` seconds; one attempt per address, no sleeping
    between them: a one-off ``BrokerProbe`` (/readyz keeps its probe and connection)."""
    probe = BrokerProbe(amqp_uri, timeout)
    try:
        return probe.check()
    finally:
        probe.close()


def _open(amqp_uri, timeout):
    """A kombu Connection logged in at ``amqp_uri`` (or one of its ``;``-separated failover
    addresses): one attempt per address, no sleeping between them. The caller bounds the time."""
    conn = Connection(amqp_uri, connect_timeout=timeout)
    try:
        conn.ensure_connection(max_retries=max(len(conn.alt), 1) - 1, interval_start=0, interval_step=0)
    except BaseException:
        _drop(conn)
        raise
    return conn


def _drop(conn):
    """Forget ``conn`` without talking to the broker (its socket is closed; nothing waits)."""
    with contextlib.suppress(Exception):  # a connection that never opened has nothing to collect
        conn.collect()


class BrokerProbe:
    """Whether the broker answers now, asked over one long-lived connection (see the module
    docstring). ``check()`` is safe from concurrent green threads: they take turns. ``opened``
    counts the logins so far."""

    def __init__(self, amqp_uri, timeout=READY_TIMEOUT):
        self.amqp_uri = amqp_uri
        self.timeout = timeout
        self.connection: Connection | None = None
        self.channel: Any = None  # an amqp Channel on that connection
        self.opened = 0
        self._turn = Semaphore(1)

    def check(self):
        """True when a round trip to the broker succeeds within ``timeout`` seconds: on the kept
        connection, else on a new one (which is kept)."""
        deadline = eventlet.Timeout(self.timeout)
        try:
            with self._turn:
                try:
                    if self.channel is not None and self._answers(self.timeout / 2):
                        return True
                    self.discard()
                    self.connection = _open(self.amqp_uri, self.timeout)
                    self.opened += 1
                    self.channel = self.connection.channel()
                    return self._answers(None)
                except (Exception, eventlet.Timeout) as failure:
                    if isinstance(failure, eventlet.Timeout) and failure is not deadline:
                        raise
                    self.discard()  # still our turn: nobody else is using it
                    return False
        except eventlet.Timeout as expired:  # the deadline passed while another probe had its turn
            if expired is not deadline:
                raise
            return False
        finally:
            deadline.cancel()

    def _answers(self, within):
        """One round trip on the kept channel (``basic.qos``, answered by ``qos-ok``)."""
        bound = eventlet.Timeout(within) if within else None
        try:
            self.channel.basic_qos(0, 0, False)
            return True
        except (Exception, eventlet.Timeout) as failure:
            if isinstance(failure, eventlet.Timeout) and failure is not bound:
                raise
            return False
        finally:
            if bound is not None:
                bound.cancel()

    def discard(self):
        """Drop the kept connection without waiting on the broker."""
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None:
            _drop(connection)

    def close(self, timeout=1.0):
        """Close the kept connection politely, within ``timeout`` seconds; else just drop it."""
        connection, self.connection, self.channel = self.connection, None, None
        if connection is None:
            return
        try:
            with eventlet.Timeout(timeout):
                connection.release()
        except (Exception, eventlet.Timeout):
            _drop(connection)


class BrokerCheck(DependencyProvider):
    """Injects ``broker_ready()``: the container's one ``BrokerProbe`` (its connection is closed when
    the service stops)."""

    def setup(self):
        self.probe = BrokerProbe(self.container.config[AMQP_URI_CONFIG_KEY])

    def stop(self):
        self.probe.close()

    def kill(self):
        self.probe.discard()

    def get_dependency(self, worker_ctx):
        return self.probe.check


class ConsumerState(DependencyProvider):
    """Injects ``consuming()``: whether every queue consumer of the service consumes on a live
    connection now (False while it reconnects after losing the broker)."""

    def get_dependency(self, worker_ctx):
        return lambda: reconnect.consumers_connected(self.container)


def _json(status, body):
    return Response(json.dumps(body), status=status, mimetype="application/json")


class ObservableMixin:
    """Mixed into each service class; it expects ``telemetry`` and ``db`` dependencies."""

    # What nameko injects into each worker from the service class's dependency providers
    # (Config, Telemetry, Database): the class attributes themselves are the providers.
    config: Any
    telemetry: Any
    db: Any
    consuming: Any = ConsumerState()
    broker_ready: Any = BrokerCheck()

    @http("GET", "/metrics")
    def http_metrics(self, request):
        # A plain `curl` (no Accept header) gets the text format.
        return Response(self.telemetry.render(), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @http("GET", "/healthz")
    def http_healthz(self, request):
        return _json(200, {"status": "alive"})

    @http("GET", "/readyz")
    def http_readyz(self, request):
        checks = {"broker": self.consuming() and self.broker_ready()}
        try:
            self.db.ping()
            checks["database"] = True
        except Exception:
            checks["database"] = False
        ready = all(checks.values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})
