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
  Teredo) — unless the host name, or the address's network, is allowlisted.
- Two policies, two allowlists (comma-separated host names, IP addresses or CIDR networks):
  gateways (configured by operators) may use any port and reach what ``OUTBOUND_ALLOWLIST``
  (``NOTICES_OUTBOUND_ALLOWLIST``) names; chat-group webhooks (registered by staff) only what
  ``WEBHOOK_ALLOWLIST`` (``NOTICES_WEBHOOK_ALLOWLIST``, empty by default) names, and only on port
  443 (80 too where http is allowed) unless an entry names ``host:port`` (``10.0.0.0/24:8443``,
  ``[fd00::7]:8080``): such an entry opens that port of those hosts, and no other port.

It is checked when a URL comes in (``register_chat_group``: a ValidationError on the field saying
only that the URL is refused, the reason in the service log; gateway URLs: the service refuses to
start) and again on every connection: :class:`GuardedAdapter`
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
from typing import NamedTuple
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
WITH_PORT = re.compile(r"^(?P<target>.+):(?P<port>[0-9]{1,5})$")  # an allowlist entry naming a port


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


class Allowlist(NamedTuple):
    hosts: frozenset  # host names (any address they resolve to is allowed)
    networks: tuple  # networks (their addresses are allowed though not public)
    host_ports: frozenset  # (host name, port): entries that name a port (webhooks only)
    network_ports: tuple  # (network, port)


def _network(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_allowlist(value, setting="NOTICES_OUTBOUND_ALLOWLIST", ports=False):
    """An Allowlist from a comma-separated string (or a list) of host names, IP addresses and CIDR
    networks; with ``ports``, each may name a port too (``host:port``, ``[v6]:port``,
    ``cidr:port``). An entry that is none of those refuses the configuration."""
    if value is None:
        entries: list[str] = []
    elif isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, Iterable):
        entries = [str(entry) for entry in value]
    else:
        entries = [str(value)]
    hosts, networks, host_ports, network_ports = set(), [], set(), []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        network = _network(entry.strip("[]"))
        if network is not None:
            networks.append(network)
            continue
        if valid_host_name(entry):
            hosts.add(entry.rstrip("."))
            continue
        named = WITH_PORT.match(entry) if ports else None
        if named and 0 < int(named["port"]) <= 65535:
            target, port = named["target"], int(named["port"])
            bracketed = target.startswith("[") and target.endswith("]")
            network = _network(target[1:-1] if bracketed else target)
            if network is not None and (network.version == 4) != bracketed:  # IPv6 only in brackets
                network_ports.append((network, port))
                continue
            if not bracketed and valid_host_name(target):
                host_ports.add((target.rstrip("."), port))
                continue
        what = "is neither a host name, an IP address nor a CIDR network"
        if ports:
            what += ", with or without :port (1-65535)"
        raise ConfigRefused(f"{setting}: {raw.strip()!r} {what}")
    return Allowlist(frozenset(hosts), tuple(networks), frozenset(host_ports), tuple(network_ports))


def _in_any(address, networks):
    candidates = [address]
    if address.version == 6 and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(a in network for a in candidates for network in networks if a.version == network.version)


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
    host_ports: frozenset = frozenset()  # (host name, port): that host, on that port only
    network_ports: tuple = ()  # (network, port): its addresses, on that port only
    # Webhooks: port 443 (and 80 with http) only, unless a (host or network, port) entry names another.
    fixed_ports: bool = False
    setting: str = "NOTICES_OUTBOUND_ALLOWLIST"  # the allowlist's variable, named in reasons
    resolver: Callable[[str, int], list[str]] = field(default=resolve_host, compare=False)

    @classmethod
    def from_config(cls, config, resolver=resolve_host):
        """The gateways' policy, from the service config's ``ALLOW_HTTP`` and ``OUTBOUND_ALLOWLIST``
        (any port); ConfigRefused if invalid."""
        allowlist = parse_allowlist(config.get("OUTBOUND_ALLOWLIST"))
        allow_http = parse_bool(config.get("ALLOW_HTTP"), "NOTICES_ALLOW_HTTP")
        return cls(allow_http=allow_http, hosts=allowlist.hosts, networks=allowlist.networks, resolver=resolver)

    @classmethod
    def for_webhooks(cls, config, resolver=resolve_host):
        """The chat-group webhooks' policy, from ``ALLOW_HTTP`` and ``WEBHOOK_ALLOWLIST`` (entries may
        name a port; without one, 443 and 80 only); ConfigRefused if invalid."""
        setting = "NOTICES_WEBHOOK_ALLOWLIST"
        allowlist = parse_allowlist(config.get("WEBHOOK_ALLOWLIST"), setting, ports=True)
        return cls(
            allow_http=parse_bool(config.get("ALLOW_HTTP"), "NOTICES_ALLOW_HTTP"),
            hosts=allowlist.hosts,
            networks=allowlist.networks,
            host_ports=allowlist.host_ports,
            network_ports=allowlist.network_ports,
            fixed_ports=True,
            setting=setting,
            resolver=resolver,
        )

    @property
    def open_ports(self):
        """The ports any allowed host may be reached on (None: any port)."""
        if not self.fixed_ports:
            return None
        return (443, 80) if self.allow_http else (443,)

    def port_refused(self, host, port):
        ports = " or ".join(str(p) for p in self.open_ports or ())
        return OutboundRefused(
            f"port {port} is not allowed for host {host}: webhooks use port {ports} "
            f"(a {self.setting} entry host:port may allow another)"
        )

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
        port = port or (443 if scheme == "https" else 80)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not valid_host_name(host):
                raise OutboundRefused(f"host {host!r} is not a valid host name or IP address") from None
            # A port no entry names is refused before the name is resolved.
            open_ports = self.open_ports
            if open_ports is not None and port not in open_ports and not self._names_port(host, port):
                raise self.port_refused(host, port) from None
        else:
            self.check_addresses(host, [str(address)], port)
        return Target(scheme, host, port)

    # ---- the addresses the host resolves to ---------------------------------

    def allowlisted(self, host, address, port=None):
        """True if an entry names ``host`` or ``address``: a port-less one, or (``port`` given) one
        naming that port."""
        name = host.lower().rstrip(".")
        if name in self.hosts or _in_any(address, self.networks):
            return True
        return port is not None and self._names_destination(host, address, port)

    def _names_destination(self, host, address, port):
        """True if an entry names ``port`` of ``host`` or of ``address``'s network."""
        if (host.lower().rstrip("."), port) in self.host_ports:
            return True
        return _in_any(address, [network for network, p in self.network_ports if p == port])

    def _names_port(self, host, port):
        """True if some entry names ``port`` for ``host`` or for a network (whose addresses are not known yet)."""
        name = host.lower().rstrip(".")
        return (name, port) in self.host_ports or any(p == port for _, p in self.network_ports)

    def _names_at_all(self, host, address):
        name = host.lower().rstrip(".")
        return (
            self.allowlisted(host, address)
            or any(h == name for h, _ in self.host_ports)
            or _in_any(address, [network for network, _ in self.network_ports])
        )

    def permits(self, host, address, port):
        """``address`` (of ``host``) on ``port``: public or allowlisted, on a port the policy allows."""
        open_ports = self.open_ports
        if open_ports is not None and port not in open_ports:
            return self._names_destination(host, address, port)
        return is_public(address) or self.allowlisted(host, address, port)

    def check_addresses(self, host, addresses, port=443):
        """Every address must be permitted on ``port``; OutboundRefused names the first that is not:
        the port when it is not an open one and an entry names the address (or the address is
        public), else the address."""
        if not addresses:
            raise Unresolvable(f"host {host} resolves to no address")
        open_ports = self.open_ports
        for text in addresses:
            address = parse_address(text)
            if self.permits(host, address, port):
                continue
            closed_port = open_ports is not None and port not in open_ports
            if closed_port and (is_public(address) or self._names_at_all(host, address)):
                raise self.port_refused(host, port)
            where = "is" if _same_address(host, address) else f"resolves to {address}, which is"
            raise OutboundRefused(f"host {host} {where} not a public address ({self.setting} may allow it)")

    def resolve(self, host, port):
        """The addresses to connect to, all of them checked."""
        try:
            addresses = self.resolver(host.strip("[]"), port)
        except (OSError, UnicodeError):
            raise Unresolvable(f"host {host} does not resolve") from None
        self.check_addresses(host, addresses, port)
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


class Policies(NamedTuple):
    gateways: OutboundPolicy  # the configured SMS, voice and push gateways
    webhooks: OutboundPolicy  # the chat-group webhooks staff register


def startup_policies(config, resolver=resolve_host):
    """The deployment's two policies, with every configured gateway URL checked (host names resolved).

    ConfigRefused (one line naming the setting) when a setting or a gateway URL is refused; a host
    that does not resolve now is only logged, since every send checks again.
    """
    policy = OutboundPolicy.from_config(config, resolver=resolver)
    webhooks = OutboundPolicy.for_webhooks(config, resolver=resolver)
    for channel, url in gateway_urls(config).items():
        setting = GATEWAY_SETTINGS.get(channel, f"CHANNELS.{channel}.url")
        try:
            policy.vet(url)
        except Unresolvable as refused:
            log.warning("%s (%s): %s; every send will check it again", setting, channel, refused.reason)
        except OutboundRefused as refused:
            raise ConfigRefused(f"{setting} ({channel} gateway) is refused: {refused.reason}") from None
    return Policies(policy, webhooks)
