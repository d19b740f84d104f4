"""Copies of grid paths kept in step (shared.grid_copies, services/*/grid_changes.py): the path logic
against a simulated tree whose moves are handled late, twice and out of order (hypothesis), then each
service's rewrite on its own tables in SQLite with the grid's in-memory twin. No broker, no
PostgreSQL: tests/integration/test_grid_copies.py runs the same on both."""

import datetime as dt

import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.grid.client import FakeGrid, _Ready
from shared import grid_copies
from shared.db import make_engine
from shared.paths import as_path

# ---- the pure path logic --------------------------------------------------------


def test_rebase_replaces_what_lies_above_the_unit_and_keeps_what_lies_below():
    assert grid_copies.rebase("/1/2/5/9/", 5, "/1/3/5/") == "/1/3/5/9/"
    assert grid_copies.rebase("/1/2/5/", 5, "/1/3/5/") == "/1/3/5/"
    assert grid_copies.rebase("/1/2/15/9/", 5, "/1/3/5/") is None  # 15 is not 5
    assert grid_copies.rebase("/1/2/55/", 5, "/1/3/5/") is None
    assert grid_copies.through("/1/2/5/9/", 2) == "/1/2/"
    # 3 moved from under 2 to under 1, then 2 under 3, handled in that order reversed: 2's rebase left 3's
    # copy with 3 twice; 3's own move rebases its deepest, stale occurrence.
    assert grid_copies.through("/1/3/2/3/", 3) == "/1/3/2/3/"
    assert grid_copies.rebase("/1/3/2/3/9/", 3, "/1/3/") == "/1/3/9/"


def test_stale_prefixes_are_the_distinct_old_places_of_the_unit():
    paths = ["/1/2/5/9/", "/1/2/5/", "/1/4/2/5/7/", "/1/3/5/8/", "/1/6/"]
    assert grid_copies.stale_prefixes(paths, 5, "/1/3/5/") == {"/1/2/5/", "/1/4/2/5/"}
    assert grid_copies.stale_prefixes(["/1/3/5/8/"], 5, "/1/3/5/") == set()


def test_a_copy_stays_while_its_unit_contains_the_household():
    assert grid_copies.contains("/1/2/", "/1/2/5/9/")
    assert grid_copies.contains("/1/2/5/9/", "/1/2/5/9/")
    assert not grid_copies.contains("/1/2/5/8/", "/1/2/5/9/")
    assert not grid_copies.contains("/1/2/5/1/", "/1/2/5/10/")


class Tree:
    """The grid's side of the simulation: parents, and the path of any unit now."""

    def __init__(self, parents):
        self.parent = {1: None, **{i + 2: p for i, p in enumerate(parents)}}

    def path(self, unit):
        ids = []
        while unit is not None:
            ids.append(unit)
            unit = self.parent[unit]
        return as_path(reversed(ids))

    def can_move(self, unit, parent):
        return unit != 1 and f"/{unit}/" not in self.path(parent)


def handle(copies, tree, event):
    """What rebase_unit does to a table on ``unit_moved``: each stale prefix's subtree moved to the
    unit's path now (the grid's answer); the event's own paths are not used."""
    unit = event["unit_id"]
    now = tree.path(unit)
    for prefix in sorted(grid_copies.stale_prefixes(copies.values(), unit, now), key=len, reverse=True):
        for leaf, path in copies.items():
            if path.startswith(prefix):
                copies[leaf] = now + path[len(prefix) :]


@st.composite
def trees(draw):
    size = draw(st.integers(min_value=2, max_value=14))
    return [draw(st.integers(min_value=1, max_value=i + 1)) for i in range(size - 1)]


@settings(max_examples=1500, deadline=None)
@given(parents=trees(), data=st.data())
def test_copies_end_in_the_present_tree_whatever_order_moves_are_handled_in(parents, data):
    """Moves happen; each emits an event that is handled any time after, possibly twice, possibly
    after later moves of the same unit or of its ancestors. Once all are handled, every copy is its
    unit's present path, and handling any of them again changes nothing."""
    tree = Tree(parents)
    units = sorted(tree.parent)
    copies = {leaf: tree.path(leaf) for leaf in units}
    emitted: list[dict] = []
    pending: list[dict] = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=12), label="steps")):
        action = data.draw(st.sampled_from(["move", "handle", "replay"]), label="action")
        if action == "move":
            unit = data.draw(st.sampled_from(units), label="unit")
            parent = data.draw(st.sampled_from(units), label="parent")
            if tree.can_move(unit, parent) and tree.parent[unit] != parent:
                old_path = tree.path(unit)
                tree.parent[unit] = parent
                event = {"unit_id": unit, "old_path": old_path, "unit_path": tree.path(unit)}
                emitted.append(event)
                pending.append(event)
        elif action == "handle" and pending:
            handle(copies, tree, pending.pop(data.draw(st.integers(0, len(pending) - 1), label="which")))
        elif action == "replay" and emitted:
            handle(copies, tree, data.draw(st.sampled_from(emitted), label="replayed"))
    for event in data.draw(st.permutations(pending), label="the rest"):
        handle(copies, tree, event)
    assert copies == {leaf: tree.path(leaf) for leaf in units}
    for event in emitted:
        handle(copies, tree, event)
    assert copies == {leaf: tree.path(leaf) for leaf in units}


def test_event_data_alone_would_not_do():
    """Why the handlers ask the grid: rewriting the event's old path to its new path leaves a copy at
    an intermediate place when two moves of one unit are handled the wrong way round."""
    tree = Tree([1, 1, 1, 2])  # streets 2, 3, 4; unit 5 under 2
    first = tree.path(5)
    tree.parent[5] = 3
    second = tree.path(5)  # event 1: first → second
    tree.parent[5] = 4
    third = tree.path(5)  # event 2: second → third
    naive = first
    for old, new in ((second, third), (first, second)):  # event 2 handled before event 1
        if naive.startswith(old):
            naive = new + naive[len(old) :]
    assert naive == second != third
    copies = {5: first}
    for _event in (2, 1):
        handle(copies, tree, {"unit_id": 5})
    assert copies[5] == third


# ---- each service's rewrite on its own tables (SQLite, the grid's twin) ---------

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Grid(FakeGrid):
    """FakeGrid with moves, and the one read notices uses for "anyone left in this grid?"."""

    def move(self, unit_id, parent_id):
        old = list(self.units[str(unit_id)]["path"])
        new = [*self.units[str(parent_id)]["path"], str(unit_id)]
        self.units[str(unit_id)]["parent_id"] = str(parent_id)
        for row in [*self.units.values()]:
            if row["path"][: len(old)] == old:
                row["path"] = new + row["path"][len(old) :]
        for row in [*self.households.values(), *self.residents_by_id.values()]:
            if row["unit_path"][: len(old)] == old:
                row["unit_path"] = new + row["unit_path"][len(old) :]

    def move_household(self, household_id, unit_id):
        unit = self.units[str(unit_id)]
        household = self.households[str(household_id)]
        household["unit_id"], household["unit_path"] = unit["id"], list(unit["path"])
        for resident in household["resident_ids"]:
            self.residents_by_id[resident]["unit_id"] = unit["id"]
            self.residents_by_id[resident]["unit_path"] = list(unit["path"])

    def find_residents_async(self, *, under, page_size=100, **_):
        self._call("find_residents")
        items = [r for r in self.residents_by_id.values() if str(under) in r["unit_path"]][:page_size]
        return _Ready({"items": items, "has_more": False})

    def path(self, unit_id):
        return as_path(self.units[str(unit_id)]["path"])


@pytest.fixture
def grid():
    """District 1; street 2 with community 3 → large 4 → medium 5 → small grids 6 and 7; a second
    street 8 with community 9 → large 10 → medium 11 → small 12."""
    fake = Grid()
    fake.add_unit(1, "district")
    for unit, level, parent in (
        (2, "street", 1),
        (3, "community", 2),
        (4, "grid_large", 3),
        (5, "grid_medium", 4),
        (6, "grid_small", 5),
        (7, "grid_small", 5),
        (8, "street", 1),
        (9, "community", 8),
        (10, "grid_large", 9),
        (11, "grid_medium", 10),
        (12, "grid_small", 11),
    ):
        fake.add_unit(unit, level, parent)
    fake.add_household(100, 6)
    fake.add_resident(1000, 100, tags=["quarantined"])
    return fake


def database(base):
    engine = make_engine("sqlite:///:memory:")
    base.metadata.create_all(engine)
    return Session(engine)


class TestVolunteer:
    @pytest.fixture
    def session(self, grid):
        from services.volunteer import models as m

        session = database(m.Base)
        small = grid.path(6)
        session.add_all(
            [
                m.Volunteer(
                    id=1,
                    name="lives in the household",
                    phone_enc=b"",
                    home_unit_id=6,
                    home_path=small,
                    skills=[],
                    availability=[],
                    max_active_tasks=1,
                    household_id=100,
                    party_member=False,
                    active=True,
                    created_at=NOW,
                ),
                m.Volunteer(
                    id=2,
                    name="neighbour",
                    phone_enc=b"",
                    home_unit_id=6,
                    home_path=small,
                    skills=[],
                    availability=[],
                    max_active_tasks=1,
                    household_id=101,
                    party_member=False,
                    active=True,
                    created_at=NOW,
                ),
                m.Post(id=1, unit_id=3, unit_path=grid.path(3), name="post", location="gate"),
                m.Shift(id=1, post_id=1, unit_path=grid.path(3), starts_at=NOW, ends_at=NOW, needed=2),
                m.CarePlan(
                    household_id=100,
                    unit_id=6,
                    unit_path=small,
                    address={},
                    kinds=["groceries"],
                    active=True,
                    started_at=NOW,
                ),
            ]
        )
        for request_id, status, unit in ((1, "offered", 6), (2, "completed", 6), (3, "open", 3), (4, "open", 6)):
            session.add(
                m.HelpRequest(
                    id=request_id,
                    unit_id=unit,
                    unit_path=grid.path(unit),
                    kind="groceries",
                    details="",
                    urgency="high",
                    needed_by=NOW,
                    household_id=100 if request_id < 4 else 101,
                    status=status,
                    created_by="t",
                    created_at=NOW,
                )
            )
        session.commit()
        return session

    def paths(self, session):
        from services.volunteer import models as m

        return {
            "volunteers": dict(session.execute(select(m.Volunteer.id, m.Volunteer.home_path)).all()),
            "requests": dict(session.execute(select(m.HelpRequest.id, m.HelpRequest.unit_path)).all()),
            "request_units": dict(session.execute(select(m.HelpRequest.id, m.HelpRequest.unit_id)).all()),
            "plan": session.execute(select(m.CarePlan.unit_id, m.CarePlan.unit_path)).one()._tuple(),
            "post": session.scalar(select(m.Post.unit_path)),
            "shift": session.scalar(select(m.Shift.unit_path)),
        }

    def test_a_moved_community_takes_every_copy_along_history_included(self, session, grid):
        from services.volunteer import grid_changes

        grid.move(3, 8)
        changed = grid_changes.unit_moved(session, grid, 3)
        session.commit()
        assert changed["help_requests.unit_path"] == 4 and changed["volunteers.home_path"] == 2
        paths = self.paths(session)
        assert set(paths["volunteers"].values()) == {"/1/8/3/4/5/6/"}
        assert paths["requests"] == {1: "/1/8/3/4/5/6/", 2: "/1/8/3/4/5/6/", 3: "/1/8/3/", 4: "/1/8/3/4/5/6/"}
        assert paths["plan"] == (6, "/1/8/3/4/5/6/") and paths["post"] == paths["shift"] == "/1/8/3/"
        # Again (a replay under a new envelope id): nothing left to change.
        assert set(grid_changes.unit_moved(session, grid, 3).values()) == {0}
        assert self.paths(session) == paths

    def test_moves_handled_the_wrong_way_round_end_where_the_grid_is(self, session, grid):
        from services.volunteer import grid_changes

        grid.move(5, 10)  # medium 5 (with small grid 6) to the other street's large grid ...
        grid.move(3, 8)  # ... then its old community moves too
        grid_changes.unit_moved(session, grid, 3)  # the later move first: rebases 6 under 3's new place
        grid_changes.unit_moved(session, grid, 5)  # then the earlier one puts it where 5 really is
        session.commit()
        paths = self.paths(session)
        assert paths["plan"] == (6, "/1/8/9/10/5/6/") and paths["requests"][3] == "/1/8/3/"
        for unit in (3, 5):  # either again: nothing left to change
            assert set(grid_changes.unit_moved(session, grid, unit).values()) == {0}

    def test_a_moved_household_takes_its_pending_help_and_its_volunteer_along(self, session, grid):
        from services.volunteer import grid_changes

        grid.move_household(100, 7)  # same medium grid, next small grid
        changed = grid_changes.household_moved(session, grid, 100)
        session.commit()
        assert changed == {"care_plans": 1, "help_requests": 1, "volunteers": 1}
        paths = self.paths(session)
        assert paths["plan"] == (7, "/1/2/3/4/5/7/")
        assert paths["requests"][1] == "/1/2/3/4/5/7/" and paths["request_units"][1] == 7  # offered: follows
        assert paths["requests"][2] == "/1/2/3/4/5/6/"  # completed: the help was given there
        assert paths["requests"][3] == "/1/2/3/"  # at the community, which still contains the household
        assert paths["requests"][4] == "/1/2/3/4/5/6/"  # another household's
        assert paths["volunteers"] == {1: "/1/2/3/4/5/7/", 2: "/1/2/3/4/5/6/"}
        assert set(grid_changes.household_moved(session, grid, 100).values()) == {0}

    def test_a_household_moved_twice_ends_where_it_lives_now(self, session, grid):
        from services.volunteer import grid_changes

        grid.move_household(100, 7)
        grid.move_household(100, 12)  # to the other street: the community copy must follow too
        grid_changes.household_moved(session, grid, 100)  # either event: the grid says 12
        grid_changes.household_moved(session, grid, 100)
        session.commit()
        paths = self.paths(session)
        assert paths["plan"] == (12, "/1/8/9/10/11/12/") and paths["requests"][3] == "/1/8/9/10/11/12/"

    def test_a_closed_unit_stops_nothing(self, session, grid):
        from services.volunteer import grid_changes

        before = self.paths(session)
        inside = grid_changes.unit_closed(session, 6)
        assert inside["open_requests"] == 2 and inside["active_care_plans"] == 1
        assert inside["active_volunteers"] == 2
        assert self.paths(session) == before


class TestNotices:
    @pytest.fixture
    def session(self, grid):
        from services.notices import models as m

        session = database(m.Base)
        small = grid.path(6)

        def notice(notice_id, kind, requires_ack=False, audience=None):
            return m.Notice(
                id=notice_id,
                kind=kind,
                title="t",
                body="b",
                category="policy",
                severity="moderate",
                urgency="immediate",
                msg_type="alert",
                audience=audience or {"under": [6]},
                channels=["sms"],
                requires_ack=requires_ack,
                ack_checked=False,
                status="published",
                author="t",
                created_at=NOW,
                recipient_count=1,
            )

        session.add_all(
            [
                # 1: instructions to household 100, still queued; 2: a broadcast awaiting acks, all sent;
                # 3: a broadcast done with.
                notice(1, "direct", audience={"under": [6], "household_id": "100", "template": "x"}),
                notice(2, "notice", requires_ack=True),
                notice(3, "notice"),
                m.ChatGroup(unit_id=6, unit_path=small, name="g", webhook_url="http://x", updated_at=NOW),
            ]
        )
        session.flush()
        for notice_id in (1, 2, 3):
            session.add(m.NoticeTarget(notice_id=notice_id, unit_id=6, unit_path=small))
            session.add(
                m.Recipient(
                    id=notice_id,
                    notice_id=notice_id,
                    resident_id=1000,
                    household_id=100,
                    unit_path=small,
                    vulnerable_tags=[],
                    vulnerable=False,
                )
            )
            session.flush()
            session.add(
                m.Delivery(
                    id=notice_id,
                    notice_id=notice_id,
                    recipient_id=notice_id,
                    unit_path=small,
                    channel="sms",
                    status="queued" if notice_id == 1 else "sent",
                    attempts=0,
                    next_attempt_at=NOW,
                    created_at=NOW,
                )
            )
        session.commit()
        return session

    def rows(self, session):
        from services.notices import models as m

        return {
            "targets": dict(session.execute(select(m.NoticeTarget.notice_id, m.NoticeTarget.unit_path)).all()),
            "recipients": dict(session.execute(select(m.Recipient.id, m.Recipient.unit_path)).all()),
            "deliveries": dict(session.execute(select(m.Delivery.id, m.Delivery.unit_path)).all()),
            "groups": dict(session.execute(select(m.ChatGroup.unit_id, m.ChatGroup.unit_path)).all()),
            "under": {n.id: n.audience["under"] for n in session.scalars(select(m.Notice))},
        }

    def test_a_moved_unit_takes_every_copy_along(self, session, grid):
        from services.notices import grid_changes

        grid.move(5, 10)
        grid_changes.unit_moved(session, grid, 5)
        session.commit()
        rows = self.rows(session)
        moved = "/1/8/9/10/5/6/"
        for table in ("targets", "recipients", "deliveries"):
            assert set(rows[table].values()) == {moved}
        assert rows["groups"] == {6: moved}
        assert set(grid_changes.unit_moved(session, grid, 5).values()) == {0}

    def test_a_moved_household_takes_what_is_pending_and_leaves_what_was_done(self, session, grid):
        from services.notices import grid_changes

        grid.move_household(100, 12)
        changed = grid_changes.household_moved(session, grid, 100, 6)
        session.commit()
        assert changed == {"deliveries": 1, "recipients": 2, "notice_targets": 1, "chat_groups_retired": 0}
        rows = self.rows(session)
        new, old = "/1/8/9/10/11/12/", "/1/2/3/4/5/6/"
        assert rows["targets"] == {1: new, 2: old, 3: old}  # the household's own message follows it
        assert rows["under"] == {1: [12], 2: [6], 3: [6]}
        assert rows["recipients"] == {1: new, 2: new, 3: old}  # queued; awaiting an ack; done with
        assert rows["deliveries"] == {1: new, 2: old, 3: old}  # only the one not sent yet
        again = grid_changes.household_moved(session, grid, 100, 6)
        assert again == {"deliveries": 0, "recipients": 0, "notice_targets": 0, "chat_groups_retired": 0}
        assert self.rows(session) == rows

    def test_an_acknowledged_notice_leaves_its_recipient_behind(self, session, grid):
        from services.notices import grid_changes, models as m

        session.add(m.Acknowledgement(notice_id=2, resident_id=1000, acknowledged_at=NOW))
        session.commit()
        grid.move_household(100, 12)
        assert grid_changes.household_moved(session, grid, 100, 6)["recipients"] == 1

    def test_a_closed_grid_keeps_its_chat_group_until_nobody_lives_there(self, session, grid):
        from services.notices import grid_changes

        grid.units["6"]["closed"] = True
        assert grid_changes.unit_closed(session, grid, 6) == {"chat_groups_retired": 0}  # household 100 lives there
        grid.move_household(100, 7)
        assert grid_changes.household_moved(session, grid, 100, 6)["chat_groups_retired"] == 1
        session.commit()
        assert self.rows(session)["groups"] == {}
        assert grid_changes.unit_closed(session, grid, 6) == {"chat_groups_retired": 0}

    def test_an_open_grid_keeps_its_chat_group_when_emptied(self, session, grid):
        from services.notices import grid_changes

        grid.move_household(100, 7)
        assert grid_changes.household_moved(session, grid, 100, 6)["chat_groups_retired"] == 0
        assert self.rows(session)["groups"] == {6: "/1/2/3/4/5/6/"}


def test_legal_stations_consultations_and_cases_follow_a_moved_community(grid):
    from services.legal import grid_changes, models as m

    session = database(m.Base)
    community = grid.path(3)
    session.add(m.Station(id=1, unit_id=3, unit_path=community, name="s", address="a", created_at=NOW))
    session.add(m.Lawyer(id=1, name="l", firm="f", license_no="1", specialties=[], created_at=NOW))
    session.flush()
    session.add(
        m.Consultation(
            lawyer_id=1,
            station_id=1,
            station_path=community,
            resident_id=1000,
            starts_at=NOW,
            ends_at=NOW,
            topic="t",
            mode="phone",
            status="completed",
            booked_by="t",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    session.add(
        m.MediationCase(
            unit_id=6,
            unit_path=grid.path(6),
            category="neighbour",
            description="d",
            party_resident_ids=[],
            party_household_ids=[],
            status="closed",
            opened_by="t",
            opened_at=NOW,
        )
    )
    session.commit()
    grid.move(3, 8)
    assert grid_changes.unit_moved(session, grid, 3) == {
        "stations.unit_path": 1,
        "consultations.station_path": 1,
        "mediation_cases.unit_path": 1,
        # legal's read model of grid facts follows too (shared.grid_facts; empty here)
        "grid_units.path": 0,
        "grid_households.unit_path": 0,
    }
    session.commit()
    assert session.scalar(select(m.Station.unit_path)) == "/1/8/3/"
    assert session.scalar(select(m.Consultation.station_path)) == "/1/8/3/"
    assert session.scalar(select(m.MediationCase.unit_path)) == "/1/8/3/4/5/6/"
    assert set(grid_changes.unit_moved(session, grid, 3).values()) == {0}
