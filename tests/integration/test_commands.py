"""Commands between services (shared.commands): recorded with the change, sent after commit, applied
once per origin — whether the receiver is down, not yet deployed, or gets the command twice.

Real broker and PostgreSQL; the receiver's effect is counted in its own database."""

import datetime as dt
import json
import uuid

import pytest
from kombu import Connection, Exchange, Producer
from sqlalchemy import create_engine, func, select, text

from services.notices.models import Notice
from services.notices.service import NoticesService
from services.volunteer.models import OutboxEvent
from shared.errors import ServiceUnavailable
from tests.support import add_household, add_resident, token, wait_until

ALWAYS = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]


def engine_for(url):
    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def scalar(url, query):
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(query)
    finally:
        engine.dispose()


def offers_sent(notices_db, origin_prefix="volunteer:offer/"):
    engine = engine_for(notices_db)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(Notice.origin).where(Notice.origin.like(f"{origin_prefix}%"))))
    finally:
        engine.dispose()


@pytest.fixture
def area(grid, volunteer, admin, district, call_as):
    """A requester and a neighbour volunteer (a resident: offers reach them through notices)."""
    officer = call_as(token("officer", sub="officer", unit=district["street"])).volunteer
    home = add_household(admin, district["small_a"], room="1")
    home_n = add_household(admin, district["small_a"], room="2")
    requester = add_resident(admin, home, 1)["id"]
    neighbour = add_resident(admin, home_n, 2)["id"]
    volunteer_id = officer.register_volunteer(
        name="neighbour",
        phone="13912345678",
        home_unit_id=district["small_a"],
        skills=["delivery"],
        availability=ALWAYS,
        max_active_tasks=5,
        resident_id=neighbour,
    )["id"]
    return {**district, "officer": officer, "requester": requester, "volunteer_id": volunteer_id}


def ask(area, details="Rice"):
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    return area["officer"].create_request(
        unit_id=area["small_a"],
        kind="groceries",
        details=details,
        urgency="high",
        needed_by=soon,
        resident_id=area["requester"],
    )


def test_an_offer_made_before_notices_was_ever_deployed_reaches_it_once_it_is(
    area, volunteer_db, notices_config, notices_db, container_factory
):
    request = ask(area)
    assert request["status"] == "offered"
    # No queue takes the command yet: the broker returns it and the row waits, unpublished.
    commands = OutboxEvent.__table__
    waiting = (
        select(func.count())
        .select_from(commands)
        .where(
            commands.c.destination == "notices.commands",
            commands.c.published_at.is_(None),
            commands.c.retry_at.is_not(None),
        )
    )
    wait_until(lambda: scalar(volunteer_db, waiting) == 1, message="the command was not held back")

    container_factory(NoticesService, notices_config).start()
    wait_until(lambda: len(offers_sent(notices_db)) == 1, timeout=120, message="the offer never reached notices")
    assert scalar(volunteer_db, waiting) == 0


def test_an_offer_made_while_notices_is_down_is_sent_once_when_it_is_back(
    area, notices, notices_db, notices_config, volunteer_db, container_factory
):
    notices.stop()  # its command queue stays: the command waits there
    request = ask(area)
    assert request["status"] == "offered"
    assert offers_sent(notices_db) == []
    container_factory(NoticesService, notices_config).start()
    wait_until(lambda: len(offers_sent(notices_db)) == 1, message="the offer never reached notices")
    offer_id = scalar(volunteer_db, text("SELECT id FROM offers"))
    assert offers_sent(notices_db) == [f"volunteer:offer/{offer_id}"]


def test_a_command_delivered_twice_or_recorded_twice_sends_one_message(area, notices, notices_config, notices_db):
    """A redelivery (same envelope id) and the sender's own retry (same origin, new envelope id)."""
    resident = area["requester"]
    exchange = Exchange("notices.commands", type="topic", durable=True)

    def command(envelope_id):
        return {
            "specversion": "1.0",
            "id": envelope_id,
            "source": "grassroots/volunteer",
            "type": "send_direct",
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "subject": "test:origin/1",
            "datacontenttype": "application/json",
            "data": {
                "origin": "test:origin/1",
                "resident_ids": [resident],
                "template": "volunteer_offer",
                "params": {"kind": "groceries", "respond_by": "18:00"},
                "channels": ["sms"],
            },
        }

    same = str(uuid.uuid4())
    with Connection(notices_config["AMQP_URI"]) as conn:
        producer = Producer(conn.channel())
        for envelope_id in (same, same, str(uuid.uuid4()), str(uuid.uuid4())):
            producer.publish(
                json.dumps(command(envelope_id)),
                exchange=exchange,
                routing_key="send_direct",
                content_type="application/json",
                mandatory=True,
                delivery_mode=2,
            )
    taken = text("SELECT count(*) FROM processed_events WHERE handler LIKE 'commands.send_direct:%'")
    processed = scalar(notices_db, taken)
    wait_until(
        lambda: scalar(notices_db, taken) == processed + 3,
        message="notices did not take the commands",
    )
    assert offers_sent(notices_db, "test:origin/") == ["test:origin/1"]


def test_a_callee_that_does_not_answer_is_a_typed_service_unavailable(area, grid):
    grid.stop()  # its queue stays; nobody answers
    with pytest.raises(ServiceUnavailable):
        ask(area, details="while the grid is down")
