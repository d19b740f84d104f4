"""The scope matrix (issue 12), generated from the endpoint contracts: for every method and every
argument carrying ids, an id from outside the caller's scope is refused with ``Forbidden`` — with one
role, with several roles, and (where a token naming no unit gets past ``authorize``) with a role the
method does not allow added — and nothing changes in any service's database and no event goes out;
the same call inside the scope is not refused with the one role nor with the several (it succeeds,
unless the example names the error it answers, as ``mark_no_show`` before the start). And for every
method a self role may call, a token holding only self roles plus a unit reaches nothing inside that
unit.

The four services run once for the module, on their own vhost and databases (a world of two
communities takes a while to build); every case snapshots the databases before and after its probes.
No verdict waits for time to pass: ``Suite.quiet()`` waits for the services to have nothing left to
do (every event published and handled, nothing for the notices timers), and ``Suite.flush_events()``
for a marker sent after everything else through each service's outbox relay.
The table of cases, the world and the rules for legitimately outside ids: tests/scope_matrix.py.
"""

import time
import uuid
from collections import defaultdict
from urllib.parse import urlparse

import pytest
from nameko.containers import get_container_cls
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import create_engine, insert, text

from shared.db import utcnow
from shared.errors import Forbidden
from shared.outbox import OutboxRelay, envelope
from tests import scope_matrix as matrix
from tests.support import JWT_SECRET, PII_KEY, EventTap, free_port, scratch_database, table_counts, token, wait_until
from tools.asyncapi import entrypoints, service_classes

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
    extra: dict[str, dict] = {
        "grid": {"LIFECYCLE_INTERVAL": QUIET},
        "notices": {
            "PUBLISH_INTERVAL": 0.2,
            "DISPATCH_INTERVAL": 0.2,
            # chat-group robots on loopback: the dev/test case of the outbound policy
            "ALLOW_HTTP": True,
            "OUTBOUND_ALLOWLIST": "127.0.0.1",
            "WEBHOOK_ALLOWLIST": "127.0.0.1:9",  # the examples' webhooks (services/notices/outbound.py)
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


MARKER = "matrix_marker"  # an event type no handler subscribes to: only the taps see it


def _subscribers():
    """``{(source service, event type): [(handling service, processed_events key), ...]}`` from the
    contracts: every handler that must record an event before the services are quiet."""
    found = defaultdict(list)
    for service, cls in service_classes().items():
        _, handlers, _ = entrypoints(cls)
        for name, contract in handlers:
            source, event_type = contract["source"], contract["event_type"]
            found[(source, event_type)].append((service, f"{source}.{event_type}:{name}"))
    return found


class Suite:
    """The four services on one vhost, proxies per token, snapshots of their databases.

    Nothing here waits for a time to pass: ``quiet()`` waits for explicit conditions (every event
    published and handled, nothing left for the notices timers to do), and ``flush_events()`` for a
    marker event sent through each service's outbox relay after everything else.
    """

    def __init__(self, amqp_uri, urls):
        import importlib

        self.amqp_uri = amqp_uri
        self.urls = urls
        self.configs = _configs(amqp_uri, urls)
        self.containers = []
        self.proxies = {}
        self.relays = {}
        for service, (module, class_name) in SERVICES.items():
            cls = getattr(importlib.import_module(f"{module}.service"), class_name)
            container = get_container_cls(self.configs[service])(cls, self.configs[service])
            container.start()
            self.containers.append(container)
            self.relays[service] = next(d for d in container.dependencies if isinstance(d, OutboxRelay))
        self.models = {
            service: importlib.import_module(f"{module}.models").Base.metadata
            for service, (module, _) in SERVICES.items()
        }
        self.engines = {
            service: create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), pool_size=1)
            for service, url in urls.items()
        }
        self.subscribers = _subscribers()
        self.handled_up_to = dict.fromkeys(SERVICES, 0)  # per service: outbox rows up to this id are handled
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
            # grid_facts_sync is the resync timer's bookmark: it moves on its own schedule (its first tick
            # comes a minute after start, inside whichever probe runs then), never because of a call.
            contents = {
                f"{table}:content": CONTENT.format(table=table)
                for table in metadata.tables
                if table != "grid_facts_sync"
            }
            snap[service] = table_counts(self.urls[service], metadata, contents)
        return snap

    def sql(self, service, query, **params):
        with self.engines[service].connect() as conn:
            return conn.execute(text(query), params).all()

    def busy(self):
        """What still moves, or an empty list when nothing does:

        - an outbox row not yet published (the relay publishes with confirms, so a published event is in
          every queue bound to it, the taps' included);
        - a published event not yet handled by a handler subscribed to it: each records the event in its
          service's ``processed_events`` in the transaction of its changes, so once recorded its changes
          are committed; a failing handler's event stays unrecorded while it is retried;
        - work for the notices timers: an approved notice not yet published, a delivery still queued or
          being sent (a page's deliveries due at once are written already claimed: services/notices/delivery.py).
        """
        moving = []
        for source in SERVICES:
            rows = self.sql(
                source,
                "SELECT id, event_id, event_type, published_at FROM outbox_events WHERE id > :after ORDER BY id",
                after=self.handled_up_to[source],
            )
            waiting: dict[str, list] = defaultdict(list)  # handling service: [(row id, key, event id)]
            unpublished = [row.id for row in rows if row.published_at is None]
            if unpublished:
                moving.append(f"{source}: {len(unpublished)} outbox rows unpublished")
            for row in rows:
                for service, key in self.subscribers.get((source, row.event_type), ()):
                    waiting[service].append((row.id, key, row.event_id))
            unhandled = set()
            for service, expected in waiting.items():
                recorded = set(
                    self.sql(
                        service,
                        "SELECT handler, event_id FROM processed_events WHERE event_id = ANY(:ids)",
                        ids=[event_id for _, _, event_id in expected],
                    )
                )
                for row_id, key, event_id in expected:
                    if (key, event_id) not in recorded:
                        unhandled.add(row_id)
                        moving.append(f"{source} event {row_id} not yet handled by {key}")
            stuck = [row.id for row in rows if row.published_at is None or row.id in unhandled]
            done = [row.id for row in rows if not stuck or row.id < min(stuck)]
            if done:
                self.handled_up_to[source] = max(done)
        (pending,) = self.sql(
            "notices",
            "SELECT (SELECT count(*) FROM notices WHERE status = 'approved'),"
            " (SELECT count(*) FROM deliveries WHERE status IN ('queued', 'sending'))",
        )
        if any(pending):
            moving.append(f"notices: {pending[0]} approved notices unpublished, {pending[1]} deliveries to send")
        return moving

    def quiet(self, timeout=60.0):
        """Wait until nothing moves (``busy()``), then the databases' snapshot. The timeout only bounds a
        failure: the verdict is the condition's."""
        deadline = time.monotonic() + timeout
        while True:
            moving = self.busy()
            if not moving:
                return self.snapshot()
            if time.monotonic() > deadline:
                raise AssertionError(f"the services did not go quiet: {moving[:10]}")
            time.sleep(0.05)

    def flush_events(self, timeout=60.0):
        """The events published since the last flush (``service.type subject``), known to be all of them.

        A marker row goes into every service's outbox after everything else; its relay publishes rows
        in id order, so once a tap has the marker, every event committed before it is in that tap
        already. (A tap that hears nothing is no proof of silence: the marker proves the tap works.)
        """
        markers = {}
        for service in SERVICES:
            subject = f"marker/{uuid.uuid4()}"
            body = envelope(service, MARKER, subject, {})
            outbox = self.models[service].tables["outbox_events"]
            with self.engines[service].begin() as conn:
                conn.execute(
                    insert(outbox).values(
                        event_id=body["id"],
                        event_type=MARKER,
                        payload=body,
                        headers={},
                        created_at=utcnow(),
                        attempts=0,
                    )
                )
            markers[service] = subject
            self.relays[service].wake()
        seen = []
        deadline = time.monotonic() + timeout
        for service, tap in self.taps.items():
            while True:
                try:
                    message = tap.queue.get(timeout=0.5)
                except tap.queue.Empty:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{service}'s marker event never arrived") from None
                    continue
                message.ack()
                payload = message.payload
                if payload["type"] == MARKER:
                    if payload["subject"] == markers[service]:
                        break
                    continue  # an older marker
                seen.append(f"{service}.{payload['type']} {payload.get('subject')}")
        return seen

    def stop(self):
        for proxy, _ in self.proxies.values():
            proxy.stop()
        for tap in self.taps.values():
            tap.close()
        for container in self.containers:
            container.kill()
        for engine in self.engines.values():
            engine.dispose()


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


def _controlled(call, outcome):
    """A problem, if the call inside the scope did not succeed (or answer an error the example names)."""
    if isinstance(outcome, Forbidden) or (
        outcome is not None and getattr(outcome, "exc_type", None) not in call.control_may_raise
    ):
        return _describe(outcome)
    return None


def _quiet_start(suite):
    """The databases' snapshot once nothing moves and the taps hold nothing from before."""
    suite.quiet()
    suite.flush_events()
    return suite.quiet()  # the markers published too: they are rows of the outboxes


@pytest.mark.parametrize("case", FORBIDDEN_CASES, ids=_case_id)
def test_an_id_outside_the_scope_is_forbidden(case, suite, world, roles):
    method, argument = case
    call = matrix.METHODS[method].build(world)
    probe = call.probe(argument)
    problems = []
    tokens = matrix.variants(call, roles[method], world.a.community)
    before = _quiet_start(suite)
    for variant in tokens:
        outcome = _outcome(lambda v=variant: suite.call(v.roles, v.sub, v.unit, method, probe))
        if not isinstance(outcome, Forbidden):
            problems.append(
                f"{variant.name} {sorted(variant.roles)} unit={variant.unit}: expected Forbidden, {_describe(outcome)}"
            )
        changed = _diff(before, suite.snapshot())
        if changed:
            problems.append(f"{variant.name}: changed {changed}")
            before = suite.quiet()
    published = suite.flush_events()  # everything the probes committed is ahead of the markers
    if published:
        problems.append(f"events published: {published}")
    # the controls: the same call inside the scope succeeds (or answers an error the example names) with
    # each control token — each on a call built afresh, as the one before may have used its objects up
    for n, variant in enumerate(v for v in tokens if v.control):
        inside = call if n == 0 else matrix.METHODS[method].build(world)
        token_of = next(v for v in matrix.variants(inside, roles[method], world.a.community) if v.name == variant.name)
        control = _outcome(lambda t=token_of, i=inside: suite.call(t.roles, t.sub, t.unit, method, i.args))
        problem = _controlled(inside, control)
        if problem:
            problems.append(f"control {variant.name} (inside the scope): {problem}")
    assert not problems, f"{method}({argument}=<community B's>):\n  " + "\n  ".join(problems)


SELF_ROLE_METHODS = sorted(
    name
    for name, allowed in matrix.method_roles().items()
    if name in matrix.METHODS and set(allowed) & set(matrix.SELF_ROLES)
)


@pytest.mark.parametrize("method", SELF_ROLE_METHODS)
def test_self_roles_with_a_unit_reach_nothing_inside_it(method, suite, world):
    """A token holding only self roles (``resident``, ``volunteer``, ``lawyer``, ``mediator``) and
    naming community A, whose ``sub`` names nobody: its unit lends the self roles nothing
    (docs/calling.md), so the example's call inside A is Forbidden, changes nothing and publishes
    nothing — unless the method answers anyone (a public directory), or lists only the caller's own
    records (then it lists none). The example's own token, with its staff role, succeeds there
    (``test_an_id_outside_the_scope_is_forbidden``'s controls)."""
    spec = matrix.METHODS[method]
    call = spec.build(world)
    before = _quiet_start(suite)
    answer: dict = {}

    def self_roles_call():
        answer["value"] = suite.call(matrix.SELF_ROLES, matrix.MULTI_SUB, world.a.community, method, call.args)

    outcome = _outcome(self_roles_call)
    problems = []
    kind, why = spec.self_roles or (None, None)
    if kind is None and not isinstance(outcome, Forbidden):
        problems.append(f"expected Forbidden, {_describe(outcome)}")
    elif kind == matrix.OWN_RECORDS and (outcome is not None or answer["value"]["items"]):
        problems.append(f"{why}: expected an empty list, {_describe(outcome) if outcome else answer['value']}")
    elif kind == matrix.PUBLIC and isinstance(outcome, Forbidden):
        problems.append(f"{why}: {_describe(outcome)}")
    changed = _diff(before, suite.snapshot())
    if changed:
        problems.append(f"changed {changed}")
    published = suite.flush_events()
    if published:
        problems.append(f"events published: {published}")
    assert not problems, f"{method} by {sorted(matrix.SELF_ROLES)} naming community A:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("case", ALLOWED_CASES, ids=_case_id)
def test_an_allowed_outside_id_is_not_forbidden(case, suite, world):
    """Where an id from outside the scope is legitimate (the reason is in the table), it is not refused."""
    method, argument = case
    call = matrix.METHODS[method].build(world)
    unit = world.a.community if call.scoped else None
    outcome = _outcome(lambda: suite.call(call.roles, call.sub, call.unit or unit, method, call.probe(argument)))
    assert not isinstance(outcome, Forbidden), f"{method}({argument}): {matrix.METHODS[method].allowed[argument]}"
