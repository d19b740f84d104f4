"""Fixtures of the notices unit tests: the service's tables on a private in-memory SQLite
(tests/unit/local.py), a small district in a fake grid, and a way to write rows directly.

The district (unit ids; small grids are ``grid_small``)::

    1 district ─ 2 street ┬ 3 community A ─ 4 small grid A   household 10: residents 100, 101
                          └ 5 community B ─ 6 small grid B   household 11: resident 102
"""

import datetime as dt

import pytest

from services.grid.client import FakeGrid
from services.notices.models import Delivery, Notice, NoticeTarget, Recipient
from shared.db import utcnow
from tests.unit.local import VAULT, local_database, unit_of_work

SMALL_A, SMALL_B = 4, 6
PATH_A, PATH_B = "/1/2/3/4/", "/1/2/5/6/"
UNIT_PATHS = {1: "/1/", 2: "/1/2/", 3: "/1/2/3/", SMALL_A: PATH_A, 5: "/1/2/5/", SMALL_B: PATH_B}
PHONES = {"100": "13800000100", "101": "13800000101", "102": "13800000102"}


def build_grid():
    grid = FakeGrid()
    grid.add_unit(1, "district")
    grid.add_unit(2, "street", parent_id=1)
    grid.add_unit(3, "community", parent_id=2)
    grid.add_unit(SMALL_A, "grid_small", parent_id=3)
    grid.add_unit(5, "community", parent_id=2)
    grid.add_unit(SMALL_B, "grid_small", parent_id=5)
    grid.add_household(10, SMALL_A)
    grid.add_household(11, SMALL_B)
    grid.add_resident(100, 10, tags=["elderly_alone"])
    grid.add_resident(101, 10)
    grid.add_resident(102, 11, tags=["quarantined"])
    for resident_id, phone in PHONES.items():
        grid.residents_by_id[resident_id]["phone"] = phone
    grid.vault = VAULT  # its column pages carry the phones encrypted, as the grid's do
    return grid


@pytest.fixture
def grid():
    return build_grid()


@pytest.fixture
def db():
    database = local_database("notices")
    yield database
    database.stop()


def add_notice(db, **overrides):
    """A notice row written directly (committed); its id. Defaults: a published moderate alert to
    small grid A by push."""
    now = utcnow()
    values = {
        "kind": "notice",
        "title": "Water off",
        "body": "Water is off 9-12.",
        "category": "policy",
        "severity": "moderate",
        "urgency": "expected",
        "msg_type": "alert",
        "audience": {"under": [SMALL_A]},
        "channels": ["app_push"],
        "status": "published",
        "author": "officer-1",
        "created_at": now,
        "publish_at": now,
        "published_at": now,
        "recipient_count": 0,
        "requires_ack": False,
        "ack_checked": False,
        **overrides,
    }
    with unit_of_work(db) as uow:
        notice = Notice(**values)
        uow.session.add(notice)
        uow.session.flush()
        for unit_id in values["audience"]["under"]:
            uow.session.add(NoticeTarget(notice_id=notice.id, unit_id=unit_id, unit_path=UNIT_PATHS[unit_id]))
        uow.commit()
        return notice.id


def add_delivery(
    db, notice_id, resident_id=100, channel="sms", status="queued", tags=(), address_enc=None, path=PATH_A, **extra
):
    """A recipient of the notice (in small grid A unless ``path`` says otherwise: household 10 there,
    11 in B) and one delivery to them (committed); the delivery id."""
    now = utcnow()
    with unit_of_work(db) as uow:
        recipient = Recipient(
            notice_id=notice_id,
            resident_id=resident_id,
            household_id=10 if path == PATH_A else 11,
            unit_path=path,
            vulnerable_tags=list(tags),
            vulnerable=bool(tags),
            address_enc=address_enc,
        )
        uow.session.add(recipient)
        uow.session.flush()
        delivery = Delivery(
            notice_id=notice_id,
            recipient_id=recipient.id,
            unit_path=path,
            channel=channel,
            status=status,
            attempts=0,
            next_attempt_at=now - dt.timedelta(seconds=1),
            created_at=now,
            **extra,
        )
        uow.session.add(delivery)
        uow.commit()
        return delivery.id
