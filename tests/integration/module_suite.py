"""One running suite — grid, notices, legal, volunteer — per test module, on its own vhost and
databases (cloned from the migrated templates of tests/conftest.py).

The fixtures of tests/conftest.py start fresh containers for every test. Modules that send many
inputs which change nothing (hostile messages, odd values) share one suite instead, so that
hundreds of cases cost seconds, not a container start each. A module declares the fixtures::

    @pytest.fixture(scope="module")
    def module_rabbit(request, vhost_pipeline):
        yield from module_suite.module_vhost(request, vhost_pipeline)


    @pytest.fixture(scope="module")
    def suite(request, module_rabbit):
        yield from module_suite.running_suite(request, module_rabbit)
"""

import importlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlparse
from urllib.request import urlopen

from services import registry
from tests.support import JWT_SECRET, PII_KEY, database_url, free_port, scratch_database

SERVICES = registry.NAMES  # grid first: the others call it


def service_config(service, rabbit, database):
    config = {
        **rabbit,
        "DATABASE_URL": database,
        "GRASSROOTS_JWT_SECRET": JWT_SECRET,
        "GRASSROOTS_PII_KEY": PII_KEY,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
        "HOUSEKEEPING_INTERVAL": 0.5,
        "max_workers": 4,
        "DB_POOL_SIZE": 2,  # other test runs share PostgreSQL's 100 connections
        "RPC_TIMEOUT": 10,
        "TIMEZONE": "Asia/Shanghai",
    }
    if service == "notices":
        config["CHANNELS"] = {
            **{name: {"url": "stub", "rate_per_second": 1000} for name in ("sms", "voice_call", "app_push")},
            "chat_group": {"url": "robot", "rate_per_second": 100},
        }
    return config


@dataclass
class Suite:
    configs: dict = field(default_factory=dict)
    containers: dict = field(default_factory=dict)
    databases: dict = field(default_factory=dict)

    def metrics(self, service):
        with urlopen(f"http://{self.configs[service]['WEB_SERVER_ADDRESS']}/metrics", timeout=10) as response:
            return response.read().decode()

    def alive(self, service):
        return not self.containers[service]._died.ready()


def module_vhost(request, vhost_pipeline):
    """nameko's rabbit_config, for a whole module: a vhost of its own."""
    parts = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    with vhost_pipeline.get() as vhost:
        yield {"AMQP_URI": f"{parts.scheme}://{parts.netloc}/{vhost}", "username": parts.username, "vhost": vhost}


def running_suite(request, module_rabbit):
    """The four services started on ``module_rabbit`` with fresh databases; a Suite."""
    from nameko.containers import get_container_cls

    result = Suite()
    with ExitStack() as stack:
        for service in SERVICES:
            template = request.getfixturevalue(f"{service}_template")
            name = stack.enter_context(scratch_database(f"grassroots_test_{service}", template=template))
            result.databases[service] = database_url(name)
            result.configs[service] = service_config(service, module_rabbit, result.databases[service])
        try:
            for service in SERVICES:
                module = importlib.import_module(f"services.{service}.service")
                cls = getattr(module, f"{service.capitalize()}Service")
                config = result.configs[service]
                container = get_container_cls(config)(cls, config)
                result.containers[service] = container
                container.start()
            yield result
        finally:
            for container in reversed(list(result.containers.values())):
                container.kill()  # before their databases are dropped
