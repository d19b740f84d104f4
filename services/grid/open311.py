"""A read-only Open311 GeoReport v2 view of the grid's public reports, on the grid's web port, so
existing civic apps can show them (https://wiki.open311.org/GeoReport_v2).

- ``GET /open311/v2/services.json``: one service per incident category.
- ``GET /open311/v2/requests.json``: the public reports under a unit, newest first, in Open311's field
  names. The scope is required: ``unit_id`` (a unit's id) or ``jurisdiction_id`` (a unit's code or id);
  both may be given if they name the same unit. Open311's filters: ``service_request_id`` (comma list;
  it overrides the date window), ``service_code`` (comma list), ``status`` (``open``, ``closed`` or
  both), ``start_date``/``end_date`` (W3C/ISO 8601; by default the 90 days before now; at most 90 days
  apart). Ours: ``page`` (from 1) and ``page_size`` (at most ``OPEN311_MAX_ROWS``, 1000). Other
  parameters (``api_key``, ``lat``, ...) are ignored.

Public by design (no token), so it shows only what the public list shows: category, status, dates,
the department and its public notes, and as ``address`` the small grid's name — never a resident's
text, photo, identity or household address; no ``lat``/``long`` (the grid keeps no coordinates).
Bounded: a query string of at most 4 KiB and 30 parameters, at most ``OPEN311_MAX_ROWS`` rows, and a
token bucket per process (``OPEN311_RATE_PER_SECOND``, burst ``OPEN311_BURST``) answering 429 beyond it.
Bad parameters get HTTP 400 with Open311's error body ``[{"code": 400, "description": "..."}]``.
"""

import datetime as dt
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from sqlalchemy import or_, select
from werkzeug.wrappers import Response

from services.grid import reports
from services.grid.models import Unit
from shared.db import utcnow
from shared.validation import EARLIEST_TIME, LATEST_TIME, text_problem

log = logging.getLogger(__name__)

MAX_QUERY_BYTES = 4096
MAX_FIELDS = 30
MAX_IDS = 100
DEFAULT_WINDOW = dt.timedelta(days=90)
DEFAULT_MAX_ROWS = 1000


class BadRequest(Exception):
    def __init__(self, description, code=400):
        super().__init__(description)
        self.description = description
        self.code = code


def error_response(code, description, headers=None):
    body = json.dumps([{"code": code, "description": description}], ensure_ascii=False)
    return Response(body, status=code, mimetype="application/json", headers=headers)


def json_response(body):
    return Response(json.dumps(body, ensure_ascii=False), status=200, mimetype="application/json")


class RateBound:
    """A token bucket: ``rate`` requests a second on average, ``burst`` at once."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = self.burst
        self.at = clock()
        self._lock = Semaphore(1)

    def take(self):
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class Open311Bound(DependencyProvider):
    """Injects the container's ``RateBound`` for the Open311 view."""

    def setup(self):
        config = self.container.config
        self.bound = RateBound(config.get("OPEN311_RATE_PER_SECOND", 20), config.get("OPEN311_BURST", 40))

    def get_dependency(self, worker_ctx):
        return self.bound


# ---- parameters ---------------------------------------------------------------------------------


def parse_query(raw):
    """The query string's parameters as a dict; BadRequest for anything but bounded, UTF-8, single-valued
    parameters of printable text."""
    if len(raw) > MAX_QUERY_BYTES:
        raise BadRequest(f"the query string is longer than {MAX_QUERY_BYTES} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise BadRequest("the query string is not UTF-8") from None
    except ValueError:
        raise BadRequest(f"more than {MAX_FIELDS} parameters") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        problem = text_problem(name) or text_problem(value)
        if problem:
            raise BadRequest(f"parameter {name[:40]!r}: {problem}")
        if name in params:
            raise BadRequest(f"parameter {name[:40]!r} is given more than once")
        params[name] = value.strip()
    return params


def _digits(value, name):
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 18 and int(value) > 0):
        raise BadRequest(f"{name} must be a positive decimal id")
    return int(value)


def _csv(value, name, limit):
    items = [item.strip() for item in value.split(",")]
    if not value or any(not item for item in items) or len(items) > limit:
        raise BadRequest(f"{name} must be a comma-separated list of 1 to {limit} values")
    return items


def _when(value, name):
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be a W3C/ISO 8601 date-time, e.g. 2026-11-30T08:00:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if not EARLIEST_TIME <= moment < LATEST_TIME:
        raise BadRequest(f"{name} must be from {EARLIEST_TIME.isoformat()} up to {LATEST_TIME.isoformat()}")
    return moment


def _int(value, name, low, high):
    if not (value.isascii() and value.isdigit() and len(value) <= 6 and low <= int(value) <= high):
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(value)


def request_filters(params, now, max_rows):
    """The requests.json filters from its parameters (the scope is resolved apart: ``scope``)."""
    found: dict[str, Any] = {"ids": None, "codes": None, "statuses": None, "start": None, "end": None}
    if params.get("service_request_id"):
        ids = _csv(params["service_request_id"], "service_request_id", MAX_IDS)
        found["ids"] = {_digits(i, "service_request_id") for i in ids}
    if params.get("service_code"):
        codes = set(_csv(params["service_code"], "service_code", len(reports.SERVICES)))
        unknown = codes - set(reports.SERVICES)
        if unknown:
            raise BadRequest(f"service_code must be among {', '.join(sorted(reports.SERVICES))}")
        found["codes"] = codes
    if params.get("status"):
        statuses = set(_csv(params["status"], "status", 2))
        if statuses - {"open", "closed"}:
            raise BadRequest("status must be open, closed, or open,closed")
        found["statuses"] = statuses
    start = _when(params["start_date"], "start_date") if params.get("start_date") else None
    end = _when(params["end_date"], "end_date") if params.get("end_date") else None
    if found["ids"] is None:  # service_request_id overrides the date window
        if start is None:
            end = end or now
            start = end - DEFAULT_WINDOW
        elif end is None:
            end = start + DEFAULT_WINDOW
        if end < start:
            raise BadRequest("end_date must not be before start_date")
        if end - start > DEFAULT_WINDOW:
            raise BadRequest("start_date and end_date may be at most 90 days apart")
        found["start"], found["end"] = start, end
    page = _int(params["page"], "page", 1, 100_000) if params.get("page") else 1
    page_size = _int(params["page_size"], "page_size", 1, max_rows) if params.get("page_size") else max_rows
    return found, page, page_size


def scope(session, params):
    """The unit whose subtree is asked for: ``unit_id`` (an id) or ``jurisdiction_id`` (a code or id)."""
    unit_id, jurisdiction = params.get("unit_id"), params.get("jurisdiction_id")
    if not unit_id and not jurisdiction:
        raise BadRequest("unit_id (a unit's id) or jurisdiction_id (a unit's code) is required")
    unit = None
    if unit_id:
        unit = session.get(Unit, _digits(unit_id, "unit_id"))
        if unit is None:
            raise BadRequest("unit_id names no unit")
    if jurisdiction:
        if len(jurisdiction) > 50:
            raise BadRequest("jurisdiction_id must be a unit's code or id (at most 50 characters)")
        conditions = [Unit.code == jurisdiction]
        if jurisdiction.isascii() and jurisdiction.isdigit() and len(jurisdiction) <= 18:
            conditions.append(Unit.id == int(jurisdiction))
        named = session.scalars(select(Unit).where(or_(*conditions)).order_by(Unit.id)).first()
        if named is None:
            raise BadRequest("jurisdiction_id names no unit")
        if unit is not None and named.id != unit.id:
            raise BadRequest("unit_id and jurisdiction_id name different units")
        unit = named
    return unit


# ---- documents ----------------------------------------------------------------------------------


def w3c(moment):
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def services_document(policy):
    return [
        {
            "service_code": code,
            "service_name": name,
            "description": description,
            "metadata": False,
            "type": "realtime",
            "keywords": ",".join(keywords),
            "group": policy.departments.get(code, "civil_affairs"),
        }
        for code, (name, description, keywords) in reports.SERVICES.items()
    ]


def request_document(report):
    """One public report in GeoReport v2's names (no description, media, coordinates or household address)."""
    return {
        "service_request_id": str(report.service_request_id),
        "status": report.status,
        "status_notes": report.status_notes,
        "service_name": report.service_name,
        "service_code": report.service_code,
        "agency_responsible": report.agency_responsible,
        "service_notice": None,
        "requested_datetime": w3c(report.requested_datetime),
        "updated_datetime": w3c(report.updated_datetime),
        "expected_datetime": w3c(report.expected_datetime),
        "address": report.address,
    }


def requests_document(session, params, max_rows, now):
    filters, page, page_size = request_filters(params, now, max_rows)
    unit = scope(session, params)
    query = reports.public_query(unit, **filters)
    rows = session.execute(query.offset((page - 1) * page_size).limit(page_size)).all()
    return [request_document(reports.public_report(incident, name, now)) for incident, name in rows]


# ---- the HTTP handlers' bodies ------------------------------------------------------------------


def serve(bound, build):
    """``build()``'s document as JSON; 400/429 in Open311's error format; 500 only for our own failure."""
    if not bound.take():
        return error_response(429, "too many requests; retry in a second", headers={"Retry-After": "1"})
    try:
        return json_response(build())
    except BadRequest as refused:
        return error_response(refused.code, refused.description)
    except Exception:
        log.exception("open311 request failed")
        return error_response(500, "internal error")


def services_response(request, bound, policy):
    def build():
        params = parse_query(request.query_string)
        if params.get("jurisdiction_id") and len(params["jurisdiction_id"]) > 50:
            raise BadRequest("jurisdiction_id must be a unit's code or id (at most 50 characters)")
        return services_document(policy)

    return serve(bound, build)


def requests_response(request, bound, db, max_rows):
    """``db``: the worker's unit of work, read only (the entrypoint hands its connection back)."""

    def build():
        params = parse_query(request.query_string)
        db.read_only()
        return requests_document(db.session, params, int(max_rows), utcnow())

    return serve(bound, build)
