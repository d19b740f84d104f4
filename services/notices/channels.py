"""Delivery channels: one interface, an adapter per provider, each with a stub twin.

- ``HttpGateway``: SMS and voice-call gateways and the app-push endpoint (JSON POST).
- ``ChatRobot``: a small grid's chat-group robot webhook, in the group-robot JSON
  format (WeCom style: ``msgtype`` text or markdown; ``@all`` for severe notices).
- ``StubChannel``: accepts and remembers every message; tests and load tests use it.

Every request goes through the deployment's outbound policy (``services.notices.outbound``): the
address connected to is checked on each connection, redirects are not followed, and a refused
URL or address fails the delivery for good (``detail`` says why).
"""

import logging
import time
from collections import deque
from dataclasses import dataclass

import eventlet
import requests

from services.notices.outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger(__name__)


@dataclass
class Outbound:
    delivery_id: int
    notice_id: int
    channel: str
    to: str | None  # phone (sms, voice_call), resident id (app_push), webhook URL (chat_group)
    title: str
    body: str
    severity: str
    mention_all: bool = False


@dataclass
class Outcome:
    ok: bool
    retryable: bool = False
    detail: str | None = None


class HttpGateway:
    """POSTs ``{delivery_id, to, title, text, severity}``. 2xx accepted; 408/429/5xx and network
    errors are retried; other 4xx are final. The gateway reports delivery later through
    ``record_delivery_status``."""

    def __init__(self, channel, url, timeout=5.0, auth_header=None, policy=None):
        self.channel = channel
        self.url = url
        self.timeout = timeout
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

    concurrency = 50

    def send_many(self, messages):
        """Send a batch concurrently (green threads); outcomes in the batch's order."""
        pool = eventlet.GreenPool(self.concurrency)
        return list(pool.imap(self.send, messages))

    def send(self, message):
        response = self.post(self.url, message)
        return response if isinstance(response, Outcome) else self.judge(response)

    def post(self, url, message):
        """The response, or the Outcome of a request that got none (refused, or a network error)."""
        try:
            self.policy.check_url(url)
            return self.http.post(url, json=self.payload(message), timeout=self.timeout, allow_redirects=False)
        except OutboundRefused as refused:
            log.warning("outbound request refused: %s", refused.reason, extra={"method": self.channel})
            return Outcome(False, retryable=False, detail=f"refused: {refused.reason}"[:300])
        except requests.RequestException as exc:
            return Outcome(False, retryable=True, detail=f"network: {type(exc).__name__}")

    def judge(self, response):
        if 200 <= response.status_code < 300:
            return Outcome(True)
        retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
        return Outcome(False, retryable=retryable, detail=f"http {response.status_code}")


class ChatRobot(HttpGateway):
    """Posts to the webhook in ``message.to``: markdown normally, text with ``@all`` for severe notices."""

    RATE_LIMITED = 45009  # the robot's "too many messages" code: retry later

    def __init__(self, timeout=5.0, policy=None):
        super().__init__("chat_group", url=None, timeout=timeout, policy=policy)

    def payload(self, message):
        if message.mention_all:
            return {
                "msgtype": "text",
                "text": {"content": f"【{message.title}】\n{message.body}", "mentioned_list": ["@all"]},
            }
        return {"msgtype": "markdown", "markdown": {"content": f"### {message.title}\n{message.body}"}}

    def send(self, message):
        response = self.post(message.to, message)  # the group's webhook, checked again now
        if isinstance(response, Outcome):
            return response
        outcome = self.judge(response)
        if outcome.ok:
            try:
                code = response.json().get("errcode", 0)
            except ValueError:
                code = 0
            if code:
                return Outcome(False, retryable=code == self.RATE_LIMITED, detail=f"robot errcode {code}")
        return outcome


class StubChannel:
    """Accepts every message and keeps the latest ``keep`` of them."""

    def __init__(self, channel, keep=10_000):
        self.channel = channel
        self.sent: deque[Outbound] = deque(maxlen=keep)
        self.count = 0

    def send(self, message):
        self.sent.append(message)
        self.count += 1
        return Outcome(True)

    def send_many(self, messages):
        return [self.send(message) for message in messages]


def build_channels(config, policy=None):
    """Adapters from the CHANNELS config: ``url: stub`` picks the stub twin. The gateway URLs are
    expected to have passed ``outbound.startup_policy`` already; ``policy`` guards every request."""
    channels: dict[str, HttpGateway | StubChannel] = {}  # ChatRobot is an HttpGateway
    for name, settings in (config or {}).items():
        url = str(settings.get("url") or "stub")
        timeout = float(settings.get("timeout", 5.0))
        if url == "stub":
            channels[name] = StubChannel(name)
        elif name == "chat_group":
            channels[name] = ChatRobot(timeout=timeout, policy=policy)
        else:
            channels[name] = HttpGateway(
                name, url, timeout=timeout, auth_header=settings.get("auth_header"), policy=policy
            )
    return channels


class RateLimiter:
    """A token bucket per channel (per process): ``take(channel, n)`` grants up to n sends now."""

    def __init__(self, rates, burst_seconds=1.0, clock=time.monotonic):
        self.rates = {channel: float(rate) for channel, rate in rates.items()}
        self.burst = burst_seconds
        self.clock = clock
        self.tokens = {channel: rate * burst_seconds for channel, rate in self.rates.items()}
        self.updated = {channel: clock() for channel in self.rates}

    def take(self, channel, wanted):
        rate = self.rates.get(channel)
        if rate is None:
            return wanted
        now = self.clock()
        self.tokens[channel] = min(rate * self.burst, self.tokens[channel] + (now - self.updated[channel]) * rate)
        self.updated[channel] = now
        granted = min(wanted, int(self.tokens[channel]))
        self.tokens[channel] -= granted
        return granted

    def give_back(self, channel, unused):
        if channel in self.tokens and unused > 0:
            self.tokens[channel] += unused
