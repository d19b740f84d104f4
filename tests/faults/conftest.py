"""Fixtures for the fault scenarios (``make test-faults``): a private vhost on the machine's broker,
migrated database templates, a counting stub gateway, and the services as OS processes.

Every test here carries the ``faults`` marker; pytest.ini deselects it for ``make test``.
The scenario lines each test prints are repeated together at the end of the run.
"""

import os

import pytest

from tests.faults import report
from tests.faults.gateway import Gateway
from tests.faults.suite import SERVICES, Vhost


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter):
    if not report.LINES:
        return
    terminalreporter.section("fault scenarios")
    for text in report.LINES:
        terminalreporter.write_line(text)
    timings = [
        (rep.nodeid, rep.duration)
        for rep in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if rep.when == "call" and "tests/faults/" in rep.nodeid
    ]
    for nodeid, seconds in sorted(timings):
        terminalreporter.write_line(f"  {seconds:7.1f} s  {nodeid}")


@pytest.fixture
def vhost(request):
    """A vhost of the machine's broker (``--amqp-uri``) for this test alone, so its queues and
    leftovers collide with nothing; made through the management API (``--rabbit-ctl-uri``) when it
    answers, else with rabbitmqctl, and deleted afterwards."""
    made = Vhost(request.config.getoption("RABBIT_AMQP_URI"), request.config.getoption("RABBIT_API_URI"))
    yield made
    made.delete()


@pytest.fixture
def amqp_uri(vhost):
    return vhost.uri


@pytest.fixture
def templates(request):
    """{service: name of its migrated template database} (tests/conftest.py, once per session)."""
    return {name: request.getfixturevalue(f"{name}_template") for name in SERVICES}


@pytest.fixture
def gateway():
    server = Gateway()
    yield server
    server.stop()
