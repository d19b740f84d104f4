"""Outbound URLs of the notices service (services.notices.outbound) on a real broker and PostgreSQL:
chat-group webhooks refused over RPC with a ValidationError naming the field, stored webhooks
checked again when sent, refused gateway URLs stopping the service at start (one log line through
the runner), and the connection guard itself against a real local HTTP server: the address
connected to is the address checked (DNS rebinding), and redirects are not followed."""

import json
import os
import subprocess
import sys

import eventlet
import pytest
from eventlet import wsgi
from sqlalchemy import create_engine, text

from services.notices.channels import ChatRobot, HttpGateway, Outbound
from services.notices.models import Base
from services.notices.outbound import ConfigRefused, OutboundPolicy
from shared.errors import ValidationError
from shared.paths import as_path
from tests.support import table_counts, token, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUBS = {
    "sms": {"url": "stub", "rate_per_second": 1000},
    "voice_call": {"url": "stub", "rate_per_second": 1000},
    "app_push": {"url": "stub", "rate_per_second": 1000},
    "chat_group": {"url": "robot", "rate_per_second": 100},
}
REFUSED_WEBHOOKS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "https://100.100.100.200/latest/meta-data/",
    "https://10.0.0.5/hook",
    "https://192.168.1.1/hook",
    "http://127.0.0.2:9/hook",  # loopback, but not the allowlisted 127.0.0.1
    "https://0.0.0.0:15672/api/users",
    "https://[::1]:5672/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[fe80::1%25eth0]/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://user:password@1.1.1.1/hook",
]


def chat_groups(url):
    return table_counts(url, Base.metadata, {"hooks": "SELECT string_agg(webhook_url, ' ') FROM chat_groups"})


@pytest.fixture
def officer(call_as, district):
    return call_as(token("officer", sub="officer-1", unit=district["street"])).notices


@pytest.fixture
def start_notices(grid, notices_config, container_factory):
    """start_notices(**config overrides): a notices container on this test's vhost and database,
    killed before the database is dropped."""
    from services.notices.service import NoticesService

    started = []

    def start(**overrides):
        container = container_factory(NoticesService, {**notices_config, **overrides})
        container.start()
        started.append(container)
        return container

    yield start
    for container in started:
        container.kill()


# ---- over RPC ----------------------------------------------------------------------------------


def test_register_chat_group_refuses_private_and_odd_urls_naming_the_field(notices, officer, district, notices_db):
    before = chat_groups(notices_db)
    for url in REFUSED_WEBHOOKS:
        with pytest.raises(ValidationError) as err:
            officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url=url)
        assert list(err.value.fields) == ["webhook_url"], url  # by the schema's URL check or the policy
        if "169.254.169.254/latest" in url:
            assert err.value.fields["webhook_url"] == [
                "Refused: host 169.254.169.254 is not a public address (NOTICES_OUTBOUND_ALLOWLIST may allow it)."
            ]
    assert chat_groups(notices_db) == before
    # A public address, and the test receiver's loopback address the test config allowlists.
    officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url="https://1.1.1.1/hook?key=k")
    officer.register_chat_group(unit_id=district["small_b"], name="Grid B", webhook_url="http://127.0.0.1:9/hook")
    assert chat_groups(notices_db)["chat_groups"] == 2


def test_outside_dev_only_https_and_only_public_addresses(start_notices, call_as, district, receiver, notices_db):
    """The production settings: https only, nothing allowlisted. stub and robot are no URLs, so the
    service starts with them."""
    start_notices(ALLOW_HTTP=False, OUTBOUND_ALLOWLIST=None, CHANNELS=STUBS)
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    for url in ("http://1.1.1.1/hook", receiver.url("/robot/a"), "https://127.0.0.1/hook"):
        with pytest.raises(ValidationError) as err:
            officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url=url)
        assert "webhook_url" in err.value.fields
    assert "https only" in err.value.fields["webhook_url"][0] or "public" in err.value.fields["webhook_url"][0]
    officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url="https://1.1.1.1/hook")
    assert chat_groups(notices_db)["chat_groups"] == 1


def test_a_stored_webhook_is_checked_again_when_sent(start_notices, call_as, admin, district, receiver, notices_db):
    """A webhook whose host resolves to a refused address by the time it is used — registered
    before the policy, or re-pointed in DNS since — fails the delivery without a request."""
    start_notices(ALLOW_HTTP=True, OUTBOUND_ALLOWLIST=None, CHANNELS=STUBS)
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    hook = f"http://localhost:{receiver.port}/robot/a"  # a name: the check that refuses it resolves it
    with pytest.raises(ValidationError) as err:
        officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url=hook)
    assert "localhost resolves to" in err.value.fields["webhook_url"][0]
    path = as_path(admin.get_unit(unit_id=district["small_a"])["path"])
    engine = create_engine(notices_db.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO chat_groups (unit_id, unit_path, name, webhook_url, updated_at) "
                "VALUES (:unit, :path, 'Grid A', :hook, now())"
            ),
            {"unit": int(district["small_a"]), "path": path, "hook": hook},
        )
    notice = officer.create_notice(
        title="Storm",
        body="Stay inside.",
        category="emergency",
        severity="minor",
        urgency="expected",
        audience={"under": [district["small_a"]]},
        channels=["chat_group"],
    )
    officer.approve_notice(notice_id=notice["id"])
    report = wait_until(
        lambda: (r := officer.delivery_report(notice_id=notice["id"]))["chat_groups"]["failed"] == 1 and r,
        message="the chat-group delivery did not fail",
    )
    assert report["chat_groups"]["sent"] == 0
    with engine.connect() as conn:
        attempts, detail = conn.execute(
            text("SELECT attempts, detail FROM deliveries WHERE channel = 'chat_group'")
        ).one()
    engine.dispose()
    assert attempts == 1 and detail.startswith("refused: host localhost resolves to"), detail  # final, no retries
    assert receiver.requests == []


# ---- at start ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "setting", "why"),
    [
        ({"sms": "https://169.254.169.254/latest/meta-data/"}, "NOTICES_SMS_GATEWAY_URL", "not a public address"),
        ({"app_push": "http://push.example.org/v1"}, "NOTICES_PUSH_URL", "http is not allowed"),
        ({"voice_call": "https://localhost:8443/calls"}, "NOTICES_VOICE_GATEWAY_URL", "localhost resolves to"),
    ],
)
def test_a_refused_gateway_url_stops_the_service_at_start(
    grid, notices_config, container_factory, overrides, setting, why
):
    from services.notices.service import NoticesService

    channels = {name: {**settings, "url": overrides.get(name, settings["url"])} for name, settings in STUBS.items()}
    config = {**notices_config, "ALLOW_HTTP": False, "OUTBOUND_ALLOWLIST": None, "CHANNELS": channels}
    with pytest.raises(ConfigRefused) as err:
        NoticesService.check_config(config)
    assert str(err.value).startswith(f"{setting} (") and why in str(err.value)
    container = container_factory(NoticesService, config)
    with pytest.raises(ConfigRefused):
        container.start()


def test_the_runner_refuses_a_gateway_url_in_one_log_line(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": ROOT,
        "GRASSROOTS_JWT_SECRET": "s" * 32,
        "GRASSROOTS_PII_KEY": "k" * 32,
        "NOTICES_DATABASE_URL": f"sqlite:///{tmp_path}/notices.db",
        "NOTICES_SMS_GATEWAY_URL": "https://169.254.169.254/latest/meta-data/",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.runner",
            "--config",
            os.path.join(ROOT, "services", "notices", "config.yml"),
            "services.notices.service:NoticesService",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "error"
    assert entry["message"] == (
        "cannot start: notices: NOTICES_SMS_GATEWAY_URL (sms gateway) is refused: host 169.254.169.254 is not a "
        "public address (NOTICES_OUTBOUND_ALLOWLIST may allow it)"
    )


# ---- the connection guard ----------------------------------------------------------------------


def message(to=None):
    return Outbound(delivery_id=1, notice_id=1, channel="chat_group", to=to, title="T", body="B", severity="minor")


def test_the_address_checked_is_the_address_connected_to(receiver):
    """DNS rebinding: the name resolves to a public address when registered, to loopback when
    used. The second answer is checked too, and the request is never made."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    policy = OutboundPolicy(allow_http=True, resolver=lambda host, port: next(answers))
    hook = f"http://rebind.invalid:{receiver.port}/robot/a"
    policy.vet(hook)  # at registration: a public address
    outcome = ChatRobot(policy=policy).send(message(hook))
    assert (outcome.ok, outcome.retryable) == (False, False)
    assert outcome.detail == "refused: host rebind.invalid resolves to 127.0.0.1, which is not a public address " + (
        "(NOTICES_OUTBOUND_ALLOWLIST may allow it)"
    )
    assert receiver.requests == []
    # Allowed, the request goes to the checked address itself: the name resolves nowhere else.
    pinned = OutboundPolicy(
        allow_http=True, hosts=frozenset({"gateway.invalid"}), resolver=lambda host, port: ["127.0.0.1"]
    )
    assert HttpGateway("sms", f"http://gateway.invalid:{receiver.port}/sms", policy=pinned).send(message("x")).ok
    assert [path for path, _, _ in receiver.requests] == ["/sms"]


@pytest.fixture
def redirector(receiver):
    """A local server answering every POST with a 307 to the receiver's /secret."""

    def app(environ, start_response):
        start_response("307 Temporary Redirect", [("Location", receiver.url("/secret")), ("Content-Length", "0")])
        return [b""]

    sock = eventlet.listen(("127.0.0.1", 0))
    thread = eventlet.spawn(wsgi.server, sock, app, log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread.kill()
    sock.close()


def test_redirects_are_not_followed(receiver, redirector):
    policy = OutboundPolicy.from_config({"ALLOW_HTTP": True, "OUTBOUND_ALLOWLIST": "127.0.0.1"})
    outcome = HttpGateway("sms", f"{redirector}/sms", policy=policy).send(message("13800000001"))
    assert (outcome.ok, outcome.retryable, outcome.detail) == (False, False, "http 307")
    robot = ChatRobot(policy=policy).send(message(f"{redirector}/robot"))
    assert (robot.ok, robot.detail) == (False, "http 307")
    assert receiver.requests == []


def test_environment_proxies_are_not_used(receiver, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://169.254.169.254:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://169.254.169.254:3128")
    policy = OutboundPolicy.from_config({"ALLOW_HTTP": True, "OUTBOUND_ALLOWLIST": "127.0.0.1"})
    assert HttpGateway("sms", receiver.url("/sms"), policy=policy).send(message("13800000001")).ok
    assert [path for path, _, _ in receiver.requests] == ["/sms"]
