"""The notices outbound URL policy (services.notices.outbound): pure logic, no network (resolvers are
plain functions)."""

import ipaddress
import logging
import socket

import pytest
from hypothesis import given, strategies as st

from services.notices import outbound
from services.notices.outbound import ConfigRefused, OutboundPolicy, OutboundRefused, Unresolvable

STRICT = OutboundPolicy()
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"


def resolving_to(*addresses):
    return lambda host, port: list(addresses)


def names_resolving_to(*addresses):
    """As getaddrinfo: an IP address resolves to itself, every name to ``addresses``."""

    def resolve(host, port):
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return list(addresses)

    return resolve


def refused(policy, url):
    with pytest.raises(OutboundRefused) as err:
        policy.vet(url)
    return err.value.reason


# ---- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.0.9",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:93.184.215.14",  # IPv4-mapped, even of a public address
        "::127.0.0.1",  # IPv4-compatible
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:db8::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not outbound.is_public(ipaddress.ip_address(address))
    with pytest.raises(OutboundRefused):
        STRICT.check_addresses("gateway.example.org", [address])


@pytest.mark.parametrize("address", [PUBLIC_V4, "1.1.1.1", "8.8.8.8", PUBLIC_V6, "2a00:1450:4001::200e"])
def test_public_addresses_are_allowed(address):
    assert outbound.is_public(ipaddress.ip_address(address))
    STRICT.check_addresses("gateway.example.org", [address])


@given(st.ip_addresses())
def test_public_means_global_unicast(address):
    if outbound.is_public(address):
        assert address.is_global and not address.is_multicast and not address.is_private
        if address.version == 6:
            assert address.ipv4_mapped is None and address in ipaddress.ip_network("2000::/3")


@given(st.sampled_from(outbound.NON_GLOBAL_V4).flatmap(lambda net: st.ip_addresses(network=net)))
def test_every_address_of_a_refused_ipv4_range_is_refused_and_so_is_its_mapped_form(address):
    assert not outbound.is_public(address)
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert not outbound.is_public(mapped)


@given(st.ip_addresses(v=6).filter(lambda a: a not in ipaddress.ip_network("2000::/3")))
def test_ipv6_outside_global_unicast_is_refused(address):
    assert not outbound.is_public(address)


def test_every_resolved_address_counts_not_only_the_first():
    with pytest.raises(OutboundRefused) as err:
        STRICT.check_addresses("gw.example.org", [PUBLIC_V4, "10.0.0.7"])
    assert "10.0.0.7" in err.value.reason
    with pytest.raises(Unresolvable):
        STRICT.check_addresses("gw.example.org", [])


def test_scoped_ipv6_addresses_are_judged_without_their_zone():
    with pytest.raises(OutboundRefused):
        STRICT.check_addresses("gw.example.org", ["fe80::1%eth0"])


# ---- the allowlist -----------------------------------------------------------------------------


def test_allowlist_entries_are_hosts_addresses_or_networks():
    allowlist = outbound.parse_allowlist(" Gateway.Internal. ,127.0.0.1, 10.0.0.0/8,fd00::/8 ,, ::1")
    assert allowlist.hosts == {"gateway.internal"}
    assert [str(n) for n in allowlist.networks] == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "::1/128"]
    nothing = outbound.Allowlist(frozenset(), (), frozenset(), ())
    assert outbound.parse_allowlist(None) == nothing
    assert outbound.parse_allowlist("") == nothing
    assert outbound.parse_allowlist(["a.example", "192.168.0.0/16"]).hosts == {"a.example"}
    ports = outbound.parse_allowlist("a.example:8443,[fd00::7]:80,10.0.0.0/8:9000,fd00::7", ports=True)
    assert ports.host_ports == {("a.example", 8443)}
    assert [(str(n), p) for n, p in ports.network_ports] == [("fd00::7/128", 80), ("10.0.0.0/8", 9000)]
    assert [str(n) for n in ports.networks] == ["fd00::7/128"]


@pytest.mark.parametrize(
    "entry", ["not a host", "http://gw.example.org", "gw.example.org:8443", "10.0.0.0/33", "127.1"]
)
def test_a_bad_allowlist_entry_refuses_the_configuration(entry):
    with pytest.raises(ConfigRefused) as err:
        OutboundPolicy.from_config({"OUTBOUND_ALLOWLIST": f"10.0.0.1,{entry}"})
    assert str(err.value).startswith("NOTICES_OUTBOUND_ALLOWLIST: ")


@given(st.sampled_from(outbound.NON_GLOBAL_V4[1:]).flatmap(lambda net: st.ip_addresses(network=net)))
def test_an_allowlisted_network_lets_its_addresses_through_and_no_others(address):
    network = ipaddress.ip_network(f"{address}/32")
    policy = OutboundPolicy(networks=(network,), resolver=resolving_to(str(address)))
    assert policy.vet(f"https://{address}/hook").host == str(address)
    assert policy.vet("https://gateway.internal/hook").host == "gateway.internal"
    other = address + 1 if int(address) < 2**32 - 1 else address - 1
    if not outbound.is_public(other):
        refused(OutboundPolicy(networks=(network,)), f"https://{other}/hook")


def test_an_allowlisted_host_may_resolve_to_anything_and_other_hosts_may_not():
    policy = OutboundPolicy(hosts=frozenset({"sms.internal"}), resolver=resolving_to("10.0.0.5", "fd00::5"))
    assert policy.vet("https://SMS.internal./v1").host == "sms.internal"
    assert "10.0.0.5" in refused(policy, "https://sms.internal.example.org/v1")


def test_the_settings_are_read_from_the_config():
    policy = OutboundPolicy.from_config({"ALLOW_HTTP": "true", "OUTBOUND_ALLOWLIST": "127.0.0.1"})
    assert policy.allow_http and policy.networks == (ipaddress.ip_network("127.0.0.1/32"),)
    assert OutboundPolicy.from_config({}) == OutboundPolicy()  # https only, nothing allowlisted
    assert OutboundPolicy.from_config({"ALLOW_HTTP": None, "OUTBOUND_ALLOWLIST": None}) == OutboundPolicy()
    assert not OutboundPolicy.from_config({"ALLOW_HTTP": False}).allow_http
    with pytest.raises(ConfigRefused, match="NOTICES_ALLOW_HTTP"):
        OutboundPolicy.from_config({"ALLOW_HTTP": "sometimes"})


# ---- chat-group webhooks: their own allowlist, and port 443 -----------------------------------


def test_the_gateway_allowlist_opens_nothing_to_webhooks():
    """A network allowlisted for a gateway (any port: the gateways are configured by operators) is
    no destination for the webhooks officers register: not its hosts, not its ports."""
    config = {"OUTBOUND_ALLOWLIST": "10.20.0.0/16,sms.internal"}
    gateways = OutboundPolicy.from_config(config, resolver=resolving_to("10.20.0.5"))
    webhooks = OutboundPolicy.for_webhooks(config, resolver=resolving_to("10.20.0.5"))
    assert gateways.vet("https://10.20.0.5:15672/api/users").port == 15672
    assert gateways.vet("https://sms.internal:8443/v1").host == "sms.internal"
    for url in ("https://10.20.0.5/hook", "https://10.20.0.5:15672/api/users", "https://sms.internal/hook"):
        with pytest.raises(OutboundRefused):
            webhooks.vet(url)
    assert "NOTICES_WEBHOOK_ALLOWLIST" in refused(webhooks, "https://10.20.0.5/hook")
    assert OutboundPolicy.for_webhooks({}).fixed_ports and not gateways.fixed_ports


def test_webhooks_use_port_443_and_80_only_where_http_is_allowed():
    def no_dns(host, port):
        raise AssertionError("a refused port is refused before resolving")

    webhooks = OutboundPolicy.for_webhooks({}, resolver=resolving_to(PUBLIC_V4))
    assert webhooks.vet("https://hooks.example.org/send?key=k").port == 443
    assert webhooks.vet("https://hooks.example.org:443/send").port == 443
    strict = OutboundPolicy.for_webhooks({}, resolver=no_dns)
    for url in ("https://hooks.example.org:8443/", f"https://{PUBLIC_V4}:5672/", "https://hooks.example.org:80/"):
        assert refused(strict, url).startswith("port ")
    dev = OutboundPolicy.for_webhooks({"ALLOW_HTTP": "true"}, resolver=resolving_to(PUBLIC_V4))
    assert dev.vet("http://hooks.example.org/x").port == 80
    assert refused(dev, "http://hooks.example.org:8080/x").startswith("port 8080 ")
    # At send time too: the guard checks the port it connects to.
    with pytest.raises(OutboundRefused, match=r"^port 15672 "):
        webhooks.resolve("hooks.example.org", 15672)


def test_a_webhook_allowlist_entry_naming_a_port_opens_that_host_and_port_only():
    config = {"WEBHOOK_ALLOWLIST": "hooks.internal:8443, 10.30.0.0/24:9000, [fd00::7]:8080, 10.40.0.1"}
    webhooks = OutboundPolicy.for_webhooks(config, resolver=names_resolving_to("10.30.0.9"))
    assert webhooks.vet("https://hooks.internal:8443/x").port == 8443
    assert webhooks.vet("https://10.30.0.9:9000/x").port == 9000
    assert webhooks.vet("https://[fd00::7]:8080/x").port == 8080
    assert webhooks.vet("https://10.40.0.1/x").port == 443  # no port named: the default port only
    for url in (
        "https://hooks.internal/x",  # resolves to 10.30.0.9, allowed on 9000 only
        "https://hooks.internal:8444/x",
        "https://10.30.0.9/x",
        "https://10.30.0.9:9001/x",
        "https://10.30.1.9:9000/x",
        "https://10.40.0.1:8443/x",
        "https://[fd00::7]/x",
    ):
        with pytest.raises(OutboundRefused):
            webhooks.vet(url)
    public = OutboundPolicy.for_webhooks(config, resolver=resolving_to(PUBLIC_V4))
    assert refused(public, "https://other.example.org:8443/").startswith("port 8443 ")  # named for another host


@pytest.mark.parametrize(
    "entry", ["hooks.internal:", "hooks.internal:0", "hooks.internal:70000", "a.example:80:80", "https://a.example"]
)
def test_a_bad_webhook_allowlist_entry_refuses_the_start(entry):
    with pytest.raises(ConfigRefused) as err:
        outbound.startup_policies({"WEBHOOK_ALLOWLIST": f"hooks.internal:8443,{entry}"})
    assert str(err.value).startswith("NOTICES_WEBHOOK_ALLOWLIST: ")


def test_the_policies_are_read_from_the_config():
    policies = outbound.startup_policies(
        {"ALLOW_HTTP": "true", "OUTBOUND_ALLOWLIST": "10.20.0.0/16", "WEBHOOK_ALLOWLIST": "127.0.0.1:8080"}
    )
    assert policies.gateways.allow_http and policies.webhooks.allow_http
    assert policies.gateways.networks == (ipaddress.ip_network("10.20.0.0/16"),)
    assert policies.webhooks.networks == () and policies.webhooks.hosts == frozenset()
    assert policies.webhooks.network_ports == ((ipaddress.ip_network("127.0.0.1/32"), 8080),)
    assert outbound.startup_policies({}).webhooks == OutboundPolicy.for_webhooks({})


# ---- URLs --------------------------------------------------------------------------------------


def test_https_to_a_public_address_is_allowed():
    policy = OutboundPolicy(resolver=resolving_to(PUBLIC_V4, PUBLIC_V6))
    target = policy.vet("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc")
    assert (target.scheme, target.host, target.port) == ("https", "qyapi.weixin.qq.com", 443)
    assert policy.vet(f"https://[{PUBLIC_V6}]:8443/x").port == 8443


def test_http_only_when_allowed():
    assert "https only" in refused(STRICT, f"http://{PUBLIC_V4}/hook")
    assert OutboundPolicy(allow_http=True).vet(f"http://{PUBLIC_V4}/hook").port == 80
    for url in (f"ftp://{PUBLIC_V4}/x", "file:///etc/passwd", f"gopher://{PUBLIC_V4}/", "//example.org/x", "stub"):
        refused(OutboundPolicy(allow_http=True), url)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fe80::1%25eth0]/",
        "https://0.0.0.0:8080/",
        "https://10.0.0.1/",
        "https://100.100.100.200/",  # Alibaba Cloud's metadata service (CGNAT range)
        "https://[fd00:ec2::254]/",  # AWS's IPv6 metadata service
        "https://224.0.0.251/",
    ],
)
def test_non_public_ip_literals_are_refused_without_resolving(url):
    def no_dns(host, port):
        raise AssertionError("an IP literal is not resolved")

    assert "not a public address" in refused(OutboundPolicy(resolver=no_dns), url)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0x7f.0.0.1/",
        "https://0177.0.0.1/",
        "https://127.0.0.1.nip.io.1/",
        "https://bücher.example/",
        "https://-bad-.example/",
        "https://exa_mple.org/",
        "https://",
        "https:///path",
    ],
)
def test_hosts_in_ambiguous_or_invalid_forms_are_refused(url):
    refused(OutboundPolicy(resolver=resolving_to(PUBLIC_V4)), url)


@pytest.mark.parametrize(
    "url",
    [
        f"https://user:secret@{PUBLIC_V4}/",
        f"https://user@{PUBLIC_V4}/",
        f"https://{PUBLIC_V4}@127.0.0.1/",
        f"https://{PUBLIC_V4}\\@127.0.0.1/",
        f"https://{PUBLIC_V4}/a b",
        f"https://{PUBLIC_V4}/\n",
        f"https://{PUBLIC_V4}:0/",
        f"https://{PUBLIC_V4}:70000/",
        f"https://[{PUBLIC_V6}/",
        None,
        "",
    ],
)
def test_credentials_odd_characters_and_bad_ports_are_refused(url):
    refused(OutboundPolicy(resolver=resolving_to(PUBLIC_V4)), url)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_written_as_a_number_is_refused(number):
    for host in (str(number), hex(number), f"{number >> 24}.{number & 0xFFFFFF}"):
        with pytest.raises(OutboundRefused):
            OutboundPolicy(resolver=resolving_to(PUBLIC_V4)).check_url(f"https://{host}/")


def test_a_host_name_is_judged_by_every_address_it_resolves_to():
    assert "10.0.0.9" in refused(
        OutboundPolicy(resolver=resolving_to(PUBLIC_V4, "10.0.0.9")), "https://gw.example.org/"
    )
    assert "resolves to no address" in refused(OutboundPolicy(resolver=resolving_to()), "https://gw.example.org/")

    def nxdomain(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Unresolvable):
        OutboundPolicy(resolver=nxdomain).vet("https://gw.example.org/")


def test_reasons_never_quote_the_path_or_query():
    reason = refused(OutboundPolicy(resolver=resolving_to("10.0.0.1")), "https://gw.example.org/send?key=SECRET")
    assert "SECRET" not in reason and "send" not in reason


# ---- at start: the configured gateways ---------------------------------------------------------


def channels(**urls):
    return {"CHANNELS": {name: {"url": url, "rate_per_second": 10} for name, url in urls.items()}}


def test_stub_and_robot_are_not_urls():
    config = channels(sms="stub", voice_call="stub", app_push=None, chat_group="robot")
    assert outbound.gateway_urls(config) == {}
    assert outbound.startup_policies(config).gateways == OutboundPolicy()


def test_a_refused_gateway_url_refuses_the_start_naming_its_setting():
    with pytest.raises(ConfigRefused) as err:
        outbound.startup_policies(channels(sms="http://sms-gateway.example.org/v1", chat_group="robot"))
    assert str(err.value).startswith("NOTICES_SMS_GATEWAY_URL (sms gateway) is refused: http is not allowed")
    with pytest.raises(ConfigRefused, match=r"^NOTICES_PUSH_URL .*169\.254\.169\.254"):
        outbound.startup_policies(channels(app_push="https://169.254.169.254/latest"))
    with pytest.raises(ConfigRefused, match=r"^NOTICES_VOICE_GATEWAY_URL .*resolves to 10\.1\.1\.1"):
        outbound.startup_policies(channels(voice_call="https://voice.example.org/"), resolver=resolving_to("10.1.1.1"))


def test_gateways_pass_when_allowed_and_an_unresolvable_one_only_warns(caplog):
    config = {**channels(sms="http://127.0.0.1:9000/sms"), "ALLOW_HTTP": "true", "OUTBOUND_ALLOWLIST": "127.0.0.1"}
    assert outbound.startup_policies(config).gateways.allow_http

    def nxdomain(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with caplog.at_level(logging.WARNING, logger="services.notices.outbound"):
        outbound.startup_policies(channels(sms="https://sms.example.org/v1"), resolver=nxdomain)
    assert "NOTICES_SMS_GATEWAY_URL (sms): host sms.example.org does not resolve" in caplog.text
