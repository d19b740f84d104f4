"""Where the notices service may send HTTP requests: the SMS, voice and push gateways (configured)
and chat-group robot webhooks (registered over RPC by staff).

The policy, per deployment (``services/notices/config.yml``):

- ``https`` only; ``http`` too when ``ALLOW_HTTP`` (``NOTICES_ALLOW_HTTP=true``: dev and tests).
- No credentials in the URL (``user:password@``): a gateway's credentials go in its auth header.
- The host is a DNS name or a canonical IP address (no ``127.1``, ``2130706433``, ``0x7f.1``,
  IPv6 zone ids, non-ASCII names: forms where parsers disagree about the target).
- Every address the host resolves to must be public (global unicast): no loopback, private,
  link-local, CGNAT (100.64/10), "this network" (0/8), multicast, reserved, documentation or
  benchmarking ranges, IPv6 ULA/link-local/site-local, IPv4-mapped or -embedding IPv6 (NAT64, 6to4,
  Teredo) — unless the host name, or the address's network, is in ``OUTBOUND_ALLOWLIST``
  (``NOTICES_OUTBOUND_ALLOWLIST``: comma-separated host names, IP addresses or CIDR networks).

It is checked when a URL comes in (``register_chat_group``: a ValidationError naming the field;
gateway URLs: the service refuses to start) and again on every connection: :class:`GuardedAdapter`
resolves the host, checks every address and connects to a checked address itself, so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot slip a private address in.
Redirects are not followed, and no proxy from the environment is used.
"""

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

log = logging.getLogger(__name__)

# IPv4 ranges that are not public unicast (IANA special-purpose registry, multicast, reserved).
NON_GLOBAL_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local (cloud metadata services live here)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
# IPv6: only global unicast (2000::/3) is public; within it these are not. Everything outside it
# (::/8 with loopback, unspecified and IPv4-mapped, NAT64 64:ff9b::/96, ULA fc00::/7, link-local
# fe80::/10, site-local fec0::/10, multicast ff00::/8) is refused by not being in 2000::/3.
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
NON_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32), benchmarking
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds an IPv4 address
        "3fff::/20",  # documentation
    )
)

HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")  # a last label like this makes an IPv4 in disguise
UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")


class OutboundRefused(Exception):
    """A URL or address the policy refuses; ``reason`` is one line without the URL's path or query."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Unresolvable(OutboundRefused):
    """The host did not resolve (at start this is only a warning: the send-time check still holds)."""


class ConfigRefused(ValueError):
    """A setting the service cannot start with; the message is one line naming the setting."""


def is_public(address):
    """True if ``address`` (an ipaddress object) is a public unicast address."""
    if address.version == 4:
        return not any(address in network for network in NON_GLOBAL_V4) and address.is_global
    if address not in GLOBAL_UNICAST_V6 or any(address in network for network in NON_GLOBAL_V6):
        return False
    return address.is_global and not address.is_multicast


def parse_address(text):
    """An address as getaddrinfo reports it (an IPv6 one may carry a ``%zone``)."""
    return ipaddress.ip_address(str(text).split("%", 1)[0])


def _same_address(host, address):
    try:
        return parse_address(host.strip("[]")) == address
    except ValueError:
        return False


def resolve_host(host, port):
    """Every address ``host`` resolves to (TCP), in the resolver's order, without duplicates."""
    found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def parse_bool(value, setting):
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ConfigRefused(f"{setting}: {value!r} is not true or false")


def valid_host_name(host):
    """True for an ASCII DNS name whose last label is not numeric (``127.1`` is an IPv4 in disguise)."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(HOST_LABEL.match(label) for label in labels) and not NUMERIC_LABEL.match(labels[-1])


def parse_allowlist(value, setting="NOTICES_OUTBOUND_ALLOWLIST"):
    """(host names, networks) from a comma-separated string (or a list) of host names, IP addresses
    and CIDR networks. An entry that is none of those refuses the configuration."""
    if value is None:
        entries: list[str] = []
    elif isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, Iterable):
        entries = [str(entry) for entry in value]
    else:
        entries = [str(value)]
    hosts, networks = set(), []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not valid_host_name(entry):
            raise ConfigRefused(f"{setting}: {raw.strip()!r} is neither a host name, an IP address nor a CIDR network")
        hosts.add(entry.rstrip("."))
    return frozenset(hosts), tuple(networks)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int


@dataclass(frozen=True)
class OutboundPolicy:
    allow_http: bool = False
    hosts: frozenset = frozenset()  # allowlisted host names: any address they resolve to is allowed
    networks: tuple = ()  # allowlisted networks: addresses in them are allowed though not public
    resolver: Callable[[str, int], list[str]] = field(default=resolve_host, compare=False)

    @classmethod
    def from_config(cls, config, resolver=resolve_host):
        """From the service config's ``ALLOW_HTTP`` and ``OUTBOUND_ALLOWLIST``; ConfigRefused if invalid."""
        hosts, networks = parse_allowlist(config.get("OUTBOUND_ALLOWLIST"))
        allow_http = parse_bool(config.get("ALLOW_HTTP"), "NOTICES_ALLOW_HTTP")
        return cls(allow_http=allow_http, hosts=hosts, networks=networks, resolver=resolver)

    # ---- the URL itself, without the network --------------------------------

    def check_url(self, url):
        """The URL's scheme, host and port, or OutboundRefused saying why not."""
        if not isinstance(url, str) or not url:
            raise OutboundRefused("not a URL")
        if UNSAFE_CHARACTERS.search(url):
            raise OutboundRefused("the URL contains spaces, control characters or backslashes")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise OutboundRefused("not a valid URL") from None
        scheme = parts.scheme.lower()
        allowed = ("http", "https") if self.allow_http else ("https",)
        if scheme not in allowed:
            if scheme == "http":
                raise OutboundRefused("http is not allowed: https only (NOTICES_ALLOW_HTTP=true allows http in dev)")
            raise OutboundRefused(f"scheme {scheme or '(none)'} is not allowed: {' or '.join(allowed)} only")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise OutboundRefused("credentials in the URL are not allowed")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise OutboundRefused("the URL names no host")
        if port == 0:
            raise OutboundRefused("port 0 is not allowed")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not valid_host_name(host):
                raise OutboundRefused(f"host {host!r} is not a valid host name or IP address") from None
        else:
            self.check_addresses(host, [str(address)])
        return Target(scheme, host, port or (443 if scheme == "https" else 80))

    # ---- the addresses the host resolves to ---------------------------------

    def allowlisted(self, host, address):
        if host.lower().rstrip(".") in self.hosts:
            return True
        candidates = [address]
        if address.version == 6 and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in network for a in candidates for network in self.networks if a.version == network.version)

    def check_addresses(self, host, addresses):
        """Every address must be public or allowlisted; OutboundRefused names the first that is not."""
        if not addresses:
            raise Unresolvable(f"host {host} resolves to no address")
        for text in addresses:
            address = parse_address(text)
            if not is_public(address) and not self.allowlisted(host, address):
                where = "is" if _same_address(host, address) else f"resolves to {address}, which is"
                raise OutboundRefused(
                    f"host {host} {where} not a public address (NOTICES_OUTBOUND_ALLOWLIST may allow it)"
                )

    def resolve(self, host, port):
        """The addresses to connect to, all of them checked."""
        try:
            addresses = self.resolver(host.strip("[]"), port)
        except (OSError, UnicodeError):
            raise Unresolvable(f"host {host} does not resolve") from None
        self.check_addresses(host, addresses)
        return addresses

    def vet(self, url):
        """The whole check, as at registration: the URL, then every address its host resolves to."""
        target = self.check_url(url)
        self.resolve(target.host, target.port)
        return target

    # ---- requests made under the policy -------------------------------------

    def session(self, auth_header=None):
        """A requests Session whose every connection goes only to an address this policy allows."""
        http = requests.Session()
        http.trust_env = False  # no proxies or .netrc from the environment
        adapter = GuardedAdapter(self)
        http.mount("http://", adapter)
        http.mount("https://", adapter)
        if auth_header:
            http.headers["Authorization"] = auth_header
        return http


def _connect(conn, policy):
    """A connection's socket: resolve once, check every address, connect only to those (what is
    checked is what is used). Errors as urllib3's own ``_new_conn`` raises them; OutboundRefused
    (not an OSError: nothing retries it) when an address is refused."""
    try:
        addresses = policy.resolve(conn._dns_host, conn.port)
    except Unresolvable as refused:
        raise NameResolutionError(conn.host, conn, socket.gaierror(refused.reason)) from None
    error = None
    for address in addresses:
        try:
            return urllib3_connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class GuardedHTTPConnection(HTTPConnection):
    policy: "OutboundPolicy"

    def _new_conn(self):
        return _connect(self, self.policy)


class GuardedHTTPSConnection(HTTPSConnection):
    policy: "OutboundPolicy"

    def _new_conn(self):
        return _connect(self, self.policy)


class GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connection pools connect only to addresses the policy allows."""

    def __init__(self, policy, **kwargs):
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        policy = {"policy": self.policy}
        connection = type("PolicyHTTPConnection", (GuardedHTTPConnection,), policy)
        tls_connection = type("PolicyHTTPSConnection", (GuardedHTTPSConnection,), policy)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": connection}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tls_connection}),
        }

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise OutboundRefused("outbound requests do not go through proxies")


# ---- at start: the configured gateway URLs --------------------------------------------------

# The environment variable behind each channel's gateway URL (services/notices/config.yml).
GATEWAY_SETTINGS = {
    "sms": "NOTICES_SMS_GATEWAY_URL",
    "voice_call": "NOTICES_VOICE_GATEWAY_URL",
    "app_push": "NOTICES_PUSH_URL",
}
# Channel "URLs" that are not URLs: the in-process stub twin, and the chat robot (which posts to
# each group's registered webhook, checked when registered and when sent).
SENTINELS = ("stub", "robot")


def gateway_urls(config):
    """{channel: url} of the configured gateways that are real URLs."""
    urls = {}
    for name, settings in (config.get("CHANNELS") or {}).items():
        url = str((settings or {}).get("url") or "stub")
        if name == "chat_group" or url in SENTINELS:
            continue
        urls[name] = url
    return urls


def startup_policy(config, resolver=resolve_host):
    """The deployment's policy, with every configured gateway URL checked (host names resolved).

    ConfigRefused (one line naming the setting) when a setting or a gateway URL is refused; a host
    that does not resolve now is only logged, since every send checks again.
    """
    policy = OutboundPolicy.from_config(config, resolver=resolver)
    for channel, url in gateway_urls(config).items():
        setting = GATEWAY_SETTINGS.get(channel, f"CHANNELS.{channel}.url")
        try:
            policy.vet(url)
        except Unresolvable as refused:
            log.warning("%s (%s): %s; every send will check it again", setting, channel, refused.reason)
        except OutboundRefused as refused:
            raise ConfigRefused(f"{setting} ({channel} gateway) is refused: {refused.reason}") from None
    return policy
