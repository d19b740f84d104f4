"""Outbound URLs of the notices service (services.notices.outbound) on a real broker and PostgreSQL:
chat-group webhooks refused over RPC with a ValidationError naming the field, stored webhooks
checked again when sent, refused gateway URLs stopping the service at start (one log line through
the runner), and the connection guard itself against a real local HTTP server: the address
connected to is the address checked (DNS rebinding), and redirects are not followed."""

import ipaddress
import json
import logging
import os
import re
import subprocess
import sys
import time

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
    "http://127.0.0.1:9/hook",  # the receiver's address, another port
    "http://127.0.0.1:15672/api/users",  # RabbitMQ management on the allowlisted address
    "http://localhost:5672/",
    "https://localhost/hook?key=SECRET",
    "https://no-such-host.invalid/hook",
]
NOT_URLS = {"https://[::ffff:169.254.169.254]/", "https://[fe80::1%25eth0]/"}  # the schema's URL check
# What the service log says of some refusals (the caller only learns "Not an allowed destination.").
LOGGED_REASONS = {
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/": (
        "host 169.254.169.254 is not a public address (NOTICES_WEBHOOK_ALLOWLIST may allow it)"
    ),
    "https://[::1]:5672/": "host ::1 is not a public address (NOTICES_WEBHOOK_ALLOWLIST may allow it)",
    "http://127.0.0.1:9/hook": (
        "port 9 is not allowed for host 127.0.0.1: webhooks use port 443 or 80 "
        "(a NOTICES_WEBHOOK_ALLOWLIST entry host:port may allow another)"
    ),
    "http://localhost:5672/": (  # a port no entry names is refused before the host is resolved
        "port 5672 is not allowed for host localhost: webhooks use port 443 or 80 "
        "(a NOTICES_WEBHOOK_ALLOWLIST entry host:port may allow another)"
    ),
    "https://localhost/hook?key=SECRET": (
        "host localhost resolves to {loopback}, which is not a public address (NOTICES_WEBHOOK_ALLOWLIST may allow it)"
    ),
    "https://no-such-host.invalid/hook": "host no-such-host.invalid does not resolve",
    "https://user:password@1.1.1.1/hook": "credentials in the URL are not allowed",
}
NOT_ALLOWED = ["Not an allowed destination."]


def chat_groups(url):
    return table_counts(url, Base.metadata, {"hooks": "SELECT string_agg(webhook_url, ' ') FROM chat_groups"})


def register_refused(officer, unit, url, caplog):
    """register_chat_group(url) refused: (the messages on webhook_url, what the service logged)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="services.notices.preferences"), pytest.raises(ValidationError) as err:
        officer.register_chat_group(unit_id=unit, name="Grid A", webhook_url=url)
    assert list(err.value.fields) == ["webhook_url"], url
    logged = [r for r in caplog.records if r.name == "services.notices.preferences"]
    return err.value.fields["webhook_url"], logged


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


def test_register_chat_group_refuses_private_and_odd_urls_naming_the_field(
    notices, officer, district, notices_db, receiver, caplog
):
    """The caller learns only that the URL is refused (nothing of what an internal name resolves
    to); the service log says why, in one line without the URL's path or query."""
    before = chat_groups(notices_db)
    for url in REFUSED_WEBHOOKS:
        messages, logged = register_refused(officer, district["small_a"], url, caplog)
        if url in NOT_URLS:
            assert (messages, logged) == (["Not a valid URL."], []), url
            continue
        assert messages == NOT_ALLOWED, url
        assert len(logged) == 1, (url, logged)
        entry = logged[0]
        assert (entry.levelname, entry.getMessage()) == ("WARNING", "register_chat_group: webhook_url refused"), url
        assert entry.unit_id == district["small_a"] and entry.method == "register_chat_group"
        assert "\n" not in entry.reason and "SECRET" not in entry.reason and "/hook" not in entry.reason, url
        if url in LOGGED_REASONS:
            assert entry.reason in {LOGGED_REASONS[url].format(loopback=a) for a in ("127.0.0.1", "::1")}, url
    assert chat_groups(notices_db) == before
    # A public address, and the test receiver (host:port) the test config allowlists for webhooks.
    officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url="https://1.1.1.1/hook?key=k")
    officer.register_chat_group(unit_id=district["small_b"], name="Grid B", webhook_url=receiver.url("/robot/b"))
    assert chat_groups(notices_db)["chat_groups"] == 2


def test_outside_dev_only_https_and_only_public_addresses(
    start_notices, call_as, district, receiver, notices_db, caplog
):
    """The production settings: https only, nothing allowlisted. stub and robot are no URLs, so the
    service starts with them."""
    start_notices(ALLOW_HTTP=False, OUTBOUND_ALLOWLIST=None, WEBHOOK_ALLOWLIST=None, CHANNELS=STUBS)
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    cases = {
        "http://1.1.1.1/hook": "http is not allowed: https only (NOTICES_ALLOW_HTTP=true allows http in dev)",
        receiver.url("/robot/a"): "http is not allowed: https only (NOTICES_ALLOW_HTTP=true allows http in dev)",
        "https://127.0.0.1/hook": "host 127.0.0.1 is not a public address (NOTICES_WEBHOOK_ALLOWLIST may allow it)",
        "https://1.1.1.1:8443/hook": (
            "port 8443 is not allowed for host 1.1.1.1: webhooks use port 443 "
            "(a NOTICES_WEBHOOK_ALLOWLIST entry host:port may allow another)"
        ),
    }
    for url, reason in cases.items():
        messages, logged = register_refused(officer, district["small_a"], url, caplog)
        assert messages == NOT_ALLOWED, url
        assert [entry.reason for entry in logged] == [reason], url
    officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url="https://1.1.1.1/hook")
    assert chat_groups(notices_db)["chat_groups"] == 1


def test_the_gateway_allowlist_is_no_webhook_allowlist(start_notices, call_as, district, receiver, caplog):
    """The receiver's address is allowlisted for the gateways (the service starts with them on it),
    not for webhooks: an officer cannot point a chat group at it, on its port or any other."""
    start_notices(OUTBOUND_ALLOWLIST="127.0.0.1", WEBHOOK_ALLOWLIST=None)
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    for url in (receiver.url("/robot/a"), "http://127.0.0.1/hook", "http://127.0.0.1:15672/api/users"):
        messages, logged = register_refused(officer, district["small_a"], url, caplog)
        assert messages == NOT_ALLOWED, url
        assert len(logged) == 1 and "NOTICES_WEBHOOK_ALLOWLIST" in logged[0].reason, url


def test_a_stored_webhook_is_checked_again_when_sent(
    start_notices, call_as, admin, district, receiver, notices_db, caplog
):
    """A webhook whose host resolves to a refused address by the time it is used — registered
    before the policy, or re-pointed in DNS since — fails the delivery without a request."""
    # The receiver's port is allowed (on another loopback address), so what refuses is the address.
    start_notices(
        ALLOW_HTTP=True, OUTBOUND_ALLOWLIST=None, WEBHOOK_ALLOWLIST=f"127.0.0.2:{receiver.port}", CHANNELS=STUBS
    )
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    hook = f"http://localhost:{receiver.port}/robot/a"  # a name: the check that refuses it resolves it
    messages, logged = register_refused(officer, district["small_a"], hook, caplog)
    assert messages == NOT_ALLOWED
    assert [entry.reason.startswith("host localhost resolves to ") for entry in logged] == [True]
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


def start_through_the_runner(tmp_path, **settings):
    """The runner's exit code and its one log line (parsed), started with these environment settings."""
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": ROOT,
        "GRASSROOTS_JWT_SECRET": "s" * 32,
        "GRASSROOTS_PII_KEY": "k" * 32,
        "NOTICES_DATABASE_URL": f"sqlite:///{tmp_path}/notices.db",
        **settings,
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
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return result.returncode, json.loads(lines[0])


def test_the_runner_refuses_a_gateway_url_in_one_log_line(tmp_path):
    code, entry = start_through_the_runner(
        tmp_path, NOTICES_SMS_GATEWAY_URL="https://169.254.169.254/latest/meta-data/"
    )
    assert code == 2
    assert entry["level"] == "error"
    assert entry["message"] == (
        "cannot start: notices: NOTICES_SMS_GATEWAY_URL (sms gateway) is refused: host 169.254.169.254 is not a "
        "public address (NOTICES_OUTBOUND_ALLOWLIST may allow it)"
    )


def test_the_runner_refuses_a_bad_webhook_allowlist_in_one_log_line(tmp_path):
    """config.yml reads NOTICES_WEBHOOK_ALLOWLIST, and a bad entry stops the start."""
    code, entry = start_through_the_runner(tmp_path, NOTICES_WEBHOOK_ALLOWLIST="hooks.internal:8443,10.0.0.0/8:0")
    assert (code, entry["level"]) == (2, "error")
    assert entry["message"] == (
        "cannot start: notices: NOTICES_WEBHOOK_ALLOWLIST: '10.0.0.0/8:0' is neither a host name, an IP address "
        "nor a CIDR network, with or without :port (1-65535)"
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


# ---- hostile servers: what a webhook (or a gateway) answers ------------------------------------


class Hostile:
    """A local HTTP server that reads each request whole, then lets ``reply(conn)`` write whatever it
    likes: a hostile chat robot or gateway. ``stop()`` ends every connection it still holds."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = 0
        self.socket = eventlet.listen(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.pool = eventlet.GreenPool()
        self.thread = eventlet.spawn(self.serve)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self):
        while True:
            conn, _ = self.socket.accept()
            self.pool.spawn(self.handle, conn)

    def handle(self, conn):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            declared = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            length = int(declared.group(1)) if declared else 0
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            self.reply(conn)
        except OSError:
            pass  # the client hung up: what a bounded request does
        finally:
            conn.close()

    def stop(self):
        self.thread.kill()
        for thread in list(self.pool.coroutines_running):
            thread.kill()
        self.socket.close()


@pytest.fixture
def hostile():
    """hostile(reply): a started Hostile server, stopped after the test."""
    servers = []

    def start(reply):
        servers.append(Hostile(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def answering(body, status=b"200 OK"):
    def reply(conn):
        head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        conn.sendall(head + body)

    return reply


def drip_headers(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:  # a byte of the header line every 0.2 s: no single read ever waits long
        eventlet.sleep(0.2)
        conn.sendall(b"x")


def drip_body(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{")
    while True:
        eventlet.sleep(0.2)
        conn.sendall(b" ")


def flood_then_drip(conn):
    """A megabyte at once (no reader needs it), then a byte every 0.2 s for ever."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
    conn.sendall(b" " * 2**20)
    while True:
        eventlet.sleep(0.2)
        conn.sendall(b" ")


def adapter(kind, url, **kwargs):
    """The chat robot or an SMS gateway, allowed to reach the local test servers."""
    policy = OutboundPolicy(allow_http=True, networks=(ipaddress.ip_network("127.0.0.1/32"),))
    if kind == "chat_group":
        return ChatRobot(policy=policy, **kwargs), message(url)
    return HttpGateway("sms", url, policy=policy, **kwargs), message("13800000001")


# JSON a robot may answer with (all 2xx): a reply counts unless it is an object whose errcode is a
# non-zero integer. None of these may raise, whatever it is.
HOSTILE_REPLIES = {
    "a list": (b"[1, 2]", (True, False, None)),
    "a string": (b'"errcode"', (True, False, None)),
    "a number": (b"45009", (True, False, None)),
    "null": (b"null", (True, False, None)),
    "empty": (b"", (True, False, None)),
    "not JSON": (b"<html>ok</html>", (True, False, None)),
    "not UTF-8": (b'{"errcode": "\xff\xfe"}', (True, False, None)),
    "nested 50,000 deep": (b"[" * 50_000 + b"]" * 50_000, (True, False, None)),  # RecursionError
    "objects nested 20,000 deep": (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, (True, False, None)),
    "a 5,000-digit number": (b'{"errcode": ' + b"9" * 5000 + b"}", (True, False, None)),  # ValueError
    "errcode an object": (b'{"errcode": {"errcode": 1}}', (True, False, None)),
    "errcode a long string": (b'{"errcode": "' + b"x" * 60_000 + b'"}', (True, False, None)),
    "errcode true": (b'{"errcode": true}', (True, False, None)),
    "errcode a float": (b'{"errcode": 45009.0}', (True, False, None)),
    "errcode 45009": (b'{"errcode": 45009, "errmsg": "too many"}', (False, True, "robot errcode 45009")),
    "errcode 93000": (b'{"errcode": 93000}', (False, False, "robot errcode 93000")),
    "errcode 0": (b'{"errcode": 0, "errmsg": "ok"}', (True, False, None)),
}


def test_a_hostile_robot_reply_fails_at_most_its_own_delivery(hostile, receiver):
    """One batch: every hostile webhook, and a well-behaved one. Each is judged on its own; nothing
    a reply contains raises out of the adapter (which would fail the whole batch as retryable)."""
    servers = {name: hostile(answering(body)) for name, (body, _) in HOSTILE_REPLIES.items()}
    robot, _ = adapter("chat_group", None)
    batch = [message(server.url(f"/robot/{i}")) for i, server in enumerate(servers.values())]
    batch.append(message(receiver.url("/robot/good")))
    with eventlet.Timeout(30):
        outcomes = robot.send_many(batch)
    for (name, (_, expected)), outcome in zip(HOSTILE_REPLIES.items(), outcomes, strict=False):
        assert (outcome.ok, outcome.retryable, outcome.detail) == expected, name
    assert outcomes[-1].ok and len(receiver.accepted("/robot/good")) == 1
    assert all(server.requests == 1 for server in servers.values())


def test_a_long_errcode_makes_a_short_detail(hostile):
    server = hostile(answering(b'{"errcode": -' + b"9" * 4000 + b"}"))
    robot, outbound_message = adapter("chat_group", server.url("/robot"))
    outcome = robot.send(outbound_message)
    assert (outcome.ok, outcome.retryable) == (False, False) and len(outcome.detail) <= 100


@pytest.mark.parametrize("kind", ["chat_group", "sms"])
@pytest.mark.parametrize("reply", [drip_headers, drip_body], ids=["headers", "body"])
def test_a_dripping_server_holds_a_request_no_longer_than_its_deadline(hostile, kind, reply):
    """Every read gets a byte within the timeout, so only the request's overall deadline ends it: a
    retryable failure, and the green thread is free again."""
    server = hostile(reply)
    sender, outbound_message = adapter(kind, server.url("/x"), timeout=1.0, deadline=2.0)
    started = time.monotonic()
    with eventlet.Timeout(20):
        outcome = sender.send(outbound_message)
    elapsed = time.monotonic() - started
    assert (outcome.ok, outcome.retryable, outcome.detail) == (False, True, "network: deadline exceeded")
    assert 1.9 < elapsed < 4, elapsed


@pytest.mark.parametrize("kind", ["chat_group", "sms"])
def test_a_reply_is_read_no_further_than_its_cap(hostile, kind):
    """A 2xx whose body never ends: the adapter stops reading at the cap (64 KiB), long before the
    deadline, and judges the reply by its status."""
    server = hostile(flood_then_drip)
    sender, outbound_message = adapter(kind, server.url("/x"), timeout=1.0, deadline=10.0)
    started = time.monotonic()
    with eventlet.Timeout(20):
        outcome = sender.send(outbound_message)
    assert (outcome.ok, outcome.retryable, outcome.detail) == (True, False, None)
    assert time.monotonic() - started < 2


def test_a_hostile_webhook_spoils_no_other_groups_delivery(start_notices, call_as, district, receiver, hostile):
    """Through the service: one group's webhook answers JSON nested too deep to parse, the other's
    answers properly. Both deliveries are sent, each exactly once (no batch-wide retry)."""
    deep = hostile(answering(b"[" * 50_000 + b"]" * 50_000))
    start_notices(WEBHOOK_ALLOWLIST=f"127.0.0.1:{receiver.port},127.0.0.1:{deep.port}")
    officer = call_as(token("officer", sub="officer-1", unit=district["street"])).notices
    officer.register_chat_group(unit_id=district["small_a"], name="Grid A", webhook_url=deep.url("/robot/a"))
    officer.register_chat_group(unit_id=district["small_b"], name="Grid B", webhook_url=receiver.url("/robot/b"))
    notice = officer.create_notice(
        title="Storm",
        body="Stay inside.",
        category="emergency",
        severity="minor",
        urgency="expected",
        audience={"under": [district["small_a"], district["small_b"]]},
        channels=["chat_group"],
    )
    officer.approve_notice(notice_id=notice["id"])
    wait_until(
        lambda: officer.delivery_report(notice_id=notice["id"])["chat_groups"]["sent"] == 2,
        message="the chat-group deliveries were not both sent",
    )
    report = officer.delivery_report(notice_id=notice["id"])["chat_groups"]
    assert report["failed"] == 0
    assert deep.requests == 1 and len(receiver.accepted("/robot/b")) == 1
