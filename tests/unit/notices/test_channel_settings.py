"""The notices channels' deployment settings (services.notices.channels, issue 15 item 7): a
gateway's Authorization header from NOTICES_<CHANNEL>_AUTH_HEADER, each replica's share of a
channel's quota (NOTICES_<CHANNEL>_RATE_TOTAL / NOTICES_MAX_REPLICAS), and the start refusing a
placeholder gateway URL or a bad setting with one line naming it."""

import os

import eventlet
import pytest
from eventlet import wsgi

from services.notices.channels import (
    ChannelSettingError,
    ChatRobot,
    HttpGateway,
    Outbound,
    RateLimiter,
    build_channels,
    check_settings,
    gateway_auth_header,
    max_replicas,
    per_replica_rates,
    placeholder_host,
)
from services.notices.outbound import OutboundPolicy
from shared.runner import StartupError, check_services, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIG_YML = os.path.join(ROOT, "services", "notices", "config.yml")
# Loading config.yml imports nameko's CLI, which imports pkg_resources (shared/__init__.py quiets it
# outside pytest, which resets the filters per test).
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning")


def notices_config(monkeypatch, **variables):
    """services/notices/config.yml as the runner loads it, with these NOTICES_* variables only."""
    for name in list(os.environ):
        if name.startswith("NOTICES_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_config(CONFIG_YML)


# ---- rates ---------------------------------------------------------------------------------------


def test_each_replica_gets_the_total_divided_by_the_replica_ceiling(monkeypatch):
    config = notices_config(
        monkeypatch,
        NOTICES_MAX_REPLICAS="4",
        NOTICES_SMS_RATE_TOTAL="800",
        NOTICES_VOICE_RATE_TOTAL="30",
        NOTICES_PUSH_RATE_TOTAL="4000",
        NOTICES_CHAT_RATE_TOTAL="2",
    )
    assert per_replica_rates(config) == {"sms": 200.0, "voice_call": 7.5, "app_push": 1000.0, "chat_group": 0.5}


def test_without_a_total_the_per_replica_rate_stands_and_one_process_is_the_ceiling(monkeypatch):
    config = notices_config(monkeypatch, NOTICES_SMS_RATE="50", NOTICES_VOICE_RATE_TOTAL="40")
    assert max_replicas(config) == 1
    assert per_replica_rates(config) == {"sms": 50.0, "voice_call": 40.0, "app_push": 1000.0, "chat_group": 20.0}
    # The total wins over the per-replica rate when both are set.
    config = notices_config(monkeypatch, NOTICES_MAX_REPLICAS="2", NOTICES_SMS_RATE="50", NOTICES_SMS_RATE_TOTAL="300")
    assert per_replica_rates(config)["sms"] == 150.0


@pytest.mark.parametrize(
    ("variables", "setting"),
    [
        ({"NOTICES_MAX_REPLICAS": "0"}, "NOTICES_MAX_REPLICAS"),
        ({"NOTICES_MAX_REPLICAS": "four"}, "NOTICES_MAX_REPLICAS"),
        ({"NOTICES_MAX_REPLICAS": "2.5"}, "NOTICES_MAX_REPLICAS"),
        ({"NOTICES_SMS_RATE_TOTAL": "-1"}, "NOTICES_SMS_RATE_TOTAL"),
        ({"NOTICES_PUSH_RATE_TOTAL": "lots"}, "NOTICES_PUSH_RATE_TOTAL"),
        ({"NOTICES_CHAT_RATE": "0"}, "NOTICES_CHAT_RATE"),
        ({"NOTICES_VOICE_RATE_TOTAL": "nan"}, "NOTICES_VOICE_RATE_TOTAL"),
    ],
)
def test_a_bad_rate_or_ceiling_stops_the_service_at_start_naming_it(monkeypatch, variables, setting):
    from services.notices.service import NoticesService

    config = notices_config(monkeypatch, **variables)
    with pytest.raises(ChannelSettingError, match=f"^{setting} must be a positive"):
        per_replica_rates(config)
    with pytest.raises(StartupError, match=f"^notices: {setting} "):
        check_services([NoticesService], config)


def test_a_rate_below_one_a_second_still_sends_one_at_a_time():
    now = [0.0]
    limiter = RateLimiter({"voice_call": 0.5}, clock=lambda: now[0])
    assert limiter.take("voice_call", 10) == 1
    now[0] = 1.0
    assert limiter.take("voice_call", 10) == 0
    now[0] = 2.0
    assert limiter.take("voice_call", 10) == 1
    now[0] = 100.0
    assert limiter.take("voice_call", 10) == 1  # a bucket of one: no burst after a quiet spell


# ---- auth headers --------------------------------------------------------------------------------


def test_the_auth_headers_are_read_raw_and_go_to_their_own_gateway_only(monkeypatch):
    # A header value is not YAML: "a: b" would be a mapping, " #..." a comment, "*x" an alias.
    config = notices_config(
        monkeypatch,
        NOTICES_SMS_GATEWAY_URL="https://sms.gateway.test/v1",
        NOTICES_SMS_AUTH_HEADER="Bearer s3cr3t: #[x]\n",
        NOTICES_VOICE_AUTH_HEADER="*alias",
        NOTICES_PUSH_URL="https://push.gateway.test/v1",
        NOTICES_PUSH_AUTH_HEADER="",
        NOTICES_VOICE_GATEWAY_URL="https://voice.gateway.test/v1",
    )
    adapters = build_channels(config["CHANNELS"])
    assert adapters["sms"].http.headers["Authorization"] == "Bearer s3cr3t: #[x]"  # the file's newline dropped
    assert "Authorization" not in adapters["app_push"].http.headers  # empty: none
    assert adapters["voice_call"].http.headers["Authorization"] == "*alias"
    assert isinstance(adapters["chat_group"], ChatRobot) and "Authorization" not in adapters["chat_group"].http.headers


@pytest.mark.parametrize(
    "value", ["Bearer a\nX-Evil: 1", "Bearer a\rb", "Bearer \x1b[31mred", "Bearer tökén", "a\x7fb"]
)
def test_a_header_that_is_not_one_line_of_visible_ascii_stops_the_start_without_showing_it(value, monkeypatch):
    from services.notices.service import NoticesService

    monkeypatch.setenv("NOTICES_SMS_AUTH_HEADER", value)
    channels = {"sms": {"url": "https://sms.gateway.test/v1"}}
    with pytest.raises(ChannelSettingError) as refused:
        check_settings({"CHANNELS": channels})
    message = str(refused.value)
    assert message.startswith("NOTICES_SMS_AUTH_HEADER (sms gateway) must be one line")
    assert "Bearer" not in message and "\n" not in message
    with pytest.raises(ChannelSettingError):
        build_channels(channels)
    with pytest.raises(StartupError, match=r"^notices: NOTICES_SMS_AUTH_HEADER "):
        check_services([NoticesService], notices_config(monkeypatch, NOTICES_SMS_AUTH_HEADER=value))


def test_the_environment_wins_and_a_config_value_must_be_text():
    environ = {"NOTICES_SMS_AUTH_HEADER": "  Basic\tdXNlcjpwYXNz  \n"}
    assert gateway_auth_header("sms", {"auth_header": "Bearer old"}, environ) == "Basic\tdXNlcjpwYXNz"
    assert gateway_auth_header("sms", {"auth_header": "Bearer cfg"}, {}) == "Bearer cfg"
    assert gateway_auth_header("sms", {"auth_header": "Bearer cfg"}, {"NOTICES_SMS_AUTH_HEADER": ""}) is None
    assert gateway_auth_header("sms", {"auth_header": "  "}, {}) is None
    assert gateway_auth_header("sms", {}, {}) is None
    with pytest.raises(ChannelSettingError, match="must be text"):
        gateway_auth_header("sms", {"auth_header": {"Bearer a": "b"}}, {})  # what YAML makes of "Bearer a: b"


def test_a_post_carries_the_channels_authorization_header():
    seen = []

    def app(environ, start_response):
        seen.append((environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION")))
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    server = eventlet.listen(("127.0.0.1", 0))
    thread = eventlet.spawn(wsgi.server, server, app, log_output=False)
    try:
        base = f"http://127.0.0.1:{server.getsockname()[1]}"
        policy = OutboundPolicy.from_config({"ALLOW_HTTP": True, "OUTBOUND_ALLOWLIST": "127.0.0.1"})
        gateway = HttpGateway("sms", f"{base}/sms", auth_header="Bearer t0ken", policy=policy)
        plain = HttpGateway("app_push", f"{base}/push", policy=policy)
        message = Outbound(1, 1, "sms", "13800000001", "Title", "Body", "moderate")
        assert gateway.send(message).ok and plain.send(message).ok
    finally:
        thread.kill()
        server.close()
    assert seen == [("/sms", "Bearer t0ken"), ("/push", None)]


# ---- placeholders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://sms-gateway.example.org/v1/messages",
        "https://example.com/send",
        "https://push.EXAMPLE.net./v1",
        "https://gw.example/v1",
        "https://gw.invalid:8443/v1",
    ],
)
def test_a_gateway_url_left_on_a_reserved_example_domain_stops_the_start(url, monkeypatch):
    assert placeholder_host(url)
    config = notices_config(monkeypatch, NOTICES_VOICE_GATEWAY_URL=url)
    with pytest.raises(ChannelSettingError, match=r"^NOTICES_VOICE_GATEWAY_URL \(voice_call gateway\) is still a"):
        check_settings(config)


@pytest.mark.parametrize(
    "url", ["stub", "https://sms.gateway.cn/v1", "https://notexample.org/v1", "https://example.org.cn/v1"]
)
def test_real_looking_urls_and_the_stub_twin_are_not_placeholders(url):
    if url != "stub":
        assert placeholder_host(url) is None
    check_settings({"CHANNELS": {"sms": {"url": url}, "chat_group": {"url": "robot"}}})


def test_the_prod_overlay_placeholders_are_refused(monkeypatch):
    """What k8s/overlays/prod/notices.env ships cannot send anywhere (tests/deploy checks the render)."""
    with open(os.path.join(ROOT, "k8s", "overlays", "prod", "notices.env")) as source:
        settings = dict(line.split("=", 1) for line in source.read().splitlines() if line and not line.startswith("#"))
    gateways = {k: v for k, v in settings.items() if k.endswith(("_GATEWAY_URL", "_PUSH_URL"))}
    assert len(gateways) == 3
    for name, url in gateways.items():
        config = notices_config(monkeypatch, **{name: url})
        with pytest.raises(ChannelSettingError, match=f"^{name} "):
            check_settings(config)
