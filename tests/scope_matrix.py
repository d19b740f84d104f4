"""The scope matrix (issue 12): every RPC argument that carries ids, and what an id from outside the
caller's scope must do there.

``id_arguments()`` reads the endpoint contracts (``tools.asyncapi``'s walk of the service classes
and their marshmallow load schemas) and lists every ``service.method:argument`` that names an object:
``Id`` fields, lists of ``Id``, and arguments whose name says they name one (``*_id``, ``*_key``,
``under``, ``references``, ...). ``METHODS`` is the table of cases: per method, an example builder
that makes a valid call inside community A of a two-community ``World``, and for each id argument the
same call naming community B's object of the same kind instead (lists: A's ids plus one of B's).
Unless ``allowed`` gives the documented reason an outside id is legitimate there, that call must be
refused with ``Forbidden`` before anything changes (tests/integration/test_scope_matrix.py).

A new method, or a new id argument, has no case until someone adds one here: the matrix test fails
until then.
"""

import datetime as dt
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from marshmallow import fields
from sqlalchemy import create_engine, text

from shared.validation import Id
from tests.support import id_number, token
from tools.asyncapi import entrypoints, service_classes

# Argument names that name an object even when the field is not an ``Id`` (a user id, a key that
# resolves to a stored object) — and the usual id names, for fields typed otherwise.
ID_NAME = re.compile(r"(^|_)(id|ids|key|references|under|after)$")

COMMUNITY_A_OFFICER = "officer-a"
MULTI_SUB = "matrix-multi"
# The roles a multi-role token adds; their ``sub`` names nobody, so only the staff role's scope is left.
STAFF_ROLES = ("officer", "grid_worker")
SELF_ROLES = ("lawyer", "mediator", "volunteer", "resident")


def _id_fields(schema, prefix=""):
    instance = schema() if isinstance(schema, type) else schema
    for name, declared in instance.fields.items():
        if declared.dump_only:
            continue
        key = prefix + (declared.data_key or name)
        inner = declared.inner if isinstance(declared, fields.List) else declared
        if isinstance(inner, fields.Nested):
            many = isinstance(declared, fields.List) or inner.many
            yield from _id_fields(inner.schema, key + ("[]." if many else "."))
        elif isinstance(inner, Id) or ID_NAME.search(name):
            yield key


def id_arguments():
    """``service.method:argument`` for every RPC argument carrying ids, from the endpoint contracts."""
    found: set[str] = set()
    for service, cls in service_classes().items():
        rpcs, _, _ = entrypoints(cls)
        for method, contract in rpcs:
            if contract["schema"] is not None:
                found.update(f"{service}.{method}:{argument}" for argument in _id_fields(contract["schema"]))
    return sorted(found)


def method_roles():
    """``{service.method: roles}`` from the endpoint contracts."""
    roles = {}
    for service, cls in service_classes().items():
        rpcs, _, _ = entrypoints(cls)
        for method, contract in rpcs:
            roles[f"{service}.{method}"] = tuple(contract["roles"])
    return roles


# ---- the table of cases ---------------------------------------------------------------------


@dataclass
class Replace:
    """An out-of-scope probe that is a whole other call (an idempotency key stands for its booking)."""

    args: dict


@dataclass
class Call:
    """An example call inside community A, and per id argument the value naming B's object instead."""

    args: dict
    outside: dict
    roles: tuple = ("officer",)
    sub: str = COMMUNITY_A_OFFICER
    unit: str | None = None  # None: community A (``World.a.community``); see ``scoped``
    scoped: bool = True  # False: the token names no unit (a self role acting on its own records)
    control_may_raise: tuple = ()  # error types the in-scope call may answer besides success

    def probe(self, argument):
        """The arguments with ``argument`` naming B's object."""
        value = self.outside[argument]
        if isinstance(value, Replace):
            return dict(value.args)
        args = {**self.args}
        head, _, rest = argument.partition(".")
        if rest:
            args[head] = {**args[head], rest: value}
        else:
            args[argument] = value
        return args


@dataclass(frozen=True)
class Method:
    name: str
    arguments: tuple
    build: Callable[[Any], Call]
    allowed: dict = field(default_factory=dict)
    # What a token holding only self roles, naming community A, whose ``sub`` names nobody, gets from
    # the example call inside A: None means Forbidden (the unit lends self roles nothing); else
    # ``(PUBLIC, why)`` — the method answers anyone — or ``(OWN_RECORDS, why)`` — it lists only the
    # caller's own records, so none.
    self_roles: tuple | None = None


METHODS: dict[str, Method] = {}
PUBLIC = "public"
OWN_RECORDS = "own records"


def example(name, *arguments, allowed=None, self_roles=None):
    """Register the example builder of ``name`` for its id ``arguments`` (``allowed``: argument → why an
    id from outside the scope is legitimate there; ``self_roles``: see ``Method``)."""

    def register(build):
        if name in METHODS:
            raise ValueError(f"{name} has two examples")
        METHODS[name] = Method(name, tuple(arguments), build, dict(allowed or {}), self_roles)
        return build

    return register


def cases():
    """``service.method:argument`` for every case of the table."""
    return sorted(f"{m.name}:{argument}" for m in METHODS.values() for argument in m.arguments)


# Why an id from outside the caller's scope is legitimate (docs/calling.md, "Scope", lists the same rules).
PUBLIC_DIRECTORY = "stations and lawyers are a public directory: list_stations and find_slots answer every caller"
PUBLIC_PLEDGES = "pledges are public commitments (亮牌践诺): list_pledges answers every caller about any unit"
CURSOR = "a paging cursor: the rows are still only those under `under`, so it reveals nothing about that resident"
LIST_FILTER = (
    "narrows a list already limited to the caller's stations (or own records): an id from elsewhere matches nothing"
)
USER_ID = "a person's user id (a token's `sub`), not an object in the unit tree"
PUBLIC_REPORTS = (
    "the public list of residents' reports holds no personal data (categories, status, dates, public notes): "
    "public_reports answers every caller about any unit, as the Open311 view does"
)


# ---- the world: two communities in one district, each with one of everything ------------------


def _today():
    return dt.datetime.now(dt.UTC).date()


def _at(**delta):
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


ALL_WEEK = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
OFFICE_HOURS = [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)]
EARLY_MORNINGS = [{"weekday": d, "start": "06:00", "end": "07:00"} for d in range(7)]
ADDRESS = {"compound": "Matrix Garden", "building": "1", "entrance": "1"}


class World:
    """Communities A and B under one street, and in each one of every kind of object an id argument
    names, made through the services' own RPC as admin. ``fresh_*`` make another one for a call that
    changes it."""

    def __init__(self, proxy, database_urls):
        self.proxy = proxy  # proxy(token) → a started ClusterRpcProxy
        self.admin = proxy(token("admin", sub="matrix-admin"))
        self.engines = {
            service: create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), pool_size=1)
            for service, url in database_urls.items()
        }
        self.counter = itertools.count(1)
        self.a = SimpleNamespace(name="a")
        self.b = SimpleNamespace(name="b")

    def next(self):
        return next(self.counter)

    def sql(self, service, query, **params):
        with self.engines[service].connect() as conn:
            return conn.execute(text(query), params).all()

    def close(self):
        for engine in self.engines.values():
            engine.dispose()

    # -- building --

    def build(self, wait_until):
        grid, notices, legal, volunteer = self.admin.grid, self.admin.notices, self.admin.legal, self.admin.volunteer
        district = grid.create_unit(parent_id=None, level="district", name="Matrix District")["id"]
        self.street = grid.create_unit(parent_id=district, level="street", name="Matrix Street")["id"]
        for side in (self.a, self.b):
            n = side.name
            side.community = grid.create_unit(parent_id=self.street, level="community", name=f"Community {n}")["id"]
            side.large = grid.create_unit(parent_id=side.community, level="grid_large", name=f"Large {n}")["id"]
            side.medium = grid.create_unit(parent_id=side.large, level="grid_medium", name=f"Medium {n}")["id"]
            side.medium2 = grid.create_unit(parent_id=side.large, level="grid_medium", name=f"Medium {n}2")["id"]
            side.small = grid.create_unit(parent_id=side.medium, level="grid_small", name=f"Small {n}")["id"]
            side.small2 = grid.create_unit(parent_id=side.medium, level="grid_small", name=f"Small {n}2")["id"]
            side.h1, side.h2 = self.fresh_household(side), self.fresh_household(side)
            side.r1, side.r2 = self.fresh_resident(side, side.h1), self.fresh_resident(side, side.h1)
            side.r3 = self.fresh_resident(side, side.h2)
            side.incident = self.fresh_incident(side)
            side.campaign = grid.start_screening(
                under=side.community,
                title=f"Screening {n}",
                starts_on=(_today() - dt.timedelta(days=1)).isoformat(),
                ends_on=(_today() + dt.timedelta(days=30)).isoformat(),
            )["id"]
            side.staff_user = f"worker-{n}"
            grid.assign_staff(unit_id=side.small, user_id=side.staff_user, role="grid_worker", name=f"Worker {n}")
            # notices: a published notice to the community, with its deliveries
            side.notice = notices.create_notice(**self.notice_fields(side))["id"]
            notices.approve_notice(notice_id=side.notice)
            # legal: a station, its lawyer and plan, a booking, a mediation case
            side.station = legal.create_station(unit_id=side.community, name=f"Station {n}", address="1 Road")["id"]
            side.lawyer = self.register_lawyer([side.station])
            legal.set_schedule(lawyer_id=side.lawyer, station_id=side.station, weekly=OFFICE_HOURS)
            side.consultation = self.fresh_booking(side, idempotency_key=f"matrix-booking-{n}")
            side.case = self.fresh_case(side)
            # volunteer: a volunteer, a duty post and a shift starting soon, a pledge, a request and its offer
            side.volunteer = self.fresh_volunteer(side)
            side.post = volunteer.create_post(unit_id=side.small, name=f"Post {n}", location="Gate 1")["id"]
            side.shift = volunteer.add_shift(
                post_id=side.post, starts_at=_at(minutes=10), ends_at=_at(hours=4), needed=500
            )["id"]
            side.pledge = self.fresh_pledge(side)
            side.request, side.offer, _ = self.fresh_request(side)
        # a lawyer serving a station in each community, a notice to both communities
        self.shared_lawyer = self.register_lawyer([self.a.station, self.b.station])
        both = self.notice_fields(self.a, audience={"under": [self.a.community, self.b.community]})
        self.shared_notice = notices.create_notice(**both)["id"]
        notices.approve_notice(notice_id=self.shared_notice)
        for notice in (self.a.notice, self.b.notice, self.shared_notice):
            wait_until(
                lambda notice=notice: notices.get_notice(notice_id=notice)["status"] == "published",
                message=f"notice {notice} not published",
            )
        for side in (self.a, self.b):
            side.delivery = str(
                self.sql("notices", "SELECT min(id) FROM deliveries WHERE notice_id = :n", n=int(side.notice))[0][0]
            )

    # -- fresh objects --

    def fresh_unit(self, side):
        return self.admin.grid.create_unit(
            parent_id=side.medium, level="grid_small", name=f"Matrix small {self.next()}"
        )["id"]

    def fresh_household(self, side):
        address = {**ADDRESS, "room": str(self.next())}
        return self.admin.grid.register_household(unit_id=side.small, address=address)["id"]

    def resident_fields(self):
        seq = 100 + self.next()
        number = id_number(seq)
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        return {
            "name": f"Resident {seq}",
            "id_number": number,
            "phone": f"139{seq:08d}",
            "birth_date": birth.isoformat(),
        }

    def fresh_resident(self, side, household=None):
        household = household or side.h2
        return self.admin.grid.register_resident(household_id=household, **self.resident_fields())["id"]

    def fresh_tagged_resident(self, side, tag="low_income"):
        resident = self.fresh_resident(side)
        self.admin.grid.tag_resident(resident_id=resident, tag=tag)
        return resident

    def fresh_incident(self, side):
        return self.admin.grid.report_incident(unit_id=side.small, category="other", description="Matrix incident")[
            "id"
        ]

    def notice_fields(self, side, **changes):
        return {
            "title": f"Matrix notice {side.name}",
            "body": "Water is off on Tuesday.",
            "category": "policy",
            "severity": "minor",
            "urgency": "expected",
            "audience": {"under": [side.community]},
            "channels": ["sms"],
            **changes,
        }

    def fresh_draft(self, side):
        return self.admin.notices.create_notice(**self.notice_fields(side))["id"]

    def register_lawyer(self, station_ids, resident_id=None):
        n = self.next()
        return self.admin.legal.register_lawyer(
            name=f"Lawyer {n}",
            firm="Matrix Firm",
            license_no=f"MTX-{n:06d}",
            specialties=["family", "neighbour_dispute"],
            station_ids=station_ids,
            resident_id=resident_id,
        )["id"]

    def free_slots(self, side, wanted=1):
        slots = self.admin.legal.find_slots(
            specialty="family",
            # From the day after tomorrow: beyond the reminder lead (24 h), so no reminder's event lands
            # inside a probe's snapshots.
            date_from=(_today() + dt.timedelta(days=2)).isoformat(),
            date_to=(_today() + dt.timedelta(days=12)).isoformat(),
            station_id=side.station,
            limit=5000,
        )
        mine = [slot["starts_at"] for slot in slots if slot["lawyer_id"] == side.lawyer]
        return mine[:wanted]

    def booking_args(self, side, **changes):
        return {
            "lawyer_id": side.lawyer,
            "station_id": side.station,
            "starts_at": self.free_slots(side)[0],
            "resident_id": side.r3,
            "topic": "A lease dispute",
            **changes,
        }

    def fresh_booking(self, side, **changes):
        return self.admin.legal.book(**self.booking_args(side, **changes))["id"]

    def fresh_case(self, side):
        return self.admin.legal.open_mediation(
            unit_id=side.community,
            category="neighbour",
            party_resident_ids=[side.r1, side.r2],
            description="Noise at night",
        )["id"]

    def fresh_volunteer(self, side, **changes):
        n = self.next()
        fields = {
            "name": f"Volunteer {n}",
            "phone": f"137{n:08d}",
            "home_unit_id": side.small,
            "skills": ["delivery", "elderly_care"],
            "availability": ALL_WEEK,
            "max_active_tasks": 20,
            **changes,
        }
        return self.admin.volunteer.register_volunteer(**fields)["id"]

    def fresh_signup(self, side, checked_in=False):
        volunteer = self.fresh_volunteer(side)
        self.admin.volunteer.sign_up(shift_id=side.shift, volunteer_id=volunteer)
        if checked_in:
            self.admin.volunteer.check_in(shift_id=side.shift, volunteer_id=volunteer)
        return volunteer

    def fresh_pledge(self, side):
        return self.admin.volunteer.make_pledge(
            volunteer_id=side.volunteer,
            text="Fix bicycles on Saturdays",
            due_on=(_today() + dt.timedelta(days=30)).isoformat(),
        )["id"]

    def request_fields(self, side, **changes):
        return {
            "unit_id": side.small,
            "kind": "groceries",
            "details": "Rice and vegetables",
            "urgency": "normal",
            "needed_by": _at(days=1),
            **changes,
        }

    def fresh_request(self, side, status="offered"):
        """A help request in the side's small grid, taken as far as ``status``: (request, offer, volunteer)."""
        volunteer = self.admin.volunteer
        request = volunteer.create_request(**self.request_fields(side))["id"]
        rows = self.sql(
            "volunteer",
            "SELECT id, volunteer_id FROM offers WHERE request_id = :r AND status = 'pending'",
            r=int(request),
        )
        assert rows, f"request {request} was offered to nobody"
        offer, offered = str(rows[0][0]), str(rows[0][1])
        if status in ("matched", "completed"):
            volunteer.respond_offer(offer_id=offer, accept=True)
        if status == "completed":
            volunteer.complete_request(request_id=request, note="Delivered")
        return request, offer, offered


# ---- the examples: one per method --------------------------------------------------------------
# Each returns a Call valid inside community A (by community A's officer unless it says otherwise),
# and per id argument B's object of the same kind. Objects a call changes are fresh per call.

# grid


@example("grid.ancestors", "unit_id")
def _ancestors(w):
    return Call({"unit_id": w.a.small}, {"unit_id": w.b.small})


@example("grid.assign_staff", "unit_id", "user_id", allowed={"user_id": USER_ID})
def _assign_staff(w):
    user = f"matrix-user-{w.next()}"
    args = {"unit_id": w.a.small, "user_id": user, "role": "grid_worker", "name": "Matrix Worker"}
    return Call(args, {"unit_id": w.b.small, "user_id": w.b.staff_user})


@example("grid.close_unit", "unit_id")
def _close_unit(w):
    return Call({"unit_id": w.fresh_unit(w.a)}, {"unit_id": w.fresh_unit(w.b)})


@example("grid.count_residents", "under")
def _count_residents(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("grid.create_unit", "parent_id")
def _create_unit(w):
    args = {"parent_id": w.a.medium, "level": "grid_small", "name": f"Matrix small {w.next()}"}
    return Call(args, {"parent_id": w.b.medium})


@example("grid.escalate_incident", "incident_id")
def _escalate_incident(w):
    args = {"incident_id": w.fresh_incident(w.a), "reason": "Needs the large grid"}
    return Call(args, {"incident_id": w.fresh_incident(w.b)})


@example("grid.find_residents", "under", "after", allowed={"after": CURSOR})
def _find_residents(w):
    return Call({"under": w.a.community, "after": w.a.r1}, {"under": w.b.community, "after": w.b.r1})


@example("grid.find_resident_columns", "under", "after", allowed={"after": CURSOR})
def _find_resident_columns(w):
    return Call({"under": w.a.community, "after": w.a.r1}, {"under": w.b.community, "after": w.b.r1})


@example("grid.get_household", "household_id")
def _get_household(w):
    return Call({"household_id": w.a.h1}, {"household_id": w.b.h1})


@example("grid.get_incident", "incident_id")
def _get_incident(w):
    return Call({"incident_id": w.a.incident}, {"incident_id": w.b.incident})


@example("grid.get_resident", "resident_id")
def _get_resident(w):
    return Call({"resident_id": w.a.r1}, {"resident_id": w.b.r1})


@example("grid.get_residents", "resident_ids")
def _get_residents(w):
    return Call({"resident_ids": [w.a.r1, w.a.r2]}, {"resident_ids": [w.a.r1, w.a.r2, w.b.r1]})


@example("grid.get_unit", "unit_id")
def _get_unit(w):
    return Call({"unit_id": w.a.small}, {"unit_id": w.b.small})


@example("grid.list_incidents", "under")
def _list_incidents(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("grid.list_staff", "unit_id")
def _list_staff(w):
    return Call({"unit_id": w.a.small}, {"unit_id": w.b.small})


@example("grid.list_units", "under")
def _list_units(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("grid.move_household", "household_id", "unit_id")
def _move_household(w):
    args = {"household_id": w.fresh_household(w.a), "unit_id": w.a.small2}
    return Call(args, {"household_id": w.fresh_household(w.b), "unit_id": w.b.small2})


@example("grid.move_unit", "unit_id", "new_parent_id")
def _move_unit(w):
    args = {"unit_id": w.fresh_unit(w.a), "new_parent_id": w.a.medium2}
    return Call(args, {"unit_id": w.fresh_unit(w.b), "new_parent_id": w.b.medium2})


@example("grid.record_visit", "campaign_id", "household_id")
def _record_visit(w):
    args = {"campaign_id": w.a.campaign, "household_id": w.a.h1, "outcome": "seen_ok"}
    return Call(args, {"campaign_id": w.b.campaign, "household_id": w.b.h1})


@example("grid.register_household", "unit_id")
def _register_household(w):
    args = {"unit_id": w.a.small, "address": {**ADDRESS, "room": str(w.next())}}
    return Call(args, {"unit_id": w.b.small})


@example("grid.register_resident", "household_id")
def _register_resident(w):
    return Call({"household_id": w.a.h2, **w.resident_fields()}, {"household_id": w.b.h2})


@example("grid.report_incident", "unit_id", "party_resident_ids")
def _report_incident(w):
    args = {
        "unit_id": w.a.small,
        "category": "dispute",
        "description": "Water leaking through the ceiling",
        "party_resident_ids": [w.a.r1, w.a.r2],
    }
    return Call(args, {"unit_id": w.b.small, "party_resident_ids": [w.a.r1, w.a.r2, w.b.r1]})


@example("grid.resolve_incident", "incident_id")
def _resolve_incident(w):
    args = {"incident_id": w.fresh_incident(w.a), "resolution": "Fixed"}
    return Call(args, {"incident_id": w.fresh_incident(w.b)})


@example("grid.screening_progress", "campaign_id")
def _screening_progress(w):
    return Call({"campaign_id": w.a.campaign}, {"campaign_id": w.b.campaign})


@example("grid.set_party_org", "unit_id")
def _set_party_org(w):
    return Call({"unit_id": w.a.small, "name": "Party group A"}, {"unit_id": w.b.small})


@example("grid.start_screening", "under")
def _start_screening(w):
    args = {
        "under": w.a.community,
        "title": "Matrix screening",
        "starts_on": _today().isoformat(),
        "ends_on": (_today() + dt.timedelta(days=7)).isoformat(),
    }
    return Call(args, {"under": w.b.community})


@example("grid.tag_resident", "resident_id")
def _tag_resident(w):
    return Call({"resident_id": w.a.r3, "tag": "low_income"}, {"resident_id": w.b.r3})


@example("grid.untag_resident", "resident_id")
def _untag_resident(w):
    args = {"resident_id": w.fresh_tagged_resident(w.a), "tag": "low_income"}
    return Call(args, {"resident_id": w.fresh_tagged_resident(w.b)})


@example("grid.erase_resident", "resident_id")
def _erase_resident(w):
    # The control call files a pending request for a fresh resident of A (another manager would approve).
    args = {"resident_id": w.fresh_resident(w.a), "reason": "Matrix erasure"}
    return Call(args, {"resident_id": w.fresh_resident(w.b)})


def fresh_erasure(w, side):
    """A pending erasure request (by the world's admin) for a fresh resident of ``side``."""
    return w.admin.grid.erase_resident(resident_id=w.fresh_resident(side), reason="Matrix erasure")["erasure_id"]


@example("grid.cancel_erasure", "erasure_id")
def _cancel_erasure(w):
    return Call({"erasure_id": fresh_erasure(w, w.a)}, {"erasure_id": fresh_erasure(w, w.b)})


@example("grid.list_erasures", "under")
def _list_erasures(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("grid.access_log", "resident_id")
def _access_log(w):
    # Staff read a resident's access log on their behalf (the read is recorded): only one they reach.
    return Call({"resident_id": w.a.r1}, {"resident_id": w.b.r1})


# grid: residents' reports (a resident's token names no unit: its ``sub`` is the resident)


def fresh_report(w, side, resolved=False):
    """A fresh resident of ``side`` and a report of theirs (resolved by the admin if asked): (resident, report)."""
    resident = w.fresh_resident(side)
    mine = w.proxy(token("resident", sub=resident)).grid
    report = mine.report_problem(service_code="infrastructure", description="Matrix: the gate is broken")
    if resolved:
        w.admin.grid.resolve_incident(incident_id=report["service_request_id"], resolution="Fixed")
    return resident, report["service_request_id"]


def _resident_call(w, extra=None):
    resident, report = fresh_report(w, w.a, resolved=True)
    _, other = fresh_report(w, w.b, resolved=True)
    args = {"service_request_id": report, **(extra or {})}
    return Call(args, {"service_request_id": other}, roles=("resident",), sub=resident, scoped=False)


@example("grid.confirm_resolution", "service_request_id")
def _confirm_resolution(w):
    return _resident_call(w)


@example("grid.reopen_report", "service_request_id")
def _reopen_report(w):
    return _resident_call(w, {"reason": "Still broken"})


@example("grid.report_problem")
def _report_problem(w):
    # no id argument: the report goes to the resident's own small grid (the self-roles case: Forbidden)
    args = {"service_code": "other", "description": "Matrix: a broken bench"}
    return Call(args, {}, roles=("resident",), sub=w.fresh_resident(w.a), scoped=False)


@example("grid.my_reports", self_roles=(OWN_RECORDS, "a resident's own reports, never the unit's"))
def _my_reports(w):
    return Call({}, {}, roles=("resident",), sub=w.a.r1, scoped=False)


@example("grid.merge_reports", "primary_id", "duplicate_id")
def _merge_reports(w):
    args = {"primary_id": fresh_report(w, w.a)[1], "duplicate_id": fresh_report(w, w.a)[1]}
    return Call(args, {"primary_id": fresh_report(w, w.b)[1], "duplicate_id": fresh_report(w, w.b)[1]})


@example("grid.add_public_note", "incident_id")
def _add_public_note(w):
    return Call({"incident_id": w.fresh_incident(w.a), "note": "Works start Monday"}, {"incident_id": w.b.incident})


@example("grid.public_reports", "unit_id", allowed={"unit_id": PUBLIC_REPORTS}, self_roles=(PUBLIC, PUBLIC_REPORTS))
def _public_reports(w):
    return Call({"unit_id": w.a.community}, {"unit_id": w.b.community})


# notices


@example("notices.acknowledge", "notice_id", "resident_id")
def _acknowledge(w):
    # A notice to both communities, which A's officer reaches: B's resident is one of its recipients too.
    args = {"notice_id": w.shared_notice, "resident_id": w.a.r1}
    return Call(args, {"notice_id": w.b.notice, "resident_id": w.b.r1})


@example("notices.approve_notice", "notice_id")
def _approve_notice(w):
    return Call({"notice_id": w.fresh_draft(w.a)}, {"notice_id": w.fresh_draft(w.b)})


@example("notices.create_notice", "audience.under", "references")
def _create_notice(w):
    # a cancel goes to the audience of the notice it cancels
    args = w.notice_fields(w.a, msg_type="cancel", references=w.a.notice)
    return Call(args, {"audience.under": [w.a.community, w.b.small], "references": w.b.notice})


@example("notices.delivery_report", "notice_id")
def _delivery_report(w):
    return Call({"notice_id": w.a.notice}, {"notice_id": w.b.notice})


@example("notices.get_notice", "notice_id")
def _get_notice(w):
    return Call({"notice_id": w.a.notice}, {"notice_id": w.b.notice})


@example("notices.list_notices", "under")
def _list_notices(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("notices.record_delivery_status", "delivery_id")
def _record_delivery_status(w):
    # admin and service only: an admin token naming community A is scoped to it
    args = {"delivery_id": w.a.delivery, "status": "sent"}
    return Call(args, {"delivery_id": w.b.delivery}, roles=("admin",), sub="admin-a")


@example("notices.record_inbound", "gateway_event_id", "delivery_id")
def _record_inbound(w):
    # An admin token naming community A records a reply to A's delivery; replaying an event the unscoped
    # gateway bridge recorded for B's delivery is refused, as B's delivery named in delivery_id would be.
    n = w.next()
    report = {"gateway": "sms", "kind": "sms_reply", "text": "ok"}
    args = {**report, "gateway_event_id": f"matrix-a-{n}", "delivery_id": w.a.delivery}
    outside = {**report, "gateway_event_id": f"matrix-b-{n}", "delivery_id": w.b.delivery}
    w.admin.notices.record_inbound(**outside)
    return Call(
        args, {"gateway_event_id": Replace(outside), "delivery_id": w.b.delivery}, roles=("admin",), sub="admin-a"
    )


@example("notices.register_chat_group", "unit_id")
def _register_chat_group(w):
    args = {"unit_id": w.a.small, "name": "Small a chat", "webhook_url": "http://127.0.0.1:9/hook/a"}
    return Call(args, {"unit_id": w.b.small})


@example("notices.send_direct", "resident_ids")
def _send_direct(w):
    args = {"resident_ids": [w.a.r1], "template": "general", "params": {"title": "Hello", "text": "From the matrix"}}
    return Call(args, {"resident_ids": [w.a.r1, w.b.r1]}, roles=("admin",), sub="admin-a")


@example("notices.set_preferences", "resident_id")
def _set_preferences(w):
    return Call({"resident_id": w.a.r1, "channels": ["sms"]}, {"resident_id": w.b.r1})


# legal


@example("legal.add_time_off", "lawyer_id")
def _add_time_off(w):
    hours = w.next()
    args = {"lawyer_id": w.a.lawyer, "starts_at": _at(days=60, hours=hours), "ends_at": _at(days=60, hours=hours + 1)}
    return Call(args, {"lawyer_id": w.b.lawyer})


@example("legal.assign_mediator", "case_id", "mediator_id")
def _assign_mediator(w):
    args = {"case_id": w.fresh_case(w.a), "kind": "social", "mediator_id": w.a.r3}
    return Call(args, {"case_id": w.fresh_case(w.b), "mediator_id": w.b.r3})


# (An idempotency key is scoped by caller: another caller's key reaches nothing of theirs —
# tests/integration/test_idempotent_writes.py.)
@example(
    "legal.book",
    "lawyer_id",
    "station_id",
    "resident_id",
    allowed={"lawyer_id": PUBLIC_DIRECTORY, "station_id": PUBLIC_DIRECTORY},
)
def _book(w):
    args = w.booking_args(w.a)
    return Call(args, {"lawyer_id": w.b.lawyer, "station_id": w.b.station, "resident_id": w.b.r3})


@example("legal.cancel", "consultation_id")
def _cancel(w):
    args = {"consultation_id": w.fresh_booking(w.a), "reason": "Sorted it out"}
    return Call(args, {"consultation_id": w.fresh_booking(w.b)})


@example("legal.close_mediation", "case_id")
def _close_mediation(w):
    return Call({"case_id": w.fresh_case(w.a), "outcome": "withdrawn"}, {"case_id": w.fresh_case(w.b)})


@example("legal.complete", "consultation_id")
def _complete(w):
    args = {"consultation_id": w.fresh_booking(w.a), "summary": "Advised on the lease", "outcome": "advice_given"}
    # complete is the consultation's lawyer's: community A's lawyer, whose token names no unit
    return Call(args, {"consultation_id": w.fresh_booking(w.b)}, roles=("lawyer",), sub=w.a.lawyer, scoped=False)


@example("legal.create_station", "unit_id")
def _create_station(w):
    return Call({"unit_id": w.a.community, "name": "Second station", "address": "2 Road"}, {"unit_id": w.b.community})


@example(
    "legal.find_slots",
    "station_id",
    "unit_id",
    allowed={"station_id": PUBLIC_DIRECTORY, "unit_id": PUBLIC_DIRECTORY},
    self_roles=(PUBLIC, PUBLIC_DIRECTORY),
)
def _find_slots(w):
    day = (_today() + dt.timedelta(days=1)).isoformat()
    args = {"specialty": "family", "date_from": day, "date_to": day, "station_id": w.a.station, "unit_id": w.a.small}
    return Call(args, {"station_id": w.b.station, "unit_id": w.b.small})


@example("legal.get_case", "case_id")
def _get_case(w):
    return Call({"case_id": w.a.case}, {"case_id": w.b.case})


@example("legal.get_consultation", "consultation_id")
def _get_consultation(w):
    return Call({"consultation_id": w.a.consultation}, {"consultation_id": w.b.consultation})


@example("legal.list_cases", "under")
def _list_cases(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example(
    "legal.list_consultations",
    "resident_id",
    "lawyer_id",
    "station_id",
    allowed={"resident_id": LIST_FILTER, "lawyer_id": LIST_FILTER, "station_id": LIST_FILTER},
    self_roles=(OWN_RECORDS, "a resident's and a lawyer's own consultations, never the unit's stations'"),
)
def _list_consultations(w):
    args = {"resident_id": w.a.r3, "lawyer_id": w.a.lawyer, "station_id": w.a.station}
    return Call(args, {"resident_id": w.b.r3, "lawyer_id": w.b.lawyer, "station_id": w.b.station})


@example("legal.list_stations", "under", allowed={"under": PUBLIC_DIRECTORY}, self_roles=(PUBLIC, PUBLIC_DIRECTORY))
def _list_stations(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("legal.mark_no_show", "consultation_id")
def _mark_no_show(w):
    # A booking is at least the minimum notice ahead, so the in-scope call is a Conflict (not started yet).
    return Call(
        {"consultation_id": w.a.consultation},
        {"consultation_id": w.b.consultation},
        control_may_raise=("Conflict",),
    )


@example("legal.open_mediation", "unit_id", "party_resident_ids", "source_incident_id")
def _open_mediation(w):
    args = {
        "unit_id": w.a.community,
        "category": "neighbour",
        "party_resident_ids": [w.a.r1, w.a.r2],
        "description": "Parking dispute",
        "source_incident_id": w.fresh_incident(w.a),
    }
    outside = {
        "unit_id": w.b.community,
        "party_resident_ids": [w.a.r1, w.a.r2, w.b.r1],
        "source_incident_id": w.fresh_incident(w.b),
    }
    return Call(args, outside)


@example("legal.record_session", "case_id")
def _record_session(w):
    args = {"case_id": w.a.case, "held_at": _at(hours=-1), "attendees": ["Mediator"], "notes": "Both sides heard"}
    return Call(args, {"case_id": w.b.case})


@example("legal.register_lawyer", "station_ids", "resident_id")
def _register_lawyer(w):
    n = w.next()
    args = {
        "name": f"Lawyer {n}",
        "firm": "Matrix Firm",
        "license_no": f"MTX-{n:06d}",
        "specialties": ["family"],
        "station_ids": [w.a.station],
        "resident_id": w.a.r3,
    }
    return Call(args, {"station_ids": [w.a.station, w.b.station], "resident_id": w.b.r3})


@example("legal.reschedule", "consultation_id", "lawyer_id", allowed={"lawyer_id": PUBLIC_DIRECTORY})
def _reschedule(w):
    consultation = w.fresh_booking(w.a)
    args = {"consultation_id": consultation, "starts_at": w.free_slots(w.a)[0], "lawyer_id": w.a.lawyer}
    return Call(args, {"consultation_id": w.fresh_booking(w.b), "lawyer_id": w.b.lawyer})


@example("legal.set_legal_hold", "record_id")
def _set_legal_hold(w):
    args = {"record": "case", "record_id": w.a.case, "reason": "Appeal pending at the court"}
    return Call(args, {"record_id": w.b.case})


@example("legal.release_legal_hold", "record_id")
def _release_legal_hold(w):
    inside, outside = (w.fresh_case(side) for side in (w.a, w.b))
    for case in (inside, outside):
        w.admin.legal.set_legal_hold(record="case", record_id=case, reason="Held for the matrix")
    return Call({"record": "case", "record_id": inside, "reason": "Appeal decided"}, {"record_id": outside})


@example("legal.set_schedule", "lawyer_id", "station_id")
def _set_schedule(w):
    # the lawyer serving a station in each community: A's officer manages the plan at A's station only
    args = {"lawyer_id": w.shared_lawyer, "station_id": w.a.station, "weekly": EARLY_MORNINGS}
    return Call(args, {"lawyer_id": w.b.lawyer, "station_id": w.b.station})


# volunteer


@example("volunteer.add_shift", "post_id")
def _add_shift(w):
    args = {"post_id": w.a.post, "starts_at": _at(days=2), "ends_at": _at(days=2, hours=2), "needed": 3}
    return Call(args, {"post_id": w.b.post})


@example("volunteer.check_in", "shift_id", "volunteer_id")
def _check_in(w):
    args = {"shift_id": w.a.shift, "volunteer_id": w.fresh_signup(w.a)}
    return Call(args, {"shift_id": w.b.shift, "volunteer_id": w.fresh_signup(w.b)})


@example("volunteer.check_out", "shift_id", "volunteer_id")
def _check_out(w):
    args = {"shift_id": w.a.shift, "volunteer_id": w.fresh_signup(w.a, checked_in=True)}
    return Call(args, {"shift_id": w.b.shift, "volunteer_id": w.fresh_signup(w.b, checked_in=True)})


@example("volunteer.complete_request", "request_id")
def _complete_request(w):
    request, _, _ = w.fresh_request(w.a, "matched")
    return Call({"request_id": request, "note": "Done"}, {"request_id": w.fresh_request(w.b, "matched")[0]})


@example("volunteer.confirm_request", "request_id")
def _confirm_request(w):
    request, _, _ = w.fresh_request(w.a, "completed")
    return Call({"request_id": request, "rating": 5}, {"request_id": w.fresh_request(w.b, "completed")[0]})


@example("volunteer.coverage", "under")
def _coverage(w):
    return Call({"under": w.a.community, "date": _today().isoformat()}, {"under": w.b.community})


@example("volunteer.create_post", "unit_id")
def _create_post(w):
    return Call({"unit_id": w.a.small, "name": "Second post", "location": "Gate 2"}, {"unit_id": w.b.small})


@example("volunteer.create_request", "unit_id", "household_id", "resident_id")
def _create_request(w):
    args = w.request_fields(w.a, household_id=w.a.h1, resident_id=w.a.r1)
    return Call(args, {"unit_id": w.b.small, "household_id": w.b.h1, "resident_id": w.b.r1})


@example("volunteer.fulfil_pledge", "pledge_id")
def _fulfil_pledge(w):
    return Call({"pledge_id": w.fresh_pledge(w.a), "note": "Fixed six"}, {"pledge_id": w.fresh_pledge(w.b)})


@example("volunteer.get_request", "request_id")
def _get_request(w):
    return Call({"request_id": w.a.request}, {"request_id": w.b.request})


@example("volunteer.get_volunteer", "volunteer_id")
def _get_volunteer(w):
    return Call({"volunteer_id": w.a.volunteer}, {"volunteer_id": w.b.volunteer})


@example("volunteer.hours", "volunteer_id")
def _hours(w):
    return Call({"volunteer_id": w.a.volunteer}, {"volunteer_id": w.b.volunteer})


@example("volunteer.list_pledges", "under", allowed={"under": PUBLIC_PLEDGES}, self_roles=(PUBLIC, PUBLIC_PLEDGES))
def _list_pledges(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("volunteer.list_requests", "under")
def _list_requests(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("volunteer.list_volunteers", "under")
def _list_volunteers(w):
    return Call({"under": w.a.community}, {"under": w.b.community})


@example("volunteer.make_pledge", "volunteer_id")
def _make_pledge(w):
    args = {
        "volunteer_id": w.a.volunteer,
        "text": "Read to the elderly",
        "due_on": (_today() + dt.timedelta(days=9)).isoformat(),
    }
    return Call(args, {"volunteer_id": w.b.volunteer})


@example("volunteer.my_tasks", "volunteer_id")
def _my_tasks(w):
    return Call({"volunteer_id": w.a.volunteer}, {"volunteer_id": w.b.volunteer})


@example("volunteer.register_volunteer", "home_unit_id", "resident_id")
def _register_volunteer(w):
    n = w.next()
    args = {
        "name": f"Volunteer {n}",
        "phone": f"136{n:08d}",
        "home_unit_id": w.a.small,
        "skills": ["delivery"],
        "availability": ALL_WEEK,
        "resident_id": w.fresh_resident(w.a),
    }
    return Call(args, {"home_unit_id": w.b.small, "resident_id": w.fresh_resident(w.b)})


@example("volunteer.respond_offer", "offer_id")
def _respond_offer(w):
    _, offer, volunteer = w.fresh_request(w.a)
    _, other_offer, _ = w.fresh_request(w.b)
    # the offered volunteer answers; their token names no unit
    return Call(
        {"offer_id": offer, "accept": True},
        {"offer_id": other_offer},
        roles=("volunteer",),
        sub=volunteer,
        scoped=False,
    )


@example("volunteer.set_active", "volunteer_id")
def _set_active(w):
    return Call({"volunteer_id": w.a.volunteer, "active": True}, {"volunteer_id": w.b.volunteer})


@example("volunteer.sign_up", "shift_id", "volunteer_id")
def _sign_up(w):
    args = {"shift_id": w.a.shift, "volunteer_id": w.fresh_volunteer(w.a)}
    return Call(args, {"shift_id": w.b.shift, "volunteer_id": w.fresh_volunteer(w.b)})


@example("volunteer.update_volunteer", "volunteer_id", "home_unit_id")
def _update_volunteer(w):
    args = {"volunteer_id": w.fresh_volunteer(w.a), "home_unit_id": w.a.small2, "name": "Renamed"}
    return Call(args, {"volunteer_id": w.fresh_volunteer(w.b), "home_unit_id": w.b.small2})


@example("volunteer.withdraw", "shift_id", "volunteer_id")
def _withdraw(w):
    args = {"shift_id": w.a.shift, "volunteer_id": w.fresh_signup(w.a)}
    return Call(args, {"shift_id": w.b.shift, "volunteer_id": w.fresh_signup(w.b)})


# ---- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A token an out-of-scope probe is tried with; ``control``: the same token's call inside community
    A must succeed too (or answer an error the example names), so the probe's Forbidden is the scope
    check's and not the token's for some other reason."""

    name: str
    roles: tuple
    sub: str
    unit: str | None
    control: bool = False


def variants(call, method_roles, community_a):
    """The tokens an out-of-scope probe is tried with.

    - ``single``: the example's own role (a control);
    - ``several roles``: the same plus every other non-admin role the suite knows, with the same unit —
      holding several roles must never widen scope (the extra self roles' ``sub`` names nobody); a
      control too, so that a Forbidden the extra roles bring for another reason cannot pass;
    - ``plus service``: the same plus ``service`` and the self roles the method allows, naming no unit,
      for methods ``service`` may not call — a role the method does not allow must not lend the token
      its district-wide reach. The allowed self role is what lets such a token past ``authorize`` (a
      self role needs no unit) to the method's id checks. Where the method allows no self role, a
      token naming no unit is refused at ``authorize`` before any id is looked at, which tests no id
      check (tests/unit/test_auth_roles.py covers ``authorize``): the variant is left out there.

    A token holding only self roles and naming a unit is tried per method, inside the unit, by
    tests/integration/test_scope_matrix.py's ``test_self_roles_with_a_unit_reach_nothing_inside_it``.
    """
    unit = None if not call.scoped else (call.unit or community_a)
    found = [Variant("single", tuple(call.roles), call.sub, unit, control=True)]
    if call.scoped:
        extra = tuple(r for r in STAFF_ROLES + SELF_ROLES if r not in call.roles)
        found.append(Variant("several roles", tuple(call.roles) + extra, MULTI_SUB, unit, control=True))
    else:
        found.append(Variant("several roles", tuple(call.roles) + STAFF_ROLES, call.sub, community_a, control=True))
    allowed_self = tuple(r for r in SELF_ROLES if r in method_roles and r not in call.roles)
    if "service" not in method_roles and (allowed_self or set(call.roles) & set(SELF_ROLES)):
        found.append(Variant("plus service", tuple(call.roles) + allowed_self + ("service",), call.sub, None))
    return found
