"""The gateways' inbound webhook: ``POST /gateways/<gateway>/inbound`` on the notices web port, the
HTTP twin of ``notices.record_inbound`` (docs/gateways.md, "Inbound: replies and keypresses").

A request is signed with the gateway's own secret (``NOTICES_SMS_INBOUND_SECRET``,
``NOTICES_VOICE_INBOUND_SECRET``)::

    X-Grassroots-Timestamp: <unix seconds>
    X-Grassroots-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + the raw body>

The timestamp is part of what is signed, and one more than ``MAX_SKEW`` seconds away from our clock
is refused: a captured request cannot be replayed later (within the window a replay is harmless: the
``gateway_event_id`` makes a report count once). Signatures are compared in constant time.

Checked in this order, each refusal a JSON ``{"error": ..., "message": ...}`` and nothing changed:
unknown gateway 404; body over ``MAX_BODY`` bytes 413; missing or bad timestamp or signature (or no
secret configured for that gateway) 401 — the body is not read as JSON before its signature holds;
not a JSON object 400 (``415`` for another content type); a field refused 400 with ``fields`` naming
each; then the report as the RPC takes it: unmatched 404, ambiguous or cancelled 409, recorded 200
with the reply ``notices.record_inbound`` gives. Log lines name the gateway and the reason, never the
phone nor the body.
"""

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.request

from nameko.extensions import DependencyProvider
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from services.notices import inbound
from services.notices.schemas import INBOUND, RecordInbound
from services.notices.vocabulary import INBOUND_GATEWAYS, INBOUND_KINDS
from shared import logs
from shared.auth import Caller
from shared.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, ValidationError
from shared.replies import dump_reply
from shared.telemetry import CounterSpec, Telemetry
from shared.validation import load

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes
MAX_SKEW = 300  # seconds between a request's timestamp and our clock
SIGNATURE_HEADER = "X-Grassroots-Signature"
TIMESTAMP_HEADER = "X-Grassroots-Timestamp"
SIGNATURE_PREFIX = "sha256="
MIN_SECRET = 16  # characters
# Each gateway's secret: the environment variable (as it is, like the gateways' auth headers: YAML
# would parse it), else ``INBOUND_SECRETS: {gateway: secret}`` in the config (tests).
SECRET_SETTINGS = {"sms": "NOTICES_SMS_INBOUND_SECRET", "voice": "NOTICES_VOICE_INBOUND_SECRET"}


class InboundSecretError(ValueError):
    """A secret the service cannot start with; the message names the setting, never the value."""


def inbound_secrets(config, environ=None):
    """{gateway: secret bytes} of the gateways with a secret. InboundSecretError for one that is
    shorter than MIN_SECRET characters or not visible ASCII (surrounding whitespace is removed:
    a Secret made from a file often ends in a newline)."""
    environ = os.environ if environ is None else environ
    configured = (config or {}).get("INBOUND_SECRETS") or {}
    found = {}
    for gateway, setting in SECRET_SETTINGS.items():
        value = environ.get(setting)
        if value is None:
            value = configured.get(gateway) if isinstance(configured, dict) else None
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise InboundSecretError(f"{setting} ({gateway} inbound webhook) must be text")
        value = value.strip()
        if len(value) < MIN_SECRET or not value.isascii() or not value.isprintable():
            raise InboundSecretError(
                f"{setting} ({gateway} inbound webhook) must be at least {MIN_SECRET} visible ASCII characters"
            )
        found[gateway] = value.encode()
    return found


def signature(secret, timestamp, body):
    """The ``X-Grassroots-Signature`` value of ``body`` (bytes) sent at ``timestamp`` (its header text)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + mac


def signed_request(url, secret, body, timestamp=None):
    """What a gateway sends: a POST of ``body`` (bytes) to ``url`` signed with ``secret`` (text) at
    ``timestamp`` (unix seconds as text; now by default), as docs/gateways.md says — the one recipe
    the demo and the tests post with."""
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret.encode(), timestamp, body),
    }
    return urllib.request.Request(url, data=body, method="POST", headers=headers)


def signature_problem(secret, headers, body, now):
    """None when the request's timestamp and signature hold, else why not (a short reason)."""
    if secret is None:
        return "no inbound secret is configured for this gateway"
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    given = headers.get(SIGNATURE_HEADER) or ""
    if not given:
        return "missing signature"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "missing or malformed timestamp"
    if abs(now - int(timestamp)) > MAX_SKEW:
        return "timestamp outside the allowed window"
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode("utf-8", "replace")):
        return "bad signature"
    return None


def _json(status, body):
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


def refusal(status, error, message, **more):
    return _json(status, {"error": error, "message": message, **more})


def read_body(request):
    """The raw body, or None when it is longer than MAX_BODY (read no further than that)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return None
    body = request.stream.read(MAX_BODY + 1)
    return None if len(body) > MAX_BODY else body


RECORD_INBOUND = RecordInbound()
ERROR_STATUS = ((ValidationError, 400), (NotFound, 404), (Conflict, 409), (Forbidden, 403))


def handle(request, gateway, secrets, record, count, now=time.time):
    """Answer one webhook request. ``record(fields)`` records the report (as ``record_inbound``)
    and returns its reply, or raises a typed error; ``count(gateway, kind, outcome)`` counts
    refusals here (the metric of inbound reports)."""
    if gateway not in INBOUND_GATEWAYS:
        return refusal(404, "not_found", "unknown gateway")
    body = read_body(request)
    if body is None:
        count(gateway, "unknown", "invalid")
        return refusal(413, "too_large", f"the body must be at most {MAX_BODY} bytes")
    problem = signature_problem(secrets.get(gateway), request.headers, body, now())
    if problem:
        log.warning(
            "inbound %s webhook refused: %s", gateway, problem, extra={"method": "gateway_inbound", "reason": problem}
        )
        count(gateway, "unknown", "unsigned")
        return refusal(401, "unauthenticated", problem)
    mimetype = (request.mimetype or "").lower()
    if mimetype and mimetype != "application/json":
        count(gateway, "unknown", "invalid")
        return refusal(415, "unsupported_media_type", "the body must be application/json")
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):  # undecodable bytes and bad JSON are ValueErrors
        fields = None
    if not isinstance(fields, dict):
        count(gateway, "unknown", "invalid")
        return refusal(400, "invalid", "the body must be a JSON object", fields={"_body": ["Must be a JSON object."]})
    if fields.setdefault("gateway", gateway) != gateway:
        count(gateway, "unknown", "invalid")
        return refusal(
            400, "invalid", "gateway differs from the URL's", fields={"gateway": ["Must be the URL's gateway."]}
        )
    try:
        return _json(200, record(fields))
    except ValidationError as refused:
        kind = fields.get("kind")
        count(gateway, kind if isinstance(kind, str) and kind in INBOUND_KINDS else "unknown", "invalid")
        return refusal(400, "invalid", "a field was refused", fields=refused.fields)
    except ServiceUnavailable as unavailable:
        return refusal(503, "unavailable", str(unavailable))
    except (NotFound, Conflict, Forbidden) as refused:
        status = next(code for kind, code in ERROR_STATUS if isinstance(refused, kind))
        return refusal(status, type(refused).__name__.lower(), str(refused))


INBOUND_METRIC = "grassroots_notices_inbound_total"
COUNTERS = [
    CounterSpec(
        INBOUND_METRIC,
        "Gateways' inbound reports (SMS replies, keypresses) by gateway, kind and outcome: acknowledged and "
        "not_an_ack (recorded), duplicate (a replayed gateway_event_id), unmatched, ambiguous, conflict, "
        "invalid and unsigned (refused; kind unknown when refused before the body was read).",
        labels=("gateway", "kind", "outcome"),
        start_labels=[
            (gateway, kind, outcome)
            for kind, gateway in INBOUND_KINDS.items()
            for outcome in ("acknowledged", "not_an_ack", "unmatched")
        ],
    )
]


class InboundGateways(DependencyProvider):
    """The gateways' inbound secrets (checked at start: ``NoticesService.check_config``), the metric
    of inbound reports, and recording one — from the RPC (``record``) or the webhook (``serve``)."""

    def setup(self):
        self.secrets = inbound_secrets(self.container.config)
        self.telemetry = next((d for d in self.container.dependencies if isinstance(d, Telemetry)), None)

    def get_dependency(self, worker_ctx):
        return self

    def count(self, gateway, kind, outcome):
        if self.telemetry is not None and INBOUND_METRIC in getattr(self.telemetry, "counters", {}):
            self.telemetry.count(INBOUND_METRIC, gateway, kind, outcome)

    def record(self, uow, caller, vault, **args):
        """``inbound.record_inbound``, counted: the InboundMessage recorded (or recorded before)."""
        gateway, kind = args["gateway"], args["kind"]
        try:
            message, replayed = inbound.record_inbound(uow, caller, vault, **args)
        except NotFound:
            self.count(gateway, kind, "unmatched")
            raise
        except Conflict as conflict:
            self.count(gateway, kind, getattr(conflict, "reason", "conflict"))
            raise
        self.count(gateway, kind, "duplicate" if replayed else message.outcome)
        return message

    def record_fields(self, uow, caller, vault, fields):
        """A webhook body's fields loaded (``schemas.RecordInbound``; ValidationError naming them),
        recorded as ``record`` does, and dumped as the RPC's reply. The caller commits."""
        return dump_reply(INBOUND, caller, self.record(uow, caller, vault, **load(RECORD_INBOUND, fields)))


def gateway_caller(gateway):
    """Who a signed callback acts as: the gateway, a ``service`` caller naming no unit."""
    return Caller(sub=f"gateway:{gateway}", roles=frozenset({"service"}))


def failure(error):
    """The answer to an error ``handle`` let through (the service rolled back): a uniqueness race lost
    (409), else our bug — logged with the call id, never the body — 500."""
    if isinstance(error, IntegrityError):
        return refusal(409, "conflict", "the change conflicts with existing data; nothing was changed")
    log.error("unexpected error", exc_info=error, extra={"method": "gateway_inbound"})
    return refusal(500, "internal", f"internal error; call id {logs.current_call_id()}")
