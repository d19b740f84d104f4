"""Typed errors that cross the RPC boundary.

Each error subclasses nameko's ``RemoteError`` and is registered with nameko's
exception registry, so:
- a caller that has this package gets the typed class back (``except NotFound``);
- any caller gets a ``RemoteError`` whose ``exc_type`` names the error and
  whose ``value`` is a readable message (for ValidationError: JSON naming each
  bad field and why).
"""

import json

from nameko.exceptions import RemoteError, deserialize_to_instance


class GrassrootsError(RemoteError):
    def __init__(self, message="", details=None):
        super().__init__(exc_type=type(self).__name__, value=message)
        self.details = details
        # nameko rebuilds registered errors as cls(*exc_args) on the caller side
        self.args = (message, details) if details is not None else (message,)

    def __str__(self):
        return self.value


@deserialize_to_instance
class ValidationError(GrassrootsError):
    """Input failed validation. ``details`` maps each bad field to its messages."""

    def __init__(self, message="", details=None):
        if isinstance(message, dict) and details is None:
            details, message = message, json.dumps(message, ensure_ascii=False, sort_keys=True)
        super().__init__(message, details)

    @property
    def fields(self):
        return self.details or {}


@deserialize_to_instance
class NotFound(GrassrootsError):
    pass


@deserialize_to_instance
class Conflict(GrassrootsError):
    pass


@deserialize_to_instance
class Forbidden(GrassrootsError):
    pass


@deserialize_to_instance
class Unauthenticated(GrassrootsError):
    pass


@deserialize_to_instance
class RateLimited(GrassrootsError):
    """The caller made too many such requests in the period; nothing was changed. ``details``:
    ``{"field": what was limited, "limit": n, "period_seconds": p, "retry_after_seconds": s}``."""


@deserialize_to_instance
class InternalError(GrassrootsError):
    """Something failed on our side; the message names the call id to look up in the logs."""


@deserialize_to_instance
class ServiceUnavailable(GrassrootsError):
    """A service this call depends on did not answer in time."""


# Raised for errors the caller caused: logged as warnings, counted as client errors.
CLIENT_ERRORS = (ValidationError, NotFound, Conflict, Forbidden, Unauthenticated, RateLimited)
