"""Decorators that make service methods thin: authorise → validate → domain → commit.

``@rpc`` goes on top::

    @rpc
    @endpoint(roles=STAFF, schema=schemas.CreateUnit(), returns=schemas.UNIT)
    def create_unit(self, caller, **args):
        return units.create_unit(self.db, caller, **args)

The method returns domain objects; ``returns`` (shared.replies) dumps them into the reply. The
unit of work is the endpoint's: it commits before the reply is sent, so a failed commit reaches
the caller as an error rather than after a success, and the domain code never commits.
"""

import functools
import logging

from marshmallow import EXCLUDE, Schema, fields
from sqlalchemy.exc import IntegrityError

from shared import logs
from shared.errors import CLIENT_ERRORS, Conflict, InternalError, ServiceUnavailable, ValidationError
from shared.handlers import ReliableEventHandler
from shared.idempotency import KEY_ARGUMENT, MISSING, Remembered
from shared.replies import dump_reply
from shared.rpc import ServiceRpc
from shared.validation import Str, load

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 200
POSITIONAL_ERROR = {"_args": ["Positional arguments are not accepted; pass arguments by keyword."]}


def rpc(method):
    """``@rpc`` with cheaper replies (shared.rpc) and our typed client errors marked expected."""
    return ServiceRpc.decorator(expected_exceptions=CLIENT_ERRORS)(method)


def endpoint(*, roles, returns, schema=None, read_only=False, remember=True):
    """``schema`` loads the keyword arguments; ``returns`` (a schema, or shared.replies' ``OneOf`` or
    ``page``) dumps what the method returns into the reply.

    ``read_only`` endpoints read in autocommit mode: no BEGIN/COMMIT round trips. A write's reply is
    remembered under its idempotency key (shared.idempotency) unless ``remember`` is false: a read
    that writes an audit row, whose every call must be checked and audited afresh (and whose reply
    is not to be kept)."""
    roles = tuple(roles)
    takes_key = remember and not read_only

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            # Authorising and validating inside the guard too: a bug there (any input that makes
            # them raise something untyped) is an InternalError, never a raw exception.
            try:
                caller = self.auth.authorize(roles)
                if read_only:
                    self.db.read_only()
                if args:
                    raise ValidationError(POSITIONAL_ERROR)
                key = idempotency_key(kwargs, self.db.request_id) if takes_key else None
                params = load(schema, kwargs) if schema is not None else load(_NO_ARGS, kwargs)
                remembered = None
                if key is not None and self.db.idempotency_model is not None:
                    remembered = Remembered(self.db, self.vault, caller.sub, method.__name__, key, params)
                    reply = remembered.replay()
                    if reply is not MISSING:
                        self.db.commit()
                        return reply
                value = method(self, caller, **params)
                # An object whose reply is the same for every caller may keep the dump it was given once
                # (services/grid/unit_cache.CachedUnit: get_unit's every hit otherwise dumped it afresh).
                kept = getattr(value, "kept_reply", None)
                result = dump_reply(returns, caller, value) if kept is None else kept(returns, caller)
                if remembered is not None:
                    remembered.remember(result)
                self.db.commit()
            except CLIENT_ERRORS + (ServiceUnavailable,):
                # A callee that did not answer is the caller's to retry (with the same key), not our bug.
                raise
            except IntegrityError:
                # A concurrent change won a uniqueness race the domain checked for.
                self.db.rollback()
                raise Conflict("the change conflicts with existing data; nothing was changed") from None
            except Exception:
                # Callers get no internals (SQL, stack); the log line has them, under the call id.
                self.db.rollback()
                call_id = logs.current_call_id()
                log.exception("unexpected error", extra={"method": method.__name__})
                raise InternalError(f"internal error; call id {call_id}") from None
            return result

        # mypy has no notion of attributes set on a function (python/mypy#2087).
        wrapper.allowed_roles = roles  # type: ignore[attr-defined]
        # Read by tools.asyncapi to document the RPC contract.
        wrapper.__contract__ = {  # type: ignore[attr-defined]
            "kind": "rpc",
            "roles": roles,
            "schema": schema,
            "returns": returns,
            "read_only": read_only,
            "idempotent": takes_key,
            "doc": method.__doc__,
        }
        return wrapper

    return decorate


def idempotency_key(kwargs, request_id):
    """The caller's ``idempotency_key`` (taken out of ``kwargs``), else the RPC request's correlation
    id (shared.idempotency); None for neither (a worker that is not an RPC request)."""
    key = kwargs.pop(KEY_ARGUMENT, None)
    if key is None:
        return f"request:{request_id}" if request_id else None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationError({KEY_ARGUMENT: [f"Must be printable text of 1 to {MAX_KEY_LENGTH} characters."]})
    return f"key:{key}"


class _NoArgs(Schema):
    pass


_NO_ARGS = _NoArgs()


class EnvelopeSchema(Schema):
    """The CloudEvents attributes a handler relies on; extension attributes are ignored."""

    class Meta:
        unknown = EXCLUDE

    specversion = Str(required=True, max_length=10)
    id = Str(required=True, max_length=64)
    source = Str(required=True, max_length=200)
    type = Str(required=True, max_length=100)
    time = Str(required=True, max_length=40)
    subject = Str(load_default=None, allow_none=True, max_length=300)
    data = fields.Dict(required=True)


ENVELOPE = _ENVELOPE = EnvelopeSchema()


def on_event(source_service, event_type, schema=None, **handler_options):
    """A reliable, deduplicating event handler.

    The body runs at most once per envelope id (recorded in the same transaction
    as its side effects); failures are retried with backoff, then dead-lettered.
    A malformed envelope or payload is dead-lettered at once.
    """
    entrypoint = ReliableEventHandler.decorator(source_service, event_type, **handler_options)

    def decorate(method):
        handler_key = f"{source_service}.{event_type}:{method.__name__}"

        @functools.wraps(method)
        def wrapper(self, body):
            envelope = load(_ENVELOPE, body)
            data = load(schema, envelope["data"]) if schema is not None else envelope["data"]
            if not self.db.claim_event(handler_key, envelope["id"]):
                return "duplicate"
            result = method(self, envelope, data)
            self.db.commit()
            return result

        wrapper.__contract__ = {  # type: ignore[attr-defined]  # python/mypy#2087, as above
            "kind": "event_handler",
            "source": source_service,
            "event_type": event_type,
            "schema": schema,
            "doc": method.__doc__,
        }
        return entrypoint(wrapper)

    return decorate
