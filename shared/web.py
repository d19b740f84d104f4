"""HTTP endpoints every service serves: /metrics, /healthz, /readyz."""

import json
from typing import Any

from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.web.handlers import http
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response


def broker_reachable(amqp_uri, timeout=2.0):
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.connect()
        return True
    except Exception:
        return False


def _json(status, body):
    return Response(json.dumps(body), status=status, mimetype="application/json")


class ObservableMixin:
    """Mixed into each service class; it expects ``telemetry`` and ``db`` dependencies."""

    # What nameko injects into each worker from the service class's dependency providers
    # (Config, Telemetry, Database): the class attributes themselves are the providers.
    config: Any
    telemetry: Any
    db: Any

    @http("GET", "/metrics")
    def http_metrics(self, request):
        # A plain `curl` (no Accept header) gets the text format.
        return Response(self.telemetry.render(), status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @http("GET", "/healthz")
    def http_healthz(self, request):
        return _json(200, {"status": "alive"})

    @http("GET", "/readyz")
    def http_readyz(self, request):
        checks = {"broker": broker_reachable(self.config[AMQP_URI_CONFIG_KEY])}
        try:
            self.db.ping()
            checks["database"] = True
        except Exception:
            checks["database"] = False
        ready = all(checks.values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})
