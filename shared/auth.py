"""Caller authentication and authorisation.

Every RPC call carries a JWT (HS256) in nameko context data under ``auth_token``.
Claims: ``sub``, ``roles`` (list), ``unit`` (the grid unit whose subtree the
caller may act on; absent for admin and service), ``pii`` (may see personal
data unmasked), ``exp``.

Tokens for operators and tests: ``grassroots token --sub alice --role officer --unit 12``
(tools.cli.tokens), which reads var/dev.env when the secret is not in the environment.
"""

import os
import sys
import time
from dataclasses import dataclass, field, replace

import jwt
from nameko.extensions import DependencyProvider

from shared.errors import Forbidden, Unauthenticated

TOKEN_CONTEXT_KEY = "auth_token"
MAX_TOKEN_LENGTH = 4096  # a token of ours is a few hundred ASCII characters
SECRET_ENV = "GRASSROOTS_JWT_SECRET"
ALGORITHM = "HS256"
ROLES = frozenset({"admin", "officer", "grid_worker", "lawyer", "mediator", "volunteer", "resident", "service"})
# Roles that act across the whole district when their token names no unit.
UNSCOPED_ROLES = frozenset({"admin", "service"})
# Roles that act on their own records (identified by ``sub``), so need no unit claim.
SELF_ROLES = frozenset({"lawyer", "mediator", "volunteer", "resident"})
# Roles that act on a unit's subtree: the token's ``unit`` claim scopes them.
STAFF_ROLES = frozenset({"officer", "grid_worker"})
# The roles through which a ``unit`` claim grants reach. A token holding only self roles reaches no
# unit, whatever unit it names: a resident, volunteer, lawyer or mediator reaches only their own
# records, never everyone's under their unit.
UNIT_ROLES = STAFF_ROLES | UNSCOPED_ROLES


@dataclass(frozen=True)
class Caller:
    sub: str
    roles: frozenset
    unit: str | None = None
    pii: bool = False
    exp: float = field(default=0, compare=False)

    def has_role(self, *roles):
        return not self.roles.isdisjoint(roles)

    @property
    def unrestricted(self):
        return self.unit is None and self.has_role(*UNSCOPED_ROLES)

    @property
    def scope_unit(self):
        """The unit whose subtree this caller reaches: the ``unit`` claim, when a staff or unscoped role
        holds it; None for a token naming no unit or holding only self roles (whose ``unit`` grants
        nothing)."""
        return self.unit if self.unit is not None and self.has_role(*UNIT_ROLES) else None

    def reaches(self, path):
        """True if a unit with this id path (list of ids, district first) is in the caller's subtree."""
        if self.unrestricted:
            return True
        return self.scope_unit is not None and self.scope_unit in {str(unit_id) for unit_id in path}

    def require_reach(self, path, what="unit"):
        if not self.reaches(path):
            if self.unit is not None and self.scope_unit is None:
                raise Forbidden(f"{what} is outside the caller's reach: a unit claim scopes only staff roles")
            raise Forbidden(f"{what} is outside the caller's unit scope")

    def acting_as(self, roles):
        """This caller with only those of its roles among ``roles`` (what a method allows)."""
        kept = self.roles.intersection(roles)
        return self if kept == self.roles else replace(self, roles=frozenset(kept))


def system_caller(service_name):
    """The caller a service acts as when it reacts to another service's event."""
    return Caller(sub=f"system:{service_name}", roles=frozenset({"service"}))


def jwt_secret(config=None):
    secret = (config or {}).get(SECRET_ENV) or os.environ.get(SECRET_ENV)
    if not secret:
        raise RuntimeError(f"{SECRET_ENV} is not set: services refuse to run without a signing secret")
    return secret


def mint_token(secret, sub, roles, unit=None, pii=False, ttl=3600):
    roles = list(roles)
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    claims = {"sub": str(sub), "roles": roles, "pii": bool(pii), "exp": int(time.time()) + int(ttl)}
    if unit is not None:
        claims["unit"] = str(unit)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret, token):
    """The Caller a token names; Unauthenticated for anything else, whatever the header held (text
    with bytes that were not UTF-8, surrogates, megabytes: refused before jwt sees it)."""
    if not token or not isinstance(token, str):
        raise Unauthenticated("missing auth_token")
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise Unauthenticated("invalid token")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "roles"]})
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except (jwt.InvalidTokenError, ValueError):
        raise Unauthenticated("invalid token") from None
    roles = claims.get("roles")
    if not isinstance(roles, list) or not roles or any(not isinstance(r, str) or r not in ROLES for r in roles):
        raise Unauthenticated("invalid token: bad roles claim")
    unit = claims.get("unit")
    if unit is not None and not isinstance(unit, (str, int)):
        raise Unauthenticated("invalid token: bad unit claim")
    return Caller(
        sub=str(claims["sub"]),
        roles=frozenset(roles),
        unit=None if unit is None else str(unit),
        pii=claims.get("pii") is True,
        exp=claims["exp"],
    )


class TokenCache:
    """Recently verified tokens, so a caller's every call doesn't re-verify its signature.

    Only valid tokens are kept, each until its own ``exp``; bounded in size.
    """

    def __init__(self, secret, size=4096):
        self.secret = secret
        self.size = size
        self._verified = {}

    def caller(self, token):
        hit = self._verified.get(token) if isinstance(token, str) else None
        if hit is not None:
            if time.time() < hit.exp:
                return hit
            del self._verified[token]
        caller = decode_token(self.secret, token)
        if len(self._verified) >= self.size:
            self._verified.clear()
        self._verified[token] = caller
        return caller


class CallerAccess:
    """Per-worker view of the caller; the token is checked on first use."""

    def __init__(self, tokens, token):
        self._tokens = tokens
        self._token = token
        self._caller = None

    @property
    def caller(self):
        if self._caller is None:
            self._caller = self._tokens.caller(self._token)
        return self._caller

    def authorize(self, roles):
        """Authenticate the caller and check it holds one of ``roles``; return the Caller acting in only
        those of its roles the method allows.

        Holding several roles never widens scope: a role the method does not allow lends the call
        nothing — neither ``service``'s district-wide reach to an ``officer`` token naming no unit, nor
        a self role's leave to name no unit. Within the allowed roles, each keeps its own rule: a staff
        role reaches the token's unit, a self role only the records its ``sub`` names (the token's unit
        lends it nothing: ``Caller.reaches``).
        """
        caller = self.caller
        if not caller.has_role(*roles):
            raise Forbidden(f"role {sorted(caller.roles)} may not call this method")
        caller = caller.acting_as(roles)
        if caller.unit is None and not caller.unrestricted and not caller.has_role(*SELF_ROLES):
            raise Forbidden("token names no unit scope")
        return caller


class Auth(DependencyProvider):
    """Injects a CallerAccess built from the worker's ``auth_token`` context data."""

    def setup(self):
        self.tokens = TokenCache(jwt_secret(self.container.config))

    def get_dependency(self, worker_ctx):
        return CallerAccess(self.tokens, worker_ctx.data.get(TOKEN_CONTEXT_KEY))


if __name__ == "__main__":
    sys.exit(
        "mint tokens with `.venv/bin/grassroots token --sub S --role ROLE [--unit ID]` "
        "(or `python -m tools.cli token ...`)"
    )
