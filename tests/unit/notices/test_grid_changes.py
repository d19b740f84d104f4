"""Notices' copies of grid paths kept in step with the grid's tree (services.notices.grid_changes) on
SQLite with a fake grid: a unit's move rebases every copy, a household's move takes along only what is
still to come for it, and a closed small grid's chat group goes once nobody lives there."""

import datetime as dt

from sqlalchemy import select

from services.notices import grid_changes
from services.notices.models import ChatGroup, Delivery, Notice, NoticeTarget, Recipient
from tests.unit.local import unit_of_work
from tests.unit.notices.conftest import PATH_A, PATH_B, SMALL_A, SMALL_B, add_delivery, add_notice

MOVED_A = "/1/7/3/4/"


def add_group(db, unit_id, path):
    with unit_of_work(db) as uow:
        uow.session.add(
            ChatGroup(
                unit_id=unit_id,
                unit_path=path,
                name="group",
                webhook_url="https://robot.example.org",
                updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        )
        uow.commit()


def paths(db, column):
    with unit_of_work(db) as uow:
        return sorted(uow.session.scalars(select(column)))


def handle(db, change, *args):
    with unit_of_work(db) as uow:
        changed = change(uow.session, *args)
        uow.commit()
        return changed


def test_a_moved_unit_takes_every_copy_through_it_along_and_a_replay_changes_nothing(db, grid):
    notice_id = add_notice(db, audience={"under": [SMALL_A, SMALL_B]})
    add_delivery(db, notice_id, status="sent")
    add_group(db, SMALL_A, PATH_A)
    grid.add_unit(7, "street", parent_id=1)
    grid.units["3"]["path"] = ["1", "7", "3"]  # community A moved under street 7
    grid.units[str(SMALL_A)]["path"] = ["1", "7", "3", str(SMALL_A)]
    assert handle(db, grid_changes.unit_moved, grid, 3) == {
        "notice_targets.unit_path": 1,
        "recipients.unit_path": 1,
        "deliveries.unit_path": 1,
        "chat_groups.unit_path": 1,
        # the read model of grid facts follows too (empty here: nothing read it through)
        "grid_units.path": 0,
        "grid_households.unit_path": 0,
    }
    assert paths(db, NoticeTarget.unit_path) == [PATH_B, MOVED_A]  # sent notices included
    for column in (Recipient.unit_path, Delivery.unit_path, ChatGroup.unit_path):
        assert paths(db, column) == [MOVED_A]
    assert set(handle(db, grid_changes.unit_moved, grid, 3).values()) == {0}


def move_household_10_to_b(grid):
    grid.households["10"].update(unit_id=str(SMALL_B), unit_path=["1", "2", "5", str(SMALL_B)])


def test_a_moved_household_takes_along_what_is_still_to_come_and_leaves_what_was_done(db, grid):
    notice_id = add_notice(db)
    pending = add_delivery(db, notice_id, resident_id=100)
    done = add_delivery(db, notice_id, resident_id=101, status="sent")
    instructions = add_notice(db, kind="direct", audience={"under": [SMALL_A], "household_id": "10"})
    add_delivery(db, instructions, resident_id=100)
    move_household_10_to_b(grid)
    changed = handle(db, grid_changes.household_moved, grid, 10, SMALL_A)
    assert changed == {"deliveries": 2, "recipients": 2, "notice_targets": 1, "chat_groups_retired": 0}
    with unit_of_work(db) as uow:
        where = dict(uow.session.execute(select(Delivery.id, Delivery.unit_path)).all())
        target = uow.session.scalar(select(NoticeTarget).where(NoticeTarget.notice_id == instructions))
        assert (target.unit_id, target.unit_path) == (SMALL_B, PATH_B)
        assert uow.session.get(Notice, instructions).audience["under"] == [SMALL_B]
        assert uow.session.scalars(select(NoticeTarget.unit_path).where(NoticeTarget.notice_id == notice_id)).all() == [
            PATH_A
        ]
    assert (where[pending], where[done]) == (PATH_B, PATH_A)


def test_a_household_the_grid_does_not_know_changes_nothing(db, grid):
    assert handle(db, grid_changes.household_moved, grid, 77, SMALL_A) == {}


def test_a_closed_small_grids_chat_group_goes_once_nobody_lives_there(db, grid):
    add_group(db, SMALL_B, PATH_B)
    assert handle(db, grid_changes.unit_closed, grid, SMALL_B) == {"chat_groups_retired": 0}  # still open
    grid.units[str(SMALL_B)]["closed"] = True
    assert handle(db, grid_changes.unit_closed, grid, SMALL_B) == {"chat_groups_retired": 0}  # resident 102 lives there
    del grid.residents_by_id["102"]
    assert handle(db, grid_changes.unit_closed, grid, SMALL_B) == {"chat_groups_retired": 1}
    assert paths(db, ChatGroup.unit_path) == []
    assert handle(db, grid_changes.unit_closed, grid, 999) == {"chat_groups_retired": 0}
