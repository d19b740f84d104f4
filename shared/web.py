"""HTTP endpoints every service serves: /metrics, /healthz, /readyz.

/healthz says the process runs and serves HTTP; it depends on nothing else, so a broker or database
outage never makes Kubernetes restart a pod that would come back by itself. /readyz says whether
the service can do its work now: its queue consumers consume on a live connection (shared.reconnect),
the broker takes a login, and the database answers. The broker's login is bounded (``READY_TIMEOUT``)
and green (eventlet sockets), so an unreachable broker neither hangs the probe nor stalls the service.
"""

import json
from typing import Any

import eventlet
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response

from shared import reconnect

reconnect.install()  # /readyz reads the consumers' state, which shared.reconnect keeps

READY_TIMEOUT = 2.0  # seconds for the broker's login, all of its failover addresses together


def broker_reachable(amqp_uri, timeout=READY_TIMEOUT):
    """True when an AMQP login at ``amqp_uri`` (or one of its ``;``-separated failover addresses)
    succeeds within ``timeout`` seconds; one attempt per address, no sleeping between them."""
    try:
        with eventlet.Timeout(timeout), Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=max(len(conn.alt), 1) - 1, interval_start=0, interval_step=0)
        return True
    except (Exception, eventlet.Timeout):
        return False


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

    @http("GET", "/metrics")
    def http_metrics(self, request):
        # A plain `curl` (no Accept header) gets the text format.
        return Response(self.telemetry.render(), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @http("GET", "/healthz")
    def http_healthz(self, request):
        return _json(200, {"status": "alive"})

    @http("GET", "/readyz")
    def http_readyz(self, request):
        checks = {"broker": self.consuming() and broker_reachable(self.config[AMQP_URI_CONFIG_KEY])}
        try:
            self.db.ping()
            checks["database"] = True
        except Exception:
            checks["database"] = False
        ready = all(checks.values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})
