"""The broker permissions of k8s/base/rabbitmq/permissions.yaml on a real RabbitMQ: the four
services, each logged in as its own user with exactly the rendered Permission, start (declaring
and binding everything they use), call each other, publish and handle events, dead-letter a
malformed one (declaring their retry tiers) and an RPC request without reply_to, and route a retry
through a tier; and a service's user is refused another service's queue."""

import json
import uuid
from urllib.parse import quote

import eventlet
import pytest
from kombu import Connection, Exchange
from nameko.testing.services import entrypoint_waiter

from tests.deploy.conftest import SERVICES, of_kind, render
from tests.support import build_district, token


@pytest.fixture(scope="module")
def permissions():
    """{service: {configure, write, read}} from the rendered dev overlay's Permission objects."""
    users = {u["metadata"]["name"]: u for u in of_kind(render("dev"), "User")}
    found = {}
    for permission in of_kind(render("dev"), "Permission"):
        user = permission["spec"]["userReference"]["name"]
        assert user in users
        if user.removesuffix("-rabbitmq-user") in SERVICES:  # not the outside caller's (its own test)
            found[user.removesuffix("-rabbitmq-user")] = permission["spec"]["permissions"]
    assert set(found) == set(SERVICES)
    return found


@pytest.fixture
def broker_users(rabbit_config, rabbit_manager, permissions):
    """One broker user per service on this test's vhost, with only its rendered permissions; its
    AMQP URI. The user names and passwords carry '/' and '+' as the topology operator's do."""
    vhost = rabbit_config["vhost"]
    host = rabbit_config["AMQP_URI"].split("@", 1)[1].rsplit("/", 1)[0]
    uris, names = {}, []
    for service, access in permissions.items():
        name, password = f"{service}/{uuid.uuid4().hex[:8]}+u", f"pw/{uuid.uuid4().hex}+="
        rabbit_manager._put("users", name, json={"password": password, "tags": ""})
        rabbit_manager.set_vhost_permissions(vhost, name, access["configure"], access["read"], access["write"])
        names.append(name)
        uris[service] = f"amqp://{quote(name, safe='')}:{quote(password, safe='')}@{host}/{quote(vhost, safe='')}"
    yield uris
    for name in names:
        rabbit_manager._delete("users", name)


@pytest.fixture
def restricted_suite(broker_users, container_factory, grid_config, notices_config, legal_config, volunteer_config):
    import importlib

    configs = {"grid": grid_config, "notices": notices_config, "legal": legal_config, "volunteer": volunteer_config}
    containers = {}
    for service in SERVICES:
        cls = getattr(importlib.import_module(f"services.{service}.service"), f"{service.capitalize()}Service")
        containers[service] = container_factory(cls, {**configs[service], "AMQP_URI": broker_users[service]})
        # A refused declaration makes nameko's consumer retry forever: a start that hangs fails.
        with eventlet.Timeout(30, AssertionError(f"{service} did not start with its own permissions")):
            containers[service].start()
    yield containers
    for container in containers.values():
        container.kill()


def test_services_work_with_only_their_own_permissions(
    restricted_suite, broker_users, call_as, rabbit_config, rabbit_manager
):
    admin = call_as(token("admin", sub="root"))  # the operator's proxy (guest), not a service user
    district = build_district(admin.grid)
    # legal -> grid RPC (legal's reply queue, nameko-rpc), grid's reply through nameko-rpc.
    station = admin.legal.create_station(unit_id=district["community_a"], name="Station", address="1 Main St")
    assert station["unit_id"] == district["community_a"]
    # grid's outbox relay publishes incident_reported on grid.events; legal's handler consumes it.
    worker = call_as(token("grid_worker", sub="worker", unit=district["small_a"]))
    with entrypoint_waiter(restricted_suite["legal"], "on_incident_reported"):
        worker.grid.report_incident(unit_id=district["small_a"], category="other", description="A broken lamp")
    # A malformed event is dead-lettered by legal through the default exchange (amq.default).
    queue = "evt-grid-incident_reported--legal.on_incident_reported"
    with Connection(rabbit_config["AMQP_URI"]) as conn:
        conn.Producer().publish(
            {"not": "an envelope"},
            exchange=Exchange("grid.events", type="topic", durable=True),
            routing_key="incident_reported",
            serializer="json",
        )
    from requests.exceptions import HTTPError

    from tests.support import wait_until

    def dead_letters():
        try:
            return rabbit_manager.get_queue(rabbit_config["vhost"], f"{queue}.dead").get("messages") == 1
        except HTTPError:  # not declared yet (the first dead letter declares it)
            return False

    wait_until(dead_letters, timeout=20, message="the malformed event was not dead-lettered")
    # Its retry tiers were declared with it, under legal's own user; legal may publish to one, and the
    # tier's TTL dead-letters the message back to the handler's queue (dead-lettered again: malformed).
    vhost = rabbit_config["vhost"]
    tiers = [q["name"] for q in rabbit_manager.get_queues(vhost) if q["name"].startswith("legal.retry.")]
    assert "legal.retry.1s" in tiers and "legal.retry.300s" in tiers, tiers
    with Connection(broker_users["legal"]) as conn:
        conn.Producer().publish(
            {"not": "an envelope"},
            exchange=Exchange("legal.retry.1s", type="topic", durable=True, no_declare=True),
            routing_key=queue,
            serializer="json",
            expiration=0.2,
        )
    wait_until(
        lambda: rabbit_manager.get_queue(vhost, f"{queue}.dead").get("messages") == 2,
        timeout=20,
        message="a message published to a retry tier did not come back to the handler",
    )
    # An RPC request nobody can be answered for (no reply_to) is parked in rpc-grid.dead by grid.
    with Connection(rabbit_config["AMQP_URI"]) as conn:
        conn.Producer().publish(
            {"args": [], "kwargs": {}},
            exchange=Exchange("nameko-rpc", type="topic", durable=True),
            routing_key="grid.list_units",
            serializer="json",
        )

    def rpc_dead_letters():
        try:
            return rabbit_manager.get_queue(rabbit_config["vhost"], "rpc-grid.dead").get("messages") == 1
        except HTTPError:
            return False

    wait_until(rpc_dead_letters, timeout=20, message="the unanswerable RPC request was not dead-lettered")
    # volunteer's relay sends a command to notices.commands under volunteer's own user (write, no
    # declare); notices consumes it under its own (here: an unknown resident, so it is dead-lettered).
    send_command_as_volunteer(restricted_suite["volunteer"].config["DATABASE_URL"])
    wait_until(
        lambda: _messages(rabbit_manager, vhost, "cmd-notices-send_direct.dead") == 1,
        timeout=30,
        message="volunteer's command did not reach notices under their own permissions",
    )
    # Everything still running: nothing was refused.
    for container in restricted_suite.values():
        assert not container._died.ready()


def test_a_service_user_cannot_touch_another_services_queues(restricted_suite, broker_users):
    from amqp.exceptions import AccessRefused

    with Connection(broker_users["volunteer"]) as conn, pytest.raises(AccessRefused):
        conn.channel().basic_get("rpc-grid")  # consuming grid's RPC requests needs read
    with Connection(broker_users["volunteer"]) as conn, pytest.raises(AccessRefused):
        conn.Producer().publish(
            json.dumps({}),
            exchange=Exchange("grid.events", type="topic", durable=True),
            routing_key="incident_reported",
            retry=False,
        )
        conn.default_channel.basic_qos(0, 1, False)  # flush: the refusal closes the channel


def _messages(rabbit_manager, vhost, queue):
    from requests.exceptions import HTTPError

    try:
        return rabbit_manager.get_queue(vhost, queue).get("messages")
    except HTTPError:  # not declared yet
        return None


def send_command_as_volunteer(database_url):
    """A send_direct command in volunteer's outbox, as services.notices.client records it."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from services.volunteer.models import OutboxEvent
    from shared.db import utcnow
    from shared.outbox import envelope

    data = {"origin": "test:permissions/1", "resident_ids": ["987654"], "template": "volunteer_offer", "params": {}}
    body = envelope("volunteer", "send_direct", "test:permissions/1", data)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with Session(engine) as session, session.begin():
            session.add(
                OutboxEvent(
                    event_id=body["id"],
                    event_type="send_direct",
                    payload=body,
                    headers={},
                    created_at=utcnow(),
                    destination="notices.commands",
                )
            )
    finally:
        engine.dispose()
