"""The unit cache behind get_unit (services/grid/unit_cache.py): what a unit event drops, a read that
raced with a write keeps nothing, the writing replica drops at commit (not at rollback), the caller's
reach is checked on cached units, and — over random interleavings of reads and writes — no cached unit
ever differs from the database once its write has committed."""

import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import text

from services.grid import schemas, units
from services.grid.unit_cache import CachedUnit, UnitCache
from shared.errors import Forbidden, NotFound
from shared.outbox import envelope
from shared.paths import as_path
from tests.unit.grid.conftest import (
    ADMIN,
    COMMUNITY_B,
    LARGE_A,
    MEDIUM_A,
    OFFICER_A,
    OFFICER_B,
    SMALL_A,
    SMALL_B,
    call,
)
from tests.unit.local import caller, unit_of_work

SERVICE = caller("service", sub="volunteer")


def unit(unit_id, *ids, closed=False):
    path = as_path([*ids, unit_id])
    return CachedUnit(unit_id, ids[-1] if ids else None, "grid_small", f"u{unit_id}", None, path, closed, None,
                      (*ids, unit_id))  # fmt: skip


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_unit_put_is_served_until_an_event_drops_it():
    cache = UnitCache(serving=True)
    assert cache.put(unit(6, 1, 2, 3), cache.generation)
    assert cache.get(6).path == "/1/2/3/6/"
    cache.invalidate("unit_closed", 6)
    assert cache.get(6) is None


def test_nothing_is_served_or_kept_while_the_cache_is_not_serving():
    cache = UnitCache()
    assert not cache.put(unit(6, 1), cache.generation)
    assert cache.get(6) is None


def test_it_serves_only_while_both_invalidations_are_in_place_and_each_connection_starts_afresh(district):
    cache = UnitCache()
    cache.connected()
    assert not cache.serving  # commits not watched yet
    seen = cache.generation
    cache.watch(district.sessionmaker, district.outbox_model)
    assert cache.serving and not cache.put(unit(6, 1), seen)  # a read from before is not kept
    assert cache.put(unit(6, 1), cache.generation)
    cache.disconnected()  # events may now be lost
    assert (cache.serving, cache.get(6)) == (False, None)
    cache.connected()
    assert cache.serving and len(cache) == 0


def test_a_read_that_started_before_an_invalidation_keeps_nothing():
    cache = UnitCache(serving=True)
    seen = cache.generation  # the read's query starts
    cache.invalidate("unit_closed", 99)  # any drop meanwhile, even of another unit
    assert not cache.put(unit(6, 1), seen)
    assert cache.get(6) is None
    assert cache.put(unit(6, 1), cache.generation)  # a read started after it is kept


def test_a_move_drops_the_unit_and_everything_below_it_only():
    cache = UnitCache(serving=True)
    for each in (unit(4, 1, 2, 3), unit(5, 1, 2, 3, 4), unit(6, 1, 2, 3, 4, 5), unit(10, 1, 2, 7, 8, 9), unit(3, 1, 2)):
        cache.put(each, cache.generation)
    cache.invalidate("unit_moved", 4)
    assert [cache.get(i) is not None for i in (3, 4, 5, 6, 10)] == [True, False, False, False, True]


def test_entries_age_out_and_the_oldest_goes_when_full():
    clock = Clock()
    cache = UnitCache(serving=True, max_age=60, max_entries=2, clock=clock)
    cache.put(unit(1), 0)
    clock.now += 30
    cache.put(unit(2, 1), 0)
    cache.put(unit(3, 1), 0)  # full: unit 1, the oldest put, goes
    assert (cache.get(1), cache.get(2) is not None, len(cache)) == (None, True, 2)
    clock.now += 61
    assert cache.get(2) is None


def test_an_event_delivery_drops_what_it_names_and_an_unreadable_one_clears_all():
    cache = UnitCache(serving=True)
    for each in (unit(6, 1), unit(7, 1)):
        cache.put(each, cache.generation)
    body = envelope("grid", "unit_closed", "unit/6", {"unit_id": "6", "level": "grid_small", "unit_path": ["1", "6"]})
    assert cache.apply(body) == "invalidated"
    assert (cache.get(6), cache.get(7) is not None) == (None, True)
    assert cache.apply({"type": "unit_closed", "data": "nonsense"}) == "cleared"
    assert len(cache) == 0
    cache.put(unit(7, 1), cache.generation)
    assert cache.apply(envelope("grid", "incident_reported", "x", {})) == "cleared"  # not a unit event


@pytest.fixture
def cache(district):
    """A serving cache watching the district's database, as the provider sets it up at start."""
    found = UnitCache(serving=True)
    found.watch(district.sessionmaker, district.outbox_model)
    return found


def read(db, cache, who, unit_id):
    with unit_of_work(db) as uow:
        uow.read_only()
        return units.cached_unit(uow, cache, who, unit_id)


def test_the_writing_replica_drops_at_commit_and_not_at_rollback(district, cache):
    before = read(district, cache, ADMIN, SMALL_A)
    assert cache.get(SMALL_A) is before
    with unit_of_work(district) as uow:
        units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
        uow.session.flush()
        assert cache.get(SMALL_A) is before  # recorded, not committed: nothing dropped yet
        uow.rollback()
    assert cache.get(SMALL_A) is before
    with unit_of_work(district) as uow:
        units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
        uow.commit()
        assert cache.get(SMALL_A) is None  # a descendant of the moved unit
    assert read(district, cache, ADMIN, SMALL_A).path.startswith(f"/1/2/{COMMUNITY_B}/{LARGE_A}/")


def test_closing_and_naming_a_party_org_reach_get_unit_at_once(district, cache):
    assert call(district, "get_unit", unit_id=MEDIUM_A, unit_cache=cache)["closed"] is False
    assert cache.get(MEDIUM_A) is not None
    call(district, "close_unit", unit_id=MEDIUM_A, unit_cache=cache)
    assert call(district, "get_unit", unit_id=MEDIUM_A, unit_cache=cache)["closed"] is True
    call(district, "set_party_org", unit_id=MEDIUM_A, name="Branch M", unit_cache=cache)
    assert call(district, "get_unit", unit_id=MEDIUM_A, unit_cache=cache)["party_org"]["name"] == "Branch M"


def test_a_hit_replies_with_what_the_schema_dumps_of_the_row_kept_once(district, cache):
    first = call(district, "get_unit", unit_id=SMALL_A, unit_cache=cache)
    again = call(district, "get_unit", who=OFFICER_A, unit_id=SMALL_A, unit_cache=cache)
    with unit_of_work(district) as uow:
        assert first == again == schemas.UNIT.dump(units.reachable_unit(uow.session, ADMIN, SMALL_A))
    assert again is first and cache.hits == 1  # dumped once, for the first caller


def test_the_callers_reach_is_checked_on_a_cached_unit(district, cache):
    read(district, cache, ADMIN, SMALL_A)
    assert read(district, cache, OFFICER_A, SMALL_A).id == SMALL_A  # a hit
    with pytest.raises(Forbidden):
        read(district, cache, OFFICER_B, SMALL_A)
    with unit_of_work(district) as uow:
        units.move_unit(uow, ADMIN, LARGE_A, COMMUNITY_B)
        uow.commit()
    assert read(district, cache, OFFICER_B, SMALL_A).id == SMALL_A  # its new community's officer
    with pytest.raises(Forbidden):
        read(district, cache, OFFICER_A, SMALL_A)
    with pytest.raises(NotFound):
        read(district, cache, ADMIN, 9999)
    assert read(district, cache, OFFICER_B, SMALL_B).id == SMALL_B


# ---- random interleavings -------------------------------------------------------------------------

TREE = {1: None, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 2, 8: 7, 9: 8, 10: 9}  # parents, as in the district
MOVABLE, PARENTS = (4, 8), (3, 7)  # the large grids, between the communities


def path_of(parents, unit_id):
    ids = []
    while unit_id is not None:
        ids.append(unit_id)
        unit_id = parents[unit_id]
    return tuple(reversed(ids))


def stored(parents, closed, unit_id):
    ids = path_of(parents, unit_id)
    return CachedUnit(unit_id, parents[unit_id], "x", "x", None, as_path(ids), unit_id in closed, None, ids)


step = st.one_of(
    st.tuples(st.just("start_read"), st.sampled_from(sorted(TREE))),
    st.tuples(st.just("finish_read"), st.integers(0, 5)),
    st.tuples(st.just("move"), st.sampled_from(MOVABLE), st.sampled_from(PARENTS)),
    st.tuples(st.just("close"), st.sampled_from(sorted(TREE))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_no_interleaving_of_reads_and_writes_leaves_a_stale_unit_cached(steps):
    """A read takes the generation, reads the row (the database of that moment), and puts it later; a
    write changes the database, then invalidates as its commit would. Whatever the order, every unit
    the cache serves is the database's."""
    parents, closed = dict(TREE), set[int]()
    cache = UnitCache(serving=True)
    reads = []  # (generation seen, row read), in flight
    for kind, *args in steps:
        if kind == "start_read":
            reads.append((cache.generation, stored(parents, closed, args[0])))
        elif kind == "finish_read" and reads:
            generation, row = reads.pop(args[0] % len(reads))
            cache.put(row, generation)
        elif kind == "move":
            parents[args[0]] = args[1]
            cache.invalidate("unit_moved", args[0])
        elif kind == "close":
            closed.add(args[0])
            cache.invalidate("unit_closed", args[0])
        for unit_id in TREE:
            served = cache.get(unit_id)
            assert served is None or served == stored(parents, closed, unit_id)


def test_another_services_read_goes_to_the_database_past_a_stale_entry(district, cache):
    # Another replica moved the unit; this one has not handled the event yet, but the calling service's
    # handler has: its re-read ("the grid says what it is now") must see the move, not this cache.
    stale = read(district, cache, ADMIN, SMALL_A)
    with unit_of_work(district) as uow:
        uow.session.execute(text("UPDATE units SET closed = true WHERE id = :id"), {"id": SMALL_A})
        uow.commit()  # behind the cache's back, as another replica's write is to this one
    assert cache.get(SMALL_A) is stale and stale.closed is False
    assert read(district, cache, SERVICE, SMALL_A).closed is True
    assert cache.get(SMALL_A).closed is True  # and what it read replaced the stale entry
