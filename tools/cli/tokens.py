"""Tokens: ``grassroots token`` and the token every other command calls with.

The signing secret is ``GRASSROOTS_JWT_SECRET``, else the one ``make run`` wrote to
``var/dev.env``. Unlike ``tools.suite.load_dev_secrets`` this never creates that file: a secret
made up here would sign tokens no running service accepts.
"""

import os

from shared.auth import ROLES, SECRET_ENV, mint_token
from tools.cli import EXIT_USAGE, CliError
from tools.cli.output import print_plain

TOKEN_ENV = "GRASSROOTS_TOKEN"
DEFAULT_SUB = "grassroots-cli"
CALL_TOKEN_TTL = 600


def dev_env_path():
    from tools.suite import DEV_ENV

    return DEV_ENV


def read_env_file(path):
    values = {}
    with open(path) as source:
        for line in source:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def signing_secret(environ=None, dev_env=None):
    environ = os.environ if environ is None else environ
    secret = environ.get(SECRET_ENV)
    if secret:
        return secret
    path = dev_env or dev_env_path()
    if not os.path.exists(path):
        raise CliError(f"{SECRET_ENV} is not set and there is no {path} (`make run` writes one)", EXIT_USAGE)
    secret = read_env_file(path).get(SECRET_ENV)
    if not secret:
        raise CliError(f"{SECRET_ENV} is not set, nor in {path}", EXIT_USAGE)
    return secret


def add_token_command(commands):
    parser = commands.add_parser(
        "token",
        help="mint a signed JWT for a caller",
        description="Mint a JWT signed with GRASSROOTS_JWT_SECRET (else var/dev.env) and print it.",
    )
    parser.add_argument("--sub", required=True, help="the caller's id (user, resident, lawyer, volunteer id)")
    parser.add_argument(
        "--role",
        action="append",
        required=True,
        choices=sorted(ROLES),
        metavar="ROLE",
        help=f"a role (repeatable): {', '.join(sorted(ROLES))}",
    )
    parser.add_argument("--unit", help="unit id whose subtree the caller may act on (omit for admin/service)")
    parser.add_argument("--pii", action="store_true", help="may see ID and phone numbers unmasked")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    parser.set_defaults(handler=run_token)


def run_token(args, out, err):
    if args.ttl <= 0:
        raise CliError("--ttl must be a positive number of seconds")
    print_plain(mint_token(signing_secret(), args.sub, args.role, unit=args.unit, pii=args.pii, ttl=args.ttl))
    return 0


def add_caller_options(parser):
    """Who a command calls as: a given token, or one minted here for a role."""
    group = parser.add_argument_group(
        "caller", f"default: ${TOKEN_ENV} if set, else a short-lived admin token minted with the secret"
    )
    who = group.add_mutually_exclusive_group()
    who.add_argument("--token", help="a JWT to call with")
    who.add_argument(
        "--as-role",
        action="append",
        choices=sorted(ROLES),
        metavar="ROLE",
        dest="as_role",
        help="mint a token with this role (repeatable)",
    )
    group.add_argument("--unit", help="scope of the minted token (a unit id)")
    group.add_argument("--sub", default=DEFAULT_SUB, help=f"sub of the minted token (default {DEFAULT_SUB})")
    group.add_argument("--pii", action="store_true", help="the minted token may see personal data unmasked")


def caller_token(args, environ=None):
    environ = os.environ if environ is None else environ
    if args.token:
        if args.unit or args.pii:
            raise CliError("--unit and --pii mint a token: use them with --as-role, not --token")
        return args.token
    if not args.as_role and not args.unit and not args.pii and environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV]
    roles = args.as_role or ["admin"]
    return mint_token(signing_secret(environ), args.sub, roles, unit=args.unit, pii=args.pii, ttl=CALL_TOKEN_TTL)
