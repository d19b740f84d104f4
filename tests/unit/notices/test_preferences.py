"""Residents' preferences and small grids' chat groups (services.notices.preferences) on SQLite: who
may set them for whom, and webhook URLs refused without saying more than that."""

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from services.notices import preferences
from services.notices.models import ChatGroup
from services.notices.outbound import OutboundPolicy
from shared.errors import Forbidden, ValidationError
from tests.unit.local import caller, unit_of_work
from tests.unit.notices.conftest import PATH_A, SMALL_A

PUBLIC = "93.184.215.14"
WEBHOOKS = OutboundPolicy.for_webhooks({}, resolver=lambda host, port: ["10.0.0.5" if "internal" in host else PUBLIC])
NIGHT = {"start": dt.time(22, 0), "end": dt.time(7, 0)}


def set_preferences(db, grid, who, resident_id, channels, quiet_hours=None):
    with unit_of_work(db) as uow:
        saved = preferences.set_preferences(uow, who, grid, resident_id, channels, quiet_hours)
        uow.commit()
        return saved.channels, saved.quiet_start, saved.quiet_end


def test_a_resident_sets_their_own_preferences_and_may_change_them(db, grid):
    me = caller("resident", sub="100")
    assert set_preferences(db, grid, me, 100, ["sms"], NIGHT) == (["sms"], dt.time(22, 0), dt.time(7, 0))
    assert set_preferences(db, grid, me, 100, ["app_push"]) == (["app_push"], None, None)
    with pytest.raises(Forbidden):
        set_preferences(db, grid, me, 101, ["sms"])


def test_staff_set_preferences_for_residents_in_their_subtree_only(db, grid):
    assert set_preferences(db, grid, caller("officer", unit=3), 100, ["sms"])[0] == ["sms"]
    with pytest.raises(Forbidden):
        set_preferences(db, grid, caller("officer", unit=5), 100, ["sms"])
    with pytest.raises(ValidationError) as unknown:
        set_preferences(db, grid, caller("officer", unit=3), 555, ["sms"])
    assert unknown.value.fields == {"resident_id": ["Unknown residents: 555."]}


def register(db, grid, who, unit_id, url, name="Grid A"):
    with unit_of_work(db) as uow:
        group = preferences.register_chat_group(uow, who, grid, WEBHOOKS, unit_id, name, url)
        uow.commit()
        return group.unit_path, group.webhook_url


def groups(db):
    with unit_of_work(db) as uow:
        return uow.session.execute(select(ChatGroup.unit_id, ChatGroup.name, ChatGroup.webhook_url)).all()


def test_a_small_grids_chat_group_is_registered_and_replaced(db, grid):
    officer = caller("officer", unit=3)
    assert register(db, grid, officer, SMALL_A, "https://robot.example.org/a") == (
        PATH_A,
        "https://robot.example.org/a",
    )
    register(db, grid, officer, SMALL_A, "https://robot.example.org/b", name="Grid A, new robot")
    assert groups(db) == [(SMALL_A, "Grid A, new robot", "https://robot.example.org/b")]


def test_scope_comes_before_the_units_level(db, grid):
    with pytest.raises(Forbidden):
        register(db, grid, caller("officer", unit=5), 3, "https://robot.example.org/a")  # not "not a small grid"
    with pytest.raises(ValidationError) as level:
        register(db, grid, caller("officer", unit=3), 3, "https://robot.example.org/a")
    assert level.value.fields == {"unit_id": ["Chat groups belong to small grids, not community."]}


def test_a_refused_webhook_says_only_so_and_the_log_names_the_host_not_the_url(db, grid, caplog):
    logged = caplog.at_level(logging.WARNING, logger="services.notices.preferences")
    with logged, pytest.raises(ValidationError) as refused:
        register(db, grid, caller("officer", unit=3), SMALL_A, "https://robot.internal/hook?key=SECRET")
    assert refused.value.fields == {"webhook_url": ["Not an allowed destination."]}
    (entry,) = caplog.records
    assert "robot.internal" in entry.reason and "SECRET" not in entry.reason and "/hook" not in entry.reason
    assert groups(db) == []
