"""Idempotent writes: a retried or redelivered request returns the first reply instead of acting twice.

The gap. nameko acknowledges an RPC request only after its reply is published, so a process killed
between its commit and its reply — or a broker that drops the connection then — has the request
delivered again, and it runs again (the fault run saw one client call create two incidents). And a
caller whose call timed out cannot tell whether its write happened, so it cannot retry safely.

Here every write endpoint (``shared.endpoints.endpoint`` without ``read_only``) remembers its reply,
in the same transaction as its change, under a key:

- the caller's ``idempotency_key`` argument, when given (any retry of the same call, by the caller);
- else the request's AMQP ``correlation_id``, which is the same on a redelivery.

The key is scoped by the caller (token subject) and the method. A second request under a key that
committed gets the stored reply; one whose arguments differ is refused (``Conflict``); one that
arrives while the first is still running waits for it (a transaction-scoped lock on the key), then
gets its reply. A failed call remembers nothing: its retry runs afresh. Replies are stored encrypted
(they can hold personal data) and purged after ``IDEMPOTENCY_TTL_HOURS`` (24) by the outbox relay.
A resident's erasure does not wait for that: ``forget_replies`` blanks at once every remembered reply
that names them, and a retry of such a request is refused rather than run again.
"""

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import DateTime, LargeBinary, String, select
from sqlalchemy.orm import Mapped, mapped_column

from shared.errors import Conflict

KEY_ARGUMENT = "idempotency_key"
REQUEST_ID_CONTEXT_KEY = "grassroots.request_id"  # set by shared.rpc from the request's correlation id
REPLY_CONTEXT = b"idempotent-reply"
# What a reply that held an erased resident's data is replaced by (``forget_replies``).
ERASED_REPLY = {"erased": "the reply held personal data of a resident since erased"}
# Reply fields that name a resident by id: a reply with the erased id in one of them is forgotten.
RESIDENT_FIELDS = frozenset(
    {"resident_id", "resident_ids", "party_resident_ids", "reporter_resident_id", "requester_resident_id"}
)
DEFAULT_TTL_HOURS = 24
_MISSING = object()


def idempotency_ttl(config) -> dt.timedelta:
    return dt.timedelta(hours=float((config or {}).get("IDEMPOTENCY_TTL_HOURS", DEFAULT_TTL_HOURS)))


class IdempotentRequestMixin:
    """Columns of a service's ``idempotent_requests`` table: the replies of write requests, by key."""

    __tablename__ = "idempotent_requests"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of caller, method and key
    method: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    reply: Mapped[bytes] = mapped_column(LargeBinary)  # encrypted JSON
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


def idempotency_model(base: type[Any]):
    """A service's ``idempotent_requests`` table, on its own declarative base."""

    class IdempotentRequest(IdempotentRequestMixin, base):
        pass

    return IdempotentRequest


def _digest(*parts) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def request_hash(params) -> str:
    """The arguments' fingerprint: the same call hashes the same whatever the keyword order."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class Remembered:
    """One write request's key, in its unit of work: ``replay()`` before acting, ``remember()`` after."""

    def __init__(self, uow, vault, subject, method, key, params):
        self.uow = uow
        self.vault = vault
        self.method = method
        self.key = _digest(subject, method, key)
        self.request_hash = request_hash(params)

    def replay(self):
        """The stored reply for this key, or ``MISSING``; Conflict if the key was used for other arguments.

        Takes the key's lock first, so a twin of this request still running is waited for."""
        from shared.db import serialize_on

        model = self.uow.idempotency_model
        session = self.uow.session
        serialize_on(session, "grassroots.idempotency", int(self.key[:8], 16))
        row = session.scalar(select(model).where(model.key == self.key))
        if row is None:
            return _MISSING
        if row.method != self.method or row.request_hash != self.request_hash:
            raise Conflict(f"this idempotency key was used for another {self.method} request; nothing was changed")
        reply = json.loads(self.vault.decrypt(row.reply, REPLY_CONTEXT))
        if reply == ERASED_REPLY:
            # Running it again could re-create what the erasure removed (a register_resident retried).
            raise Conflict("this request was answered before a resident's erasure, and its reply was erased with it")
        return reply

    def remember(self, reply):
        from shared.db import utcnow

        model = self.uow.idempotency_model
        blob = self.vault.encrypt(json.dumps(reply, default=str), REPLY_CONTEXT)
        self.uow.session.add(
            model(key=self.key, method=self.method, request_hash=self.request_hash, reply=blob, created_at=utcnow())
        )


MISSING = _MISSING


def _strings_and_ids(value, ids, fields=RESIDENT_FIELDS):
    """The reply's string values (casefolded), and whether one of ``fields`` holds one of ``ids``."""
    strings, named = [], False
    stack = [(value, False)]
    while stack:
        item, id_field = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, k in fields) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, id_field) for v in item)
        elif id_field and str(item) in ids:
            named = True
        elif isinstance(item, str):
            strings.append(item.casefold())
    return strings, named


def forget_replies(session, model, vault, *, resident_ids=(), fields=None, records=None, needles=(), batch=500):
    """Blank every remembered reply that holds an erased resident's data; returns how many.

    The gap: a write's reply is kept (encrypted) for ``IDEMPOTENCY_TTL_HOURS`` so a retry gets it
    back, and a reply can hold the name, phone or address the erasure just removed from the tables.
    A reply is forgotten when a resident-id field (``RESIDENT_FIELDS``) names one of
    ``resident_ids``, a field named in ``fields`` (``{field: ids}``, e.g. ``{"case_id": {"4"}}``) one of
    its ids, it is the reply of a method in
    ``records`` (``{method: ids}``, e.g. ``{"register_resident": {"17"}}``) whose ``id`` is one of its
    ids, or any of its text contains one of ``needles`` (the resident's own name, phone or ID number,
    casefolded; needles shorter than two characters are ignored). It becomes
    ``ERASED_REPLY``: its key stays, so a retry of that request is refused (``Remembered.replay``)
    instead of run again. Reads every kept reply (a day's writes at most), ``batch`` rows at a time.

    Needles match as substrings, so they over-match on purpose: a short, common name (two Chinese
    characters, e.g. 王伟) is in replies about other people of that name, or in any text holding it,
    and those replies are blanked too; their retries are then refused (``Conflict``) although the
    write was not the erased resident's. Privacy first: a caller whose retry is refused reads its
    record back instead. ``fields`` match whatever reply holds them (a reply about a report to
    another follower of it included): the stored reply does not say whose it is.
    """
    ids = {str(i) for i in resident_ids}
    fields = {field: {str(i) for i in found} for field, found in (fields or {}).items() if found}
    records = {method: {str(i) for i in found} for method, found in (records or {}).items()}
    wanted = [n.casefold() for n in needles if n and len(n) >= 2]
    erased = vault.encrypt(json.dumps(ERASED_REPLY), REPLY_CONTEXT)
    forgotten, after = 0, ""
    while True:
        rows = session.scalars(select(model).where(model.key > after).order_by(model.key).limit(batch)).all()
        if not rows:
            return forgotten
        for row in rows:
            reply = json.loads(vault.decrypt(row.reply, REPLY_CONTEXT))
            strings, named = _strings_and_ids(reply, ids)
            named = named or any(_strings_and_ids(reply, found, fields={field})[1] for field, found in fields.items())
            named = named or (isinstance(reply, dict) and str(reply.get("id")) in records.get(row.method, ()))
            if reply != ERASED_REPLY and (named or any(n in s for s in strings for n in wanted)):
                row.reply = erased
                forgotten += 1
        after = rows[-1].key
        session.flush()
