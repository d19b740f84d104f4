"""Calling another service from inside a service: as this service, with a timeout.

nameko's in-service ``RpcProxy`` forwards the caller's context data — its token
included — and waits for a reply forever. ``ServiceClient`` calls with the
calling service's own ``service`` token (minted from the shared secret and
renewed before it expires) and raises ``ServiceUnavailable`` after ``timeout``.
"""

import time

import eventlet
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import MethodProxy

from shared.auth import TOKEN_CONTEXT_KEY, jwt_secret, mint_token
from shared.errors import ServiceUnavailable
from shared.idempotency import REQUEST_ID_CONTEXT_KEY
from shared.rpc import ClassicReplyListener

TOKEN_TTL = 3600


class _AsService:
    """The parts of a worker context a MethodProxy reads, with the service's own token."""

    def __init__(self, worker_ctx, token):
        self.container = worker_ctx.container
        context_data = {k: v for k, v in worker_ctx.context_data.items() if k != REQUEST_ID_CONTEXT_KEY}
        self.context_data = {**context_data, TOKEN_CONTEXT_KEY: token}


class _Method:
    def __init__(self, client, worker_ctx, method_name):
        self._client = client
        self._proxy = MethodProxy(worker_ctx, client.target, method_name, client.reply_listener)

    def __call__(self, **kwargs):
        return self.call_async(**kwargs).result()

    def call_async(self, **kwargs):
        """Send now, wait later: ``.result()`` on the answer (with the same timeout)."""
        try:
            return _Pending(self, self._proxy.call_async(**kwargs))
        except UnknownService:
            # No queue for the service at all (never deployed on this broker): as unavailable as a dead one.
            raise ServiceUnavailable(f"{self._client.target} is not running") from None


class _Pending:
    def __init__(self, method, reply):
        self._method = method
        self._reply = reply

    def result(self):
        client = self._method._client
        try:
            with eventlet.Timeout(client.timeout):
                return self._reply.result()
        except eventlet.Timeout:
            client.forget(self._reply)
            raise ServiceUnavailable(
                f"{client.target}.{self._method._proxy.method_name} did not answer within {client.timeout}s"
            ) from None


class _Service:
    def __init__(self, client, worker_ctx, pii=None):
        self._client = client
        self._ctx = _AsService(worker_ctx, client.token(pii))

    def __getattr__(self, method_name):
        return _Method(self._client, self._ctx, method_name)


class ServiceClient(DependencyProvider):
    rpc_reply_listener = ClassicReplyListener()

    def __init__(self, target, timeout=10.0, pii=False):
        self.target = target
        self.timeout = timeout
        self.pii = pii

    def setup(self):
        self.secret = jwt_secret(self.container.config)
        self.timeout = float(self.container.config.get("RPC_TIMEOUT", self.timeout))
        self.reply_listener = self.rpc_reply_listener
        self._tokens: dict[bool, tuple[str, float]] = {}  # by pii claim: (token, expires)

    def token(self, pii=None):
        """The service's token; ``pii`` (default: the client's) whether it carries the ``pii`` claim."""
        pii = self.pii if pii is None else bool(pii)
        token, expires = self._tokens.get(pii, ("", 0.0))
        if time.time() > expires - 300:
            token = mint_token(
                self.secret, f"service:{self.container.service_name}", ["service"], pii=pii, ttl=TOKEN_TTL
            )
            self._tokens[pii] = (token, time.time() + TOKEN_TTL)
        return token

    def forget(self, reply):
        """Drop a timed-out call's pending reply event so it does not linger."""
        events = self.reply_listener._reply_events
        for correlation_id, event in list(events.items()):
            if event is reply.reply_event:
                events.pop(correlation_id, None)

    def get_dependency(self, worker_ctx):
        return self.calling(worker_ctx)

    def calling(self, worker_ctx, pii=None):
        """The target for this worker, called with the service's token (``pii``: with or without the
        claim; default: the client's)."""
        return _Service(self, worker_ctx, pii)
