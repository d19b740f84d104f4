"""The broker: the ``--amqp-uri`` option and an RPC proxy that carries the caller's token."""

import os
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

from tools.cli import EXIT_UNREACHABLE, CliError

DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
DEFAULT_TIMEOUT = 30.0


def add_amqp_option(parser):
    parser.add_argument("--amqp-uri", help=f"the broker (default: $AMQP_URI, else {DEFAULT_AMQP_URI})")


def amqp_uri(args, environ=None):
    environ = os.environ if environ is None else environ
    return args.amqp_uri or environ.get("AMQP_URI") or DEFAULT_AMQP_URI


def redact(uri):
    """The URI with its password hidden, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def broker_error(uri, exc):
    return CliError(f"cannot reach the broker at {redact(uri)}: {exc}", EXIT_UNREACHABLE)


@contextmanager
def rpc_proxy(uri, token, timeout=DEFAULT_TIMEOUT):
    """A started ``ClusterRpcProxy`` whose calls carry ``token`` as ``auth_token``."""
    from amqp.exceptions import AMQPError
    from nameko.standalone.rpc import ClusterRpcProxy

    import shared.errors  # noqa: F401  (registers the typed errors: replies come back as them)
    from shared.auth import TOKEN_CONTEXT_KEY

    proxy = ClusterRpcProxy({"AMQP_URI": uri}, context_data={TOKEN_CONTEXT_KEY: token}, timeout=timeout)
    try:
        rpc = proxy.start()
    except (OSError, AMQPError) as exc:
        raise broker_error(uri, exc) from None
    try:
        yield rpc
    finally:
        with suppress(OSError, AMQPError):
            proxy.stop()


def unreachable(exc, target, timeout):
    """A CliError for a call that got no answer, or None if ``exc`` is something else."""
    from nameko.exceptions import RpcTimeout, UnknownService

    if isinstance(exc, RpcTimeout):
        return CliError(f"no reply from {target} within {timeout:g} s (is the service running?)", EXIT_UNREACHABLE)
    if isinstance(exc, UnknownService):
        return CliError(
            f"no service named {target.split('.')[0]!r} listens on this broker (is it running? is the name right?)",
            EXIT_UNREACHABLE,
        )
    return None
