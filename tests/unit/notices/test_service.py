"""The notices service class itself (nameko's worker_factory, real units of work on SQLite, the fake
grid, stub channels): endpoints answer through their declared reply schemas, handlers apply an
envelope once, and the timers own the transactions of their steps."""

import uuid
from types import SimpleNamespace

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services.notices.channels import RateLimiter, StubChannel
from services.notices.delivery import Handoff, RetryPolicy
from services.notices.models import Delivery
from services.notices.outbound import OutboundPolicy
from services.notices.service import NoticesService, commit_steps
from shared.errors import Forbidden
from tests.unit.local import VAULT, caller, unit_of_work
from tests.unit.notices.conftest import SMALL_A, SMALL_B

OFFICER = caller("officer", unit=2, sub="officer-1")
LEGAL = caller("service", sub="service:legal")


class Auth:
    """Stands in for shared.auth's CallerAccess: the caller, acting in the roles the method allows."""

    def __init__(self, who):
        self.who = who

    def authorize(self, roles):
        if self.who is None or not self.who.has_role(*roles):
            raise Forbidden("role may not call this method")
        return self.who.acting_as(roles)


@pytest.fixture
def channels():
    adapters = {name: StubChannel(name) for name in ("sms", "voice_call", "app_push", "chat_group")}
    limiter = RateLimiter({})
    return SimpleNamespace(
        policies=SimpleNamespace(
            webhooks=OutboundPolicy.for_webhooks({}, resolver=lambda host, port: ["93.184.215.14"])
        ),
        adapters=adapters,
        limiter=limiter,
        retry=RetryPolicy(),
        handoff=Handoff(adapters, limiter),
    )


@pytest.fixture
def service(db, grid, channels):
    """``service(who).method(...)``: one worker, with its own unit of work, closed after the call."""

    class Worker:
        def __init__(self, who):
            self.who = who

        def __getattr__(self, method):
            def call(*args, **kwargs):
                uow = db.unit_of_work()
                worker = worker_factory(
                    NoticesService,
                    db=uow,
                    grid=grid,
                    vault=VAULT,
                    channels=channels,
                    config={"TIMEZONE": "Asia/Shanghai"},
                    auth=Auth(self.who),
                )
                try:
                    return getattr(worker, method)(*args, **kwargs)
                finally:
                    uow.rollback()  # what the Database provider does with whatever nobody committed
                    uow.close()

            return call

    return Worker


def create_notice(officer, **overrides):
    args = {
        "title": "Water off",
        "body": "Water is off 9-12.",
        "category": "policy",
        "severity": "moderate",
        "urgency": "expected",
        "audience": {"under": [str(SMALL_A)]},
        "channels": ["sms"],
        **overrides,
    }
    return officer.create_notice(**args)


def test_an_endpoint_answers_with_its_reply_schema_ids_as_strings(service):
    notice = create_notice(service(OFFICER))
    assert (notice["id"], notice["status"], notice["audience"]) == (
        "1",
        "draft",
        {"under": ["4"], "tags_any": [], "tags_all": []},
    )
    assert notice["template"] is None and notice["created_at"].endswith("+00:00")
    listed = service(OFFICER).list_notices(page=1, page_size=5)
    assert listed == {"items": [notice], "page": 1, "page_size": 5, "has_more": False}


def test_replies_built_from_domain_objects_keep_their_shape(service):
    quiet = {"start": "22:00", "end": "07:05"}
    saved = service(OFFICER).set_preferences(resident_id="101", channels=["sms"], quiet_hours=quiet)
    assert saved == {"resident_id": "101", "channels": ["sms"], "quiet_hours": quiet}
    assert service(OFFICER).set_preferences(resident_id="101", channels=["sms"])["quiet_hours"] is None
    group = service(OFFICER).register_chat_group(unit_id="4", name="Grid A", webhook_url="https://robot.example.org/k")
    assert group == {"unit_id": "4", "name": "Grid A"}  # the webhook URL is not repeated
    assert service(LEGAL).send_direct(resident_ids=["100", "102"], template="check_in", params={"when": "9"}) == {
        "message_id": "1",
        "recipients": 2,
    }


def test_a_role_the_method_does_not_allow_is_refused(service):
    with pytest.raises(Forbidden):
        service(caller("resident", sub="100")).send_direct(resident_ids=["100"], template="check_in", params={})


def envelope(data, event_type="resident_tagged", event_id=None):
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "grassroots/grid",
        "type": event_type,
        "time": "2026-11-26T08:00:00+00:00",
        "data": data,
    }


def test_an_event_is_applied_once_per_envelope(service, db):
    tagged = {"resident_id": "102", "household_id": "11", "unit_id": str(SMALL_B), "tag": "quarantined", "until": None}
    event = envelope(tagged)
    system = service(None)
    assert system.on_resident_tagged(event) == "1"  # the instructions' message id
    assert system.on_resident_tagged(event) == "duplicate"
    assert system.on_resident_tagged(envelope(tagged)) == "already sent today"  # another event, the same day
    assert system.on_resident_tagged(envelope({**tagged, "tag": "elderly_alone"})) == "not quarantine"


def test_a_command_sends_one_message_per_origin(service):
    command = {
        "origin": "legal:consultation/3",
        "resident_ids": ["100"],
        "template": "check_in",
        "params": {"when": "9"},
    }
    system = service(None)
    first = system.on_send_direct({**envelope(command, "send_direct"), "source": "grassroots/legal"})
    again = system.on_send_direct({**envelope(command, "send_direct"), "source": "grassroots/legal"})
    assert first == again == "1"


def test_the_timers_publish_an_approved_notice_and_dispatch_its_deliveries(service, db, channels):
    notice = create_notice(service(OFFICER), channels=["app_push"])
    service(caller("officer", unit=2, sub="officer-2")).approve_notice(notice_id=notice["id"])
    service(None).publish_due()
    service(None).dispatch()
    assert sorted(m.to for m in channels.adapters["app_push"].sent) == ["100", "101"]
    with unit_of_work(db) as uow:
        assert set(uow.session.scalars(select(Delivery.status))) == {"sent"}
    report = service(OFFICER).delivery_report(notice_id=notice["id"])
    assert (report["targeted"], report["sent"], report["units"][0]["unit_id"]) == (2, 2, "4")


class FailingCommit:
    def __init__(self):
        self.commits = 0

    def commit(self):
        self.commits += 1
        raise RuntimeError("database gone")


def test_the_steps_are_closed_when_a_commit_fails_so_nothing_runs_on_after_it():
    finished = []

    def steps():
        try:
            yield
            finished.append("after the first step")
        finally:
            finished.append("closed")

    uow = FailingCommit()
    with pytest.raises(RuntimeError):
        commit_steps(uow, steps())
    assert (uow.commits, finished) == (1, ["closed"])


def test_the_steps_value_is_what_the_timer_gets():
    def steps():
        yield
        yield
        return 2

    commits = []
    assert commit_steps(SimpleNamespace(commit=lambda: commits.append("commit")), steps()) == 2
    assert len(commits) == 2
