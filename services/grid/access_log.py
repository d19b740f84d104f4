"""The access log (PIPL): who read a resident's personal data, when, through which service and
method, and why — served to the resident (``grid.access_log``) and to staff on their behalf.

What is recorded:

- every read in the grid by a ``pii`` caller (name, ID number and phone unmasked): ``get_resident``
  (what ``resident_record``), ``find_residents`` and ``get_residents`` (``resident_contact``, one row
  per resident returned), ``find_resident_columns`` with phones (``phones``: one row per walk over a
  unit — its first page, called without ``after``; the pages after it continue the same read and
  record nothing more — with the unit path as its scope, shown to every resident under that unit);
- staff reading a resident's access log on their behalf (``access_log``);
- reads other services report: legal's ``sensitive_data_read`` (consultation summaries, unmasked party
  phones), recorded once per event however often it is delivered.

A caller without ``pii`` sees masked data: nothing is recorded and the read stays in autocommit mode,
as fast as before; a ``pii`` caller's read writes its rows in the read's own transaction, committed
before the reply. The purpose is the caller's context data ``purpose`` (text, at most 200
characters), else the method's default (``vocabulary.DEFAULT_READ_PURPOSES``). Rows hold ids, codes
and the readers' ids only; they outlive an erasure of the resident and are purged after
``ACCESS_LOG_RETENTION`` (services/grid/retention.py).
"""

from dataclasses import dataclass

from sqlalchemy import insert, or_, select

from services.grid import vocabulary as v
from services.grid.models import AccessLogEntry
from services.grid.residents import load_resident
from shared import paths as tree
from shared.db import utcnow
from shared.errors import ValidationError
from shared.validation import text_problem

SERVICE = "grid"
MAX_PURPOSE = 200


def read_purpose(given, method):
    """The purpose a read records: the caller's (validated), else the method's default."""
    if given is None:
        return v.DEFAULT_READ_PURPOSES[method]
    problem = None if isinstance(given, str) else "Must be text."
    if problem is None:
        given = given.strip()
        problem = text_problem(given) or (
            None if 1 <= len(given) <= MAX_PURPOSE else f"Must be 1 to {MAX_PURPOSE} characters."
        )
    if problem:
        raise ValidationError({"purpose": [f"{problem} (the purpose in the call's context data)"]})
    return given


def roles_text(roles):
    return ",".join(sorted(roles))[:200]


class Reading:
    """One read of residents' data by ``caller`` through ``method``: recorded only for a ``pii``
    caller. Made before the read's first query: a caller without ``pii`` reads in autocommit mode."""

    def __init__(self, uow, access, caller, method, audited=None):
        self.uow, self.access, self.caller, self.method = uow, access, caller, method
        self.audited = caller.pii if audited is None else audited
        if self.audited:
            self.purpose = read_purpose(access.purpose, method)
        else:
            uow.read_only()

    def _rows(self, rows):
        if not self.audited or not rows:
            return
        now = utcnow()
        base = {
            "service": SERVICE,
            "method": self.method,
            "reader": self.caller.sub[:100],
            "reader_roles": roles_text(self.caller.roles),
            "purpose": self.purpose,
            "at": now,
        }
        session = self.uow.session
        session.execute(insert(AccessLogEntry), [{**base, **row} for row in rows])
        self.access.after_commit(session, {("access_logged", (SERVICE,)): len(rows)})

    def residents(self, resident_ids, what):
        if not self.audited:
            return
        self._rows(
            [{"resident_id": i, "scope_path": None, "what": what, "record": f"resident/{i}"} for i in resident_ids]
        )

    def scope(self, path, what):
        if not self.audited:
            return
        unit_id = tree.path_ids(path)[-1]
        self._rows([{"resident_id": None, "scope_path": path, "what": what, "record": f"unit/{unit_id}"}])


def record_reported(uow, access, service, data):
    """A read another service reported (legal's ``sensitive_data_read``)."""
    access.after_commit(uow.session, {("access_logged", (service,)): 1})
    uow.session.add(
        AccessLogEntry(
            resident_id=data["resident_id"],
            scope_path=None,
            service=service,
            method="sensitive_data_read",
            what=data["what"],
            reader=data["reader"],
            reader_roles=roles_text(data["reader_roles"]),
            purpose=data["purpose"],
            record=data["record"],
            at=data["at"],
        )
    )


@dataclass
class LogView:
    """An access log row as the reply shows it."""

    row: AccessLogEntry

    def __getattr__(self, name):
        return getattr(self.row, name)

    @property
    def reader_roles(self):
        return [role for role in self.row.reader_roles.split(",") if role]

    @property
    def scope(self):
        return self.row.scope_path


def access_log(uow, access, caller, resident_id, page, page_size):
    """The resident's access log, newest first: reads of them, and bulk reads of a unit above them.
    A resident reads their own; staff who reach the resident read it on their behalf (recorded)."""
    reading = Reading(uow, access, caller, "access_log", audited=caller.roles != {"resident"})
    session = uow.session
    resident = load_resident(session, caller, resident_id)
    ids = tree.path_ids(resident.unit_path)
    above = [tree.as_path(ids[:depth]) for depth in range(1, len(ids) + 1)]
    rows = session.scalars(
        select(AccessLogEntry)
        .where(or_(AccessLogEntry.resident_id == resident.id, AccessLogEntry.scope_path.in_(above)))
        .order_by(AccessLogEntry.at.desc(), AccessLogEntry.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size + 1)
    ).all()
    reading.residents([resident.id], "access_log")
    return [LogView(row) for row in rows[:page_size]], len(rows) > page_size
