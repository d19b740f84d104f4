"""Delivery channels: one interface, an adapter per provider, each with a stub twin.

- ``HttpGateway``: SMS and voice-call gateways and the app-push endpoint (JSON POST).
- ``ChatRobot``: a small grid's chat-group robot webhook, in the group-robot JSON
  format (WeCom style: ``msgtype`` text or markdown; ``@all`` for severe notices).
- ``StubChannel``: accepts and remembers every message; tests and load tests use it.

Every request carries the delivery id as its ``Idempotency-Key`` header (the chat robots' too: a
robot that ignores it shows a re-posted message twice). The dispatcher posts at least once — a
delivery whose process died mid-post is posted again, with the same key — so a gateway treats a
repeated key as the message it already has (docs/gateways.md). The stub twin counts repeats
(``duplicates``).

Every request goes through the deployment's outbound policy (``services.notices.outbound``; the
gateways' and the webhooks' are two): the address connected to is checked on each connection,
redirects are not followed, and a refused URL or address fails the delivery for good (``detail``
says why).

A server may answer anything, slowly: every request has an overall deadline (besides the timeout
of each read), at most ``RESPONSE_CAP`` bytes of a reply's body are read (a content-encoded body is
not read at all), and nothing in a reply raises out of an adapter — one bad server fails only its
own deliveries, never the batch.

A gateway may want credentials: a channel's ``NOTICES_SMS_AUTH_HEADER``,
``NOTICES_VOICE_AUTH_HEADER`` or ``NOTICES_PUSH_AUTH_HEADER`` (read from the environment as it is;
on Kubernetes from the Secret ``notices-gateways``; else its ``auth_header`` setting) is sent as the
``Authorization`` header of every post to that gateway, and never to a chat-group webhook. A value
that is not one line of visible ASCII stops the service at start (``check_settings``), naming the
setting and never showing the value.

Rates: ``RateLimiter`` limits each channel per process. ``per_replica_rates`` gives each replica its
share of a district-wide quota: a channel's ``rate_total`` (``NOTICES_<CHANNEL>_RATE_TOTAL``)
divided by ``MAX_REPLICAS`` (``NOTICES_MAX_REPLICAS``, the most replicas the autoscaler may run),
so that all replicas together never exceed the gateway's quota; without a total, the channel's
``rate_per_second`` (``NOTICES_<CHANNEL>_RATE``) is taken as already per replica.
"""

import http.client
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import eventlet
import eventlet.queue
import requests
import urllib3

from services.notices.outbound import GATEWAY_SETTINGS, SENTINELS, OutboundPolicy, OutboundRefused

log = logging.getLogger(__name__)


class Outbound:
    """One message to post. ``to``: phone (sms, voice_call), resident id (app_push), webhook URL
    (chat_group). With ``reveal``, ``to`` is held as it is stored (an encrypted phone) and ``reveal(to)``
    gives it on first read: decrypted in the post that reads it, not for every message of a batch up
    front (a stub never reads it; a gateway's post decrypts it in its own green thread). Slots: one is
    made per delivery."""

    __slots__ = ("_reveal", "_to", "body", "channel", "delivery_id", "mention_all", "notice_id", "severity", "title")

    def __init__(self, delivery_id, notice_id, channel, to, title, body, severity, mention_all=False, reveal=None):
        self.delivery_id, self.notice_id, self.channel = delivery_id, notice_id, channel
        self._to, self._reveal = to, reveal
        self.title, self.body, self.severity, self.mention_all = title, body, severity, mention_all

    @property
    def addressed(self):
        """Whether it has an address at all (without revealing it)."""
        return self._to is not None

    @property
    def to(self) -> str | None:
        if self._reveal is not None:
            self._to, self._reveal = self._reveal(self._to), None
        return self._to

    def __repr__(self):  # never the address: personal data stays out of logs
        return f"Outbound(delivery_id={self.delivery_id}, channel={self.channel!r})"


@dataclass
class Outcome:
    ok: bool
    retryable: bool = False
    detail: str | None = None
    started: bool = True  # False: never handed to the gateway (its claim is released, no attempt used)
    message_id: str | None = None  # the gateway's id for an accepted post (its answer's ``message_id``)


SENT = Outcome(True)  # shared: outcomes are never changed once made

# A message not started before ``start_by`` (its claim's lease would run out while it is in flight).
NOT_STARTED = Outcome(False, retryable=True, detail="not started before its claim ran out", started=False)


def idempotency_key(message):
    """The ``Idempotency-Key`` of a message: its delivery id, the same on every post of it."""
    return str(message.delivery_id)


def post_each(send, messages, concurrency, tick=0.2, start_by=None, clock=time.monotonic):
    """Post ``messages`` concurrently with ``send`` (green threads); yield ``[(message, outcome), ...]``
    as posts finish — what finished since the last yield, an empty list after ``tick`` seconds without
    any — until every message has its outcome. None is started after ``start_by`` (``clock`` time):
    those answer NOT_STARTED. Closing the generator early kills the posts still out."""
    finished: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
    pool = eventlet.GreenPool(concurrency)

    def post(message):
        outcome = Outcome(False, retryable=True, detail="adapter error: interrupted")
        try:
            # Judged when it would start, not when it was queued behind the others.
            late = start_by is not None and clock() >= start_by
            outcome = NOT_STARTED if late else send(message)
        except Exception as exc:  # every message must answer, or the stream would wait for it forever
            log.exception("channel adapter failed on one message", extra={"method": message.channel})
            outcome = Outcome(False, retryable=True, detail=f"adapter error: {type(exc).__name__}")
        finally:
            # Even a BaseException (an eventlet.Timeout not ours) answers: a green thread that died
            # without an outcome would hold the dispatcher — and every delivery after it — for ever.
            finished.put((message, outcome))

    def feed():
        for message in messages:
            pool.spawn(post, message)  # waits for a free green thread

    feeder = eventlet.spawn(feed)
    remaining = len(messages)
    try:
        while remaining:
            chunk = []
            try:
                chunk.append(finished.get(timeout=tick))
                while True:
                    chunk.append(finished.get_nowait())
            except eventlet.queue.Empty:
                pass
            remaining -= len(chunk)
            yield chunk
    finally:
        feeder.kill()
        for thread in list(pool.coroutines_running):
            thread.kill()


RESPONSE_CAP = 64 * 1024  # bytes of a reply's body read at most
# What a request can fail with once sent (requests wraps most; reading the raw body adds urllib3's).
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


@dataclass
class Reply:
    status: int
    body: bytes | None  # None: longer than RESPONSE_CAP, or content-encoded (not read)


def read_capped(raw, cap=RESPONSE_CAP):
    """The body from urllib3's raw response, undecoded, or None once it is longer than ``cap``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = raw.read(min(16 * 1024, cap + 1 - size), decode_content=False)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return None


MESSAGE_ID_MAX = 100  # characters of a gateway's message id kept (deliveries.gateway_message_id)


def gateway_message_id(body):
    """The ``message_id`` a gateway's answer names (docs/gateways.md): a JSON object's string field of 1
    to MESSAGE_ID_MAX printable characters, else None (whatever else the body is, it names none)."""
    if not body or len(body) > RESPONSE_CAP:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = data.get("message_id") if isinstance(data, dict) else None
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MESSAGE_ID_MAX and value.isprintable() else None


def robot_errcode(body):
    """The errcode of a chat robot's reply; 0 unless the body is a JSON object whose errcode is an
    integer (whatever else it is — unparseable, nested too deep, too long, a list — it says nothing)."""
    if not body:
        return 0
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return 0
    code = data.get("errcode", 0) if isinstance(data, dict) else 0
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


class HttpGateway:
    """POSTs ``{delivery_id, to, title, text, severity}`` with the delivery id as ``Idempotency-Key``.
    2xx accepted; 408/409/425/429/5xx and network errors are retried; other 4xx are final. The
    gateway reports delivery later through ``record_delivery_status``."""

    def __init__(self, channel, url, timeout=5.0, auth_header=None, policy=None, deadline=None):
        self.channel = channel
        self.url = url
        self.timeout = timeout  # seconds to connect, and for each read
        self.deadline = float(deadline) if deadline is not None else 2 * float(timeout)  # the whole request
        self.policy = policy or OutboundPolicy()
        self.http = self.policy.session(auth_header)

    def payload(self, message):
        return {
            "delivery_id": str(message.delivery_id),
            "to": message.to,
            "title": message.title,
            "text": message.body,
            "severity": message.severity,
        }

    def headers(self, message):
        return {"Accept-Encoding": "identity", "Idempotency-Key": idempotency_key(message)}

    concurrency = 50

    def send_many(self, messages):
        """Send a batch concurrently (green threads); outcomes in the batch's order."""
        pool = eventlet.GreenPool(self.concurrency)
        return list(pool.imap(self.send_one, messages))

    def send_each(self, messages, tick=0.2, start_by=None):
        """Send a batch concurrently; yield outcomes as they come back (``post_each``)."""
        return post_each(self.send_one, messages, self.concurrency, tick=tick, start_by=start_by)

    def send_one(self, message):
        """``send``, answering an Outcome whatever happens: one message's trouble stays its own."""
        try:
            return self.send(message)
        except Exception as exc:
            log.exception("channel adapter failed on one message", extra={"method": self.channel})
            return Outcome(False, retryable=True, detail=f"adapter error: {type(exc).__name__}")

    def send(self, message):
        reply = self.post(self.url, message)
        return reply if isinstance(reply, Outcome) else self.judge(reply)

    def post(self, url, message):
        """The Reply, or the Outcome of a request that got none: refused, a network error, or past
        its deadline (the server sent too slowly, however little at a time)."""
        try:
            self.policy.check_url(url)
        except OutboundRefused as refused:
            return self.refused(refused)
        deadline = eventlet.Timeout(self.deadline)
        try:
            return self.exchange(url, message)
        except OutboundRefused as refused:
            return self.refused(refused)
        except eventlet.Timeout as expired:
            if expired is not deadline:
                raise
            return Outcome(False, retryable=True, detail="network: deadline exceeded")
        except NETWORK_ERRORS as exc:
            return Outcome(False, retryable=True, detail=f"network: {type(exc).__name__}")
        finally:
            deadline.cancel()

    def exchange(self, url, message):
        """POST, then read at most RESPONSE_CAP bytes of the reply; the connection goes back to the
        pool only when the body was read to its end."""
        response = self.http.post(
            url,
            json=self.payload(message),
            headers=self.headers(message),
            timeout=self.timeout,
            allow_redirects=False,
            stream=True,
        )
        try:
            body = None
            if response.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity"):
                body = read_capped(response.raw)
            if body is not None:
                response.raw.release_conn()
            return Reply(response.status_code, body)
        finally:
            response.close()  # closes the connection unless it went back to the pool

    def refused(self, refused):
        log.warning("outbound request refused: %s", refused.reason, extra={"method": self.channel})
        return Outcome(False, retryable=False, detail=f"refused: {refused.reason}"[:300])

    def judge(self, reply):
        if 200 <= reply.status < 300:
            message_id = gateway_message_id(reply.body)
            return Outcome(True, message_id=message_id) if message_id else SENT
        # 409: a gateway still working on an earlier post with this Idempotency-Key (docs/gateways.md).
        retryable = reply.status in (408, 409, 425, 429) or reply.status >= 500
        return Outcome(False, retryable=retryable, detail=f"http {reply.status}")


class ChatRobot(HttpGateway):
    """Posts to the webhook in ``message.to``: markdown normally, text with ``@all`` for severe notices.
    A 2xx reply counts as sent unless its body is a JSON object whose ``errcode`` is a non-zero
    integer. ``policy`` is the webhooks' (``OutboundPolicy.for_webhooks``)."""

    RATE_LIMITED = 45009  # the robot's "too many messages" code: retry later

    def __init__(self, timeout=5.0, policy=None, deadline=None):
        policy = policy or OutboundPolicy.for_webhooks({})
        super().__init__("chat_group", url=None, timeout=timeout, policy=policy, deadline=deadline)

    def payload(self, message):
        if message.mention_all:
            return {
                "msgtype": "text",
                "text": {"content": f"【{message.title}】\n{message.body}", "mentioned_list": ["@all"]},
            }
        return {"msgtype": "markdown", "markdown": {"content": f"### {message.title}\n{message.body}"}}

    def send(self, message):
        reply = self.post(message.to, message)  # the group's webhook, checked again now
        if isinstance(reply, Outcome):
            return reply
        outcome = self.judge(reply)
        if outcome.ok:
            code = robot_errcode(reply.body)
            if code:
                return Outcome(False, retryable=code == self.RATE_LIMITED, detail=f"robot errcode {code}"[:100])
        return outcome


# The stub twins that answer a message id, as the SMS and voice gateways do (docs/gateways.md): those
# whose messages a resident can answer (services.notices.inbound).
STUB_MESSAGE_IDS = frozenset({"sms", "voice_call"})


def stub_message_id(channel, delivery_id):
    """The message id the stub twin of ``channel`` answers for a delivery: ``stub-<channel>-<id>``."""
    return f"stub-{channel}-{delivery_id}"


class StubChannel:
    """Accepts every message and keeps the latest ``keep`` of them; behaves as a gateway must with
    a repeated idempotency key (the latest ``keep_keys`` are remembered): accepts it again and
    counts it in ``duplicates`` instead of ``count``. The dispatcher aims for ``duplicates == 0``.
    The SMS and voice twins answer each message with a message id (``stub_message_id``), the same
    for a repeat."""

    def __init__(self, channel, keep=10_000, keep_keys=200_000):
        self.channel = channel
        self.prefix = stub_message_id(channel, "") if channel in STUB_MESSAGE_IDS else None
        self.sent: deque[Outbound] = deque(maxlen=keep)
        self.count = 0
        self.duplicates = 0
        self.keys: set[str] = set()
        self.key_order: deque[str] = deque()
        self.keep_keys = keep_keys

    def send(self, message):
        key = idempotency_key(message)
        outcome = SENT if self.prefix is None else Outcome(True, message_id=self.prefix + key)
        if key in self.keys:
            self.duplicates += 1
            log.warning("stub channel: delivery %s posted again", key, extra={"method": self.channel})
            return outcome
        self.keys.add(key)
        self.key_order.append(key)
        if len(self.key_order) > self.keep_keys:
            self.keys.discard(self.key_order.popleft())
        self.sent.append(message)
        self.count += 1
        return outcome

    def send_many(self, messages):
        """A batch at once: in bulk when none of its keys is a repeat (the usual case), else one by one
        (and always one by one through a subclass's own ``send``)."""
        if type(self).send is not StubChannel.send:
            return [self.send(message) for message in messages]
        keys = [str(message.delivery_id) for message in messages]  # idempotency_key, inlined: 1 per message
        fresh = set(keys)
        if len(fresh) != len(keys) or not self.keys.isdisjoint(fresh):
            return [self.send(message) for message in messages]
        self.keys |= fresh
        self.key_order.extend(keys)
        for _ in range(len(self.key_order) - self.keep_keys):
            self.keys.discard(self.key_order.popleft())
        self.sent.extend(messages)
        self.count += len(keys)
        if self.prefix is None:
            return [SENT] * len(keys)
        prefix = self.prefix
        return [Outcome(True, message_id=prefix + key) for key in keys]

    def send_each(self, messages, tick=0.2, start_by=None):
        """Everything at once (nothing here waits on a network)."""
        yield list(zip(messages, self.send_many(messages), strict=True))


# The environment variables behind each channel's settings in services/notices/config.yml, for
# messages that name what to fix.
AUTH_HEADER_SETTINGS = {
    "sms": "NOTICES_SMS_AUTH_HEADER",
    "voice_call": "NOTICES_VOICE_AUTH_HEADER",
    "app_push": "NOTICES_PUSH_AUTH_HEADER",
}
RATE_SETTINGS = {
    "sms": "NOTICES_SMS_RATE",
    "voice_call": "NOTICES_VOICE_RATE",
    "app_push": "NOTICES_PUSH_RATE",
    "chat_group": "NOTICES_CHAT_RATE",
}
MAX_REPLICAS_CONFIG_KEY = "MAX_REPLICAS"
MAX_REPLICAS_SETTING = "NOTICES_MAX_REPLICAS"
DEFAULT_RATE = 100.0  # sends per second of a channel that names no rate
# One line of visible ASCII (spaces and tabs inside): what an HTTP header value may safely be.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


class ChannelSettingError(ValueError):
    """A channel setting the service cannot start with; the message is one line naming the setting
    (never a credential's value)."""


def _rate_setting(channel, suffix=""):
    return RATE_SETTINGS.get(channel, f"CHANNELS.{channel}.rate") + suffix


def gateway_auth_header(channel, settings, environ=None):
    """The ``Authorization`` value for a gateway channel, or None when it has none.

    The channel's variable (``AUTH_HEADER_SETTINGS``) as the environment has it, when it is set:
    read here, not through config.yml, which would parse it as YAML (``a: b`` becomes a mapping,
    `` #…`` is cut off as a comment, ``*…`` fails quoting it); else the channel's ``auth_header``
    setting (a config given whole, as the tests do). Surrounding
    whitespace is removed (a Secret made from a file often ends in a newline); ChannelSettingError
    when what is left is not one line of visible ASCII."""
    setting = AUTH_HEADER_SETTINGS.get(channel, f"CHANNELS.{channel}.auth_header")
    environ = os.environ if environ is None else environ
    value = environ.get(setting) if channel in AUTH_HEADER_SETTINGS else None
    if value is None:
        value = (settings or {}).get("auth_header")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ChannelSettingError(f"{setting} ({channel} gateway) must be text (an HTTP header value)")
    value = value.strip()
    if not value:
        return None
    if not _HEADER_VALUE.fullmatch(value):
        raise ChannelSettingError(
            f"{setting} ({channel} gateway) must be one line of visible ASCII characters (an HTTP header value)"
        )
    return value


def _positive(value, setting, integer=False):
    try:
        number = int(str(value).strip()) if integer else float(value)
    except (TypeError, ValueError):
        number = 0
    if not number > 0 or number == float("inf"):
        kind = "a positive whole number" if integer else "a positive number"
        raise ChannelSettingError(f"{setting} must be {kind}, not {str(value)[:40]!r}")
    return number


def max_replicas(config):
    """``MAX_REPLICAS`` (``NOTICES_MAX_REPLICAS``): the most replicas of notices that may run at once
    (the autoscaler's ceiling); 1 when unset."""
    value = (config or {}).get(MAX_REPLICAS_CONFIG_KEY)
    if value is None or value == "":
        return 1
    return _positive(value, MAX_REPLICAS_SETTING, integer=True)


def per_replica_rates(config):
    """{channel: sends per second this replica may make} from the notices config: a channel's
    ``rate_total`` (the gateway's quota for the whole deployment) divided by ``max_replicas``, else
    its ``rate_per_second`` (per replica), else DEFAULT_RATE. ChannelSettingError (naming the
    setting) for a rate or ceiling that is not a positive number."""
    replicas = max_replicas(config)
    rates = {}
    for name, settings in ((config or {}).get("CHANNELS") or {}).items():
        settings = settings or {}
        total = settings.get("rate_total")
        if total is not None and total != "":
            rates[name] = _positive(total, _rate_setting(name, "_TOTAL")) / replicas
        else:
            rates[name] = _positive(settings.get("rate_per_second", DEFAULT_RATE), _rate_setting(name))
    return rates


# Domains reserved for documentation and examples (RFC 2606, RFC 6761): a gateway URL there is a
# placeholder someone forgot to replace (k8s/overlays/prod/notices.env ships such placeholders).
PLACEHOLDER_DOMAINS = ("example.com", "example.net", "example.org", "example", "invalid")


def placeholder_host(url):
    """The host of ``url`` when it is in a reserved example domain, else None."""
    try:
        host = (urlsplit(str(url)).hostname or "").rstrip(".").lower()
    except ValueError:
        return None  # not a URL at all: the outbound policy says why
    return host if any(host == d or host.endswith(f".{d}") for d in PLACEHOLDER_DOMAINS) else None


def check_settings(config):
    """Every channel setting checked before the service starts (``NoticesService.check_config``):
    no gateway URL left a placeholder, auth headers, rates and the replica ceiling;
    ChannelSettingError names the first bad one."""
    per_replica_rates(config)
    for name, settings in ((config or {}).get("CHANNELS") or {}).items():
        if name == "chat_group":
            continue
        url = str((settings or {}).get("url") or "stub")
        host = None if url in SENTINELS else placeholder_host(url)
        if host:
            setting = GATEWAY_SETTINGS.get(name, f"CHANNELS.{name}.url")
            raise ChannelSettingError(
                f"{setting} ({name} gateway) is still a placeholder ({host}, a reserved example domain): "
                "set your gateway's URL"
            )
        gateway_auth_header(name, settings)


def build_channels(config, policy=None, webhook_policy=None):
    """Adapters from the CHANNELS config: ``url: stub`` picks the stub twin. The gateway URLs are
    expected to have passed ``outbound.startup_policies`` already; ``policy`` guards every gateway
    request, ``webhook_policy`` every chat-group one. ``timeout`` (seconds to connect and per read,
    default 5) and ``deadline`` (the whole request, default twice the timeout) may be set per channel,
    and ``auth_header`` per gateway (``gateway_auth_header``; chat-group robots never get one)."""
    channels: dict[str, HttpGateway | StubChannel] = {}  # ChatRobot is an HttpGateway
    for name, settings in (config or {}).items():
        url = str(settings.get("url") or "stub")
        timeout = float(settings.get("timeout", 5.0))
        deadline = settings.get("deadline")
        if url == "stub":
            channels[name] = StubChannel(name)
        elif name == "chat_group":
            channels[name] = ChatRobot(timeout=timeout, policy=webhook_policy, deadline=deadline)
        else:
            channels[name] = HttpGateway(
                name,
                url,
                timeout=timeout,
                auth_header=gateway_auth_header(name, settings),
                policy=policy,
                deadline=deadline,
            )
    return channels


class RateLimiter:
    """A token bucket per channel (per process): ``take(channel, n)`` grants up to n sends now. A
    bucket holds ``burst_seconds`` of its rate, and at least one send: a rate below one per second
    (a small quota shared by many replicas) still sends, one at a time."""

    def __init__(self, rates, burst_seconds=1.0, clock=time.monotonic):
        self.rates = {channel: float(rate) for channel, rate in rates.items()}
        self.burst = burst_seconds
        self.clock = clock
        self.capacity = {channel: max(1.0, rate * burst_seconds) for channel, rate in self.rates.items()}
        self.tokens = dict(self.capacity)
        self.updated = {channel: clock() for channel in self.rates}

    def take(self, channel, wanted):
        rate = self.rates.get(channel)
        if rate is None:
            return wanted
        now = self.clock()
        self.tokens[channel] = min(self.capacity[channel], self.tokens[channel] + (now - self.updated[channel]) * rate)
        self.updated[channel] = now
        granted = min(wanted, int(self.tokens[channel]))
        self.tokens[channel] -= granted
        return granted

    def give_back(self, channel, unused):
        if channel in self.tokens and unused > 0:
            self.tokens[channel] += unused
