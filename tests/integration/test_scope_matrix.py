"""The scope matrix (issue 12), generated from the endpoint contracts: for every method and every
argument carrying ids, an id from outside the caller's scope is refused with ``Forbidden`` — with one
role, with several roles, and with a role the method does not allow added — and nothing changes in
any service's database and no event goes out; the same call inside the scope is not refused (it
succeeds, unless the example names the error it answers, as ``mark_no_show`` before the start).

The four services run once for the module, on their own vhost and databases (a world of two
communities takes a while to build); every case snapshots the databases before and after its probes.
The table of cases, the world and the rules for legitimately outside ids: tests/scope_matrix.py.
"""

import time
from urllib.parse import urlparse

import pytest
from nameko.containers import get_container_cls
from nameko.standalone.rpc import ClusterRpcProxy

from shared.errors import Forbidden
from tests import scope_matrix as matrix
from tests.support import JWT_SECRET, PII_KEY, EventTap, free_port, scratch_database, table_counts, token, wait_until

SERVICES = {
    "grid": ("services.grid", "GridService"),
    "notices": ("services.notices", "NoticesService"),
    "legal": ("services.legal", "LegalService"),
    "volunteer": ("services.volunteer", "VolunteerService"),
}
QUIET = 3600  # timers this module has no use for: they must not change the databases between snapshots
# Every table's row count and content: an UPDATE shows as well as an INSERT or a DELETE.
CONTENT = "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"


def test_every_id_argument_has_a_case():
    """A new method or id argument fails here until tests/scope_matrix.py has a case for it."""
    contract, table = set(matrix.id_arguments()), set(matrix.cases())
    assert not contract - table, f"id arguments without a case in tests/scope_matrix.py: {sorted(contract - table)}"
    assert not table - contract, f"cases for arguments the contracts do not have: {sorted(table - contract)}"
    for method in matrix.METHODS.values():
        assert set(method.allowed) <= set(method.arguments), method.name
        assert all(reason.strip() for reason in method.allowed.values()), method.name
    assert len(contract) >= 100  # the walk found the suite's methods (a broken walk finds nothing)


FORBIDDEN_CASES = [
    (m.name, argument) for m in matrix.METHODS.values() for argument in m.arguments if argument not in m.allowed
]
ALLOWED_CASES = [(m.name, argument) for m in matrix.METHODS.values() for argument in m.allowed]


def _case_id(case):
    return f"{case[0]}:{case[1]}"


def _configs(amqp_uri, urls):
    base = {
        "AMQP_URI": amqp_uri,
        "GRASSROOTS_JWT_SECRET": JWT_SECRET,
        "GRASSROOTS_PII_KEY": PII_KEY,
        "HOUSEKEEPING_INTERVAL": QUIET,
        "max_workers": 10,
        "DB_POOL_SIZE": 3,
        "RPC_TIMEOUT": 10,
    }
    stub = {"url": "stub", "rate_per_second": 1000}
    extra = {
        "grid": {},
        "notices": {
            "PUBLISH_INTERVAL": 0.2,
            "DISPATCH_INTERVAL": 0.2,
            # chat-group robots on loopback: the dev/test case of the outbound policy
            "ALLOW_HTTP": True,
            "OUTBOUND_ALLOWLIST": "127.0.0.1",
            "CHANNELS": {name: stub for name in ("sms", "voice_call", "app_push", "chat_group")},
        },
        "legal": {
            "MIN_NOTICE_MINUTES": 60,
            "BOOKING_HORIZON_DAYS": 14,
            "MAX_UPCOMING_BOOKINGS": 1000,
            "REMINDER_INTERVAL": QUIET,
            "TIMEZONE": "Asia/Shanghai",
        },
        "volunteer": {
            "OFFER_TIMEOUT_SECONDS": 3600,
            "OFFER_FANOUT": 1,
            "OFFER_SWEEP_INTERVAL": QUIET,
            "SHIFT_CHECK_INTERVAL": QUIET,
            "CARE_INTERVAL": QUIET,
            "TIMEZONE": "Asia/Shanghai",
        },
    }
    return {
        service: {
            **base,
            "DATABASE_URL": urls[service],
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}",
            **extra[service],
        }
        for service in SERVICES
    }


class Suite:
    """The four services on one vhost, proxies per token, snapshots of their databases."""

    def __init__(self, amqp_uri, urls):
        import importlib

        self.amqp_uri = amqp_uri
        self.urls = urls
        self.configs = _configs(amqp_uri, urls)
        self.containers = []
        self.proxies = {}
        for service, (module, class_name) in SERVICES.items():
            cls = getattr(importlib.import_module(f"{module}.service"), class_name)
            container = get_container_cls(self.configs[service])(cls, self.configs[service])
            container.start()
            self.containers.append(container)
        self.models = {
            service: importlib.import_module(f"{module}.models").Base.metadata
            for service, (module, _) in SERVICES.items()
        }
        self.taps = {service: EventTap(amqp_uri, service) for service in SERVICES}

    def proxy(self, auth_token):
        if auth_token not in self.proxies:
            proxy = ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, context_data={"auth_token": auth_token}, timeout=30)
            self.proxies[auth_token] = (proxy, proxy.start())
        return self.proxies[auth_token][1]

    def call(self, roles, sub, unit, method, args):
        service, name = method.split(".")
        return getattr(getattr(self.proxy(token(*roles, sub=sub, unit=unit)), service), name)(**args)

    def snapshot(self):
        snap = {}
        for service, metadata in self.models.items():
            contents = {f"{table}:content": CONTENT.format(table=table) for table in metadata.tables}
            snap[service] = table_counts(self.urls[service], metadata, contents)
        return snap

    def events(self):
        """Events published since the last look (type and subject)."""
        seen = []
        for service, tap in self.taps.items():
            while True:
                try:
                    message = tap.queue.get(block=False)
                except tap.queue.Empty:
                    break
                message.ack()
                seen.append(f"{service}.{message.payload['type']} {message.payload.get('subject')}")
        return seen

    def settle(self, timeout=20.0):
        """Wait until nothing moves: the events a case's setup caused have been handled."""
        deadline = time.monotonic() + timeout
        before = self.snapshot()
        while True:
            time.sleep(0.25)
            busy = self.events()
            after = self.snapshot()
            if after == before and not busy:
                return after
            if time.monotonic() > deadline:
                raise AssertionError("the services did not settle")
            before = after

    def stop(self):
        for proxy, _ in self.proxies.values():
            proxy.stop()
        for tap in self.taps.values():
            tap.close()
        for container in self.containers:
            container.kill()


@pytest.fixture(scope="module")
def suite(request, vhost_pipeline, grid_template, notices_template, legal_template, volunteer_template):
    from contextlib import ExitStack

    from tests.support import database_url

    templates = {
        "grid": grid_template,
        "notices": notices_template,
        "legal": legal_template,
        "volunteer": volunteer_template,
    }
    uri = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    with vhost_pipeline.get() as vhost, ExitStack() as stack:
        urls = {
            service: database_url(
                stack.enter_context(scratch_database(f"grassroots_matrix_{service}", template=templates[service]))
            )
            for service in SERVICES
        }
        running = Suite(f"{uri.scheme}://{uri.netloc}/{vhost}", urls)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def world(suite):
    built = matrix.World(suite.proxy, suite.urls)
    built.build(wait_until)
    yield built
    built.close()


@pytest.fixture(scope="module")
def roles():
    return matrix.method_roles()


def _outcome(call):
    try:
        call()
    except Exception as exc:
        return exc
    return None


def _describe(outcome):
    if outcome is None:
        return "it succeeded"
    return f"{getattr(outcome, 'exc_type', type(outcome).__name__)}: {getattr(outcome, 'value', outcome)}"


def _diff(before, after):
    """The tables whose row count or content differ."""
    changed = set()
    for service in before:
        for key, value in before[service].items():
            if after[service].get(key) != value:
                changed.add(f"{service}.{key.removesuffix(':content')}")
    return sorted(changed)


@pytest.mark.parametrize("case", FORBIDDEN_CASES, ids=_case_id)
def test_an_id_outside_the_scope_is_forbidden(case, suite, world, roles):
    method, argument = case
    call = matrix.METHODS[method].build(world)
    probe = call.probe(argument)
    problems = []
    before = suite.settle()
    for variant, token_roles, sub, unit in matrix.variants(call, roles[method], world.a.community):
        outcome = _outcome(
            lambda token_roles=token_roles, sub=sub, unit=unit: suite.call(token_roles, sub, unit, method, probe)
        )
        if not isinstance(outcome, Forbidden):
            problems.append(f"{variant} {sorted(token_roles)} unit={unit}: expected Forbidden, {_describe(outcome)}")
        changed = _diff(before, suite.snapshot())
        if changed:
            problems.append(f"{variant}: changed {changed}")
            before = suite.settle()
    time.sleep(0.3)  # an event committed by a probe would be on its way by now
    published = suite.events()
    if published:
        problems.append(f"events published: {published}")
    # the control: the same call inside the scope succeeds (or answers an error the example names)
    unit = world.a.community if call.scoped else None
    control = _outcome(lambda: suite.call(call.roles, call.sub, call.unit or unit, method, call.args))
    if isinstance(control, Forbidden) or (
        control is not None and getattr(control, "exc_type", None) not in call.control_may_raise
    ):
        problems.append(f"control (inside the scope): {_describe(control)}")
    assert not problems, f"{method}({argument}=<community B's>):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("case", ALLOWED_CASES, ids=_case_id)
def test_an_allowed_outside_id_is_not_forbidden(case, suite, world):
    """Where an id from outside the scope is legitimate (the reason is in the table), it is not refused."""
    method, argument = case
    call = matrix.METHODS[method].build(world)
    unit = world.a.community if call.scoped else None
    outcome = _outcome(lambda: suite.call(call.roles, call.sub, call.unit or unit, method, call.probe(argument)))
    assert not isinstance(outcome, Forbidden), f"{method}({argument}): {matrix.METHODS[method].allowed[argument]}"
