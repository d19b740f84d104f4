"""/readyz asks the broker over one long-lived connection (shared.web.BrokerProbe; issue 15, item 9),
and stays truthful when the broker goes away and comes back.

The broker here is the test RabbitMQ behind a TCP proxy this test controls: it counts the
connections made through it, and can refuse them (the broker is down), cut the open ones (a
restart), or hold every byte (a broker, or a network, that went silent) — without touching the
RabbitMQ other tests use.
"""

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import eventlet
import pytest

from shared.web import READY_TIMEOUT, BrokerCheck, BrokerProbe


class Proxy:
    """A TCP proxy to ``upstream`` (host, port) on 127.0.0.1:``port``."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = eventlet.listen(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0  # connections forwarded to the broker
        self.refusing = False
        self.silent = False
        self.pairs = []
        self.server = eventlet.spawn(self._serve)

    def _serve(self):
        while True:
            client, _ = self.listener.accept()
            if self.refusing:
                client.close()
                continue
            try:
                upstream = eventlet.connect(self.upstream)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            pumps = [eventlet.spawn(self._pump, client, upstream), eventlet.spawn(self._pump, upstream, client)]
            self.pairs.append(((client, upstream), pumps))

    def _pump(self, source, target):
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.silent:
                    eventlet.sleep(0.02)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(1)  # pass the end on: the other side sees EOF

    def cut(self):
        """Close every open connection (a broker restart, as its clients see it). The pumps go first:
        a green thread still waiting on a closed socket would hold its descriptor in eventlet's hub,
        and the next socket given that number (anyone's) would fail."""
        for socks, pumps in self.pairs:
            for pump in pumps:
                pump.kill()
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
                sock.close()
        self.pairs = []

    def close(self):
        self.server.kill()
        self.cut()
        self.listener.close()


@pytest.fixture
def proxied(rabbit_config):
    """(proxy, the test vhost's AMQP URI through it)."""
    parts = urllib.parse.urlsplit(rabbit_config["AMQP_URI"])
    proxy = Proxy((parts.hostname, parts.port or 5672))
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    yield proxy, urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    proxy.close()


def timed(check):
    started = time.monotonic()
    return check(), time.monotonic() - started


def test_probes_reuse_one_connection(proxied):
    proxy, uri = proxied
    probe = BrokerProbe(uri)
    try:
        assert [probe.check() for _ in range(10)] == [True] * 10
        assert (proxy.accepted, probe.opened) == (1, 1), "a login per probe"
    finally:
        probe.close()


def test_a_broker_that_goes_away_fails_the_probe_and_one_that_comes_back_passes_it_at_once(proxied):
    proxy, uri = proxied
    probe = BrokerProbe(uri)
    try:
        assert probe.check()
        proxy.refusing = True
        proxy.cut()  # the broker goes down: its connections close, new ones are refused
        for _ in range(3):
            ready, took = timed(probe.check)
            assert ready is False and took < READY_TIMEOUT + 0.5
        proxy.refusing = False  # it is back: the next probe logs in again and says so
        assert probe.check()
        assert [probe.check() for _ in range(5)] == [True] * 5
        assert proxy.accepted == 2, "one new connection after the broker came back, then reused"
    finally:
        probe.close()


def test_a_silent_broker_fails_the_probe_within_its_bound_then_a_fresh_login_passes(proxied):
    proxy, uri = proxied
    probe = BrokerProbe(uri)
    try:
        assert probe.check()
        proxy.silent = True  # the kept connection stays open but nothing comes back (a half-open link)
        ready, took = timed(probe.check)
        assert ready is False and took < READY_TIMEOUT + 0.5
        proxy.silent = False
        proxy.cut()  # what the stalled connections were left with is gone
        assert probe.check()
    finally:
        probe.close()


def test_concurrent_probes_take_turns_on_the_one_connection(proxied):
    proxy, uri = proxied
    probe = BrokerProbe(uri)
    try:
        pool = eventlet.GreenPool(20)
        assert list(pool.imap(lambda _: probe.check(), range(40))) == [True] * 40
        assert proxy.accepted == 1
    finally:
        probe.close()


def get(config, path):
    try:
        with urllib.request.urlopen(f"http://{config['WEB_SERVER_ADDRESS']}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_running_services_readyz_keeps_one_connection_across_probes(proxied, grid_config, container_factory):
    """The grid service wholly behind the proxy: its consumers' connections are made at start; after
    the first /readyz, more probes add no connection (they added one each before)."""
    from services.grid.service import GridService

    proxy, uri = proxied
    container = container_factory(GridService, {**grid_config, "AMQP_URI": uri})
    container.start()
    try:
        assert get(grid_config, "/readyz") == (200, {"status": "ready", "checks": {"broker": True, "database": True}})
        before = proxy.accepted
        for _ in range(5):
            assert get(grid_config, "/readyz")[0] == 200
        assert proxy.accepted == before, f"{proxy.accepted - before} new connections for 5 probes"
        (check,) = [ext for ext in container.extensions if isinstance(ext, BrokerCheck)]
        assert check.probe.opened == 1
    finally:
        container.stop()
    assert check.probe.connection is None  # closed with the service
