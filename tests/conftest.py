"""Fixtures: a real RabbitMQ vhost per test (nameko's rabbit_config) and a real
PostgreSQL database per test, cloned from a migrated template."""

import os

import pytest

from services import registry

os.environ.setdefault("GRASSROOTS_JWT_SECRET", "test-secret-for-grassroots-tests")
os.environ.setdefault("GRASSROOTS_PII_KEY", "test-pii-key-0123456789abcdef")


def _migrated_template(service):
    """A session fixture ``<service>_template``: a database migrated once, cloned by each test."""

    def template():
        from tests.support import database_url, scratch_database

        with scratch_database(f"grassroots_tpl_{service}") as name:
            registry.get(service).migrate(database_url(name))
            yield name

    return pytest.fixture(scope="session", name=f"{service}_template")(template)


def _fresh_database(service):
    """A fixture ``<service>_db``: the URL of a database cloned for this test, dropped after it."""

    def database(request):
        from tests.support import database_url, scratch_database

        template = request.getfixturevalue(f"{service}_template")
        with scratch_database(f"grassroots_test_{service}", template=template) as name:
            yield database_url(name)

    return pytest.fixture(name=f"{service}_db")(database)


def _running(service, class_name, needs=()):
    """A fixture ``<service>``: the service's container on this test's vhost and database.

    Killed in its own teardown, before the database it uses is dropped.
    """

    def running(request, container_factory):
        import importlib

        config = request.getfixturevalue(f"{service}_config")
        for other in needs:
            request.getfixturevalue(other)
        service_cls = getattr(importlib.import_module(f"services.{service}.service"), class_name)
        container = container_factory(service_cls, config)
        container.start()
        yield container
        container.kill()

    return pytest.fixture(name=service)(running)


SERVICES = registry.NAMES
grid_template, notices_template, legal_template, volunteer_template = (_migrated_template(s) for s in SERVICES)
grid_db, notices_db, legal_db, volunteer_db = (_fresh_database(s) for s in SERVICES)
grid = _running("grid", "GridService")
notices = _running("notices", "NoticesService", needs=("grid",))
legal = _running("legal", "LegalService", needs=("grid",))
volunteer = _running("volunteer", "VolunteerService", needs=("grid",))


@pytest.fixture
def volunteer_config(grid_config, volunteer_db):
    from tests.support import free_port

    return {
        **grid_config,
        "DATABASE_URL": volunteer_db,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        "OFFER_TIMEOUT_SECONDS": 600,
        "OFFER_FANOUT": 1,
        "OFFER_SWEEP_INTERVAL": 0.2,
        "SHIFT_CHECK_INTERVAL": 0.2,
        "UNDERSTAFFED_LEAD_MINUTES": 120,
        "RPC_TIMEOUT": 5,
        "TIMEZONE": "Asia/Shanghai",
    }


@pytest.fixture
def receiver():
    from tests.support import Receiver

    server = Receiver()
    yield server
    server.stop()
    # A delivery the gateway had acknowledged was posted again (docs/gateways.md: at least once, and
    # no more often than a dispatcher killed mid-post needs).
    assert server.duplicates == server.expected_duplicates, f"{server.duplicates} re-posted deliveries"


@pytest.fixture
def notices_config(grid_config, notices_db, receiver):
    from tests.support import free_port

    return {
        **grid_config,
        "DATABASE_URL": notices_db,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        "PUBLISH_INTERVAL": 0.1,
        "DISPATCH_INTERVAL": 0.1,
        "HOUSEKEEPING_INTERVAL": 0.2,
        "DELIVERY_MAX_ATTEMPTS": 3,
        "DELIVERY_RETRY_BASE": 0.05,
        "RPC_TIMEOUT": 10,
        # The Receiver is a plain-HTTP server on loopback: the dev/test case of the outbound policy.
        # It is the gateways' (any port) and, named with its port, the chat-group webhooks'.
        "ALLOW_HTTP": True,
        "OUTBOUND_ALLOWLIST": "127.0.0.1",
        "WEBHOOK_ALLOWLIST": f"127.0.0.1:{receiver.port}",
        "CHANNELS": {
            "sms": {"url": receiver.url("/sms"), "rate_per_second": 1000},
            "voice_call": {"url": receiver.url("/voice"), "rate_per_second": 1000},
            "app_push": {"url": receiver.url("/push"), "rate_per_second": 1000},
            "chat_group": {"url": "robot", "rate_per_second": 100},
        },
    }


@pytest.fixture
def legal_config(grid_config, legal_db):
    from tests.support import free_port

    return {
        **grid_config,
        "DATABASE_URL": legal_db,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        "MIN_NOTICE_MINUTES": 60,
        "BOOKING_HORIZON_DAYS": 14,
        "MAX_UPCOMING_BOOKINGS": 3,
        "REMINDER_LEAD_MINUTES": 24 * 60,
        "REMINDER_INTERVAL": 0.2,
        "TIMEZONE": "Asia/Shanghai",
        "max_workers": 20,
        "DB_POOL_SIZE": 20,
    }


@pytest.fixture
def grid_config(rabbit_config, grid_db):
    from tests.support import JWT_SECRET, PII_KEY, free_port

    return {
        **rabbit_config,
        "DATABASE_URL": grid_db,
        "GRASSROOTS_JWT_SECRET": JWT_SECRET,
        "GRASSROOTS_PII_KEY": PII_KEY,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        "HOUSEKEEPING_INTERVAL": 0.2,
        "max_workers": 10,
    }


@pytest.fixture
def call_as(grid_config):
    """call_as(token).grid.method(**kwargs) through a real ClusterRpcProxy."""
    from nameko.standalone.rpc import ClusterRpcProxy

    proxies = []

    def make(token):
        proxy = ClusterRpcProxy(grid_config, context_data={"auth_token": token}, timeout=30)
        proxies.append(proxy)
        return proxy.start()

    yield make
    for proxy in proxies:
        proxy.stop()
