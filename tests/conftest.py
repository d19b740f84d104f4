"""Fixtures: a real RabbitMQ vhost per test (nameko's rabbit_config) and a real
PostgreSQL database per test, cloned from a migrated template."""
import os

import pytest

os.environ.setdefault("GRASSROOTS_JWT_SECRET", "test-secret-for-grassroots-tests")
os.environ.setdefault("GRASSROOTS_PII_KEY", "test-pii-key-0123456789abcdef")


@pytest.fixture(scope="session")
def grid_template():
    """A database migrated once with the grid schema; each test clones it."""
    from shared.migrate import upgrade
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_tpl_grid") as name:
        upgrade("grid", database_url(name))
        yield name


@pytest.fixture(scope="session")
def notices_template():
    from shared.migrate import upgrade
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_tpl_notices") as name:
        upgrade("notices", database_url(name))
        yield name


@pytest.fixture
def notices_db(notices_template):
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_test_notices", template=notices_template) as name:
        yield database_url(name)


@pytest.fixture
def receiver():
    from tests.support import Receiver

    server = Receiver()
    yield server
    server.stop()


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
        "CHANNELS": {
            "sms": {"url": receiver.url("/sms"), "rate_per_second": 1000},
            "voice_call": {"url": receiver.url("/voice"), "rate_per_second": 1000},
            "app_push": {"url": receiver.url("/push"), "rate_per_second": 1000},
            "chat_group": {"url": "robot", "rate_per_second": 100},
        },
    }


@pytest.fixture
def notices(container_factory, notices_config, grid):
    from services.notices.service import NoticesService

    container = container_factory(NoticesService, notices_config)
    container.start()
    yield container
    container.kill()


@pytest.fixture(scope="session")
def legal_template():
    from shared.migrate import upgrade
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_tpl_legal") as name:
        upgrade("legal", database_url(name))
        yield name


@pytest.fixture
def legal_db(legal_template):
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_test_legal", template=legal_template) as name:
        yield database_url(name)


@pytest.fixture
def legal_config(grid_config, legal_db):
    from tests.support import free_port

    return {**grid_config, "DATABASE_URL": legal_db, "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
            "MIN_NOTICE_MINUTES": 60, "BOOKING_HORIZON_DAYS": 14, "MAX_UPCOMING_BOOKINGS": 3,
            "REMINDER_LEAD_MINUTES": 24 * 60, "REMINDER_INTERVAL": 0.2, "TIMEZONE": "Asia/Shanghai",
            "max_workers": 20, "DB_POOL_SIZE": 20}


@pytest.fixture
def legal(container_factory, legal_config, grid):
    from services.legal.service import LegalService

    container = container_factory(LegalService, legal_config)
    container.start()
    yield container
    container.kill()


@pytest.fixture
def grid_db(grid_template):
    from tests.support import database_url, scratch_database

    with scratch_database("grassroots_test_grid", template=grid_template) as name:
        yield database_url(name)


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
def grid(container_factory, grid_config):
    from services.grid.service import GridService

    container = container_factory(GridService, grid_config)
    container.start()
    yield container
    container.kill()  # before its database is dropped


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
